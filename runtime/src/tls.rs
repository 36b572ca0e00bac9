//! TLS for the Redis (`rediss://`) and RabbitMQ (`amqps://`) links.
//!
//! Both clients verify the server with rustls against the system roots. A private CA
//! (`REDIS_CA_FILE`, `RABBITMQ_CA_FILE`, PEM) is trusted *in addition* to them, never
//! instead of verification: there is no setting that skips it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use base64::Engine;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::ConfigError;

/// The CA certificates of one `*_CA_FILE`, checked when the settings are read so a bad
/// file stops the process at start instead of failing every connection later.
#[derive(Clone)]
pub struct PrivateCa {
    path: PathBuf,
    pem: Arc<str>,
    certs: usize,
}

impl fmt::Debug for PrivateCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateCa").field("path", &self.path).field("certs", &self.certs).finish()
    }
}

impl PrivateCa {
    /// Reads and checks the PEM file named by `var`: every certificate must parse as a
    /// trust anchor, and there must be at least one.
    pub fn load(var: &str, path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| ConfigError::new(var, format!("{}: {e}", path.display())))?;
        Self::from_pem(var, path, &bytes)
    }

    fn from_pem(var: &str, path: &Path, bytes: &[u8]) -> Result<Self, ConfigError> {
        let bad = |what: String| ConfigError::new(var, format!("{}: {what}", path.display()));
        let certs = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(bad("no CERTIFICATE block in the file".into()));
        }
        let mut store = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            store.add(cert.clone()).map_err(|e| bad(format!("certificate {} is not a usable CA: {e}", i + 1)))?;
        }
        let pem = String::from_utf8(bytes.to_vec()).map_err(|_| bad("not UTF-8 PEM text".into()))?;
        Ok(Self { path: path.to_owned(), pem: pem.into(), certs: certs.len() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's PEM text, as lapin takes extra roots (added to the platform verifier's).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The system roots followed by this CA, as one PEM bundle: the Redis client takes a
    /// root store that *replaces* the system one, so the system roots are put back here.
    pub fn with_system_roots(&self) -> Vec<u8> {
        let mut bundle = system_roots_pem();
        bundle.push_str(&self.pem);
        bundle.push('\n');
        bundle.into_bytes()
    }
}

/// The system trust store as PEM. Certificates the store could not load are logged, not
/// hidden; the private CA is still trusted when the store is empty.
fn system_roots_pem() -> String {
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::warn!(error = %e, "could not load some system root certificates");
    }
    let mut out = String::new();
    for cert in &loaded.certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// rustls needs one process-wide crypto provider when more than one is compiled in (the
/// dependency tree has both aws-lc-rs and ring); lapin already uses aws-lc-rs.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first; that one is then used, which
        // is equally verified.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// The rustls error somewhere in an error's chain, if the failure was TLS's.
pub fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // The Redis client hands out its inner error as an `Arc<dyn Error>`, whose own
        // `source` skips a level: unwrap it.
        if let Some(inner) = e.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            cur = Some(&**inner);
            continue;
        }
        // `io::Error::source` skips the error it wraps, so look inside explicitly.
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return Some(r);
            }
            cur = Some(inner);
            continue;
        }
        cur = e.source();
    }
    None
}

/// What went wrong, in words for whoever reads the log.
/// `ca_var` is the variable that would add the server's private CA.
pub fn explain(err: &rustls::Error, ca_var: &str) -> String {
    match err {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            format!(
                "the server certificate is not signed by a trusted CA (for a private CA set {ca_var}): UnknownIssuer"
            )
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
        | rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext { .. }) => {
            format!("the server certificate is not valid for this host name: {err}")
        }
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_a_config_error_naming_the_variable() {
        let e = PrivateCa::from_pem("REDIS_CA_FILE", Path::new("/x.pem"), b"hello").unwrap_err();
        assert_eq!(e.var, "REDIS_CA_FILE");
        assert!(e.message.contains("no CERTIFICATE block"), "{e}");
        let e = PrivateCa::load("RABBITMQ_CA_FILE", Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert_eq!(e.var, "RABBITMQ_CA_FILE");
    }

    #[test]
    fn garbage_inside_a_certificate_block_is_refused() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = PrivateCa::from_pem("REDIS_CA_FILE", Path::new("/x.pem"), pem).unwrap_err();
        assert!(e.message.contains("not a usable CA"), "{e}");
    }

    #[test]
    fn system_roots_round_trip_through_pem() {
        let pem = system_roots_pem();
        let parsed = CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>().expect("pem");
        assert_eq!(parsed.len(), rustls_native_certs::load_native_certs().certs.len());
    }

    /// An error whose source is an `Arc<dyn Error>`, as the Redis client's are.
    #[derive(Debug)]
    struct Wrap(Arc<dyn std::error::Error + Send + Sync>);
    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn finds_rustls_errors_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls.clone());
        assert_eq!(rustls_error(&io), Some(&tls));
        let shared: Arc<dyn std::error::Error + Send + Sync> = Arc::new(io);
        let outer = std::io::Error::other(Wrap(shared));
        assert_eq!(rustls_error(&outer), Some(&tls));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(rustls_error(&plain), None);
    }
}
