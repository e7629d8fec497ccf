//! TLS on every hop, on rustls with aws-lc-rs: the AWS SDK's crypto provider, so the tree
//! holds one TLS stack and one crypto library.
//!
//! # Layout
//! - this file: the provider, PEM files, certificate fingerprints and the config's file pair.
//! - [`server`]: the front end's and the controller's certificate, reloaded on SIGHUP or when
//!   its files change (a certbot-style renewal needs no restart).
//! - [`pin`]: a client that trusts exactly one certificate, named by its SHA-256: how a Nova
//!   worker reaches the controller's `/v1/credentials` without a PKI.

pub mod pin;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use pin::Pin;

/// A client that has not finished its TLS handshake this long after connecting is dropped, so
/// silent connections cannot pile up before any request limit applies.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The crypto provider every TLS config here is built with, named explicitly rather than
/// taken from a process-wide default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate chain and its private key, PEM files (`[frontend.tls]`, `[controller.tls]`).
/// Both set: serve HTTPS; neither: plain HTTP (refused off loopback without `--insecure`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (certbot's `fullchain.pem`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Its private key: PKCS#8, PKCS#1 or SEC1 (certbot's `privkey.pem`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// The pair, when both files are set (the config's validation refuses one without the other).
    pub fn pair(&self) -> Option<(&Path, &Path)> {
        Some((self.cert.as_deref()?, self.key.as_deref()?))
    }

    /// The certificate to serve, when the pair is set.
    pub fn load(&self) -> Result<Option<Arc<server::Certificates>>, TlsError> {
        self.pair().map(|(cert, key)| server::Certificates::load(cert, key)).transpose()
    }
}

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid PEM.
    #[error("{path} is not valid PEM")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The file holds no certificate.
    #[error("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key cannot be used, or is not the certificate's.
    #[error("{key} cannot serve the certificate in {cert}: {source}")]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
}

/// A PEM reader's error on `path`, the I/O error kept as such.
fn pem_error(path: &Path, error: rustls::pki_types::pem::Error) -> TlsError {
    match error {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Read { path: path.to_path_buf(), source },
        source => TlsError::Pem { path: path.to_path_buf(), source },
    }
}

/// The certificate chain in `path`, leaf first.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |error| pem_error(path, error);
    let chain = CertificateDer::pem_file_iter(path).map_err(read)?.collect::<Result<Vec<_>, _>>().map_err(read)?;
    match chain.is_empty() {
        true => Err(TlsError::NoCertificate { path: path.to_path_buf() }),
        false => Ok(chain),
    }
}

/// The private key in `path` (the first PKCS#8, PKCS#1 or SEC1 key in it).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| pem_error(path, error))
}

/// The SHA-256 of a certificate's DER encoding: what `openssl x509 -noout -fingerprint
/// -sha256` prints, and what a worker pins.
pub fn fingerprint(certificate: &CertificateDer<'_>) -> Pin {
    Pin(Sha256::digest(certificate.as_ref()).into())
}

/// The fingerprint of the leaf certificate in the PEM file `path`.
pub fn file_fingerprint(path: &Path) -> Result<Pin, TlsError> {
    Ok(fingerprint(&read_chain(path)?[0]))
}

/// True if `url` is plain HTTP to a host other than loopback (`localhost`, 127.0.0.0/8, `::1`):
/// traffic in cleartext on a network. An `http://` URL that does not parse counts as off loopback.
pub fn is_cleartext_off_loopback(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(url) => {
            // The parser lowercases names, normalises IPv4 forms (`127.1`) and brackets IPv6.
            let loopback = url.host_str().is_some_and(|host| {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                host == "localhost" || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            });
            url.scheme() == "http" && !loopback
        }
        Err(_) => url.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleartext_is_plain_http_to_anything_but_loopback() {
        for url in
            ["http://127.0.0.1:1/", "http://127.1/x", "http://[::1]:1/", "http://LOCALHOST/", "https://10.0.0.5/"]
        {
            assert!(!is_cleartext_off_loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:9464/v1/credentials",
            "http://127.0.0.1.evil.example/",
            "http://localhost@10.0.0.5/",
            "HTTP://10.0.0.5/",
            "http://[::1/",
        ] {
            assert!(is_cleartext_off_loopback(url), "{url}");
        }
    }
}
