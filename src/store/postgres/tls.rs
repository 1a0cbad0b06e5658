//! TLS to PostgreSQL: rustls (as for providers), verifying the server against the system's
//! roots plus, when `[store] ca_file` names one, a private CA. Used when the URL asks for TLS
//! (`sslmode=require`) or allows it (`prefer`, the default, falls back to plain text only
//! when the server offers no TLS).

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// The connector every connection of a store uses.
pub(super) fn connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, StoreError> {
    crate::runner::transport::install_crypto();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra: Vec<CertificateDer<'static>> = match ca_file {
        Some(file) => CertificateDer::pem_file_iter(file)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|err| {
                StoreError::Setup(format!(
                    "[store] ca_file {}: not readable PEM certificates ({err})",
                    file.display()
                ))
            })?,
        None => Vec::new(),
    };
    let setup = |err: rustls::Error| StoreError::Setup(format!("TLS for PostgreSQL: {err}"));
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, Arc::clone(&provider))
            .map_err(setup)?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(setup)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
