//! Certificates for the local stack, made at start with rcgen: one CA that signs the API server's
//! serving certificate and every client identity (admin, kubelet client, virtual kubelet nodes).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// A CA and the directory its files go to.
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// PEM of the CA certificate.
    pub ca_pem: String,
    /// Path of the CA certificate file.
    pub ca_path: PathBuf,
}

/// A certificate and key written to disk.
pub struct Pair {
    /// Certificate file (PEM).
    pub cert: PathBuf,
    /// Key file (PEM, PKCS#8).
    pub key: PathBuf,
}

impl Pki {
    /// Makes a new CA in `dir`.
    ///
    /// # Errors
    /// Key generation or file writes failing.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("vk-local-stack-ca", None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let ca_pem = ca.pem();
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, &ca_pem)?;
        std::fs::write(dir.join("ca.key"), ca.key().serialize_pem())?;
        Ok(Self { dir: dir.to_owned(), ca, ca_pem, ca_path })
    }

    /// A serving certificate for `sans` (DNS names or IP addresses), written as `<name>.crt/.key`.
    ///
    /// # Errors
    /// Signing or writing failing.
    pub fn server(&self, name: &str, sans: &[&str]) -> anyhow::Result<Pair> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*s).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.distinguished_name = dn(name, None);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.write(name, params)
    }

    /// A client certificate for user `cn` in `groups` (the API server reads CN as the user and O as
    /// groups), written as `<file>.crt/.key`.
    ///
    /// # Errors
    /// Signing or writing failing.
    pub fn client(&self, file: &str, cn: &str, groups: &[&str]) -> anyhow::Result<Pair> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.write(file, params)
    }

    /// A bare key pair (the service-account signing key), written as `<name>.key` (PKCS#8) and
    /// `<name>.pub` (the public key, which is what `--service-account-key-file` reads).
    ///
    /// # Errors
    /// Generation or writing failing.
    pub fn key(&self, name: &str) -> anyhow::Result<Pair> {
        let pair = Pair {
            cert: self.dir.join(format!("{name}.pub")),
            key: self.dir.join(format!("{name}.key")),
        };
        let key = KeyPair::generate()?;
        std::fs::write(&pair.key, key.serialize_pem())?;
        std::fs::write(&pair.cert, key.public_key_pem())?;
        Ok(pair)
    }

    fn write(&self, name: &str, mut params: CertificateParams) -> anyhow::Result<Pair> {
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca).with_context(|| format!("signing {name}"))?;
        let pair = Pair {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&pair.cert, cert.pem())?;
        std::fs::write(&pair.key, key.serialize_pem())?;
        Ok(pair)
    }
}

fn dn(cn: &str, o: Option<&str>) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    if let Some(o) = o {
        d.push(DnType::OrganizationName, o);
    }
    d
}
