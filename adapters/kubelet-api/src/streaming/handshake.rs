//! The HTTP side of a streaming route's upgrade (`httpstream.Handshake` for SPDY, wsstream's
//! `handshake` for WebSocket): which transport the client asks for in `Upgrade`, the protocol both
//! sides will speak, and the `101 Switching Protocols` answer that carries it.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::remotecommand::Version;
use crate::server::plain;
use crate::ws::{self, Kind};

/// Remote-command versions served over SPDY, in the server's order of preference
/// (the kubelet's `SupportedStreamingProtocols`; v5 is WebSocket-only).
const SPDY_VERSIONS: [Version; 4] = [Version::V4, Version::V3, Version::V2, Version::V1];

/// The port-forward protocol over SPDY.
const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// The transport a streaming request asks for in its `Upgrade` header.
#[derive(Clone, Copy)]
pub(super) enum Transport {
    /// `SPDY/3.1`, what kube-apiserver sends.
    Spdy,
    /// `websocket`, from clients the API server passes through.
    WebSocket,
}

/// The transport of a streaming request, by its `Upgrade` header (case-insensitive).
///
/// # Errors
/// 400 `Upgrade request required` when it asks for neither SPDY/3.1 nor WebSocket.
pub(super) fn transport(headers: &HeaderMap) -> Result<Transport, Response> {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if upgrade.contains("spdy/3.1") {
        Ok(Transport::Spdy)
    } else if upgrade.contains("websocket") {
        Ok(Transport::WebSocket)
    } else {
        Err(plain(StatusCode::BAD_REQUEST, "Upgrade request required"))
    }
}

/// The protocol agreed with the client, before the 101 answer.
#[derive(Clone, Copy)]
pub(super) enum Handshake {
    /// SPDY/3.1 and the `X-Stream-Protocol-Version` agreed; `None` when the client offered none
    /// (remote command v1).
    Spdy(Option<&'static str>),
    /// WebSocket and the channel protocol agreed in `Sec-WebSocket-Protocol`.
    WebSocket(ws::Protocol),
}

impl Transport {
    /// Agrees on the protocol for `kind` with what the client offers in `headers`: over SPDY the
    /// first of the server's versions the client offers (port-forward has one,
    /// `portforward.k8s.io`, also answered when the client offered none); over WebSocket
    /// [`ws::negotiate`].
    ///
    /// # Errors
    /// 403 when the client offers protocols and none is one the server speaks.
    pub(super) fn negotiate(self, headers: &HeaderMap, kind: Kind) -> Result<Handshake, Response> {
        match (self, kind) {
            (Self::Spdy, Kind::RemoteCommand) => {
                let names: Vec<&'static str> = SPDY_VERSIONS.iter().map(|v| v.name()).collect();
                spdy_protocol(headers, &names).map(Handshake::Spdy)
            }
            (Self::Spdy, Kind::PortForward) => {
                let chosen = spdy_protocol(headers, &[PORT_FORWARD_PROTOCOL])?;
                Ok(Handshake::Spdy(Some(chosen.unwrap_or(PORT_FORWARD_PROTOCOL))))
            }
            (Self::WebSocket, kind) => {
                let offered = header_values(headers, "Sec-WebSocket-Protocol");
                ws::negotiate(&offered, kind).map(Handshake::WebSocket).ok_or_else(|| {
                    plain(
                        StatusCode::FORBIDDEN,
                        format!("no supported WebSocket subprotocol among {offered:?}"),
                    )
                })
            }
        }
    }
}

impl Handshake {
    /// The `101 Switching Protocols` answer: `Upgrade: SPDY/3.1` with the agreed
    /// `X-Stream-Protocol-Version`, or `Upgrade: websocket` with `Sec-WebSocket-Accept` and the
    /// agreed `Sec-WebSocket-Protocol` (none for the empty protocol).
    ///
    /// # Errors
    /// 400 for a WebSocket request without `Sec-WebSocket-Key`.
    pub(super) fn switching(self, headers: &HeaderMap) -> Result<Response, Response> {
        match self {
            Self::Spdy(protocol) => Ok(spdy_switching(protocol)),
            Self::WebSocket(protocol) => ws_switching(headers, protocol.name()),
        }
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
