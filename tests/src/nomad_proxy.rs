//! A TLS proxy in front of the stack's Nomad that asks for HTTP basic authentication, as an
//! operator's reverse proxy does (the reason for Nomad's `NOMAD_HTTP_AUTH` and, with a CA of its
//! own, `NOMAD_CACERT`/`NOMAD_CAPATH`): it counts the requests it let through and those it
//! refused with 401.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::Stack;

/// The most a request's line and headers may take.
const MAX_HEAD: usize = 64 * 1024;

/// A running proxy; stopped when dropped.
#[derive(Debug)]
pub struct NomadProxy {
    /// `https://127.0.0.1:<port>`, under a certificate the stack's CA signed for 127.0.0.1.
    pub url: String,
    /// Requests with the right credentials, forwarded to Nomad.
    pub authorized: Arc<AtomicUsize>,
    /// Requests refused with 401 (no or wrong credentials).
    pub refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NomadProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NomadProxy {
    /// Requests let through so far.
    pub fn authorized(&self) -> usize {
        self.authorized.load(Ordering::Relaxed)
    }

    /// Requests refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Stack {
    /// Starts a proxy to the stack's Nomad on a free loopback port, serving TLS with a
    /// certificate of the stack's CA ([`Stack::ca_path`]) and forwarding only requests whose
    /// `Authorization` is `Basic` with `credentials` (`user:password`). Each forwarded request
    /// goes on a connection of its own to Nomad (`Connection: close`, unless it upgrades to a
    /// WebSocket), so that every request of a kept-alive client connection is checked.
    ///
    /// # Errors
    /// The certificate cannot be made or the port bound.
    pub async fn nomad_tls_proxy(&self, credentials: &str) -> anyhow::Result<NomadProxy> {
        let (cert, key) = self.node_serving_certificate("nomad-proxy")?;
        let certs = CertificateDer::pem_file_iter(&cert)
            .context("proxy certificate")?
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&key).context("proxy key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}", listener.local_addr()?);
        let upstream = self
            .nomad_addr
            .strip_prefix("http://")
            .context("the stack's Nomad is not plain HTTP")?
            .to_owned();
        let expected = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes())
        );
        let (authorized, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let counts = (Arc::clone(&authorized), Arc::clone(&refused));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, upstream, expected) =
                    (acceptor.clone(), upstream.clone(), expected.clone());
                let counts = (Arc::clone(&counts.0), Arc::clone(&counts.1));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let _ = forward(tls, &upstream, &expected, counts).await;
                });
            }
        });
        Ok(NomadProxy { url, authorized, refused, task })
    }
}

/// Reads one request's head from `client`; answers 401 unless its `Authorization` is
/// `expected` (compared without case in the scheme); else sends it to `upstream` with
/// `Connection: close` (kept for an upgrade) and copies both ways until either side closes.
async fn forward(
    mut client: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    upstream: &str,
    expected: &str,
    (authorized, refused): (Arc<AtomicUsize>, Arc<AtomicUsize>),
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        anyhow::ensure!(buf.len() < MAX_HEAD, "request head too large");
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed before the head ended");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let ok = header("authorization").is_some_and(|v| {
        v.split_once(' ').is_some_and(|(scheme, rest)| {
            format!("{} {rest}", scheme.to_ascii_lowercase()) == expected
        })
    });
    if !ok {
        refused.fetch_add(1, Ordering::Relaxed);
        client
            .write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"nomad\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
        client.shutdown().await?;
        return Ok(());
    }
    authorized.fetch_add(1, Ordering::Relaxed);
    let upgrade = header("upgrade").is_some();
    let mut out = format!("{request_line}\r\n");
    for (k, v) in &headers {
        if k == "connection" && !upgrade {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !upgrade {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut nomad = tokio::net::TcpStream::connect(upstream).await?;
    nomad.write_all(out.as_bytes()).await?;
    nomad.write_all(&buf[head_end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut nomad).await?;
    Ok(())
}
