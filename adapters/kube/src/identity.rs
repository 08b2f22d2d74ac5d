//! The node's own certificates, as the kubelet gets and keeps them: the client certificate by
//! TLS bootstrap (`--bootstrap-kubeconfig`, kept in `--cert-dir`, rotated before it expires) and,
//! with `--rotate-server-certificates`, the kubelet port's serving certificate signed by the
//! cluster (`serverTLSBootstrap`). The requests themselves are
//! [`crate::certificates`]; [`crate::connect`] uses [`client_certificate`] and
//! [`crate::connect::CertificateRequests`] runs [`keep_renewed`].

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::certificates::{self, CertError, Identity, Issued, Kind};

/// How long the first client certificate may take to be signed (kube-controller-manager
/// approves and signs a bootstrap CSR within seconds; an operator approving by hand may not).
const FIRST_WAIT: Duration = Duration::from_secs(15 * 60);

/// How long a renewal or a serving certificate may wait for its signature before it is asked
/// for again.
const RENEW_WAIT: Duration = Duration::from_secs(60 * 60);

/// A certificate in `--cert-dir` is used at start only with at least this much life left.
const MIN_LIFE: Duration = Duration::from_secs(5 * 60);

/// Why the node has no client certificate after TLS bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The CertificateSigningRequest was refused, denied or not signed within 15 minutes.
    #[error("TLS bootstrap: the node's client certificate")]
    Request(#[source] CertError),
    /// The signed certificate could not be written to the certificate directory.
    #[error("storing the client certificate")]
    Store(#[source] CertError),
    /// The certificate or its key cannot be used.
    #[error(transparent)]
    Unusable(CertError),
}

/// The node's client certificate: the one in `dir` when it names `node` and has life left, else
/// a new one asked for with `bootstrap` (the bootstrap token's client) and stored in `dir`.
///
/// # Errors
/// [`BootstrapError`]: the request refused, denied or not signed within 15 minutes, or `dir`
/// not writable.
pub async fn client_certificate(
    bootstrap: &kube::Client,
    node: &str,
    dir: &Path,
) -> Result<Arc<Identity>, BootstrapError> {
    let name = format!("system:node:{node}");
    let kept = certificates::load(dir, Kind::Client)
        .filter(|c| c.common_name == name && c.valid_for(MIN_LIFE));
    let issued = match kept {
        Some(c) => {
            info!(dir = %dir.display(), not_after = ?c.not_after, "using the node's client certificate");
            c
        }
        None => {
            info!(node, "no usable client certificate in --cert-dir: bootstrapping one");
            let c = certificates::request(bootstrap, Kind::Client, node, &[], &[], FIRST_WAIT)
                .await
                .map_err(BootstrapError::Request)?;
            certificates::store(dir, Kind::Client, &c).map_err(BootstrapError::Store)?;
            c
        }
    };
    Identity::new(issued).map_err(BootstrapError::Unusable)
}

/// Keeps `identity` (a certificate of `kind`) renewed until `cancel`: at 70 to 90 % of its life
/// (or at once, for a serving certificate that is not yet the cluster's) asks `client` for a new
/// one, stores it in `dir` and swaps it in; a failure is retried a minute later.
pub async fn keep_renewed(
    client: kube::Client,
    identity: Arc<Identity>,
    kind: Kind,
    node: String,
    ips: Vec<IpAddr>,
    dir: std::path::PathBuf,
    cancel: CancellationToken,
) {
    loop {
        let current = identity.issued();
        let due = if kind == Kind::Serving && !is_cluster_signed(&identity) {
            SystemTime::now()
        } else {
            certificates::renew_at(&current)
        };
        let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let names = [node.clone()];
        let asked = certificates::request(&client, kind, &node, &names, &ips, RENEW_WAIT);
        let issued: Result<Issued, CertError> = tokio::select! {
            () = cancel.cancelled() => return,
            r = asked => r,
        };
        let stored = issued.and_then(|c| {
            certificates::store(&dir, kind, &c)?;
            identity.set(c.clone())?;
            Ok(c)
        });
        match stored {
            Ok(c) => info!(kind = kind.prefix(), not_after = ?c.not_after, "certificate renewed"),
            Err(e) => {
                // The next turn's deadline has passed: it asks again after this pause.
                warn!(
                    kind = kind.prefix(),
                    error = %e,
                    "certificate renewal failed; retrying in a minute"
                );
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            }
        }
    }
}

/// Whether the serving certificate in use came from the cluster (a self-signed one names
/// `<node>@virtual-kubelet`, the kubelet's style).
fn is_cluster_signed(identity: &Identity) -> bool {
    identity.issued().common_name.starts_with("system:node:")
}

/// The serving certificate to start with: the cluster's from `dir` when it has life left, else
/// `fallback` (self-signed) until the cluster signs one.
///
/// # Errors
/// [`CertError::Crypto`]: `fallback` unusable.
pub fn serving_certificate(dir: &Path, fallback: Issued) -> Result<Arc<Identity>, CertError> {
    let kept = certificates::load(dir, Kind::Serving).filter(|c| c.valid_for(MIN_LIFE));
    Identity::new(kept.unwrap_or(fallback))
}
