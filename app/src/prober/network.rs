//! The network half of probes, `tcpSocket` and `httpGet`, as the kubelet runs them
//! (`pkg/probe/tcp`, `pkg/probe/http`), over connections the backend makes: the pod's own ports
//! are reached through [`PodNetwork::dial`], which knows where the pod's network is and how its
//! ports are mapped, so the application holds no HTTP client and no port mapping. A `host` other
//! than the pod's, which the operator's policy allows, is dialled here at the addresses it
//! resolves to that a probe may reach.
//!
//! HTTP is HTTP/1.1 (hyper's client connection) with the kubelet's request: `User-Agent:
//! kube-probe/<minor>` and `Accept: */*` unless the probe's headers say otherwise, a `Host`
//! header from the probe's headers or the URL, no keep-alive. `https` is TLS without
//! certificate verification, as the kubelet's probes do it (`InsecureSkipVerify`). Redirects are
//! followed to the same host name only, 10 requests at most (`probe/http.RedirectChecker` with
//! `followNonLocalRedirects` false); the answer of a redirect elsewhere is what the probe got.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::Request;
use hyper::header::{ACCEPT, CONNECTION, HOST, LOCATION, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use vk_domain::runtime::WorkloadId;
use vk_ports::{Duplex, PodNetwork};

/// The most of a response body a probe reads (the kubelet's `maxRespBodyLength`, 10 KiB).
const MAX_BODY: usize = 10 << 10;

/// The most requests of one HTTP probe: the first and 9 redirects (the kubelet's 10).
const MAX_REQUESTS: usize = 10;

/// The `User-Agent` of probes: `kube-probe/<major>.<minor>` of the Kubernetes version served.
pub(super) const USER_AGENT_VALUE: &str = "kube-probe/1.36";

/// The `User-Agent` of lifecycle hooks (`httpprobe.NewRequestForHTTPGetAction(.., "lifecycle")`).
pub(super) const HOOK_USER_AGENT: &str = "kube-lifecycle/1.36";

/// Where a probe connects: the pod (workload `id`, reached through the backend, with `ip`, its
/// address as `status.podIP` shows it, for messages and for telling a `host` that is the pod
/// apart) or a host the policy allows.
pub(super) struct Endpoint<'a, P> {
    /// The backend.
    pub provider: &'a P,
    /// The pod's workload.
    pub id: &'a WorkloadId,
    /// The pod's address, once it has one.
    pub pod_ip: Option<&'a str>,
    /// The `User-Agent` sent unless the request's headers give one.
    pub agent: &'static str,
}

/// What an HTTP probe got: the status code and the first [`MAX_BODY`] bytes of the body.
#[derive(Debug)]
pub(super) struct Answer {
    /// The status code of the last answer.
    pub code: u16,
    /// Its body (lossy UTF-8), at most [`MAX_BODY`] bytes of it.
    pub body: String,
}

impl<P: PodNetwork> Endpoint<'_, P> {
    /// Whether `host` (as a probe names it) is the pod itself: no host, or the pod's address.
    pub(super) fn is_pod(&self, host: Option<&str>) -> bool {
        host.is_none_or(|h| Some(h) == self.pod_ip)
    }

    /// `host:port` as the probe's messages and `Host` header show it (`[v6]:port` for IPv6):
    /// the pod's address for the pod.
    pub(super) fn authority(&self, host: Option<&str>, port: u16) -> String {
        let h = host.or(self.pod_ip).unwrap_or("");
        if h.contains(':') { format!("[{h}]:{port}") } else { format!("{h}:{port}") }
    }

    /// A connection to `port` of the pod (`host` none or the pod's address) or of `host`.
    ///
    /// # Errors
    /// Why not, as the probe's output says it (`dial tcp <host:port>: <why>`).
    pub(super) async fn connect(&self, host: Option<&str>, port: u16) -> Result<Duplex, String> {
        let at = self.authority(host, port);
        if self.is_pod(host) {
            if self.pod_ip.is_none() {
                return Err("the pod has no IP address yet".to_owned());
            }
            return self
                .provider
                .dial(self.id, port)
                .await
                .map_err(|e| format!("dial tcp {at}: {e}"));
        }
        let h = host.unwrap_or_default();
        let targets = match h.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                allowed_addresses(h, port).await.map_err(|e| format!("dial tcp {at}: {e}"))?
            }
        };
        match tokio::net::TcpStream::connect(&targets[..]).await {
            Ok(sock) => Ok(Box::new(sock)),
            Err(e) => Err(format!("dial tcp {at}: {e}")),
        }
    }

    /// An HTTP GET of `path` at `port` of the pod or `host` (`https` for TLS), following
    /// same-host redirects. `headers` are the probe's `httpHeaders` (name, value).
    ///
    /// # Errors
    /// Why no answer came, without the `Get "<url>": ` the caller puts before it.
    pub(super) async fn get(
        &self,
        https: bool,
        host: Option<&str>,
        port: u16,
        path: &str,
        headers: &[(String, String)],
    ) -> Result<Answer, String> {
        let mut at = Target { https, port, path: path.to_owned() };
        for _ in 0..MAX_REQUESTS {
            let conn = self.connect(host, at.port).await?;
            let (code, location, body) = self.request(conn, host, &at, headers).await?;
            let Some(next) = location.filter(|_| (300..400).contains(&code)) else {
                return Ok(Answer { code, body });
            };
            match redirect(&at, &next, host.or(self.pod_ip).unwrap_or("")) {
                Some(next) => at = next,
                // Another host: not followed, the 3xx is the answer.
                None => return Ok(Answer { code, body }),
            }
        }
        Err(format!("stopped after {MAX_REQUESTS} redirects"))
    }

    /// One request on `conn`: the status code, the `Location` header and the body's start.
    async fn request(
        &self,
        conn: Duplex,
        host: Option<&str>,
        at: &Target,
        headers: &[(String, String)],
    ) -> Result<(u16, Option<String>, String), String> {
        let authority = self.authority(host, at.port);
        let mut req = Request::get(if at.path.is_empty() { "/" } else { at.path.as_str() });
        let mut own_host = None;
        for (k, v) in headers {
            if k.eq_ignore_ascii_case("host") {
                own_host = Some(v.clone());
            } else {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let given = |name: &hyper::header::HeaderName| {
            req.headers_ref().is_some_and(|h| h.contains_key(name))
        };
        let (agent, accept) = (!given(&USER_AGENT), !given(&ACCEPT));
        if agent {
            req = req.header(USER_AGENT, self.agent);
        }
        if accept {
            req = req.header(ACCEPT, "*/*");
        }
        let req = req
            .header(HOST, own_host.unwrap_or(authority))
            .header(CONNECTION, "close")
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let conn =
            if at.https { tls(conn, host.or(self.pod_ip).unwrap_or("")).await? } else { conn };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(connection);
        let answer = sender.send_request(req).await.map_err(|e| e.to_string());
        let result = match answer {
            Ok(resp) => {
                let code = resp.status().as_u16();
                let location =
                    resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let body = read_body(resp.into_body()).await?;
                Ok((code, location, body))
            }
            Err(e) => Err(e),
        };
        driver.abort();
        result
    }
}

/// The first [`MAX_BODY`] bytes of `body`, as lossy UTF-8.
async fn read_body(mut body: hyper::body::Incoming) -> Result<String, String> {
    let mut out = Vec::new();
    while out.len() < MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    out.extend_from_slice(data);
                }
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    out.truncate(MAX_BODY);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// What one request of an HTTP probe asks for: TLS or not, the port and the path with its query.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    https: bool,
    port: u16,
    path: String,
}

/// Where redirect `location`, answered to a request for `at` on `host`, leads when it stays on
/// that host (the kubelet compares host names only, not schemes or ports): a relative location
/// keeps the scheme and port; an absolute one takes its own, the scheme's default port when it
/// names none. `None` for another host or a scheme other than `http`/`https`.
fn redirect(at: &Target, location: &str, host: &str) -> Option<Target> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(Target { path: location.to_owned(), ..at.clone() });
    }
    let (https, rest) = match location.split_once("://")? {
        (s, rest) if s.eq_ignore_ascii_case("http") => (false, rest),
        (s, rest) if s.eq_ignore_ascii_case("https") => (true, rest),
        _ => return None,
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (h, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
            (h, p.parse().ok()?)
        }
        _ => (authority, if https { 443 } else { 80 }),
    };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
    h.eq_ignore_ascii_case(host).then_some(Target { https, port, path })
}

/// `conn` with TLS, the server's certificate not verified (the kubelet's probes do not verify
/// it); `host` is the server name sent when it is a DNS name.
async fn tls(conn: Duplex, host: &str) -> Result<Duplex, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    let config = CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Box::new(stream))
}

/// A certificate verifier that accepts any certificate but still checks the handshake's
/// signatures with the crypto provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The addresses `host` resolves to that a probe may dial (never loopback, link-local,
/// unspecified or multicast: [`vk_domain::policy::never_dialled`]).
///
/// # Errors
/// The lookup failed, or left no such address.
async fn allowed_addresses(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let ok: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| e.to_string())?
        .filter(|a| !vk_domain::policy::never_dialled(a.ip()))
        .collect();
    if ok.is_empty() {
        return Err(format!("{host} resolves to no address a probe may dial"));
    }
    Ok(ok)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use vk_ports::ProviderError;

    use super::*;

    /// A backend whose every pod port is `port` on 127.0.0.1, whatever port is asked: the
    /// mapping is the backend's; the ports asked are recorded.
    struct Mapped {
        port: u16,
        asked: Mutex<Vec<u16>>,
    }

    impl PodNetwork for Mapped {
        async fn dial(&self, _: &WorkloadId, port: u16) -> Result<Duplex, ProviderError> {
            self.asked.lock().unwrap().push(port);
            let sock = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
            Ok(Box::new(sock))
        }
    }

    /// An HTTPS server with a self-signed certificate for "nowhere.invalid" that answers each
    /// request with 200 and the request head it read as the body.
    async fn https_echo() -> u16 {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert = rcgen::generate_simple_self_signed(vec!["nowhere.invalid".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(sock).await else { return };
                    let mut buf = vec![0u8; 4096];
                    let n = tls.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                        head.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        port
    }

    /// `https` probes speak TLS to the pod through the backend's dial (certificate not
    /// verified, as the kubelet's), asking for the container port, with the kubelet's headers:
    /// the pod's address and container port as `Host`, `kube-probe/1.36`, `*/*`, no keep-alive,
    /// and the probe's own headers besides (a `User-Agent` of its own replaces the default).
    #[tokio::test]
    async fn https_probes_go_through_the_backends_dial_with_the_kubelets_request() {
        let backend = Mapped { port: https_echo().await, asked: Mutex::new(Vec::new()) };
        let id = WorkloadId::from("w");
        let to = Endpoint {
            provider: &backend,
            id: &id,
            pod_ip: Some("10.1.2.3"),
            agent: USER_AGENT_VALUE,
        };
        let headers = [("X-Probe".to_owned(), "yes".to_owned())];
        let a = to.get(true, None, 8443, "/healthz?full=1", &headers).await.unwrap();
        assert_eq!(a.code, 200);
        let head = a.body.to_ascii_lowercase();
        for want in [
            "get /healthz?full=1 http/1.1\r\n",
            "host: 10.1.2.3:8443\r\n",
            "user-agent: kube-probe/1.36\r\n",
            "accept: */*\r\n",
            "connection: close\r\n",
            "x-probe: yes\r\n",
        ] {
            assert!(head.contains(want), "{want:?} not in {head:?}");
        }
        assert_eq!(*backend.asked.lock().unwrap(), [8443]);
        let own = [("User-Agent".to_owned(), "mine".to_owned())];
        let a = to.get(true, None, 8443, "/", &own).await.unwrap();
        assert!(a.body.contains("user-agent: mine\r\n") || a.body.contains("User-Agent: mine\r\n"));
        assert!(!a.body.to_ascii_lowercase().contains("kube-probe"), "{}", a.body);
    }

    #[test]
    fn redirects_stay_on_the_host_name_whatever_the_scheme_or_port() {
        let at = Target { https: false, port: 8080, path: "/healthz".into() };
        let to = |https, port, path: &str| Some(Target { https, port, path: path.into() });
        let same = |l: &str| redirect(&at, l, "10.0.0.7");
        assert_eq!(same("/ok?x=1"), to(false, 8080, "/ok?x=1"));
        assert_eq!(same("http://10.0.0.7:8081/ok"), to(false, 8081, "/ok"));
        assert_eq!(same("http://10.0.0.7"), to(false, 80, "/"));
        assert_eq!(same("http://10.0.0.7?q"), to(false, 80, "/?q"));
        assert_eq!(same("HTTPS://10.0.0.7/s"), to(true, 443, "/s"));
        assert_eq!(same("http://10.0.0.8/ok"), None);
        assert_eq!(same("//10.0.0.7/ok"), None);
        assert_eq!(same("ftp://10.0.0.7/ok"), None);
        assert_eq!(redirect(&at, "http://[fd00::1]:81/a", "fd00::1"), to(false, 81, "/a"));
        assert_eq!(redirect(&at, "http://LOCALHOST/a", "localhost"), to(false, 80, "/a"));
    }
}
