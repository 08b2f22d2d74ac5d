//! The server side of Kubernetes' WebSocket channel protocols, for exec, attach and port-forward
//! requests the API server passes through unchanged (apimachinery
//! `pkg/util/httpstream/wsstream/conn.go`; kubelet `cri/streaming/remotecommand/websocket.go` and
//! `cri/streaming/portforward/websocket.go`).
//!
//! Every message carries one channel. Binary protocols (`channel.k8s.io`, `v4.channel.k8s.io`,
//! `v5.channel.k8s.io`, and no subprotocol at all) prefix the payload with the channel byte;
//! base64 protocols (`base64.channel.k8s.io`, `v4.base64.channel.k8s.io`) send a text message whose
//! first character is `'0' + channel`, followed by the payload in standard base64. v5 adds one
//! client message, `[0xFF, channel]`, that half-closes a channel (stdin).
//!
//! The HTTP side (the 101 answer with the negotiated `Sec-WebSocket-Protocol`) is the caller's:
//! it calls [`offered_protocols`] and [`negotiate`], answers, and hands the upgraded connection
//! over as a `WebSocketStream` (`WebSocketStream::from_raw_socket(io, Role::Server, None)`).
//! [`serve_remotecommand`] and [`serve_portforward`] then speak the channels; [`encode`] and
//! [`decode`] are the pure codec underneath.
//!
//! - `channel`: the channel numbers, the subprotocols and their negotiation, the message codec.
//! - `exec`: exec and attach ([`serve_remotecommand`], [`Finisher`]).
//! - `portforward`: port-forward ([`ports_from_query`], [`serve_portforward`]).

mod channel;
mod exec;
mod portforward;
#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub use channel::{
    DecodeError, Decoded, ERROR, Kind, Protocol, RESIZE, STDERR, STDIN, STDOUT, STREAM_CLOSE,
    decode, encode, fuzz_decode, negotiate, offered_protocols,
};
pub use exec::{Finisher, serve_remotecommand};
pub use portforward::{MAX_PORTS, ports_from_query, serve_portforward};

/// Messages buffered per direction and stream before a slow side slows the other down.
const BUFFER: usize = 16;
/// How long the end of a session waits for output still in flight, and then for the client to
/// answer the Close frame.
const GRACE: Duration = Duration::from_secs(5);

/// A Close frame with code 1000 (normal closure), which ends every session the server ends.
fn close_normal() -> Message {
    Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))
}
