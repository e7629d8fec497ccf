//! TLS end to end: the front end serves HTTPS with a certificate made at test time, `skyburst
//! load` runs over it, renewed certificates are served without a restart (file change and
//! SIGHUP) while a bad renewal keeps the old one, and plain HTTP off loopback is refused.

use std::time::Duration;

use crate::support::service::{one_at_a_time, Service};
use crate::support::tls::{pem_pair, presents, wait_until_presented, TestCert};
use crate::support::{image, run, skyburst};

/// Longer than the certificate files' poll ([`skyburst::tls::server::POLL`]) plus a margin.
const RELOAD: Duration = Duration::from_secs(15);

#[test]
fn the_front_end_serves_https_and_load_runs_over_it() {
    let _heavy = one_at_a_time();
    let cert = TestCert::new();
    let mut service = Service::start_https(&[], &cert);
    assert!(service.url.starts_with("https://127.0.0.1:"), "{}", service.url);
    service.start_worker("w1");
    let plain = service.url.replace("https://", "http://");
    let cleartext = reqwest::blocking::Client::new().get(format!("{plain}/healthz")).send();
    assert!(cleartext.is_err(), "nothing is served in cleartext on the HTTPS port: {cleartext:?}");
    // A client that connects and never starts its handshake is dropped after the timeout.
    let mut silent = std::net::TcpStream::connect(service.url.trim_start_matches("https://")).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = std::time::Instant::now();
    let read = std::io::Read::read(&mut silent, &mut [0u8; 64]);
    let waited = started.elapsed();
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(6),
        "dropped after {waited:?}, not the {:?} handshake timeout",
        skyburst::tls::HANDSHAKE_TIMEOUT
    );

    // A client pinning this certificate gets in; one pinning another is refused, and says why.
    let pinned = |pin| {
        let config = skyburst::tls::pin::client_config(pin);
        reqwest::blocking::Client::builder().tls_backend_preconfigured(config).build().unwrap()
    };
    let healthz = format!("{}/healthz", service.url);
    assert_eq!(pinned(cert.pin).get(&healthz).send().unwrap().status().as_u16(), 200);
    let wrong = skyburst::tls::Pin([0xab; 32]);
    let refused = pinned(wrong).get(&healthz).send().unwrap_err();
    let mismatch = skyburst::tls::pin::PinMismatch::find(&refused).expect("the handshake's own error");
    assert_eq!((mismatch.expected, mismatch.got), (wrong, cert.pin));

    let data = tempfile::tempdir().unwrap();
    let labels = data.path().join("labels.csv");
    std::fs::write(&labels, "file,labels\nbus.jpg,bus;person\nzidane.jpg,person;tie\n").unwrap();
    let images = image("bus.jpg").parent().unwrap().to_path_buf();
    let load = |extra: &[&std::ffi::OsStr]| {
        run(skyburst()
            .args(["load", "--url", &service.url, "--requests", "4", "--concurrency", "2", "--timeout-seconds", "60"])
            .arg("--images")
            .arg(&images)
            .arg("--expect")
            .arg(&labels)
            .args(extra))
    };
    let (code, out, err) = load(&["--ca-cert".as_ref(), cert.cert.as_os_str()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("succeeded 4  failed 0") && out.contains("correct     4/4"), "{out}");
    // The system's roots do not know a self-signed certificate.
    let (code, out, err) = load(&[]);
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(out.contains("succeeded 0") || err.contains("certificate"), "{out}\n{err}");
    // A trace replay (6 jobs over 3 s, at ×10) trusts the same certificate and checks the labels.
    let trace = data.path().join("trace.csv");
    std::fs::write(&trace, "t_seconds,count\n0,6\n3,0\n").unwrap();
    let (code, out, err) = run(skyburst()
        .args(["load", "--url", &service.url, "--time-scale", "10", "--timeout-seconds", "60", "--trace"])
        .arg(&trace)
        .args(["--images".as_ref(), images.as_os_str(), "--expect".as_ref(), labels.as_os_str()])
        .args(["--ca-cert".as_ref(), cert.cert.as_os_str()]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("6 sent") && out.contains("succeeded 6  failed 0") && out.contains("correct     6/6"),
        "{out}"
    );
}

#[test]
fn renewed_certificates_are_served_without_a_restart_and_a_bad_renewal_keeps_the_old_one() {
    let _heavy = one_at_a_time();
    let mut cert = TestCert::new();
    let service = Service::start_https(&[], &cert);
    assert!(presents(&service.url, cert.pin));

    // A certbot-style renewal: new files renamed over the old ones, no signal.
    let old = cert.pin;
    let renewed = cert.renew();
    assert!(wait_until_presented(&service.url, renewed, RELOAD), "the renewed certificate was not picked up");
    assert!(!presents(&service.url, old), "the old certificate is no longer served");

    // A key that is not the certificate's: logged, and the current pair stays in service.
    let (other_cert, _) = pem_pair();
    let (_, other_key) = pem_pair();
    let bad = cert.replace(&other_cert, &other_key);
    std::thread::sleep(RELOAD);
    assert!(!presents(&service.url, bad));
    assert!(presents(&service.url, renewed), "a bad renewal keeps the certificate in service");
    assert_eq!(service.get("/readyz").0, 200);

    // SIGHUP reloads at once.
    let fixed = cert.renew();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(service.serve.id() as i32), nix::sys::signal::Signal::SIGHUP)
        .unwrap();
    assert!(wait_until_presented(&service.url, fixed, RELOAD), "SIGHUP did not reload the certificate");
    assert_eq!(service.get("/readyz").0, 200, "the front end lives on after SIGHUP");
}

#[test]
fn plain_http_off_loopback_is_refused_unless_insecure() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let token = ("SKYBURST_FRONTEND__TOKENS", "a-token-of-sixteen-chars");
    let (code, _, err) =
        run(skyburst().env(token.0, token.1).args(["--data-dir", dir, "serve", "--bind", "0.0.0.0", "--port", "0"]));
    assert_ne!(code, 0);
    assert!(err.contains("refusing to serve plain HTTP on 0.0.0.0"), "{err}");
    assert!(err.contains("frontend.tls.cert") && err.contains("--insecure"), "{err}");

    let (code, _, err) = run(skyburst().env("SKYBURST_CONTROLLER__METRICS_BIND", "0.0.0.0").args([
        "--data-dir",
        dir,
        "controller",
        "--dry-run",
    ]));
    assert_ne!(code, 0);
    assert!(err.contains("refusing to serve /metrics and /v1/credentials over plain HTTP on 0.0.0.0"), "{err}");
    assert!(err.contains("controller.tls.cert"), "{err}");

    // A token is not sent in cleartext to another machine either.
    let (code, _, err) = run(skyburst()
        .args(["load", "--url", "http://192.0.2.1:8080", "--images", dir])
        .args(["--token", "a-token-of-sixteen-chars"]));
    assert_ne!(code, 0);
    assert!(err.contains("refusing to send the token to http://192.0.2.1:8080 over plain HTTP"), "{err}");

    // One of the pair is not enough.
    let (code, _, err) = run(skyburst().env("SKYBURST_FRONTEND__TLS__CERT", "/nonexistent/cert.pem").args([
        "--data-dir",
        dir,
        "config",
        "check",
    ]));
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("frontend.tls: set both cert and key"), "{err}");
    let (code, _, err) = run(skyburst()
        .env("SKYBURST_FRONTEND__TLS__CERT", "/nonexistent/cert.pem")
        .env("SKYBURST_FRONTEND__TLS__KEY", "/nonexistent/key.pem")
        .args(["--data-dir", dir, "serve", "--port", "0"]));
    assert_ne!(code, 0);
    assert!(err.contains("cannot serve HTTPS (frontend.tls)") && err.contains("/nonexistent/cert.pem"), "{err}");
}
