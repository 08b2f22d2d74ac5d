//! SPDY/3.1 as Kubernetes speaks it (moby/spdystream, apimachinery `httpstream/spdy`): what
//! kube-apiserver sends the kubelet for exec, attach and port-forward. No maintained crate serves
//! it, so it is written here.
//!
//! - [`frame`]: the pure frame codec ([`FrameCodec`]) with zlib header blocks and the SPDY/3
//!   dictionary ([`dictionary`]).
//! - [`session`]: a server connection over any async byte stream ([`Session`], [`SpdyStream`]).
//! - [`serve_remotecommand`] and [`serve_portforward`]: exec/attach and port-forward built on it.
//!
//! The HTTP upgrade (`Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version`, `101`) is the HTTP
//! server's job; these functions take the upgraded connection.

pub mod dictionary;
mod exec;
pub mod frame;
mod portforward;
pub mod session;
#[cfg(test)]
pub(crate) mod test_client;
#[cfg(test)]
mod tests;

pub use exec::{Finisher, STREAM_CREATION_TIMEOUT, serve_remotecommand};
pub use frame::{Frame, FrameCodec, Headers};
pub use portforward::serve_portforward;
pub use session::{Session, SpdyStream, StreamReader, StreamWriter};

/// What can go wrong on a SPDY connection.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// The peer sent something SPDY/3.1 does not allow (a bad frame or header block); the
    /// connection cannot go on.
    #[error("SPDY protocol error: {0}")]
    Protocol(&'static str),
    /// A frame or header block is over a size limit (bytes).
    #[error("SPDY frame or header block too large: {0} bytes")]
    TooLarge(usize),
    /// A header block is not valid zlib with the SPDY dictionary.
    #[error("SPDY header compression: {0}")]
    Compression(String),
    /// Reading or writing the connection or a forwarded port failed.
    #[error("I/O error")]
    Io(#[source] std::io::Error),
    /// The connection is gone.
    #[error("SPDY connection closed")]
    Closed,
    /// The peer reset the stream with this ID.
    #[error("SPDY stream {0} reset by the peer")]
    Reset(u32),
    /// This side already finished or reset the stream with this ID.
    #[error("SPDY stream {0} already closed for writing")]
    StreamClosed(u32),
    /// The client did not do what was awaited in time (the what is named).
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

impl SpdyError {
    /// A low-cardinality label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Protocol(_) => "protocol",
            Self::TooLarge(_) => "too_large",
            Self::Compression(_) => "compression",
            Self::Io(_) => "io",
            Self::Closed => "closed",
            Self::Reset(_) => "reset",
            Self::StreamClosed(_) => "stream_closed",
            Self::Timeout(_) => "timeout",
        }
    }
}

/// Runs arbitrary bytes through the decoder, as a fuzz target does: the whole input as a frame
/// sequence (at once and byte by byte, which must agree), and as a compressed header block.
/// Every frame decoded must encode and decode back to itself with a fresh pair of codecs.
///
/// # Errors
/// Only when one of those properties fails (a bug), with a description. Malformed input is not
/// an error here; panicking on any input would be a bug too.
pub fn fuzz_decode(data: &[u8]) -> Result<(), String> {
    let whole = decode_all(data, data.len().max(1));
    let bytewise = decode_all(data, 1);
    if whole != bytewise {
        return Err(format!("decoding at once gave {whole:?}, byte by byte {bytewise:?}"));
    }
    let _ = FrameCodec::new().inflate_headers(data);
    let (mut enc, mut dec) = (FrameCodec::new(), FrameCodec::new());
    for frame in whole.0 {
        let mut buf = bytes::BytesMut::new();
        if enc.encode(&frame, &mut buf).is_err() {
            return Err(format!("a decoded frame does not encode: {frame:?}"));
        }
        match dec.decode(&mut buf) {
            Ok(Some(back)) if back == frame && buf.is_empty() => {}
            other => return Err(format!("{frame:?} came back as {other:?}")),
        }
    }
    Ok(())
}

/// The frames decoded from `data` fed `step` bytes at a time, and the error that stopped them.
fn decode_all(data: &[u8], step: usize) -> (Vec<Frame>, Option<String>) {
    let mut codec = FrameCodec::new();
    let mut buf = bytes::BytesMut::new();
    let mut frames = Vec::new();
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
    }
    (frames, None)
}
