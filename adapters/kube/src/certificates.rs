//! The kubelet's certificates from the cluster: TLS bootstrap, rotation and serving certificates
//! by CertificateSigningRequest (`certificates.k8s.io/v1`), as the kubelet gets them
//! (`--bootstrap-kubeconfig`, `--cert-dir`, `--rotate-certificates`, `serverTLSBootstrap`;
//! `k8s.io/client-go/util/certificate`).
//!
//! - [`request`]: a new ECDSA P-256 key and a CSR for `CN=system:node:<node>, O=system:nodes` to
//!   the signer of the [`Kind`]: `kubernetes.io/kube-apiserver-client-kubelet` (usages `digital
//!   signature`, `client auth`; approved by kube-controller-manager for bootstrap tokens allowed
//!   `certificatesigningrequests/nodeclient` and for nodes renewing their own,
//!   `selfnodeclient`) or `kubernetes.io/kubelet-serving` (`digital signature`, `server auth`,
//!   the node's names and addresses as subject alternative names; approved by the cluster's
//!   approver, never by kube-controller-manager). Waits for the signed certificate.
//! - [`store`] and [`load`]: `<cert-dir>/kubelet-{client,server}-<unix time>.pem` (certificate
//!   then key, mode 0600) and the `-current.pem` link to the newest, the kubelet's layout.
//! - [`Identity`]: the certificate in use, swapped in place: it resolves the client certificate
//!   of every new connection to the API server and the serving certificate of every new
//!   connection to the kubelet port, so a rotation needs no restart.
//! - [`renew_at`]: when to ask for the next one: at a random point between 70 % and 90 % of the
//!   certificate's life (client-go's `nextRotationDeadline`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

/// Which certificate a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The node's client certificate for the API server.
    Client,
    /// The kubelet port's serving certificate.
    Serving,
}

impl Kind {
    /// The CSR's `signerName`.
    pub fn signer(self) -> &'static str {
        match self {
            Self::Client => "kubernetes.io/kube-apiserver-client-kubelet",
            Self::Serving => "kubernetes.io/kubelet-serving",
        }
    }

    fn usages(self) -> Vec<String> {
        let usage = match self {
            Self::Client => "client auth",
            Self::Serving => "server auth",
        };
        vec!["digital signature".into(), usage.into()]
    }

    /// The file name prefix in the certificate directory (the kubelet's).
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Client => "kubelet-client",
            Self::Serving => "kubelet-server",
        }
    }
}

/// Errors getting a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The key, the CSR or a PEM could not be made or read.
    #[error("certificate: {0}")]
    Crypto(String),
    /// The API server refused or failed a request.
    #[error("certificate signing request: {0}")]
    Api(#[from] kube::Error),
    /// The CSR was denied or failed (its condition's reason and message).
    #[error("certificate signing request {name} {condition}: {message}")]
    Refused {
        /// The CSR's name.
        name: String,
        /// `Denied` or `Failed`.
        condition: String,
        /// The condition's reason and message.
        message: String,
    },
    /// Not signed within the wait.
    #[error("certificate signing request {0} not signed within {1:?} (is it approved?)")]
    Timeout(String, Duration),
    /// The certificate directory.
    #[error("certificate directory: {0}")]
    Io(#[from] std::io::Error),
}

/// A certificate (chain, PEM) with its key (PEM) and validity.
#[derive(Clone)]
pub struct Issued {
    /// The certificate chain, PEM, leaf first.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The subject's common name.
    pub common_name: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("common_name", &self.common_name)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Reads a certificate chain and key from PEM.
    ///
    /// # Errors
    /// [`CertError::Crypto`] when there is no certificate or key, or the leaf cannot be parsed.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let crypto = |e: &dyn std::fmt::Display| CertError::Crypto(e.to_string());
        let leaf = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()
            .ok_or_else(|| CertError::Crypto("no certificate in the PEM".into()))?
            .map_err(|e| crypto(&e))?;
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| crypto(&e))?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| crypto(&e))?;
        let validity = x509.validity();
        let at = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or_default())
        };
        let common_name = x509
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            not_before: at(validity.not_before),
            not_after: at(validity.not_after),
            common_name,
        })
    }

    /// Whether it is valid now and for at least `margin` more.
    pub fn valid_for(&self, margin: Duration) -> bool {
        let now = SystemTime::now();
        self.not_before <= now && now + margin < self.not_after
    }

    fn certified_key(&self) -> Result<Arc<CertifiedKey>, CertError> {
        let crypto = |e: &dyn std::fmt::Display| CertError::Crypto(e.to_string());
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| crypto(&e))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| crypto(&e))?;
        let provider = rustls::crypto::ring::default_provider();
        let key = provider.key_provider.load_private_key(key).map_err(|e| crypto(&e))?;
        Ok(Arc::new(CertifiedKey::new(chain, key)))
    }
}

/// When to ask for the next certificate: a random point between 70 % and 90 % of `issued`'s
/// life (client-go's `nextRotationDeadline`), so that many nodes do not renew at once.
pub fn renew_at(issued: &Issued) -> SystemTime {
    let life = issued.not_after.duration_since(issued.not_before).unwrap_or_default();
    let jitter = f64::from(rand_percent()) / 100.0;
    issued.not_before + life.mul_f64(0.7 + 0.2 * jitter)
}

/// A number in 0..100 from the clock's nanoseconds (jitter only; nothing depends on it).
fn rand_percent() -> u32 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(50, |d| d.subsec_nanos() % 100)
}

/// Asks the cluster for a certificate of `kind` for node `node` (with `names` and `ips` as the
/// serving certificate's subject alternative names), through `client`, and waits up to `wait` for
/// it to be signed. The CSR is left to kube-controller-manager's cleaner (an issued one goes
/// after an hour), as the kubelet leaves it: a node may not delete CSRs.
///
/// # Errors
/// [`CertError::Refused`] when the CSR is denied or fails, [`CertError::Timeout`] when it is not
/// signed in time, [`CertError::Api`] when the API server refuses it (RBAC: a bootstrap token
/// needs `create` on `certificatesigningrequests`).
pub async fn request(
    client: &Client,
    kind: Kind,
    node: &str,
    names: &[String],
    ips: &[IpAddr],
    wait: Duration,
) -> Result<Issued, CertError> {
    let crypto = |e: rcgen::Error| CertError::Crypto(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(crypto)?;
    let mut sans: Vec<String> = Vec::new();
    if kind == Kind::Serving {
        sans.extend(names.iter().cloned());
        sans.extend(ips.iter().map(ToString::to_string));
    }
    let mut params = rcgen::CertificateParams::new(sans).map_err(crypto)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    let csr = params.serialize_request(&key).map_err(crypto)?.pem().map_err(crypto)?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let object = CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            generate_name: Some(format!("{}-", kind.prefix())),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr.into_bytes()),
            signer_name: kind.signer().to_owned(),
            usages: Some(kind.usages()),
            ..Default::default()
        },
        status: None,
    };
    let created = api.create(&PostParams::default(), &object).await?;
    let name = created.metadata.name.unwrap_or_default();
    info!(csr = %name, signer = kind.signer(), "certificate signing request created; waiting for it to be signed");
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let csr = api.get(&name).await?;
        let status = csr.status.unwrap_or_default();
        if let Some(c) =
            status.conditions.iter().flatten().find(|c| c.type_ == "Denied" || c.type_ == "Failed")
        {
            return Err(CertError::Refused {
                name,
                condition: c.type_.clone(),
                message: format!(
                    "{}: {}",
                    c.reason.as_deref().unwrap_or_default(),
                    c.message.as_deref().unwrap_or_default()
                ),
            });
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            let cert_pem = String::from_utf8_lossy(&cert.0).into_owned();
            let issued = Issued::from_pem(&cert_pem, &key.serialize_pem())?;
            info!(csr = %name, not_after = ?issued.not_after, "certificate signed");
            return Ok(issued);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CertError::Timeout(name, wait));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `<dir>/<prefix>-current.pem`.
pub fn current_path(dir: &Path, kind: Kind) -> PathBuf {
    dir.join(format!("{}-current.pem", kind.prefix()))
}

/// The certificate of `kind` in `dir` (`<prefix>-current.pem`: certificate then key), `None`
/// when there is none or it cannot be read.
pub fn load(dir: &Path, kind: Kind) -> Option<Issued> {
    let pem = std::fs::read_to_string(current_path(dir, kind)).ok()?;
    let (certs, key) = split_pem(&pem);
    match Issued::from_pem(&certs, &key) {
        Ok(i) => Some(i),
        Err(e) => {
            warn!(path = %current_path(dir, kind).display(), error = %e, "ignoring an unreadable certificate");
            None
        }
    }
}

/// The certificate blocks and the private key block of one PEM file (the kubelet writes both in
/// one), each as PEM text.
fn split_pem(pem: &str) -> (String, String) {
    let (mut certs, mut key) = (String::new(), String::new());
    let mut into_key = None;
    for line in pem.lines() {
        if let Some(label) = line.strip_prefix("-----BEGIN ") {
            into_key = Some(label.contains("PRIVATE KEY"));
        }
        match into_key {
            Some(true) => key.push_str(line),
            Some(false) => certs.push_str(line),
            None => continue,
        }
        let buf = if into_key == Some(true) { &mut key } else { &mut certs };
        buf.push('\n');
        if line.starts_with("-----END ") {
            into_key = None;
        }
    }
    (certs, key)
}

/// Writes `issued` to `<dir>/<prefix>-<unix seconds>.pem` (mode 0600) and points
/// `<prefix>-current.pem` at it (a symbolic link replaced atomically, the kubelet's layout).
///
/// # Errors
/// [`CertError::Io`] when the directory cannot be written.
pub fn store(dir: &Path, kind: Kind, issued: &Issued) -> Result<PathBuf, CertError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir)?;
    let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let name = format!("{}-{}.pem", kind.prefix(), stamp.as_secs());
    let path = dir.join(&name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(issued.cert_pem.as_bytes())?;
    if !issued.cert_pem.ends_with('\n') {
        f.write_all(b"\n")?;
    }
    f.write_all(issued.key_pem.as_bytes())?;
    f.sync_all()?;
    let link = current_path(dir, kind);
    let tmp = dir.join(format!(".{}-current.tmp", kind.prefix()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&name, &tmp)?;
    std::fs::rename(&tmp, &link)?;
    Ok(path)
}

/// The certificate in use, swapped in place by [`Identity::set`]: a rustls client certificate
/// resolver (for the API server) and server certificate resolver (for the kubelet port). New
/// connections use the newest; open ones keep theirs.
#[derive(Debug)]
pub struct Identity {
    current: RwLock<(Arc<CertifiedKey>, Issued)>,
}

impl Identity {
    /// Starts with `issued`.
    ///
    /// # Errors
    /// [`CertError::Crypto`] when its certificate or key cannot be used.
    pub fn new(issued: Issued) -> Result<Arc<Self>, CertError> {
        Ok(Arc::new(Self { current: RwLock::new((issued.certified_key()?, issued)) }))
    }

    /// Uses `issued` for new connections from now on.
    ///
    /// # Errors
    /// [`CertError::Crypto`] when its certificate or key cannot be used (the current one stays).
    pub fn set(&self, issued: Issued) -> Result<(), CertError> {
        let key = issued.certified_key()?;
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = (key, issued);
        Ok(())
    }

    /// The certificate in use.
    pub fn issued(&self) -> Issued {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).1.clone()
    }

    fn key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).0)
    }
}

impl rustls::client::ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for Identity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn self_signed(cn: &str, days: u64) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["node".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let now = std::time::SystemTime::now();
        params.not_before = (now - Duration::from_secs(60)).into();
        params.not_after = (now + Duration::from_secs(days * 86_400)).into();
        let cert = params.self_signed(&key).unwrap();
        Issued::from_pem(&cert.pem(), &key.serialize_pem()).unwrap()
    }

    #[test]
    fn stored_certificates_load_back_through_the_current_link() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), Kind::Client).is_none());
        let first = self_signed("system:node:a", 30);
        store(dir.path(), Kind::Client, &first).unwrap();
        let back = load(dir.path(), Kind::Client).unwrap();
        assert_eq!(back.common_name, "system:node:a");
        assert!(back.valid_for(Duration::from_secs(86_400)));
        assert!(!back.valid_for(Duration::from_secs(31 * 86_400)));
        // A second store replaces the link; the serving certificate has its own.
        std::thread::sleep(Duration::from_millis(1100));
        store(dir.path(), Kind::Client, &self_signed("system:node:b", 30)).unwrap();
        assert_eq!(load(dir.path(), Kind::Client).unwrap().common_name, "system:node:b");
        assert!(load(dir.path(), Kind::Serving).is_none());
        let link = std::fs::read_link(current_path(dir.path(), Kind::Client)).unwrap();
        assert!(link.to_string_lossy().starts_with("kubelet-client-"), "{link:?}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(&link)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn renewal_falls_between_70_and_90_percent_of_the_life() {
        let c = self_signed("x", 100);
        let life = c.not_after.duration_since(c.not_before).unwrap();
        let at = renew_at(&c).duration_since(c.not_before).unwrap();
        assert!(at >= life.mul_f64(0.69) && at <= life.mul_f64(0.91), "{at:?} of {life:?}");
    }

    #[test]
    fn the_identity_swaps_in_place() {
        let id = Identity::new(self_signed("one", 1)).unwrap();
        let before = id.key();
        id.set(self_signed("two", 1)).unwrap();
        assert_eq!(id.issued().common_name, "two");
        assert!(!Arc::ptr_eq(&before, &id.key()));
    }
}
