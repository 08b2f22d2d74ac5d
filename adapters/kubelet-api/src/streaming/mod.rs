//! The streaming routes, `/exec`, `/attach` and `/portForward`: the HTTP upgrade to SPDY/3.1 or
//! WebSocket (`pkg/kubelet/server/server.go`, `httpstream.Handshake`, `wsstream`), then a session
//! between the transport and the provider.
//!
//! - `handshake`: the transport asked for, the protocol agreed, the 101 answer.
//! - `session`: the upgraded connection as one `Session` whatever the transport, which serves
//!   exec/attach or port-forward; the routes here have one body for both transports.

// Handlers answer errors with the HTTP response itself (axum's idiom); boxing it buys nothing.
#![allow(clippy::result_large_err)]

mod handshake;
mod session;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use vk_ports::AccessReview;

use self::handshake::{Handshake, Transport};
use self::session::Session;
use crate::Backend;
use crate::limits::Limits;
use crate::remotecommand::{Expect, Outcome};
use crate::server::{Kubelet, Open, PodIndex, plain, query_pairs, streaming_method};
use crate::ws::{self, Kind};

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

/// Answers the upgrade `handshake` agreed on (the 101, or the error answer) and, once the
/// connection is upgraded, runs `serve` on its [`Session`] as a task of the server's `open`
/// sessions.
fn upgrade<F, Fut>(
    open: &Open,
    handshake: Handshake,
    config: WebSocketConfig,
    mut req: Request,
    serve: F,
) -> Response
where
    F: FnOnce(Session) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let response = match handshake.switching(req.headers()) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let upgrade = hyper::upgrade::on(&mut req);
    open.session(async move {
        if let Some(session) = Session::open(handshake, upgrade, config).await {
            serve(session).await;
        }
    });
    response
}

/// Exec or attach, one body whatever the transport: checks the request as the kubelet does (a
/// command for exec, at least one of stdin, stdout and stderr, a known container of a created
/// pod), agrees on the transport and protocol, and once upgraded runs the command on the
/// session's streams, ending it with the Status of its outcome.
fn remote_command<P: Backend, A: AccessReview, I: PodIndex>(
    k: Arc<Kubelet<P, A, I>>,
    what: Command,
    path: &ContainerPath,
    query: Option<&str>,
    req: Request,
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
    let handshake = match handshake::transport(req.headers())
        .and_then(|t| t.negotiate(req.headers(), Kind::RemoteCommand))
    {
        Ok(h) => h,
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
    upgrade(&open, handshake, ws_config, req, move |session| async move {
        if let Some((io, finisher)) = session.remote_command(expect).await {
            let outcome = run(io).await;
            finisher.finish(&outcome).await;
        }
    })
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

/// Port-forward, one body whatever the transport: checks the pod (and, over WebSocket, the
/// query's ports), agrees on the transport and protocol, and once upgraded forwards the ports the
/// client asks for through the backend's `dial`.
fn forward<P: Backend, A: AccessReview, I: PodIndex>(
    k: Arc<Kubelet<P, A, I>>,
    ns: &str,
    pod: &str,
    query: Option<&str>,
    req: Request,
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
    let transport = match handshake::transport(req.headers()) {
        Ok(t) => t,
        Err(r) => return r,
    };
    // WebSocket clients name the ports in the query (portforward `websocket.go`), before the
    // subprotocol is agreed; SPDY clients name one in each stream's headers.
    let ports = match transport {
        Transport::WebSocket => {
            let pairs = query_pairs(query);
            match ws::ports_from_query(pairs.iter().map(|(a, b)| (a.as_str(), b.as_str()))) {
                Ok(p) => p,
                Err(e) => return plain(StatusCode::BAD_REQUEST, e),
            }
        }
        Transport::Spdy => Vec::new(),
    };
    let handshake = match transport.negotiate(req.headers(), Kind::PortForward) {
        Ok(h) => h,
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
    upgrade(&k.open, handshake, ws_config, req, move |session| {
        session.forward(ports, max_streams, dial)
    })
}
