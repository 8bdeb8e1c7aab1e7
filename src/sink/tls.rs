//! rustls client configuration for RFC 5425 (syslog over TLS): the CA that
//! signs the collector, an optional client certificate, the server name.
//! Only configuration lives here; the non-blocking I/O is in `syslog.rs`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// Used when no `ca_file` is configured (Debian/Ubuntu/Fedora bundle paths).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

pub fn client_config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let bundle = match ca_file {
        Some(p) => Some(p.to_path_buf()),
        None => SYSTEM_BUNDLES
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
            .map(Path::to_path_buf),
    };
    let bundle = bundle.ok_or("no ca_file and no system CA bundle found")?;
    for cert in
        CertificateDer::pem_file_iter(&bundle).map_err(|e| format!("{}: {e}", bundle.display()))?
    {
        let cert = cert.map_err(|e| format!("{}: {e}", bundle.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", bundle.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", bundle.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (cert_file, key_file) {
        (Some(c), Some(k)) => {
            let chain = CertificateDer::pem_file_iter(c)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", c.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(k).map_err(|e| format!("{}: {e}", k.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string()).map_err(|e| format!("server_name `{name}`: {e}"))
}
