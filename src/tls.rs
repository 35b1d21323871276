//! SIP over TLS: the server certificate (configured, or self-signed and generated on
//! first start) and the rustls configuration the TLS listener uses.
//!
//! A self-signed certificate encrypts, but a phone that is not told to trust it (its
//! CA file, or the printed fingerprint) cannot tell the switch from an impostor on the
//! path: configure a certificate from a CA the phones trust for anything beyond a LAN.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use sha2::Digest as _;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

use crate::config::Profile;

/// Where the generated pair lives.
fn generated_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// The TLS server configuration for `profile`: its configured certificate, else the
/// generated one (made now if absent). Errors name the file and the key.
pub fn server_config(profile: &Profile, host: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (cert_path, key_path, generated) =
        match (&profile.sip.tls_certificate, &profile.sip.tls_private_key) {
            (Some(c), Some(k)) => (c.clone(), k.clone(), false),
            _ => {
                let (c, k) = generated_paths(&profile.data_dir);
                if !c.exists() || !k.exists() {
                    generate(&c, &k, host)?;
                }
                (c, k, true)
            }
        };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot read the TLS certificate ({e}) (sip.tls_certificate); give a PEM file with the certificate chain",
                cert_path.display()
            )
        })?;
    if chain.is_empty() {
        anyhow::bail!(
            "{}: no certificate in the file (sip.tls_certificate); give a PEM file with the certificate chain",
            cert_path.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot read the TLS private key ({e}) (sip.tls_private_key); give the PEM private key of the certificate",
            key_path.display()
        )
    })?;
    let fingerprint = hex::encode(sha2::Sha256::digest(chain[0].as_ref()));
    if generated {
        warn!(
            "SIP over TLS uses the self-signed certificate {} (SHA-256 {fingerprint}); phones must be told to trust it",
            cert_path.display()
        );
    } else {
        info!(
            "SIP over TLS certificate {} (SHA-256 {fingerprint})",
            cert_path.display()
        );
    }
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .with_context(|| {
        format!(
            "{} and {}: the certificate and private key do not go together (sip.tls_certificate, sip.tls_private_key)",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok(Arc::new(config))
}

/// A self-signed certificate for `host` (and localhost), its key written with mode 0600.
fn generate(cert_path: &Path, key_path: &Path, host: &str) -> anyhow::Result<()> {
    let dir = cert_path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = vec![host.to_string(), "localhost".to_string()];
    if host != "127.0.0.1" {
        names.push("127.0.0.1".to_string());
    }
    let certified =
        rcgen::generate_simple_self_signed(names).context("generating a TLS certificate")?;
    std::fs::write(cert_path, certified.cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    write_private(key_path, certified.key_pair.serialize_pem().as_bytes())?;
    info!(
        "generated a self-signed TLS certificate in {}",
        dir.display()
    );
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}
