//! The front end under hostile clients, over raw sockets: endless multipart heads, made-up
//! methods, slow and stalled bodies, huge file names and zones. Each is cut with a clear error,
//! `serve`'s memory stays bounded, nothing refused is kept, and a good image still gets its
//! answer afterwards.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::service::{image_bytes, one_at_a_time, Service};

/// 10 MiB: the default `frontend.max_body_bytes`.
const MAX_BODY: u64 = 10 << 20;
/// What `serve` may grow by during a flood: one body at its limit plus 16 MiB for buffers.
const GROWTH_BOUND: u64 = MAX_BODY + (16 << 20);

fn connect(service: &Service) -> TcpStream {
    let address = service.url.trim_start_matches("http://");
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream
}

/// Peak resident memory of a process so far, bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Sends `head`, then `total` bytes of `filler` as a chunked body in 64 KiB chunks, stopping when
/// the server stops reading; returns the status line and body the server answered.
fn chunked_flood(service: &Service, head: &str, prefix: &[u8], filler: u8, total: usize) -> (u16, String) {
    let mut stream = connect(service);
    let writer = stream.try_clone().unwrap();
    let (head, prefix) = (head.to_string(), prefix.to_vec());
    let sender = std::thread::spawn(move || {
        let mut writer = writer;
        let chunk = vec![filler; 64 * 1024];
        fn send(writer: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
            write!(writer, "{:x}\r\n", bytes.len())?;
            writer.write_all(bytes)?;
            writer.write_all(b"\r\n")
        }
        writer.write_all(head.as_bytes())?;
        if !prefix.is_empty() {
            send(&mut writer, &prefix)?;
        }
        let mut sent = prefix.len();
        while sent < total {
            send(&mut writer, &chunk)?;
            sent += chunk.len();
        }
        writer.write_all(b"0\r\n\r\n")
    });
    let answer = read_answer(&mut stream);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    answer
}

/// The status and body of one HTTP/1.1 answer.
fn read_answer(stream: &mut TcpStream) -> (u16, String) {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok());
            if length.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[test]
fn endless_multipart_heads_are_cut_with_bounded_memory() {
    let _heavy = one_at_a_time();
    let service = Service::start(&[]);
    let pid = service.serve.id();
    let before = peak_rss(pid);
    let boundary = "----hostile";
    for (path, prefix) in [
        // A part header that never ends.
        ("/upload", format!("--{boundary}\r\nContent-Disposition: form-data; name=\"myfile\"; filename=\"")),
        // A preamble with no line break at all.
        ("/api/jobs", String::new()),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
        let started = Instant::now();
        let (status, body) = chunked_flood(&service, &head, prefix.as_bytes(), b'a', 40 << 20);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("multipart_head_too_long"), "{path}: {body}");
        assert!(started.elapsed() < Duration::from_secs(20), "{path}: cut after {:?}", started.elapsed());
    }
    let grown = peak_rss(pid).saturating_sub(before);
    eprintln!("serve's peak memory grew by {} KiB during the multipart floods", grown >> 10);
    assert!(grown < GROWTH_BOUND, "serve grew by {grown} bytes");
    // A multipart body without a declared length is still held to frontend.max_body_bytes.
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    let prefix = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"myfile\"; filename=\"a.jpg\"\r\n\r\n");
    let (status, body) = chunked_flood(&service, &head, prefix.as_bytes(), b'a', 40 << 20);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("body_too_large"), "{body}");
    let grown = peak_rss(pid).saturating_sub(before);
    eprintln!("serve's peak memory grew by {} KiB after a 40 MB chunked upload", grown >> 10);
    assert!(grown < GROWTH_BOUND, "serve grew by {grown} bytes");
    service.assert_nothing_kept();
}

#[test]
fn made_up_methods_do_not_grow_metrics_and_a_wrong_method_is_405() {
    let _heavy = one_at_a_time();
    let service = Service::start(&[]);
    let send = |method: &str, path: &str| {
        let mut stream = connect(&service);
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        read_answer(&mut stream)
    };
    let series = || {
        service
            .get_text(&format!("{}/metrics", service.url))
            .lines()
            .filter(|l| l.starts_with("skyburst_http_"))
            .count()
    };
    send("BREW", "/api/zones");
    send("BREW", "/no/such/route");
    // A scrape counts itself after it is served: the first one adds its own series.
    series();
    let before = series();
    for i in 0..300 {
        let (status, _) = send(&format!("M{i}X"), if i % 2 == 0 { "/api/zones" } else { "/nowhere" });
        assert!(status == 405 || status == 404, "made-up method {i}: {status}");
    }
    assert_eq!(series(), before, "made-up methods added metric series");

    let response = reqwest::blocking::Client::new().get(format!("{}/api/detect", service.url)).send().unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["error"], "method_not_allowed", "{body}");
    let response = reqwest::blocking::Client::new().delete(format!("{}/api/zones", service.url)).send().unwrap();
    assert_eq!((response.status().as_u16(), response.headers()["allow"].to_str().unwrap()), (405, "GET"));
}

#[test]
fn slow_and_stalled_bodies_are_cut_and_the_service_still_answers() {
    let _heavy = one_at_a_time();
    let mut service = Service::start(&[("FRONTEND__BODY_GRACE_SECONDS", "2")]);
    // A body at one byte a second.
    let mut slow = connect(&service);
    write!(slow, "POST /api/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n").unwrap();
    let started = Instant::now();
    let dripper = {
        let mut writer = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..30 {
                if writer.write_all(b" ").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let (status, body) = read_answer(&mut slow);
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("body_too_slow"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(10), "cut after {:?}", started.elapsed());
    dripper.join().unwrap();

    // 100 connections that each sent half a body and stopped: every one is answered and closed.
    let mut held: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = connect(&service);
            write!(s, "POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\":").unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    for stream in &mut held {
        let (status, _) = read_answer(stream);
        assert_eq!(status, 408);
    }
    assert!(started.elapsed() < Duration::from_secs(20), "closed after {:?}", started.elapsed());
    for stream in &mut held {
        // Answered and closed: the rest of the connection is not a request.
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = [0u8; 1];
        assert!(matches!(stream.read(&mut rest), Ok(0)), "a stalled connection stayed open");
    }
    service.assert_nothing_kept();

    // Afterwards, a good image gets its answer.
    service.start_worker("w1");
    let (status, answer) = service.post_json("/api/detect", &crate::support::service::detect_body("ok", "bus.jpg"));
    assert_eq!(status, 200, "{answer}");
    let labels: Vec<&str> =
        answer["objects"].as_array().unwrap().iter().map(|o| o["label"].as_str().unwrap()).collect();
    assert!(labels.contains(&"bus"), "{answer}");
}

#[test]
fn huge_names_are_refused_and_errors_do_not_echo_them() {
    let _heavy = one_at_a_time();
    let service = Service::start(&[]);
    let bus = image_bytes("bus.jpg");
    let long_name = format!("{}.jpg", "n".repeat(1 << 20));
    let form = reqwest::blocking::multipart::Form::new()
        .part("myfile", reqwest::blocking::multipart::Part::bytes(bus.clone()).file_name(long_name));
    let response = reqwest::blocking::Client::new().post(format!("{}/upload", service.url)).multipart(form).send();
    let response = response.unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    assert_eq!(status, 400, "{}", &text[..text.len().min(300)]);
    assert!(text.contains("file_name_too_long") || text.contains("multipart_head_too_long"), "{}", &text[..300]);
    assert!(text.len() < 1024, "the error echoed {} bytes", text.len());
    // A 5 MB zone is refused with a short answer.
    let form = reqwest::blocking::multipart::Form::new()
        .text("zone", "z".repeat(5 << 20))
        .part("myfile", reqwest::blocking::multipart::Part::bytes(bus).file_name("bus.jpg"));
    let response = reqwest::blocking::Client::new().post(format!("{}/upload", service.url)).multipart(form).send();
    let response = response.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let text = response.text().unwrap();
    assert!(text.contains("bad_zone") && text.len() < 1024, "{} bytes: {}", text.len(), &text[..text.len().min(300)]);
    service.assert_nothing_kept();
}

#[test]
fn beyond_max_waiting_a_synchronous_request_is_refused_before_its_job_exists() {
    let _heavy = one_at_a_time();
    // No worker: the first request waits its 5 s for an answer that does not come.
    let service = Service::start(&[("FRONTEND__MAX_WAITING", "1"), ("FRONTEND__WAIT_SECONDS", "5")]);
    let url = service.url.clone();
    let first = std::thread::spawn(move || {
        let body = crate::support::service::detect_body("first", "bus.jpg");
        reqwest::blocking::Client::new().post(format!("{url}/api/detect")).json(&body).send().unwrap().status()
    });
    service.wait_until(Duration::from_secs(10), |s| s.queued() == 1);
    let (status, retry_after, answer) = service.post(
        "/api/detect",
        "application/json",
        serde_json::to_vec(&crate::support::service::detect_body("second", "bus.jpg")).unwrap(),
    );
    assert_eq!((status, answer["error"].as_str()), (503, Some("too_many_waiting")), "{answer}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert_eq!((service.queued(), service.index_rows()), (1, 1), "the refused request created a job");
    assert_eq!(first.join().unwrap().as_u16(), 202, "the first one still gets its status URL");
    // The asynchronous route does not wait, so it is not counted.
    let (status, _) = service.post_json("/api/jobs", &crate::support::service::detect_body("third", "bus.jpg"));
    assert_eq!(status, 202);
}

#[test]
fn without_tokens_on_loopback_only_loopback_hosts_are_answered() {
    let _heavy = one_at_a_time();
    let get = |service: &Service, host: &str| {
        let mut stream = connect(service);
        write!(stream, "GET /api/zones HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
        read_answer(&mut stream)
    };
    let open = Service::start(&[]);
    let port = open.url.rsplit(':').next().unwrap().to_string();
    // A DNS-rebinding page's requests carry its own domain.
    let (status, body) = get(&open, &format!("rebind.example:{port}"));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("bad_host"), "{body}");
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), "[::1]".to_string()] {
        assert_eq!(get(&open, &host).0, 200, "{host}");
    }
    drop(open);
    // With tokens, the token is the guard and any name may be used (a proxy's, a DNS name).
    let token = "host-test-token-0123456789";
    let guarded = Service::start(&[("FRONTEND__TOKENS", token)]);
    let mut stream = connect(&guarded);
    write!(stream, "GET /api/zones HTTP/1.1\r\nHost: skyburst.example\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut stream).0, 200);
}
