//! A headless Chromium driven over WebDriver: Debian's `chromium` and `chromium-driver`
//! (installed by `scripts/install-browser.sh`, which the test command runs), a chromedriver on
//! a free loopback port, and fantoccini as the client.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

/// chromedriver and one browser session; both end when this is dropped: chromedriver leads a
/// process group of its own, which holds the Chromium processes it starts, and the whole group
/// is killed (killing chromedriver alone leaves Chromium running, re-parented to init).
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver ({e}); run scripts/install-browser.sh"));
        let mut options = serde_json::Map::new();
        // --no-sandbox: the tests run as root; 1280×1600 shows the whole page in the screenshot.
        // The rest: no calls home, which this machine's closed network refuses many at a time.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1280,1600",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ];
        options.insert("goog:chromeOptions".into(), serde_json::json!({ "args": args }));
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(options.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() > deadline => panic!("no WebDriver session within 30 s: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        Browser { client, driver }
    }

    /// The text of the first element matching `css`, or "" while there is none.
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits up to `timeout` for `css`'s text to satisfy `done`; panics with the last text.
    pub async fn wait_for_text(&self, css: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text(css).await;
            if done(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{css}: still {text:?} after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}
