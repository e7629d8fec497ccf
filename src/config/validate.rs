//! Range checks on a deserialized [`Config`]: pure (no I/O, no environment), collecting every
//! problem so an operator fixes them in one pass.

use super::{Config, DeviceKind};

/// Returns every out-of-range value, one line each naming the key and the accepted range.
pub fn validate(config: &Config) -> Result<(), Vec<String>> {
    let d = &config.detector;
    let mut problems = Vec::new();
    let mut check = |ok: bool, problem: String| {
        if !ok {
            problems.push(problem);
        }
    };
    check(d.threshold > 0.0 && d.threshold <= 1.0, format!("detector.threshold = {} must be in (0, 1]", d.threshold));
    check(d.nms_iou > 0.0 && d.nms_iou <= 1.0, format!("detector.nms_iou = {} must be in (0, 1]", d.nms_iou));
    check(d.max_pixels > 0, "detector.max_pixels must be positive".to_string());
    check((1..=256).contains(&d.threads), format!("detector.threads = {} must be in 1..=256", d.threads));
    check((1..=64).contains(&d.batch_size), format!("detector.batch_size = {} must be in 1..=64", d.batch_size));
    check(
        d.device == DeviceKind::Cpu || cfg!(feature = "cuda"),
        "detector.device = \"cuda\" needs a build with `--features cuda`".to_string(),
    );
    check(!d.model_dir.as_os_str().is_empty(), "detector.model_dir must not be empty".to_string());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
