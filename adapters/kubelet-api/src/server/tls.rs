//! TLS: the serving certificate (from files, the app's rotating resolver, or self-signed at
//! start), the rustls server configuration with client certificates requested and verified
//! against the client CA, and the user a verified client certificate names.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use vk_domain::kubelet_auth::UserInfo;

use super::{ServerError, Settings};

/// What picks the serving certificate of each new connection: any `rustls` resolver (the app
/// gives `vk_kube::certificates::Identity`, swapped in place on rotation).
pub type ServingResolver = Arc<dyn rustls::server::ResolvesServerCert>;

/// A serving certificate chain and its key, PEM.
#[derive(Clone)]
pub struct ServingCert {
    /// The certificate chain, PEM (leaf first).
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert").finish_non_exhaustive()
    }
}

/// A self-signed serving certificate for `node_name` and `addresses` (the subject alternative
/// names a kubelet without `--tls-cert-file` puts in its own: the hostname and the node's IPs),
/// valid for a year from now, as the kubelet's (`cert.GenerateSelfSignedCertKey`). Made anew at
/// each start; a cluster-signed one that rotates is `--rotate-server-certificates`.
///
/// # Errors
/// [`ServerError::Tls`] when key generation or signing fails.
pub fn self_signed(node_name: &str, addresses: &[IpAddr]) -> Result<ServingCert, ServerError> {
    let tls = |e: rcgen::Error| ServerError::Tls(e.to_string());
    let mut names = vec![node_name.to_owned()];
    names.extend(addresses.iter().map(ToString::to_string));
    let mut params = rcgen::CertificateParams::new(names).map_err(tls)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{node_name}@virtual-kubelet"));
    // An hour back, for clients whose clock is a little behind ours.
    let now = std::time::SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(365 * 24 * 3600)).into();
    let key = rcgen::KeyPair::generate().map_err(tls)?;
    let cert = params.self_signed(&key).map_err(tls)?;
    Ok(ServingCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

pub(super) fn tls_config(settings: &Settings) -> Result<rustls::ServerConfig, ServerError> {
    let tls = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(settings.cert.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| tls(&format!("serving certificate: {e}")))?;
    if certs.is_empty() {
        return Err(ServerError::Tls("serving certificate: no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(settings.cert.key_pem.as_bytes())
        .map_err(|e| tls(&format!("serving key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?;
    let builder = match settings.client_ca.as_slice() {
        [] => builder.with_no_client_auth(),
        cas => {
            let mut roots = rustls::RootCertStore::empty();
            for c in cas {
                roots
                    .add(CertificateDer::from(c.clone()))
                    .map_err(|e| tls(&format!("client CA: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls(&format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = match &settings.serving {
        Some(identity) => builder.with_cert_resolver(Arc::clone(identity) as _),
        None => builder.with_single_cert(certs, key).map_err(|e| tls(&e))?,
    };
    // Upgrades (exec, attach, port-forward) are HTTP/1.1, which is all the API server needs.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificates (DER) of a PEM bundle.
///
/// # Errors
/// [`ServerError::Tls`] when the PEM is malformed or holds no certificate.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, ServerError> {
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    if certs.is_empty() {
        return Err(ServerError::Tls("no certificate in the PEM".into()));
    }
    Ok(certs)
}

/// Checks the TLS material of `settings` (so that bad files stop the process at start).
///
/// # Errors
/// [`ServerError::Tls`] naming the certificate, key or client CA that cannot be used.
pub fn check(settings: &Settings) -> Result<(), ServerError> {
    tls_config(settings).map(|_| ())
}

/// The user a DER certificate names: CN as the user, O values as groups.
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let username = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups =
        subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_owned)).collect();
    Some(UserInfo { username, groups, ..UserInfo::default() })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn certificates_name_users_and_groups() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:masters");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let user = user_from_certificate(cert.der()).unwrap();
        assert_eq!(user.username, "kube-apiserver-kubelet-client");
        assert_eq!(user.groups, ["system:masters"]);
        let own = self_signed("vk", &["10.0.0.5".parse().unwrap()]).unwrap();
        let mut settings = Settings::new("vk", own.clone());
        assert!(check(&settings).is_ok());
        settings.client_ca = pem_certificates(own.cert_pem.as_bytes()).unwrap();
        assert!(check(&settings).is_ok());
        settings.cert.key_pem = "junk".into();
        assert!(matches!(check(&settings), Err(ServerError::Tls(_))));
    }

    /// The self-signed certificate is valid now and for a year, as the kubelet's.
    #[test]
    fn self_signed_is_valid_for_a_year_from_now() {
        let own = self_signed("vk", &[]).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(own.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let at = |t: x509_parser::time::ASN1Time| {
            std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap())
        };
        let (not_before, not_after) =
            (at(cert.validity().not_before), at(cert.validity().not_after));
        let now = std::time::SystemTime::now();
        assert!(not_before < now && now < not_after);
        let life = not_after.duration_since(not_before).unwrap();
        let year = Duration::from_secs(365 * 24 * 3600);
        assert!(life > year && life <= year + Duration::from_secs(3600), "{life:?}");
    }
}
