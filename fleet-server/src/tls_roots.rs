//! Client TLS towards what the server depends on (PostgreSQL, an external broker): rustls on
//! aws-lc, with roots read from an operator's PEM file. One place, so both connections accept
//! and refuse the same files with the same words.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// What is wrong with a CA file (the caller names the file and its setting).
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error("not a PEM certificate: {0}")]
    Pem(String),
    #[error("a certificate not usable as a root: {0}")]
    Refused(String),
    #[error("no PEM certificate in it")]
    Empty,
    #[error("TLS cannot be set up: {0}")]
    Setup(String),
}

/// Adds every certificate in `pem` to `roots`; a file with none is an error, not an empty trust.
pub fn add_pem(roots: &mut RootCertStore, pem: &[u8]) -> Result<(), RootsError> {
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| RootsError::Pem(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| RootsError::Refused(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(RootsError::Empty);
    }
    Ok(())
}

/// A client configuration trusting `roots`, with no client certificate.
pub fn client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, RootsError> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| RootsError::Setup(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_certificate_is_refused_not_trusted_empty() {
        let mut roots = RootCertStore::empty();
        assert!(matches!(
            add_pem(&mut roots, b"just text\n"),
            Err(RootsError::Empty)
        ));
        assert!(matches!(
            add_pem(
                &mut roots,
                b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n"
            ),
            Err(RootsError::Pem(_))
        ));
        assert!(roots.is_empty());
    }
}
