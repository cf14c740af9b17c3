//! TLS for SIP (rustls with the ring provider): loading PEM certificates
//! and keys, building the listener's server configuration and the client
//! configurations towards trunks (system roots or a CA file, SNI, an
//! optional client certificate), and the per-destination table the
//! transport consults when it opens a TLS connection.
//!
//! Loading happens once, when the configuration is read, so a bad file is
//! a configuration error that names its key; nothing here runs per message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The crypto provider every configuration here uses: ring, which builds
/// with the C compiler alone (rustls deprecates it only for lacking
/// post-quantum key exchange, which SIP peers do not offer yet).
#[expect(deprecated, reason = "ring has no post-quantum key exchange; SIP peers do not need it")]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key (the listener's, or a trunk's
/// client certificate).
#[derive(Debug)]
pub struct Identity {
    /// The chain, end-entity certificate first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self { certs: self.certs.clone(), key: self.key.clone_key() }
    }
}

/// Which file of an identity a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The certificate file.
    Cert,
    /// The key file (also: a key that does not match the certificate).
    Key,
}

/// Reads every certificate of a PEM file.
///
/// # Errors
/// A missing or unreadable file, no `CERTIFICATE` block, or bad PEM.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    std::fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("`{}`: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{}` is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no PEM CERTIFICATE block", path.display()));
    }
    Ok(certs)
}

/// Reads a certificate chain and its key, and checks that they belong
/// together.
///
/// # Errors
/// The file the problem is in, and what it is.
pub fn load_identity(cert: &Path, key: &Path) -> Result<Identity, (Part, String)> {
    let certs = load_certs(cert).map_err(|e| (Part::Cert, e))?;
    std::fs::metadata(key).map_err(|e| (Part::Key, format!("cannot read `{}`: {e}", key.display())))?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        (Part::Key, format!("`{}` holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}", key.display()))
    })?;
    rustls::sign::CertifiedKey::from_der(certs.clone(), der.clone_key(), &provider()).map_err(|e| {
        (Part::Key, format!("`{}` does not match the certificate in `{}`: {e}", key.display(), cert.display()))
    })?;
    Ok(Identity { certs, key: der })
}

/// The listener's configuration: its certificate, no client certificates
/// asked for (phones rarely have one).
///
/// # Errors
/// When rustls refuses the key.
pub fn server_config(id: &Identity) -> Result<Arc<ServerConfig>, String> {
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(id.certs.clone(), id.key.clone_key())
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(cfg))
}

/// The system's trust anchors (Debian: `/etc/ssl/certs`, from
/// `ca-certificates`), read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "reading the system's CA certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system CA certificates");
        Arc::new(roots)
    }))
}

/// Trust anchors from a PEM file.
///
/// # Errors
/// The file's problem, or no usable CA certificate in it.
pub fn roots_from(path: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(load_certs(path)?);
    if added == 0 {
        return Err(format!("`{}` holds no usable CA certificate", path.display()));
    }
    Ok(Arc::new(roots))
}

/// A client configuration that verifies servers against `ca` (the
/// system's roots when `None`) and presents `id` when asked.
///
/// # Errors
/// When rustls refuses the client key.
pub fn client_config(ca: Option<Arc<RootCertStore>>, id: Option<&Identity>) -> Result<Arc<ClientConfig>, String> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(ca.unwrap_or_else(system_roots));
    let cfg = match id {
        Some(id) => b.with_client_auth_cert(id.certs.clone(), id.key.clone_key()).map_err(|e| e.to_string())?,
        None => b.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// The name a server is checked against (and sent as SNI when it is a DNS
/// name): `server_name`, or the address itself.
///
/// # Errors
/// A name that is neither a DNS name nor an IP address.
pub fn server_name(name: Option<&str>, addr: SocketAddr) -> Result<ServerName<'static>, String> {
    match name {
        Some(n) if !n.is_empty() => {
            ServerName::try_from(n.to_owned()).map_err(|_| format!("`{n}` is not a DNS name or IP address"))
        }
        _ => Ok(ServerName::from(addr.ip())),
    }
}

/// How to open a TLS connection to one destination.
#[derive(Debug, Clone)]
pub struct Dial {
    /// Verification and client certificate.
    pub config: Arc<ClientConfig>,
    /// The name checked (and sent as SNI when a DNS name).
    pub name: ServerName<'static>,
}

/// What the transport needs for TLS: the listener's configuration and how
/// to dial each known destination (trunks), with a default for the rest
/// (system roots, the address as the name, the listener's certificate
/// when the server asks for one).
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// The listener's configuration, when a TLS port is served.
    pub server: Option<Arc<ServerConfig>>,
    /// Per destination (a trunk's address).
    pub dial: HashMap<SocketAddr, Dial>,
    /// For destinations without their own entry.
    pub default_client: Arc<ClientConfig>,
}

impl TlsSetup {
    /// How to dial `dest`.
    #[must_use]
    pub fn dial(&self, dest: SocketAddr) -> Dial {
        self.dial
            .get(&dest)
            .cloned()
            .unwrap_or_else(|| Dial { config: Arc::clone(&self.default_client), name: ServerName::from(dest.ip()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn identity_errors_say_which_file() {
        let dir = std::env::temp_dir().join(format!("xsbc-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.example".into()]).unwrap();
        let cert = write(&dir, "a.pem", &a.cert.pem());
        let key = write(&dir, "a.key", &a.signing_key.serialize_pem());
        let other_key = write(&dir, "b.key", &b.signing_key.serialize_pem());
        let junk = write(&dir, "junk.pem", "not pem at all\n");
        let id = load_identity(&cert, &key).unwrap();
        assert!(server_config(&id).is_ok());
        assert!(client_config(None, Some(&id)).is_ok());
        let (part, e) = load_identity(&cert, &other_key).unwrap_err();
        assert!(part == Part::Key && e.contains("does not match"), "{e}");
        let (part, e) = load_identity(&junk, &key).unwrap_err();
        assert!(part == Part::Cert && e.contains("no PEM CERTIFICATE"), "{e}");
        let (part, e) = load_identity(&cert, &junk).unwrap_err();
        assert!(part == Part::Key && e.contains("no usable PEM private key"), "{e}");
        let (part, e) = load_identity(&dir.join("missing.pem"), &key).unwrap_err();
        assert!(part == Part::Cert && e.contains("cannot read"), "{e}");
        assert!(roots_from(&cert).is_ok());
        assert!(roots_from(&junk).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn server_names() {
        let a: SocketAddr = "192.0.2.7:5061".parse().unwrap();
        assert_eq!(server_name(None, a).unwrap(), ServerName::from(a.ip()));
        assert_eq!(server_name(Some("sip.carrier.example"), a).unwrap().to_str(), "sip.carrier.example");
        assert!(server_name(Some("not a name"), a).is_err());
    }
}
