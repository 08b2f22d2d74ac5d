//! The codec of Nomad's framed log stream: concatenated JSON `StreamFrame`s with no delimiter,
//! decoded incrementally ([`FrameDecoder`]) with nothing panicking on any input ([`fuzz_decode`]
//! is the fuzz oracle).

use base64::Engine as _;
use serde::Deserialize;

/// A frame that is still incomplete beyond this many bytes is taken as garbage (a real one holds
/// at most 64 KiB of data, about 88 KiB of base64).
pub const MAX_FRAME: usize = 1 << 20;

/// One `StreamFrame` of the logs body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// The bytes (decoded from `Data`'s base64).
    pub data: Vec<u8>,
    /// `File`: the path of the file they come from, `alloc/logs/<task>.<type>.<n>`.
    pub file: String,
    /// `Offset`: the offset in `file` just after `data`, bytes.
    pub offset: u64,
    /// `FileEvent`: `file deleted` or `file truncated`, else empty.
    pub file_event: String,
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A frame with data or a file event.
    Frame(Frame),
    /// `{}` (or an object with none of the frame's fields): Nomad's once-a-second keep-alive.
    Heartbeat,
    /// Bytes that are no frame (skipped): not JSON, a JSON object of the wrong shape, or bad base64.
    Garbage,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawFrame {
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    offset: Option<i64>,
    #[serde(default)]
    file_event: Option<String>,
}

/// Decodes the item at the start of `buf`, returning it and how many bytes it took (always at
/// least 1), or `None` when `buf` holds only whitespace or the beginning of a frame (read more).
/// Leading whitespace is taken with the item. Bytes before the next `{` are one
/// [`Item::Garbage`]; so is a `{` starting invalid JSON (just that byte), a complete JSON value
/// that is not a frame, and a frame still incomplete after [`MAX_FRAME`] bytes.
pub fn decode(buf: &[u8]) -> Option<(Item, usize)> {
    let ws = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let rest = buf.get(ws..)?;
    let first = *rest.first()?;
    if first != b'{' {
        let skip = rest.iter().position(|b| *b == b'{').unwrap_or(rest.len());
        return Some((Item::Garbage, ws + skip));
    }
    let mut frames = serde_json::Deserializer::from_slice(rest).into_iter::<RawFrame>();
    match frames.next()? {
        Ok(raw) => {
            let used = ws + frames.byte_offset();
            Some((item_of(raw), used.max(1)))
        }
        Err(e) if e.is_eof() => (rest.len() > MAX_FRAME).then_some((Item::Garbage, ws + 1)),
        Err(_) if rest.len() <= MAX_FRAME && cut_in_a_number(rest) => None,
        Err(_) => {
            // A complete value of the wrong shape is skipped whole; broken JSON one byte at a time
            // (the next call skips to the following `{`).
            let mut any =
                serde_json::Deserializer::from_slice(rest).into_iter::<serde::de::IgnoredAny>();
            match any.next() {
                Some(Ok(_)) => Some((Item::Garbage, ws + any.byte_offset().max(1))),
                Some(Err(e)) if e.is_eof() && rest.len() <= MAX_FRAME => None,
                _ => Some((Item::Garbage, ws + 1)),
            }
        }
    }
}

/// `rest` ends inside a number (`1.`, `1e`, `1e+`, `-`), which serde_json calls invalid rather
/// than cut short: it is incomplete when a digit more makes it so.
fn cut_in_a_number(rest: &[u8]) -> bool {
    if !matches!(rest.last(), Some(b'.' | b'e' | b'E' | b'+' | b'-')) {
        return false;
    }
    let mut more = rest.to_vec();
    more.push(b'0');
    let mut any = serde_json::Deserializer::from_slice(&more).into_iter::<serde::de::IgnoredAny>();
    matches!(any.next(), Some(Err(e)) if e.is_eof())
}

fn item_of(raw: RawFrame) -> Item {
    let text = raw.data.unwrap_or_default();
    let Ok(data) = base64::engine::general_purpose::STANDARD.decode(text.as_bytes()) else {
        return Item::Garbage;
    };
    let file = raw.file.unwrap_or_default();
    let file_event = raw.file_event.unwrap_or_default();
    if data.is_empty() && file.is_empty() && file_event.is_empty() {
        return Item::Heartbeat;
    }
    let offset = u64::try_from(raw.offset.unwrap_or(0)).unwrap_or(0);
    Item::Frame(Frame { data, file, offset, file_event })
}

/// [`decode`] over bytes arriving in pieces.
///
/// A frame of 64 KiB of output is about 87 KB of JSON and arrives in many reads; decoding the
/// buffer again after each read would parse it over and over. After [`decode`] asked for more
/// bytes, bytes of the base64 alphabet (what a frame's `Data` is made of) cannot finish a frame:
/// they extend a string or number, or make the JSON invalid, so the buffer is decoded again only
/// once another byte arrives, the buffer outgrew [`MAX_FRAME`] (which [`decode`] decides on), or
/// the stream ended ([`FrameDecoder::flush`]). Only in a broken stream does this hold anything
/// back: bytes made invalid by such a byte are skipped as [`Item::Garbage`], which can uncover a
/// frame inside them, and that frame now waits for the next other byte or the end. The fuzz oracle
/// ([`fuzz_decode`], byte by byte against whole) holds the decoder to giving the same frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// The length of `buf` when [`decode`] last asked for more bytes; 0 when `buf` must be
    /// decoded again.
    waiting: usize,
}

/// Bytes of the standard base64 alphabet, padding included.
fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

impl FrameDecoder {
    /// Appends bytes read from the body.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete item, `None` until more bytes arrive.
    pub fn next_item(&mut self) -> Option<Item> {
        if self.waiting > 0 {
            let fresh = self.buf.get(self.waiting..).unwrap_or_default();
            if fresh.iter().all(|b| is_base64(*b)) && self.buf.len() <= MAX_FRAME {
                self.waiting = self.buf.len();
                return None;
            }
        }
        let Some((item, used)) = decode(&self.buf) else {
            self.waiting = self.buf.len();
            return None;
        };
        self.waiting = 0;
        self.buf.drain(..used.min(self.buf.len()));
        Some(item)
    }

    /// The stream ended: [`FrameDecoder::next_item`] decodes what is held, whatever it is.
    pub fn flush(&mut self) {
        self.waiting = 0;
    }

    /// Bytes held, waiting for the rest of a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// The fuzz oracle of the decoder: `data` is decoded whole, byte by byte, and in two pieces split
/// where its first byte says; every way must give the same frames and heartbeats. Panics (through
/// `assert_eq!`, the fuzzer's signal) when they differ; [`decode`] itself never panics.
pub fn fuzz_decode(data: &[u8]) {
    fn run(pieces: &[&[u8]]) -> Vec<Item> {
        let mut d = FrameDecoder::default();
        let mut out = Vec::new();
        for p in pieces {
            d.push(p);
            while let Some(item) = d.next_item() {
                if item != Item::Garbage {
                    out.push(item);
                }
            }
        }
        d.flush();
        while let Some(item) = d.next_item() {
            if item != Item::Garbage {
                out.push(item);
            }
        }
        out
    }
    if data.len() > 4 * MAX_FRAME {
        return;
    }
    let whole = run(&[data]);
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(run(&bytes), whole, "byte by byte");
    let at = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let (a, b) = data.split_at(at);
    assert_eq!(run(&[a, b]), whole, "split at {at}");
}
