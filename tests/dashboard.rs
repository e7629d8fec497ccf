//! The dashboard in a real browser: headless Chromium over WebDriver against the real binaries.

use std::time::Duration;

use fantoccini::Locator;

use crate::support::browser::Browser;
use crate::support::image;
use crate::support::service::{image_bytes, one_at_a_time, start_up, Service};

const WAIT: Duration = Duration::from_secs(60);

fn number(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

#[test]
fn the_dashboard_updates_live_and_catches_up_after_a_front_end_restart() {
    let _heavy = one_at_a_time();
    let mut service = Service::start(&[]);
    service.start_worker("w1");
    // Zone gate-1 starts with zidane.jpg (2 people), uploaded before the page opens.
    assert_eq!(service.upload("/upload/gate-1", "myfile", "zidane.jpg", image_bytes("zidane.jpg")).0, 200);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let browser = runtime.block_on(Browser::start());
    let card = r#"[data-zone="gate-1"]"#;
    runtime.block_on(async {
        browser.client.goto(&format!("{}/", service.url)).await.unwrap();
        browser.wait_for_text("#connection", WAIT, |t| t == "live").await;
        browser.wait_for_text(&format!("{card} .zone-images"), WAIT, |t| t == "1").await;
        let before = number(&browser.text("#total-heads").await);
        // Upload bus.jpg through the zone's own form.
        let form = browser.client.find(Locator::Css(&format!("{card} .zone-upload"))).await.unwrap();
        let file = image("bus.jpg").canonicalize().unwrap();
        form.find(Locator::Css("input[type=file]")).await.unwrap().send_keys(file.to_str().unwrap()).await.unwrap();
        form.find(Locator::Css("button")).await.unwrap().click().await.unwrap();
        // The zone's card and the totals change without a reload.
        browser.wait_for_text(&format!("{card} .zone-images"), WAIT, |t| t == "2").await;
        let people = browser.wait_for_text(&format!("{card} .zone-last-heads"), WAIT, |t| number(t) >= 3).await;
        let total = number(&browser.wait_for_text("#total-images", WAIT, |t| t == "2").await);
        assert_eq!(total, 2);
        let heads = browser.wait_for_text("#total-heads", WAIT, |t| number(t) == before + number(&people)).await;
        assert!(number(&heads) > before, "{before} → {heads}");
        let boxes = browser.client.find_all(Locator::Css(&format!("{card} .boxes rect"))).await.unwrap();
        assert!(boxes.len() >= 4, "the latest image has its boxes drawn: {}", boxes.len());
    });
    // The front end restarts; the page is not reloaded.
    service.restart_serve_on_same_port();
    assert_eq!(service.upload("/upload/gate-1", "myfile", "zidane.jpg", image_bytes("zidane.jpg")).0, 200);
    runtime.block_on(async {
        // EventSource reconnects by itself and the next update arrives.
        browser.wait_for_text("#total-images", WAIT, |t| t == "3").await;
        browser.wait_for_text(&format!("{card} .zone-images"), WAIT, |t| t == "3").await;
        browser.wait_for_text("#connection", WAIT, |t| t == "live").await;
        let png = browser.client.screenshot().await.unwrap();
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        std::fs::write(&path, &png).unwrap();
        eprintln!("screenshot: {}", path.display());
        let shot = image::load_from_memory(&png).unwrap();
        assert!(shot.width() >= 800 && shot.height() >= 600, "{}×{}", shot.width(), shot.height());
    });
}

#[test]
fn with_tokens_the_dashboard_asks_for_one_then_goes_live() {
    let _heavy = one_at_a_time();
    let token = "dashboard-token-0123456789";
    let service = Service::start(&[("FRONTEND__TOKENS", token)]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let browser = runtime.block_on(Browser::start());
    runtime.block_on(async {
        browser.client.goto(&format!("{}/", service.url)).await.unwrap();
        let form = browser.client.wait().for_element(Locator::Css("#token-form:not([hidden])")).await.unwrap();
        assert_eq!(browser.text("#connection").await, "connecting…", "nothing is read without the token");
        form.find(Locator::Css("#token")).await.unwrap().send_keys(token).await.unwrap();
        form.find(Locator::Css("button")).await.unwrap().click().await.unwrap();
        browser.wait_for_text("#connection", WAIT, |t| t == "live").await;
        browser.wait_for_text("#total-images", WAIT, |t| t == "0").await;
    });
    assert_eq!(service.get("/api/zones").0, 401, "the service itself still wants the token");
}

#[test]
fn the_fleet_view_shows_the_controllers_pool_and_decisions() {
    let _heavy = one_at_a_time();
    // `up` without --workers: the controller scales the local pool, from scaling.min = 1.
    let data = tempfile::tempdir().unwrap();
    let env = [("SKYBURST_CONTROLLER__METRICS_PORT", "0"), ("SKYBURST_CONTROLLER__TICK_SECONDS", "1")];
    let (mut up, url) = start_up(data.path(), &[], &env);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let browser = runtime.block_on(Browser::start());
    runtime.block_on(async {
        browser.client.goto(&format!("{url}/")).await.unwrap();
        // The legend names each series with its latest value; polylines draw the history.
        browser.wait_for_text("#fleet-legend", WAIT, |t| t.contains("local running 1")).await;
        browser.wait_for_text("#decisions", WAIT, |t| t.contains("desired 1")).await;
        let lines = browser.client.find_all(Locator::Css("#fleet-chart polyline")).await.unwrap();
        assert_eq!(lines.len(), 3, "backlog, local running, local pending");
    });
    drop(browser);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(up.id() as i32), nix::sys::signal::Signal::SIGINT);
    let _ = up.wait();
}

#[test]
fn the_fleet_view_shows_both_pools_of_the_demo_and_the_burst_from_one_to_the_other() {
    let _heavy = one_at_a_time();
    // The demo's config (scripts/run.sh): a private pool of 2 and a public pool of 2. The policy
    // is pinned: this test is about the view, not about the policy the example names. So is the
    // latency objective: with the demo's 2 s, the planner may judge that two private workers clear
    // 40 jobs in time and not burst at all, which is right but not what this test draws.
    let data = tempfile::tempdir().unwrap();
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs/demo.toml");
    let env = [
        ("SKYBURST_CONTROLLER__METRICS_PORT", "0"),
        ("SKYBURST_SCALING__POLICY", "seed-hybrid"),
        ("SKYBURST_SCALING__LATENCY_OBJECTIVE_SECONDS", "0.1"),
    ];
    let (mut up, url) = start_up(data.path(), &["--config", config.to_str().unwrap()], &env);
    let service = Service::attach(&url);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let browser = runtime.block_on(Browser::start());
    runtime.block_on(async {
        browser.client.goto(&format!("{url}/")).await.unwrap();
        // Both pools have their series from the start, the public one empty.
        let legend = browser
            .wait_for_text("#fleet-legend", WAIT, |t| t.contains("private running 1") && t.contains("public running 0"))
            .await;
        assert!(legend.contains("private pending") && legend.contains("public pending"), "{legend}");
        let lines = browser.client.find_all(Locator::Css("#fleet-chart polyline")).await.unwrap();
        assert_eq!(lines.len(), 5, "backlog, then running and pending of each pool");
    });
    // 40 jobs at once: seed-hybrid wants 20, capped at 4, so private fills and public gets 2.
    service.post_images(40, "burst");
    runtime.block_on(async {
        browser.wait_for_text("#decisions", WAIT, |t| t.contains("launch public")).await;
        // The chart keeps the history: the public series (the 4th and 5th) rise above zero.
        let started = std::time::Instant::now();
        while !public_drawn(&browser).await {
            assert!(started.elapsed() < WAIT, "the public pool's instances were never drawn");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Once the queue is empty, public is released first (the private worker stays: min 1).
        let decisions = browser.wait_for_text("#decisions", WAIT, |t| t.contains("terminate public")).await;
        assert!(decisions.contains("(scale-in)"), "{decisions}");
    });
    drop(browser);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(up.id() as i32), nix::sys::signal::Signal::SIGINT);
    let _ = up.wait();
}

/// Whether the fleet chart's public series (running, pending) have a point above zero.
async fn public_drawn(browser: &Browser) -> bool {
    let lines = browser.client.find_all(Locator::Css("#fleet-chart polyline")).await.unwrap();
    for line in lines.iter().skip(3) {
        let points = line.attr("points").await.unwrap().unwrap_or_default();
        // y = 118 for zero (the chart's baseline); anything above it is an instance.
        if points
            .split_whitespace()
            .any(|p| p.split(',').nth(1).and_then(|y| y.parse::<f64>().ok()).is_some_and(|y| y < 117.0))
        {
            return true;
        }
    }
    false
}
