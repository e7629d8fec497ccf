//! Trust exactly one certificate, named by the SHA-256 of its DER encoding (as SSH trusts a
//! host key). The controller renders its certificate's fingerprint into each Nova worker's
//! config; the worker's credentials client accepts that certificate and no other, so a
//! self-signed certificate is enough and no PKI is needed. The name in the URL and the
//! certificate's dates are not checked: the fingerprint names the certificate exactly, and
//! the handshake proves the server holds its key.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A certificate's SHA-256. Written as 64 hex digits; colons and case (as `openssl x509
/// -fingerprint -sha256` prints it) are accepted when read.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin(pub [u8; 32]);

/// A pin that is not a SHA-256 in hex.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a certificate's SHA-256: give 64 hex digits (colons allowed), as `openssl x509 -noout -fingerprint -sha256 -in CERT` prints")]
pub struct BadPin(String);

impl FromStr for Pin {
    type Err = BadPin;

    fn from_str(s: &str) -> Result<Self, BadPin> {
        let text = s.trim();
        let text = text.strip_prefix("sha256 Fingerprint=").unwrap_or(text);
        let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
        let bad = || BadPin(s.chars().take(100).collect());
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut pin = [0u8; 32];
        for (byte, pair) in pin.iter_mut().zip(digits.chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Pin(pin))
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

impl Serialize for Pin {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The server showed a certificate other than the pinned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the server's certificate has SHA-256 {got}, not the pinned {expected}: this is not the controller \
     this worker was launched for (or its certificate was replaced; workers launched before the change \
     keep the old pin)"
)]
pub struct PinMismatch {
    /// The pin in the config.
    pub expected: Pin,
    /// What the server showed.
    pub got: Pin,
}

impl PinMismatch {
    /// The mismatch somewhere in `error`'s causes: an HTTP client's error wraps the handshake's
    /// (inside an `io::Error`, whose `source` skips it), and rustls keeps it as an opaque
    /// "other" certificate error, printed with `Debug`. This finds it to say it plainly.
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) = error.downcast_ref() {
                return other.0.downcast_ref::<PinMismatch>().copied();
            }
            // An `io::Error` around another error: look at what it wraps, not at its `source`.
            next = match error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => error.source(),
            };
        }
        None
    }
}

/// Accepts the pinned certificate only; checks the handshake's signatures with the provider's
/// algorithms.
#[derive(Debug)]
struct PinnedVerifier {
    pin: Pin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = super::fingerprint(end_entity);
        match got == self.pin {
            true => Ok(ServerCertVerified::assertion()),
            false => Err(rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
                PinMismatch { expected: self.pin, got },
            ))))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client config that trusts the certificate `pin` names and nothing else.
pub fn client_config(pin: Pin) -> rustls::ClientConfig {
    let provider = super::provider();
    let algorithms = provider.signature_verification_algorithms;
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier { pin, algorithms }))
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_read_as_openssl_prints_them() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let pin: Pin = hex.parse().unwrap();
        assert_eq!(pin.to_string(), hex);
        let openssl = hex
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(format!("sha256 Fingerprint={openssl}").parse::<Pin>().unwrap(), pin);
        assert_eq!(openssl.parse::<Pin>().unwrap(), pin);
        for bad in ["", "abc", &hex[1..], &format!("{hex}00"), &hex.replace('9', "g")] {
            assert!(bad.parse::<Pin>().is_err(), "{bad:?}");
        }
        let toml = toml::to_string(&std::collections::BTreeMap::from([("pin", pin)])).unwrap();
        let back: std::collections::BTreeMap<String, Pin> = toml::from_str(&toml).unwrap();
        assert_eq!(back["pin"], pin);
    }
}
