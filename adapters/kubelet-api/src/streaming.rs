//! The streaming routes, `/exec`, `/attach` and `/portForward`: the HTTP upgrade to SPDY/3.1 or
//! WebSocket (`pkg/kubelet/server/server.go`, `httpstream.Handshake`, `wsstream`), then a session
//! between the transport and the provider.

// Handlers answer errors with the HTTP response itself (axum's idiom); boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::{debug, warn};
use vk_ports::AccessReview;

use crate::Backend;

use super::limits::Limits;
use super::remotecommand::{Expect, Outcome, Version};
use super::server::{Kubelet, PodIndex, plain, query_pairs, streaming_method};
use super::{spdy, wsstream};

/// `vk_kubelet_open_streams{kind}`: exec, attach, port-forward and log streams open now.
pub const OPEN_STREAMS: &str = "vk_kubelet_open_streams";

/// Counts one open stream of `kind` in [`OPEN_STREAMS`] while it lives.
pub(crate) struct OpenStream(&'static str);

impl OpenStream {
    pub(crate) fn new(kind: &'static str) -> Self {
        metrics::gauge!(OPEN_STREAMS, "kind" => kind).increment(1.0);
        Self(kind)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(OPEN_STREAMS, "kind" => self.0).decrement(1.0);
    }
}

/// How long a SPDY client has to open its streams (the kubelet's `streamCreationTimeout`).
const STREAM_CREATION: Duration = Duration::from_secs(30);

/// Remote-command versions served over SPDY, in the server's order of preference
/// (the kubelet's `SupportedStreamingProtocols`; v5 is WebSocket-only).
const SPDY_VERSIONS: [Version; 4] = [Version::V4, Version::V3, Version::V2, Version::V1];

/// The port-forward protocol over SPDY.
const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

enum Transport {
    Spdy,
    WebSocket,
}

fn transport(headers: &HeaderMap) -> Option<Transport> {
    let upgrade = headers.get(header::UPGRADE)?.to_str().ok()?.to_ascii_lowercase();
    if upgrade.contains("spdy/3.1") {
        Some(Transport::Spdy)
    } else if upgrade.contains("websocket") {
        Some(Transport::WebSocket)
    } else {
        None
    }
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

/// The SPDY handshake (`httpstream.Handshake`): the first of `supported` the client offers in
/// `X-Stream-Protocol-Version`; no header at all means the oldest protocol (`None` here, v1).
fn spdy_protocol<'a>(
    headers: &HeaderMap,
    supported: &[&'a str],
) -> Result<Option<&'a str>, Response> {
    let offered = header_values(headers, "X-Stream-Protocol-Version");
    if offered.is_empty() {
        return Ok(None);
    }
    supported.iter().find(|s| offered.contains(s)).map(|s| Some(*s)).ok_or_else(|| {
        plain(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"
            ),
        )
    })
}

fn switching(upgrade: &'static str) -> Response {
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    r.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(upgrade));
    r
}

fn spdy_switching(protocol: Option<&str>) -> Response {
    let mut r = switching("SPDY/3.1");
    if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        r.headers_mut().insert("X-Stream-Protocol-Version", p);
    }
    r
}

fn ws_switching(headers: &HeaderMap, protocol: Option<&str>) -> Result<Response, Response> {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"))?;
    let mut r = switching("websocket");
    let accept = derive_accept_key(key.as_bytes());
    if let Ok(v) = HeaderValue::from_str(&accept) {
        r.headers_mut().insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        r.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    Ok(r)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Command {
    Exec,
    Attach,
}

/// The path of `/exec` and `/attach`: `{ns}/{pod}/{container}` or `{ns}/{pod}/{uid}/{container}`.
/// The UID is taken and not compared, as the kubelet does: it finds the pod by namespace and name
/// (`kubecontainer.Pods.FindPod` looks by full name whenever there is one).
#[derive(serde::Deserialize)]
pub(crate) struct ContainerPath {
    ns: String,
    pod: String,
    container: String,
}

/// The path of `/portForward`: `{ns}/{pod}` or `{ns}/{pod}/{uid}` (the UID as in
/// [`ContainerPath`]).
#[derive(serde::Deserialize)]
pub(crate) struct PodPath {
    ns: String,
    pod: String,
}

/// `GET|POST /exec/{ns}/{pod}[/{uid}]/{container}`.
pub(crate) async fn exec<P: Backend, A: AccessReview, I: PodIndex>(
    State(k): State<Arc<Kubelet<P, A, I>>>,
    Path(path): Path<ContainerPath>,
    RawQuery(q): RawQuery,
    req: Request,
) -> Response {
    remote_command(k, Command::Exec, &path, q.as_deref(), req)
}

/// `GET|POST /attach/{ns}/{pod}[/{uid}]/{container}`.
pub(crate) async fn attach<P: Backend, A: AccessReview, I: PodIndex>(
    State(k): State<Arc<Kubelet<P, A, I>>>,
    Path(path): Path<ContainerPath>,
    RawQuery(q): RawQuery,
    req: Request,
) -> Response {
    remote_command(k, Command::Attach, &path, q.as_deref(), req)
}

/// The WebSocket limits of a session: messages and frames of at most
/// [`Limits::max_websocket_message_bytes`] (tungstenite's defaults are 64 MiB and 16 MiB).
fn ws_config(limits: &Limits) -> WebSocketConfig {
    let max = limits.max_websocket_message_bytes.max(4096);
    WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max))
}

fn remote_command<P: Backend, A: AccessReview, I: PodIndex>(
    k: Arc<Kubelet<P, A, I>>,
    what: Command,
    path: &ContainerPath,
    query: Option<&str>,
    mut req: Request,
) -> Response {
    let ContainerPath { ns, pod, container } = path;
    if !streaming_method(req.method()) {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST");
    }
    let ws_config = ws_config(k.limits());
    let pairs = query_pairs(query);
    let expect = Expect::from_query(pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    let command: Vec<String> =
        pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
    if what == Command::Exec && command.is_empty() {
        return plain(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container",
        );
    }
    if !(expect.stdin || expect.stdout || expect.stderr) {
        return plain(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr",
        );
    }
    let id = match k.workload(ns, pod, Some(container)) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let container = container.to_owned();
    let open = k.open.clone();
    let kind = if what == Command::Exec { "exec" } else { "attach" };
    let run = move |io: vk_ports::ExecIo| async move {
        let _open = OpenStream::new(kind);
        match what {
            Command::Exec => match k.provider.exec_stream(&id, &container, &command, io).await {
                Ok(code) => Outcome::Exited(code),
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Command::Attach => match k.provider.attach(&id, &container, io).await {
                Ok(()) => Outcome::Exited(0),
                Err(e) => Outcome::Failed(e.to_string()),
            },
        }
    };
    match transport(req.headers()) {
        Some(Transport::Spdy) => {
            let names: Vec<&str> = SPDY_VERSIONS.iter().map(|v| v.name()).collect();
            let chosen = match spdy_protocol(req.headers(), &names) {
                Ok(p) => p,
                Err(r) => return r,
            };
            let version = chosen.and_then(Version::from_name).unwrap_or(Version::V1);
            let upgrade = hyper::upgrade::on(&mut req);
            open.session(async move {
                let io = match upgrade.await {
                    Ok(u) => TokioIo::new(u),
                    Err(e) => return warn!(error = %e, "SPDY upgrade failed"),
                };
                match spdy::serve_remotecommand(io, version, expect, STREAM_CREATION).await {
                    Ok((exec_io, finisher)) => {
                        let outcome = run(exec_io).await;
                        if let Err(e) = finisher.finish(&outcome).await {
                            debug!(error = %e, "ending the SPDY session");
                        }
                    }
                    Err(e) => debug!(error = %e, "SPDY streams not set up"),
                }
            });
            spdy_switching(chosen)
        }
        Some(Transport::WebSocket) => {
            let offered = header_values(req.headers(), "Sec-WebSocket-Protocol");
            let Some(protocol) = wsstream::negotiate(&offered, wsstream::Kind::RemoteCommand)
            else {
                return plain(
                    StatusCode::FORBIDDEN,
                    format!("no supported WebSocket subprotocol among {offered:?}"),
                );
            };
            let response = match ws_switching(req.headers(), protocol.name()) {
                Ok(r) => r,
                Err(r) => return r,
            };
            let upgrade = hyper::upgrade::on(&mut req);
            open.session(async move {
                let io = match upgrade.await {
                    Ok(u) => TokioIo::new(u),
                    Err(e) => return warn!(error = %e, "WebSocket upgrade failed"),
                };
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
                match wsstream::serve_remotecommand(ws, protocol, expect).await {
                    Ok((exec_io, finisher)) => {
                        let outcome = run(exec_io).await;
                        finisher.finish(&outcome).await;
                    }
                    Err(e) => debug!(error = %e, "WebSocket client gone before the session"),
                }
            });
            response
        }
        None => plain(StatusCode::BAD_REQUEST, "Upgrade request required"),
    }
}

/// `GET|POST /portForward/{ns}/{pod}[/{uid}]`.
pub(crate) async fn port_forward<P: Backend, A: AccessReview, I: PodIndex>(
    State(k): State<Arc<Kubelet<P, A, I>>>,
    Path(PodPath { ns, pod }): Path<PodPath>,
    RawQuery(q): RawQuery,
    req: Request,
) -> Response {
    forward(k, &ns, &pod, q.as_deref(), req)
}

fn forward<P: Backend, A: AccessReview, I: PodIndex>(
    k: Arc<Kubelet<P, A, I>>,
    ns: &str,
    pod: &str,
    query: Option<&str>,
    mut req: Request,
) -> Response {
    if !streaming_method(req.method()) {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST");
    }
    let ws_config = ws_config(k.limits());
    let max_streams = k.limits().max_spdy_streams;
    let id = match k.workload(ns, pod, None) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let dial = {
        let k = Arc::clone(&k);
        move |port: u16| {
            let k = Arc::clone(&k);
            let id = id.clone();
            async move { k.provider.dial(&id, port).await }
        }
    };
    match transport(req.headers()) {
        Some(Transport::Spdy) => {
            let chosen = match spdy_protocol(req.headers(), &[PORT_FORWARD_PROTOCOL]) {
                Ok(p) => p,
                Err(r) => return r,
            };
            let upgrade = hyper::upgrade::on(&mut req);
            k.open.session(async move {
                let io = match upgrade.await {
                    Ok(u) => TokioIo::new(u),
                    Err(e) => return warn!(error = %e, "SPDY upgrade failed"),
                };
                let _open = OpenStream::new("portforward");
                if let Err(e) = spdy::serve_portforward(io, dial, max_streams).await {
                    debug!(error = %e, "port-forward session ended");
                }
            });
            spdy_switching(Some(chosen.unwrap_or(PORT_FORWARD_PROTOCOL)))
        }
        Some(Transport::WebSocket) => {
            let pairs = query_pairs(query);
            let ports = match wsstream::ports_from_query(
                pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())),
            ) {
                Ok(p) => p,
                Err(e) => return plain(StatusCode::BAD_REQUEST, e),
            };
            let offered = header_values(req.headers(), "Sec-WebSocket-Protocol");
            let Some(protocol) = wsstream::negotiate(&offered, wsstream::Kind::PortForward) else {
                return plain(
                    StatusCode::FORBIDDEN,
                    format!("no supported WebSocket subprotocol among {offered:?}"),
                );
            };
            let response = match ws_switching(req.headers(), protocol.name()) {
                Ok(r) => r,
                Err(r) => return r,
            };
            let upgrade = hyper::upgrade::on(&mut req);
            k.open.session(async move {
                let io = match upgrade.await {
                    Ok(u) => TokioIo::new(u),
                    Err(e) => return warn!(error = %e, "WebSocket upgrade failed"),
                };
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
                let _open = OpenStream::new("portforward");
                wsstream::serve_portforward(ws, protocol, ports, dial).await;
            });
            response
        }
        None => plain(StatusCode::BAD_REQUEST, "Upgrade request required"),
    }
}
