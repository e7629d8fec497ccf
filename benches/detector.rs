//! The candle side of `scripts/bench-detector.sh`: one process per (threads, batch), timing the
//! forward pass on the letterboxed image repeated `batch` times, and printing one JSON line:
//! `{"runtime": "candle", "threads": T, "batch": B, "wall_ms": [...], "cpu_ms": [...]}` — the same
//! protocol as `scripts/bench/run_opencv.py` and `run_ort.py`, which the script runs beside it.
//!
//! Run it through the script (it builds with `cargo bench --bench detector --no-run`), or:
//!   cargo bench --bench detector -- --threads 2 --batch 1 --runs 30 --warmup 5 \
//!     --model-dir ~/.cache/skyburst/models --image ~/.cache/skyburst/images/bus.jpg
//! `--stock` times stock candle `conv2d` instead of the fused kernel (runtime "candle-stock");
//! `--profile` prints a per-layer table (median ms over the runs) to stderr.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use cpu_time::ProcessTime;
use skyburst_detector::{self as detector, ConvPath, Detector, DetectorOptions};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    threads: usize,
    #[arg(long)]
    batch: usize,
    #[arg(long, default_value_t = 30)]
    runs: usize,
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    #[arg(long)]
    model_dir: PathBuf,
    #[arg(long)]
    image: PathBuf,
    /// Time stock candle conv2d (the oracle) instead of the fused kernel.
    #[arg(long)]
    stock: bool,
    /// Print a per-layer profile to stderr.
    #[arg(long)]
    profile: bool,
    /// `cargo bench` passes `--bench`; accept and ignore it.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.threads >= 1 && args.batch >= 1 && args.runs >= 1, "threads, batch and runs must be ≥ 1");
    detector::set_threads(args.threads);
    let path = if args.stock { ConvPath::Stock } else { ConvPath::Fused };
    let options = DetectorOptions { conv_path: path, ..DetectorOptions::default() };
    let detector = Detector::load(&args.model_dir, options, &candle_core::Device::Cpu)?;
    let loaded = detector.load_image(&std::fs::read(&args.image)?)?;
    let input = detector.input_tensor(&vec![&loaded.prepared; args.batch])?;
    let net = detector.network();
    let layer_count = net.describe().len();
    let mut layer_ms: Vec<Vec<f64>> = vec![Vec::new(); layer_count];
    let (mut wall_ms, mut cpu_ms) = (Vec::new(), Vec::new());
    for run in 0..args.warmup + args.runs {
        let (wall, cpu) = (Instant::now(), ProcessTime::now());
        let mut last = Instant::now();
        let heads = net.forward_observed(&input, path, |index, _| {
            if args.profile && run >= args.warmup {
                layer_ms[index].push(last.elapsed().as_secs_f64() * 1e3);
                last = Instant::now();
            }
        })?;
        std::hint::black_box(heads);
        if run >= args.warmup {
            wall_ms.push(wall.elapsed().as_secs_f64() * 1e3);
            cpu_ms.push(cpu.elapsed().as_secs_f64() * 1e3);
        }
    }
    if args.profile {
        print_profile(&net.describe(), &mut layer_ms, args.batch);
    }
    let runtime = if args.stock { "candle-stock" } else { "candle" };
    let line = serde_json::json!({
        "runtime": runtime, "threads": args.threads, "batch": args.batch, "wall_ms": wall_ms, "cpu_ms": cpu_ms,
    });
    println!("{line}");
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn print_profile(names: &[String], layer_ms: &mut [Vec<f64>], batch: usize) {
    let medians: Vec<f64> = layer_ms.iter_mut().map(|v| median(v)).collect();
    let total: f64 = medians.iter().sum();
    eprintln!("| layer | op | median ms (batch {batch}) | share |");
    eprintln!("|---:|---|---:|---:|");
    for (i, (name, ms)) in names.iter().zip(&medians).enumerate() {
        eprintln!("| {i} | {name} | {ms:.2} | {:.1} % |", 100.0 * ms / total);
    }
    eprintln!("| | total | {total:.2} | |");
}
