//! The `channel.k8s.io` codecs (apimachinery `pkg/util/httpstream/wsstream/conn.go`): the channel
//! numbers, the subprotocols a client may offer for exec/attach and port-forward and how one is
//! picked, and the pure encoding and decoding of one message for binary, base64 and v5 protocols.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

use crate::remotecommand::Version;

/// Channel 0: the client's stdin.
pub const STDIN: u8 = 0;
/// Channel 1: the command's stdout.
pub const STDOUT: u8 = 1;
/// Channel 2: the command's stderr.
pub const STDERR: u8 = 2;
/// Channel 3: the error channel, always open; the session's Status goes there at the end.
pub const ERROR: u8 = 3;
/// Channel 4: terminal resize messages from the client (JSON `{"Width":..,"Height":..}`).
pub const RESIZE: u8 = 4;
/// The v5 channel byte that marks a stream-close message (`remotecommand.StreamClose`).
pub const STREAM_CLOSE: u8 = 0xFF;

/// What a WebSocket serves, which decides the subprotocols it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Exec and attach (remotecommand `websocket.go`).
    RemoteCommand,
    /// Port-forward (portforward `websocket.go`).
    PortForward,
}

/// A negotiated channel protocol: its name, the remote-command version it stands for, and its
/// encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol {
    name: &'static str,
    version: Version,
    base64: bool,
}

impl Protocol {
    /// The value of `Sec-WebSocket-Protocol` in the 101 answer, or `None` when the client offered
    /// no subprotocol (conn.go's `""` entry), in which case the answer carries no such header.
    pub fn name(self) -> Option<&'static str> {
        (!self.name.is_empty()).then_some(self.name)
    }

    /// The remote-command version: V1 for `channel.k8s.io`, `base64.channel.k8s.io` and the empty
    /// protocol (the error channel carries text), V4 for the `v4.` names (a JSON Status), V5 for
    /// `v5.channel.k8s.io`. Port-forward ignores it.
    pub fn version(self) -> Version {
        self.version
    }

    /// Whether messages are text, channel character then base64 (`base64.` names), rather than
    /// binary, channel byte then raw payload.
    pub fn is_base64(self) -> bool {
        self.base64
    }

    /// Whether the client may half-close a channel with `[0xFF, channel]` (v5).
    pub fn has_stream_close(self) -> bool {
        self.version >= Version::V5
    }
}

const fn proto(name: &'static str, version: Version, base64: bool) -> Protocol {
    Protocol { name, version, base64 }
}

/// What the client gets when it offers no subprotocol: binary, version 1.
pub(super) const NONE: Protocol = proto("", Version::V1, false);

/// Remote-command subprotocols: the kubelet's four (`websocket.go`) plus v5, which a kubelet
/// serves once it declares `ExtendWebSocketsToKubelet`. v2 and v3 exist only over SPDY.
const REMOTE_COMMAND: [Protocol; 5] = [
    proto("v5.channel.k8s.io", Version::V5, false),
    proto("v4.channel.k8s.io", Version::V4, false),
    proto("v4.base64.channel.k8s.io", Version::V4, true),
    proto("channel.k8s.io", Version::V1, false),
    proto("base64.channel.k8s.io", Version::V1, true),
];

/// Port-forward subprotocols, exactly the kubelet's (portforward `websocket.go`): the v4 pair.
/// `SPDY/3.1+portforward.k8s.io` (the tunnel) is SPDY's business, not this module's.
const PORT_FORWARD: [Protocol; 2] = [
    proto("v4.channel.k8s.io", Version::V4, false),
    proto("v4.base64.channel.k8s.io", Version::V4, true),
];

/// Splits the values of the client's `Sec-WebSocket-Protocol` header(s), in order: each value is
/// a comma-separated list; names are trimmed and empty ones dropped.
pub fn offered_protocols<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    values.into_iter().flat_map(|v| v.split(',')).map(str::trim).filter(|p| !p.is_empty()).collect()
}

/// Picks the protocol for `offered` (from [`offered_protocols`]) as conn.go's `handshake` does:
/// the first name in the client's order that `kind` supports, compared exactly. No name offered
/// means the empty protocol (binary, version 1, no `Sec-WebSocket-Protocol` in the answer).
/// `None` when names were offered but none is supported: refuse the upgrade (the kubelet's
/// `x/net/websocket` server answers 403).
pub fn negotiate(offered: &[&str], kind: Kind) -> Option<Protocol> {
    if offered.is_empty() {
        return Some(NONE);
    }
    let supported: &[Protocol] = match kind {
        Kind::RemoteCommand => &REMOTE_COMMAND,
        Kind::PortForward => &PORT_FORWARD,
    };
    offered.iter().find_map(|o| supported.iter().find(|p| p.name == *o).copied())
}

/// One message from the client, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Bytes for a channel (possibly none: a message holding only the channel).
    Data {
        /// The channel number.
        channel: u8,
        /// The payload, base64-decoded for base64 protocols.
        payload: Bytes,
    },
    /// v5: the client will send nothing more on this channel.
    Close {
        /// The channel closed.
        channel: u8,
    },
    /// An empty message, which conn.go skips.
    Empty,
}

/// Why a client message could not be decoded. conn.go logs these and goes on reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A base64 message whose first character is below `'0'`, so it names no channel.
    #[error("invalid channel character {0:#04x}")]
    BadChannel(u8),
    /// A base64 message whose payload is not standard padded base64.
    #[error("invalid base64 payload")]
    BadBase64,
    /// A v5 stream-close message without the channel to close.
    #[error("stream-close message without a channel")]
    ShortClose,
}

/// Encodes `payload` for `channel` (conn.go `write`): binary protocols give a binary message
/// `[channel, payload..]`; base64 protocols give a text message with the character
/// `'0' + channel` (as Go's `string(rune)`, so channels from 80 up are multi-byte characters)
/// followed by the standard base64 of the payload.
pub fn encode(protocol: Protocol, channel: u8, payload: &[u8]) -> Message {
    if protocol.base64 {
        let mut text = String::with_capacity(1 + payload.len().div_ceil(3) * 4);
        text.push(char::from_u32(u32::from(b'0') + u32::from(channel)).unwrap_or('0'));
        STANDARD.encode_string(payload, &mut text);
        Message::text(text)
    } else {
        let mut frame = Vec::with_capacity(payload.len() + 1);
        frame.push(channel);
        frame.extend_from_slice(payload);
        Message::binary(frame)
    }
}

/// Decodes the payload of a client text or binary message (conn.go `handle`, which reads both
/// kinds alike). The first byte is the channel (base64: minus `'0'`); for v5 a first byte of 0xFF
/// makes a [`Decoded::Close`] of the channel in the second byte. Channel numbers are not checked
/// against the session's channels: callers ignore the ones they do not serve, as conn.go does.
///
/// # Errors
/// [`DecodeError`] for a base64 message with a bad channel character or payload, or a v5
/// stream-close message without its channel.
pub fn decode(protocol: Protocol, msg: Bytes) -> Result<Decoded, DecodeError> {
    let Some(&first) = msg.first() else {
        return Ok(Decoded::Empty);
    };
    if protocol.base64 {
        let channel = first.checked_sub(b'0').ok_or(DecodeError::BadChannel(first))?;
        let payload = STANDARD.decode(&msg[1..]).map_err(|_| DecodeError::BadBase64)?;
        return Ok(Decoded::Data { channel, payload: payload.into() });
    }
    if first == STREAM_CLOSE && protocol.has_stream_close() {
        let channel = *msg.get(1).ok_or(DecodeError::ShortClose)?;
        return Ok(Decoded::Close { channel });
    }
    Ok(Decoded::Data { channel: first, payload: msg.slice(1..) })
}

/// Fuzzing entry: decodes `data` with every protocol either kind accepts. Never panics.
pub fn fuzz_decode(data: &[u8]) {
    let msg = Bytes::copy_from_slice(data);
    for p in REMOTE_COMMAND.iter().chain(&PORT_FORWARD).chain([&NONE]) {
        let _ = decode(*p, msg.clone());
    }
}

/// The payload of a data message; `None` for control messages.
pub(super) fn payload(msg: Message) -> Option<Bytes> {
    match msg {
        Message::Binary(b) => Some(b),
        Message::Text(t) => Some(t.into()),
        _ => None,
    }
}
