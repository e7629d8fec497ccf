//! Test certificates made at test time (rcgen), and a look at which certificate a server
//! presents.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skyburst::tls::Pin;

/// A self-signed certificate for `127.0.0.1` and `localhost`, its key, both as PEM files.
pub struct TestCert {
    /// Holds the files.
    pub dir: tempfile::TempDir,
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// The certificate's SHA-256.
    pub pin: Pin,
}

/// The certificate and key of a fresh self-signed pair, as PEM text.
pub fn pem_pair() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

impl TestCert {
    /// A fresh pair in its own directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let (cert_pem, key_pem) = pem_pair();
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let pin = skyburst::tls::file_fingerprint(&cert).unwrap();
        TestCert { dir, cert, key, pin }
    }

    /// Replaces the files with a fresh pair as a renewal does (each written beside, then
    /// renamed over the old one); returns the new certificate's pin.
    pub fn renew(&mut self) -> Pin {
        let (cert_pem, key_pem) = pem_pair();
        self.replace(&cert_pem, &key_pem)
    }

    /// Replaces the files with `cert_pem` and `key_pem`, key first.
    pub fn replace(&mut self, cert_pem: &str, key_pem: &str) -> Pin {
        replace_file(&self.key, key_pem);
        replace_file(&self.cert, cert_pem);
        self.pin = skyburst::tls::file_fingerprint(&self.cert).unwrap();
        self.pin
    }

    /// The certificate as PEM text.
    pub fn pem(&self) -> String {
        std::fs::read_to_string(&self.cert).unwrap()
    }

    /// A blocking client that trusts this certificate and nothing else.
    pub fn client(&self) -> reqwest::blocking::Client {
        let certificate = reqwest::Certificate::from_pem(self.pem().as_bytes()).unwrap();
        reqwest::blocking::Client::builder()
            .tls_certs_only([certificate])
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }
}

fn replace_file(path: &Path, text: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// True if the server at `url` (`https://HOST:PORT`) presents the certificate `pin` names and
/// answers `GET /healthz` with 200 over it.
pub fn presents(url: &str, pin: Pin) -> bool {
    let address = url.trim_start_matches("https://").trim_end_matches('/');
    let config = Arc::new(skyburst::tls::pin::client_config(pin));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(config, name).unwrap();
    let socket = TcpStream::connect(address).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, socket);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// Waits up to `within` for the server at `url` to present `pin`.
pub fn wait_until_presented(url: &str, pin: Pin, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if presents(url, pin) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}
