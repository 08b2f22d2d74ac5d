//! One streaming session whatever its transport: the upgraded connection as SPDY/3.1 ([`spdy`])
//! or a WebSocket ([`ws`]), and the two things a session does, exec/attach (with the
//! [`Finisher`] that writes its closing Status) and port-forward.

use std::future::Future;
use std::time::Duration;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::{debug, warn};
use vk_ports::{Duplex, ExecIo, ProviderError};

use super::OpenStream;
use super::handshake::Handshake;
use crate::remotecommand::{Expect, Outcome, Version};
use crate::{spdy, ws};

/// How long a SPDY client has to open its streams (the kubelet's `streamCreationTimeout`).
const STREAM_CREATION: Duration = Duration::from_secs(30);

/// An upgraded streaming connection and the protocol agreed in its [`Handshake`].
// One per session, made once inside the session's task and moved into what serves it: boxing
// the WebSocket would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Session {
    /// SPDY/3.1: the client opens one stream per channel (`X-Stream-Protocol-Version`, `None`
    /// when the client offered none).
    Spdy(TokioIo<Upgraded>, Option<&'static str>),
    /// WebSocket: every message carries its channel ([`ws::Protocol`]).
    WebSocket(WebSocketStream<TokioIo<Upgraded>>, ws::Protocol),
}

impl Session {
    /// Waits for the connection to be upgraded (after the 101 answer has gone) and opens the
    /// session `handshake` agreed on; a WebSocket's messages and frames are held to `config`.
    /// `None`, logged as a warning, when the upgrade fails.
    pub(super) async fn open(
        handshake: Handshake,
        upgrade: OnUpgrade,
        config: WebSocketConfig,
    ) -> Option<Self> {
        let upgraded = upgrade.await;
        match handshake {
            Handshake::Spdy(protocol) => match upgraded {
                Ok(u) => Some(Self::Spdy(TokioIo::new(u), protocol)),
                Err(e) => {
                    warn!(error = %e, "SPDY upgrade failed");
                    None
                }
            },
            Handshake::WebSocket(protocol) => match upgraded {
                Ok(u) => {
                    let io = TokioIo::new(u);
                    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                    Some(Self::WebSocket(ws, protocol))
                }
                Err(e) => {
                    warn!(error = %e, "WebSocket upgrade failed");
                    None
                }
            },
        }
    }

    /// Sets up the streams of an exec or attach session that `expect` names
    /// ([`spdy::serve_remotecommand`], waiting up to 30 s for the client's streams;
    /// [`ws::serve_remotecommand`]): the [`ExecIo`] to hand to the backend and the [`Finisher`]
    /// to end the session with. `None`, logged at debug, when the client did not open its
    /// streams in time or has gone.
    pub(super) async fn remote_command(self, expect: Expect) -> Option<(ExecIo, Finisher)> {
        match self {
            Self::Spdy(io, protocol) => {
                let version = protocol.and_then(Version::from_name).unwrap_or(Version::V1);
                match spdy::serve_remotecommand(io, version, expect, STREAM_CREATION).await {
                    Ok((io, finisher)) => Some((io, Finisher::Spdy(finisher))),
                    Err(e) => {
                        debug!(error = %e, "SPDY streams not set up");
                        None
                    }
                }
            }
            Self::WebSocket(ws, protocol) => {
                match ws::serve_remotecommand(ws, protocol, expect).await {
                    Ok((io, finisher)) => Some((io, Finisher::WebSocket(finisher))),
                    Err(e) => {
                        debug!(error = %e, "WebSocket client gone before the session");
                        None
                    }
                }
            }
        }
    }

    /// Forwards the pod's ports through `dial` until the session ends, counted as an open
    /// `portforward` stream. Over SPDY the client names a port in each stream's headers and
    /// opens at most `max_streams` streams at once ([`spdy::serve_portforward`]); over WebSocket
    /// the ports are `ports`, from the request's query ([`ws::serve_portforward`]).
    pub(super) async fn forward<F, Fut>(self, ports: Vec<u16>, max_streams: usize, dial: F)
    where
        F: Fn(u16) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Duplex, ProviderError>> + Send + 'static,
    {
        let _open = OpenStream::new("portforward");
        match self {
            Self::Spdy(io, _) => {
                if let Err(e) = spdy::serve_portforward(io, dial, max_streams).await {
                    debug!(error = %e, "port-forward session ended");
                }
            }
            Self::WebSocket(ws, protocol) => ws::serve_portforward(ws, protocol, ports, dial).await,
        }
    }
}

/// Ends an exec or attach session on its transport ([`spdy::Finisher`], [`ws::Finisher`]).
pub(super) enum Finisher {
    /// Over SPDY.
    Spdy(spdy::Finisher),
    /// Over WebSocket.
    WebSocket(ws::Finisher),
}

impl Finisher {
    /// Writes the Status `outcome` stands for, once the output has gone, and closes the session;
    /// a SPDY failure to do so is logged at debug.
    pub(super) async fn finish(self, outcome: &Outcome) {
        match self {
            Self::Spdy(finisher) => {
                if let Err(e) = finisher.finish(outcome).await {
                    debug!(error = %e, "ending the SPDY session");
                }
            }
            Self::WebSocket(finisher) => finisher.finish(outcome).await,
        }
    }
}
