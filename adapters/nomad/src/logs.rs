//! Container logs and attach over Nomad's `GET /v1/client/fs/logs/<alloc>` (`client/fs_endpoint.go`).
//!
//! **Wire.** Without `plain=true` the body is concatenated JSON `StreamFrame`s with no delimiter:
//! `{"Data":"<base64>","File":"alloc/logs/<task>.<type>.<n>","Offset":<end offset in File>,
//! "FileEvent":"file deleted"|"file truncated"}`, `Data` at most 64 KiB, batched over 200 ms, and
//! an empty `{}` heartbeat after every second without data. [`decode`] and [`FrameDecoder`] read
//! them incrementally; nothing in them panics on any input ([`fuzz_decode`] is the fuzz oracle).
//! `follow=true` never ends on Nomad's side, even after the task died: the end of the container
//! instance is watched with blocking queries on `/v1/allocation/<alloc>`.
//!
//! **What Nomad keeps.** logmon writes raw bytes into rotated files `alloc/logs/<task>.stdout.<n>`
//! and `.stderr.<n>` (restarts in place append to the same files), with no time and no line
//! framing, and keeps the last `LogConfig.MaxFiles` files. So, faithfully: the bytes, the streams
//! apart, `tail_lines` (reading the files backwards in doubling windows with `fs/readat`,
//! [`TAIL_BYTES_PER_LINE`], counting newlines without keeping the bytes, then streaming from the
//! cut: memory per request stays bounded however long the log's lines), `limit_bytes`
//! (on the output, timestamps included, as the kubelet's limited writer; it may cut a line), and
//! `follow` (until the instance ends or the receiver is dropped). Approximated, because no time is
//! stored:
//! - **times** ([`Times`]): every byte gets an *upper bound* of the time it was written: the
//!   modification time of its file (`/v1/client/fs/ls/<alloc>?path=alloc/logs`, read once when the
//!   request starts) for bytes the file already held then, else the time the bytes were read from
//!   Nomad (followed output, or output written during the request). Timestamps are therefore never
//!   earlier than the truth; all lines of one historical file carry that file's time.
//! - **`timestamps`**: each line is prefixed with the time of the bytes that start it
//!   ([`vk_domain::logs::timestamp_prefix`]).
//! - **`since`**: bytes whose time is before `since` are dropped, so a whole file is skipped when
//!   its last write was before `since`; a file written across `since` is kept whole. No line
//!   written at or after `since` is ever lost; some older lines of that file may be shown.
//! - **`stream=All`**: stdout, then stderr (the order of lines between the two files is not
//!   stored); with `follow`, the historical part so, then both as they arrive, a line at a time
//!   (a partial line waits until its newline, Nomad's next heartbeat, or 16 KiB). `tail_lines`
//!   counts over that concatenation: the last lines of stderr, then the rest from stdout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use reqwest::Method;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tracing::debug;
use vk_domain::jiff::Timestamp;
use vk_domain::logs::{LogOptions, LogStream, timestamp_prefix};
use vk_ports::{ByteStream, ProviderError};

use super::api::Allocation;
use super::client::NomadClient;

/// Bytes read per wanted line in the first window of a tail (the Nomad CLI's `bytesToLines`); the
/// windows double, backwards through the files, until the lines are found or the log began.
pub const TAIL_BYTES_PER_LINE: u64 = 120;

/// A frame that is still incomplete beyond this many bytes is taken as garbage (a real one holds
/// at most 64 KiB of data, about 88 KiB of base64).
pub const MAX_FRAME: usize = 1 << 20;

/// A partial line of a merged follow is sent without its newline once this long.
const MAX_PARTIAL_LINE: usize = 16 << 10;

/// Nomad sends a heartbeat every second: this long without any byte means the stream broke.
const SILENCE: Duration = Duration::from_secs(30);

/// After the container instance ended, how long readers wait for Nomad to send what is left
/// (they stop earlier at Nomad's next heartbeat, which says it has caught up).
const DRAIN: Duration = Duration::from_secs(3);

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

/// One log file of the listing (`/v1/client/fs/ls/<alloc>?path=alloc/logs`, `AllocFileInfo`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FileInfo {
    /// File name (`<task>.<type>.<n>`).
    pub name: String,
    /// A directory.
    #[serde(default)]
    pub is_dir: bool,
    /// Size, bytes.
    #[serde(default)]
    pub size: i64,
    /// Last modification, RFC 3339.
    #[serde(default)]
    pub mod_time: String,
}

/// Upper bounds of the times log bytes were written (see the module docs): each file's size and
/// modification time when the request started.
#[derive(Debug, Clone, Default)]
pub struct Times {
    files: HashMap<String, (u64, Timestamp)>,
}

impl Times {
    /// From a listing of `alloc/logs`.
    pub fn new(listing: &[FileInfo]) -> Self {
        let files = listing
            .iter()
            .filter(|f| !f.is_dir)
            .filter_map(|f| {
                let t: Timestamp = f.mod_time.parse().ok()?;
                Some((f.name.clone(), (u64::try_from(f.size).unwrap_or(0), t)))
            })
            .collect();
        Self { files }
    }

    /// The parts of `frame`'s data with their time: the file's modification time for bytes it held
    /// at the listing, `now` for those written since (or for a file not listed).
    pub fn stamp<'a>(&self, frame: &'a Frame, now: Timestamp) -> Vec<(&'a [u8], Timestamp)> {
        let name = frame.file.rsplit('/').next().unwrap_or_default();
        let len = frame.data.len();
        let start = frame.offset.saturating_sub(u64::try_from(len).unwrap_or(u64::MAX));
        let Some(&(size, mtime)) = self.files.get(name) else {
            return vec![(frame.data.as_slice(), now)];
        };
        let old = usize::try_from(size.saturating_sub(start)).unwrap_or(usize::MAX).min(len);
        let (a, b) = frame.data.split_at(old);
        [(a, mtime), (b, now)].into_iter().filter(|(d, _)| !d.is_empty()).collect()
    }
}

/// Log files of `task`'s `kind` (`stdout`/`stderr`) in a listing, oldest first: `(index, size,
/// modification time)`.
pub fn log_files(listing: &[FileInfo], task: &str, kind: &str) -> Vec<(u64, u64, Timestamp)> {
    let prefix = format!("{task}.{kind}.");
    let mut files: Vec<(u64, u64, Timestamp)> = listing
        .iter()
        .filter(|f| !f.is_dir)
        .filter_map(|f| {
            let idx = f.name.strip_prefix(&prefix)?.parse().ok()?;
            Some((idx, u64::try_from(f.size).unwrap_or(0), f.mod_time.parse().ok()?))
        })
        .collect();
    files.sort_by_key(|f| f.0);
    files
}

/// Where a read starts for `since`: `origin=start&offset=<n>` counts bytes across the files from
/// the oldest kept (Nomad's `findClosest`), so this is the size of the files last written before
/// `since`. `None` when every file was (nothing to show until new output).
pub fn since_offset(files: &[(u64, u64, Timestamp)], since: Timestamp) -> Option<u64> {
    let mut skipped = 0u64;
    for (_, size, mtime) in files {
        if *mtime >= since {
            return Some(skipped);
        }
        skipped = skipped.saturating_add(*size);
    }
    None
}

/// The `origin=start` offset of position `offset` in file `file` (a frame's `File`/`Offset`).
pub fn absolute(files: &[(u64, u64, Timestamp)], file: &str, offset: u64) -> u64 {
    let idx = file.rsplit('.').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(u64::MAX);
    files.iter().filter(|f| f.0 < idx).map(|f| f.1).fold(offset, u64::saturating_add)
}

/// The `origin=start` offset of the current end of the log (the size of its files). Nomad's
/// `origin=end&offset=0` is not that: it means the start of the newest file (`findClosest`).
pub fn total(files: &[(u64, u64, Timestamp)]) -> u64 {
    files.iter().map(|f| f.1).fold(0, u64::saturating_add)
}

/// Lines in `buf` (a final line without newline counts).
pub fn count_lines(buf: &[u8]) -> u64 {
    let n = buf.iter().filter(|b| **b == b'\n').count();
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    if buf.last().is_some_and(|b| *b != b'\n') { n + 1 } else { n }
}

/// Turns bytes of one stream into output: timestamps at line starts and, for a merged follow,
/// whole lines only.
#[derive(Debug)]
pub struct Lines {
    timestamps: bool,
    whole_lines: bool,
    at_line_start: bool,
    buf: Vec<u8>,
}

impl Lines {
    /// With `timestamps`, each line starts with its time; with `whole_lines`, [`Lines::take`]
    /// keeps a partial line back.
    pub fn new(timestamps: bool, whole_lines: bool) -> Self {
        Self { timestamps, whole_lines, at_line_start: true, buf: Vec::new() }
    }

    /// Adds bytes written at `at`.
    pub fn push(&mut self, data: &[u8], at: Timestamp) {
        if !self.timestamps {
            self.buf.extend_from_slice(data);
            if let Some(last) = data.last() {
                self.at_line_start = *last == b'\n';
            }
            return;
        }
        for piece in data.split_inclusive(|b| *b == b'\n') {
            if self.at_line_start && self.timestamps {
                self.buf.extend_from_slice(timestamp_prefix(at).as_bytes());
            }
            self.buf.extend_from_slice(piece);
            self.at_line_start = piece.ends_with(b"\n");
        }
    }

    /// What may be sent now: everything, or (with `whole_lines`, unless `all`) up to the last
    /// newline, or everything once the partial line is longer than 16 KiB.
    pub fn take(&mut self, all: bool) -> Vec<u8> {
        if all || !self.whole_lines || self.buf.len() > MAX_PARTIAL_LINE {
            return std::mem::take(&mut self.buf);
        }
        match self.buf.iter().rposition(|b| *b == b'\n') {
            Some(i) => {
                let rest = self.buf.split_off(i + 1);
                std::mem::replace(&mut self.buf, rest)
            }
            None => Vec::new(),
        }
    }
}

/// Cuts the output after `limit_bytes`.
#[derive(Debug)]
struct Limit(Option<u64>);

impl Limit {
    /// The part of `data` to send; `done` once the limit is reached.
    fn cut(&mut self, mut data: Vec<u8>) -> (Vec<u8>, bool) {
        let Some(left) = self.0 else { return (data, false) };
        let n = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if n >= left {
            data.truncate(usize::try_from(left).unwrap_or(usize::MAX));
            self.0 = Some(0);
            return (data, true);
        }
        self.0 = Some(left - n);
        (data, false)
    }
}

/// What to read: one task of one allocation.
#[derive(Debug, Clone)]
pub struct Target {
    /// A client in the allocation's namespace and region.
    pub client: NomadClient,
    /// The allocation as listed (its task states say which instance runs).
    pub alloc: Allocation,
    /// The task (container) name.
    pub task: String,
}

/// Where one stream's read starts: `origin=start&offset=n` (bytes across the files kept, from
/// the oldest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    Start(u64),
}

#[derive(Debug)]
enum Ev {
    Data(usize, Vec<u8>, Timestamp),
    Idle(usize),
    Done(usize),
    Failed(ProviderError),
}

const KINDS: [&str; 2] = ["stdout", "stderr"];

fn kinds(stream: LogStream) -> Vec<usize> {
    match stream {
        LogStream::All => vec![0, 1],
        LogStream::Stdout => vec![0],
        LogStream::Stderr => vec![1],
    }
}

fn unavailable(message: String) -> ProviderError {
    ProviderError::Unavailable { message, source: None }
}

/// Opens one logs request and returns its body.
async fn open(
    t: &Target,
    kind: usize,
    from: From,
    follow: bool,
) -> Result<reqwest::Response, ProviderError> {
    let (origin, offset) = match from {
        From::Start(n) => ("start", n),
    };
    let req = t
        .client
        .request(Method::GET, &["v1", "client", "fs", "logs", &t.alloc.id])
        .query(&[
            ("task", t.task.as_str()),
            ("type", KINDS[kind]),
            ("follow", if follow { "true" } else { "false" }),
            ("origin", origin),
            ("offset", &offset.to_string()),
        ])
        // Streams last as long as they last; silence is checked instead.
        .timeout(Duration::from_secs(365 * 24 * 3600));
    t.client.send(req).await
}

/// Where the last `lines` lines of one stream start (`tail_lines`): a read from `From::Start` of
/// the returned offset that drops the first `skip` lines, and how many lines that gives.
///
/// Reads the log files backwards, newest first, in windows of `lines × 120` bytes that double up
/// to [`MAX_TAIL_WINDOW`] (`/v1/client/fs/readat`: raw bytes, each read once), and only counts
/// their newlines as the bytes stream by: nothing of the log is held, however long its lines (a
/// 50 MB log without a newline costs one read of it, not memory). The cut is the kubelet's
/// (`vk_domain::logs::tail_start`): a final unterminated line counts, a final newline does not
/// start one.
///
/// # Errors
/// As [`NomadClient::send`]; a file rotated away meanwhile ends the walk there instead.
async fn tail(
    t: &Target,
    kind: usize,
    lines: u64,
    files: &[(u64, u64, Timestamp)],
) -> Result<Tail, ProviderError> {
    let mut need = lines;
    let mut window = lines.saturating_mul(TAIL_BYTES_PER_LINE).clamp(1024, MAX_TAIL_WINDOW);
    let mut newest = true;
    let mut start = 0u64;
    'files: for &(idx, size, _) in files.iter().rev() {
        let file = format!("alloc/logs/{}.{}.{idx}", t.task, KINDS[kind]);
        let mut end = size;
        while end > 0 {
            let from = end.saturating_sub(window);
            let scan = match scan(t, &file, from, end - from).await {
                Ok(s) => s,
                // Rotated away since the listing: the log starts after it now.
                Err(ProviderError::NotFound(_)) => {
                    start = absolute(files, &file, end);
                    break 'files;
                }
                Err(e) => return Err(e),
            };
            let mut newlines = scan.newlines;
            if newest {
                newest = false;
                if scan.last == Some(b'\n') {
                    newlines -= 1;
                }
            }
            if newlines >= need {
                let at = absolute(files, &file, from);
                return Ok(Tail { from: From::Start(at), skip: newlines - need + 1, lines });
            }
            need -= newlines;
            end = from;
            window = window.saturating_mul(2).min(MAX_TAIL_WINDOW);
        }
    }
    // Fewer lines than asked: all of them (the first line has no newline before it).
    let all = if newest { 0 } else { lines - need + 1 };
    Ok(Tail { from: From::Start(start), skip: 0, lines: all })
}

/// The largest window [`tail`] reads at once, bytes.
pub const MAX_TAIL_WINDOW: u64 = 4 << 20;

/// A tail's read: see [`tail`].
#[derive(Debug, Clone, Copy)]
struct Tail {
    from: From,
    skip: u64,
    lines: u64,
}

/// What one window of a log file held.
#[derive(Debug, Default)]
struct Scan {
    newlines: u64,
    last: Option<u8>,
}

/// Counts the newlines of bytes `offset .. offset + len` of log file `file` (a path in the
/// allocation directory), as they stream in.
async fn scan(t: &Target, file: &str, offset: u64, len: u64) -> Result<Scan, ProviderError> {
    let (offset, len) = (offset.to_string(), len.to_string());
    let req = t
        .client
        .request(Method::GET, &["v1", "client", "fs", "readat", &t.alloc.id])
        .query(&[("path", file), ("offset", offset.as_str()), ("limit", len.as_str())]);
    let mut body = t.client.send(req).await?.bytes_stream();
    let mut s = Scan::default();
    loop {
        match tokio::time::timeout(SILENCE, body.next()).await {
            Err(_) => return Err(unavailable("Nomad's file read went silent".into())),
            Ok(None) => return Ok(s),
            Ok(Some(Err(e))) => return Err(unavailable(format!("reading a log file: {e}"))),
            Ok(Some(Ok(chunk))) => {
                let n = chunk.iter().filter(|b| **b == b'\n').count();
                s.newlines = s.newlines.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
                if let Some(b) = chunk.last() {
                    s.last = Some(*b);
                }
            }
        }
    }
}

/// The part of `data` after its `skip`-th newline, and the newlines still to skip.
fn skip_lines(data: &[u8], mut skip: u64) -> (&[u8], u64) {
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' {
            skip -= 1;
            if skip == 0 {
                return (&data[i + 1..], 0);
            }
        }
    }
    (&[], skip)
}

/// What one reader reads: the stream (`kind`), lines to drop first, and the `since` filter.
#[derive(Debug, Clone, Copy)]
struct Read {
    kind: usize,
    skip: u64,
    since: Option<Timestamp>,
}

/// Reads one opened stream into `tx` until Nomad ends it, the receiver goes, or (after `ending`
/// turned true) Nomad's next heartbeat or [`DRAIN`].
async fn reader(
    resp: reqwest::Response,
    read: Read,
    times: Arc<Times>,
    tx: mpsc::Sender<Ev>,
    mut ending: watch::Receiver<bool>,
) {
    let Read { kind, mut skip, since } = read;
    let mut body = resp.bytes_stream();
    let mut dec = FrameDecoder::default();
    let mut deadline: Option<tokio::time::Instant> = None;
    'read: loop {
        if deadline.is_none() && *ending.borrow() {
            deadline = Some(tokio::time::Instant::now() + DRAIN);
        }
        let drained = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let chunk = tokio::select! {
            c = tokio::time::timeout(SILENCE, body.next()) => c,
            r = ending.changed(), if deadline.is_none() => {
                if r.is_err() {
                    // The producer is gone.
                    return;
                }
                continue;
            }
            () = drained => break,
        };
        let chunk = match chunk {
            Err(_) => {
                let e = unavailable("Nomad's log stream went silent".into());
                let _ = tx.send(Ev::Failed(e)).await;
                return;
            }
            Ok(None) => None,
            Ok(Some(Err(e))) => {
                let e = unavailable(format!("reading Nomad's logs: {e}"));
                let _ = tx.send(Ev::Failed(e)).await;
                return;
            }
            Ok(Some(Ok(c))) => Some(c),
        };
        match &chunk {
            Some(c) => dec.push(c),
            None => dec.flush(),
        }
        while let Some(item) = dec.next_item() {
            match item {
                Item::Frame(f) => {
                    if !f.file_event.is_empty() {
                        debug!(file = %f.file, event = %f.file_event, "log file event");
                    }
                    for (data, at) in times.stamp(&f, Timestamp::now()) {
                        // A tail's cut first, then `since` (the kubelet's order).
                        let data = if skip > 0 {
                            let (rest, left) = skip_lines(data, skip);
                            skip = left;
                            rest
                        } else {
                            data
                        };
                        if data.is_empty() || since.is_some_and(|s| at < s) {
                            continue;
                        }
                        if tx.send(Ev::Data(kind, data.to_vec(), at)).await.is_err() {
                            return;
                        }
                    }
                }
                Item::Heartbeat if deadline.is_some() => break 'read,
                Item::Heartbeat => {
                    if tx.send(Ev::Idle(kind)).await.is_err() {
                        return;
                    }
                }
                Item::Garbage => debug!("skipping bytes of Nomad's log stream that are no frame"),
            }
        }
        if chunk.is_none() {
            break;
        }
    }
    let _ = tx.send(Ev::Done(kind)).await;
}

/// Resolves when the instance of `t.task` that ran when `t.alloc` was listed is over: the task is
/// not running any more, restarted, or the allocation is gone. Blocking queries on
/// `/v1/allocation/<id>` (10 s each); a failed query is retried after a second.
pub async fn instance_ended(t: &Target) {
    let key = |a: &Allocation| {
        a.task_states.as_ref().and_then(|s| s.get(&t.task)).map(|ts| {
            let started = ts.last_event("Started").map(|e| e.time);
            (ts.state.clone(), ts.restarts, started)
        })
    };
    let first = key(&t.alloc);
    if first.as_ref().is_none_or(|k| k.0 != "running") {
        return;
    }
    let mut index = 0u64;
    loop {
        let wait = [("index", index.to_string()), ("wait", "10s".to_owned())];
        let q: Vec<(&str, &str)> = wait.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match t.client.get_indexed::<Allocation>(&["v1", "allocation", &t.alloc.id], &q).await {
            Ok((a, i)) => {
                let now = key(&a);
                let over = matches!(a.client_status.as_str(), "complete" | "failed" | "lost");
                if over || now.as_ref().is_none_or(|k| k.0 != "running") || now != first {
                    return;
                }
                // An index that went backwards (a new leader) starts over.
                index = if i < index { 0 } else { i };
            }
            Err(ProviderError::NotFound(_)) => return,
            Err(e) => {
                debug!(error = %e, "watching an allocation for the end of a followed log");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// How long after a task ended its log may still be landing on disk: Nomad's log shipper
/// (logmon) copies the task's output into `alloc/logs` after the task state says `dead`.
pub const SETTLE_AFTER_END: std::time::Duration = std::time::Duration::from_secs(30);

/// How long after a task started a read of its log may find nothing yet that it already wrote:
/// Nomad's docker log collector starts copying only once the container runs.
pub const SETTLE_AFTER_START: std::time::Duration = std::time::Duration::from_secs(5);

/// The most a read of a task that started less than [`SETTLE_AFTER_START`] ago (or that the
/// allocation read still shows pending) waits for its first output: Nomad starts the docker log
/// collector, a process of its own, only after the container, which takes more than a second on
/// a loaded node.
const FIRST_OUTPUT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits, at most `limit`, until the log files of `t.task` exist and their sizes stay the same
/// over two listings `every` apart, so that a read right after the task ended gets all of its
/// output (a kubelet's container log is complete once the container is reported terminated).
/// Only for an instance that ended less than [`SETTLE_AFTER_END`] ago. For one that started
/// less than [`SETTLE_AFTER_START`] ago and runs, or that the allocation read still shows
/// pending (the pod's status, pushed by Nomad's event stream, may say Running before an
/// allocation read does), it waits (at most [`FIRST_OUTPUT_WAIT`], two seconds) until its log
/// holds anything, so that what it wrote before it was reported running is there (a kubelet's
/// log file has it at once); a silent new container costs a read those seconds. Errors of the
/// listing end the wait (the read then reports them).
pub async fn settle(t: &Target, every: std::time::Duration, limit: std::time::Duration) {
    settle_until(t, every, limit, false).await;
}

/// As [`settle`], but an instance that just ended is waited for (at most `limit`) until its log
/// holds something as well: for a failed container whose termination message is the end of its
/// log (`FallbackToLogsOnError`), whose output Nomad's docker log collector may copy a moment
/// after the task state says dead. A container that wrote nothing costs the whole `limit`, once.
pub async fn settle_output(t: &Target, every: std::time::Duration, limit: std::time::Duration) {
    settle_until(t, every, limit, true).await;
}

async fn settle_until(
    t: &Target,
    every: std::time::Duration,
    limit: std::time::Duration,
    need_output: bool,
) {
    let Some(ts) = t.alloc.task_states.as_ref().and_then(|s| s.get(&t.task)) else { return };
    let since = |at: Option<Timestamp>, within: std::time::Duration| {
        at.is_some_and(|at| {
            Timestamp::now().duration_since(at).as_secs_f64() < within.as_secs_f64()
        })
    };
    let ended = ts.finished_at.as_deref().and_then(|f| f.parse::<Timestamp>().ok());
    let recent_end = ts.state == "dead" && since(ended, SETTLE_AFTER_END);
    let started =
        ts.last_event("Started").and_then(|e| Timestamp::from_nanosecond(i128::from(e.time)).ok());
    let just_started =
        (ts.state == "running" && since(started, SETTLE_AFTER_START)) || ts.state == "pending";
    if !recent_end && !just_started {
        return;
    }
    let limit = if recent_end { limit } else { limit.min(FIRST_OUTPUT_WAIT) };
    let sizes = || async {
        let listing: Vec<FileInfo> = t
            .client
            .get(&["v1", "client", "fs", "ls", &t.alloc.id], &[("path", "alloc/logs")])
            .await
            .ok()?;
        let files: Vec<(u64, u64)> = KINDS
            .iter()
            .flat_map(|k| log_files(&listing, &t.task, k))
            .map(|(i, size, _)| (i, size))
            .collect();
        (!files.is_empty()).then_some(files)
    };
    let start = tokio::time::Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        let now = sizes().await;
        let written = now.as_ref().is_some_and(|f| f.iter().any(|(_, size)| *size > 0));
        let stable = now.is_some() && now == last && (written || !need_output);
        if (recent_end && stable) || (!recent_end && written) {
            return;
        }
        last = now;
        tokio::time::sleep(every).await;
    }
}

/// The output of `t.task` as `opts` asks (see the module docs for what is exact and what is not).
/// With `opts.follow` the stream goes on until the instance ends or the receiver is dropped.
///
/// # Errors
/// Before the first byte: as [`NomadClient::send`] (`NotFound` for an unknown allocation or a task
/// that has not started, with Nomad's message). Later errors end the stream with an `Err` item.
pub async fn logs(t: Target, opts: &LogOptions) -> Result<ByteStream, ProviderError> {
    let kinds = kinds(opts.stream);
    let listing: Vec<FileInfo> =
        t.client.get(&["v1", "client", "fs", "ls", &t.alloc.id], &[("path", "alloc/logs")]).await?;
    let times = Arc::new(Times::new(&listing));
    // Where each stream's read starts (`None`: no read) and the lines it drops first.
    let mut starts: HashMap<usize, Option<From>> = HashMap::new();
    let mut skips = [0u64; 2];
    if let Some(n) = opts.tail_lines {
        // The tails, stderr first: `tail_lines` counts over stdout-then-stderr.
        let mut left = n;
        for &k in kinds.iter().rev() {
            let files = log_files(&listing, &t.task, KINDS[k]);
            let start = if left == 0 {
                // No line of this stream: only what comes next, when following.
                opts.follow.then(|| From::Start(total(&files)))
            } else {
                let tail = tail(&t, k, left, &files).await?;
                left = left.saturating_sub(tail.lines);
                skips[k] = tail.skip;
                (tail.lines > 0 || opts.follow).then_some(tail.from)
            };
            starts.insert(k, start);
        }
    }
    for &k in &kinds {
        if starts.contains_key(&k) {
            continue;
        }
        let files = log_files(&listing, &t.task, KINDS[k]);
        let start = match opts.since {
            None => Some(From::Start(0)),
            Some(s) => match since_offset(&files, s) {
                Some(o) => Some(From::Start(o)),
                None if opts.follow => Some(From::Start(total(&files))),
                None => None,
            },
        };
        starts.insert(k, start);
    }
    // Every read is opened here, so that Nomad's refusal (404: not started yet) is the answer.
    let mut reads = Vec::new();
    for &k in &kinds {
        if let Some(from) = starts.get(&k).copied().flatten() {
            reads.push((k, open(&t, k, from, opts.follow).await?));
        }
    }
    let (out, rx) = mpsc::channel::<Result<Bytes, ProviderError>>(16);
    let job = Produce { t, opts: opts.clone(), kinds, skips, reads, times };
    tokio::spawn(job.run(out));
    Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })))
}

struct Produce {
    t: Target,
    opts: LogOptions,
    kinds: Vec<usize>,
    /// Lines each stream's read drops first (a tail read starts before its cut).
    skips: [u64; 2],
    reads: Vec<(usize, reqwest::Response)>,
    times: Arc<Times>,
}

impl Produce {
    async fn run(self, out: mpsc::Sender<Result<Bytes, ProviderError>>) {
        let Produce { t, opts, kinds, skips, mut reads, times } = self;
        let merged = opts.follow && kinds.len() > 1;
        let mut lines: Vec<Lines> = (0..2).map(|_| Lines::new(opts.timestamps, merged)).collect();
        let mut limit = Limit(opts.limit_bytes);
        // Sends `data`; returns once the limit is reached or the receiver is gone.
        macro_rules! emit {
            ($data:expr) => {{
                let data: Vec<u8> = $data;
                if !data.is_empty() {
                    let (data, full) = limit.cut(data);
                    if out.send(Ok(Bytes::from(data))).await.is_err() || full {
                        return;
                    }
                }
            }};
        }
        let (ending_tx, ending) = watch::channel(false);
        let (tx, mut rx) = mpsc::channel::<Ev>(16);
        let spawn = |(k, resp): (usize, reqwest::Response)| {
            let times = Arc::clone(&times);
            let read = Read { kind: k, skip: skips[k], since: opts.since };
            tokio::spawn(reader(resp, read, times, tx.clone(), ending.clone()));
        };
        // Following, the streams are read together; otherwise one after the other.
        let mut running = 0usize;
        while !reads.is_empty() && (opts.follow || running == 0) {
            spawn(reads.remove(0));
            running += 1;
        }
        let ended = instance_ended(&t);
        tokio::pin!(ended);
        let mut ended_seen = !opts.follow;
        while running > 0 {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                () = &mut ended, if !ended_seen => {
                    ended_seen = true;
                    let _ = ending_tx.send(true);
                    continue;
                }
            };
            match ev {
                None => break,
                Some(Ev::Data(k, data, at)) => {
                    lines[k].push(&data, at);
                    emit!(lines[k].take(false));
                }
                Some(Ev::Idle(k)) => emit!(lines[k].take(true)),
                Some(Ev::Done(k)) => {
                    emit!(lines[k].take(true));
                    running -= 1;
                    if !reads.is_empty() {
                        spawn(reads.remove(0));
                        running += 1;
                    }
                }
                Some(Ev::Failed(e)) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            }
        }
        for k in kinds {
            emit!(lines[k].take(true));
        }
    }
}

/// Streams the output `t.task` writes from now on into `stdout` and `stderr` (the channels the
/// client asked for), until the instance ends or every channel given is dropped (`kubectl attach`
/// without stdin). "Now" is the end of the log files as listed (`/v1/client/fs/ls`) just before
/// the reads open: output written in between is included.
///
/// # Errors
/// As [`logs`]; a stream breaking later is `Unavailable`.
pub async fn attach(
    t: Target,
    stdout: Option<futures::channel::mpsc::Sender<Bytes>>,
    stderr: Option<futures::channel::mpsc::Sender<Bytes>>,
) -> Result<(), ProviderError> {
    use futures::SinkExt as _;
    let mut outs = [stdout, stderr];
    let listing: Vec<FileInfo> =
        t.client.get(&["v1", "client", "fs", "ls", &t.alloc.id], &[("path", "alloc/logs")]).await?;
    let mut reads = Vec::new();
    for (k, out) in outs.iter().enumerate() {
        if out.is_some() {
            let end = total(&log_files(&listing, &t.task, KINDS[k]));
            reads.push((k, open(&t, k, From::Start(end), true).await?));
        }
    }
    let (ending_tx, ending) = watch::channel(false);
    let (tx, mut rx) = mpsc::channel::<Ev>(16);
    let mut running = 0usize;
    for (k, resp) in reads {
        let times = Arc::new(Times::default());
        tokio::spawn(reader(
            resp,
            Read { kind: k, skip: 0, since: None },
            times,
            tx.clone(),
            ending.clone(),
        ));
        running += 1;
    }
    drop(tx);
    let ended = instance_ended(&t);
    tokio::pin!(ended);
    let mut ended_seen = false;
    while running > 0 {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            () = &mut ended, if !ended_seen => {
                ended_seen = true;
                let _ = ending_tx.send(true);
                continue;
            }
        };
        match ev {
            None => break,
            Some(Ev::Data(k, data, _)) => {
                let gone = match outs.get_mut(k).and_then(Option::as_mut) {
                    Some(o) => o.send(Bytes::from(data)).await.is_err(),
                    None => true,
                };
                if gone {
                    outs[k] = None;
                    if outs.iter().all(Option::is_none) {
                        return Ok(());
                    }
                }
            }
            Some(Ev::Idle(_)) => {}
            Some(Ev::Done(_)) => running -= 1,
            Some(Ev::Failed(e)) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzzer: a number cut after its `.` (or `e`, `+`, `-`) is the frame's
    /// beginning, not garbage; read whole or byte by byte, the same heartbeat.
    #[test]
    fn a_number_cut_short_waits_for_the_rest() {
        assert_eq!(decode(b"{\"A\": 1."), None);
        assert_eq!(decode(b"{\"A\": 1e"), None);
        assert_eq!(decode(b"{\"A\": -"), None);
        assert_eq!(decode(b"{\"A\": 1.5}"), Some((Item::Heartbeat, 10)));
        assert_eq!(decode(b"{\"A\": 1.x}").map(|(i, _)| i), Some(Item::Garbage));
        let crash = b"\r\x8c||\0\0y{ \"Dat*a\"\t \n\r:\r   88888888888.88}}}7642.9\0y{ \"Dat*a\" : 8.87.9400\r%\r\n";
        fuzz_decode(crash);
    }

    fn frame(data: &str, file: &str, offset: u64) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        format!(r#"{{"Data":"{b64}","File":"{file}","Offset":{offset}}}"#)
    }

    fn all(buf: &[u8]) -> Vec<Item> {
        let mut d = FrameDecoder::default();
        d.push(buf);
        std::iter::from_fn(|| d.next_item()).collect()
    }

    fn f(data: &str, file: &str, offset: u64) -> Item {
        Item::Frame(Frame {
            data: data.as_bytes().to_vec(),
            file: file.into(),
            offset,
            file_event: String::new(),
        })
    }

    #[test]
    fn frames_heartbeats_and_file_events_are_decoded() {
        let body = format!(
            "{}{{}}{}\n{{\"File\":\"alloc/logs/c.stdout.0\",\"Offset\":0,\"FileEvent\":\"file truncated\"}}",
            frame("out 1\n", "alloc/logs/c.stdout.0", 6),
            frame("out 2\n", "alloc/logs/c.stdout.0", 12),
        );
        assert_eq!(
            all(body.as_bytes()),
            vec![
                f("out 1\n", "alloc/logs/c.stdout.0", 6),
                Item::Heartbeat,
                f("out 2\n", "alloc/logs/c.stdout.0", 12),
                Item::Frame(Frame {
                    data: vec![],
                    file: "alloc/logs/c.stdout.0".into(),
                    offset: 0,
                    file_event: "file truncated".into()
                }),
            ]
        );
    }

    #[test]
    fn split_frames_wait_for_their_rest() {
        let body = format!("{}{{}}", frame("hello\n", "alloc/logs/c.stderr.3", 99));
        for at in 0..body.len() {
            let mut d = FrameDecoder::default();
            d.push(&body.as_bytes()[..at]);
            let mut got: Vec<Item> = std::iter::from_fn(|| d.next_item()).collect();
            d.push(&body.as_bytes()[at..]);
            got.extend(std::iter::from_fn(|| d.next_item()));
            assert_eq!(got, vec![f("hello\n", "alloc/logs/c.stderr.3", 99), Item::Heartbeat]);
            assert_eq!(d.pending(), 0);
        }
        assert_eq!(decode(b"  "), None);
        assert_eq!(decode(b"{\"Data\":\"aGk"), None);
    }

    #[test]
    fn garbage_is_skipped_up_to_the_next_frame() {
        let good = frame("ok\n", "alloc/logs/c.stdout.0", 3);
        let body = format!(
            "Unexpected EOF{good}{{\"Data\":\"!!notbase64\"}}{{\"Offset\":\"x\",\"a\":{{}}}}{{]{good}[1,2]"
        );
        let frames: Vec<Item> =
            all(body.as_bytes()).into_iter().filter(|i| *i != Item::Garbage).collect();
        assert_eq!(frames, vec![f("ok\n", "alloc/logs/c.stdout.0", 3); 2]);
        // An unterminated object longer than any frame is given up.
        let mut big = b"{\"Data\":\"".to_vec();
        big.resize(MAX_FRAME + 10, b'A');
        assert_eq!(decode(&big), Some((Item::Garbage, 1)));
        for input in [
            &b"{"[..],
            b"}",
            b"{}}",
            b"\xff\xfe{",
            b"{\"Data\":null}",
            b"{\"Offset\":-5,\"File\":\"x\"}",
            // A `}` that completes nothing, then a byte that makes the JSON invalid and so shows
            // the `{}` inside it (found by the fuzzer against a first version of the decoder's
            // shortcut that waited for a `}`).
            b"\x84\xf6{\"\":{}\xff\xff\xfe",
            // A key completed, then a byte of the alphabet that makes the JSON invalid: the `{}`
            // inside the key shows only at the end of the stream (`flush`).
            b"{\"Da{}t\\/\"1",
        ] {
            fuzz_decode(input);
        }
    }

    #[test]
    fn fuzz_oracle_holds_on_samples() {
        let good = frame("a\nb", "alloc/logs/c.stdout.1", 7);
        for s in [
            format!("{good}{good}"),
            format!("x{{{good}"),
            format!("{{\"Data\":\"YQ==\"{good}"),
            format!("{good}{{\"File\":"),
            "{\"a\":[1,{\"b\":2}]}{}".to_owned(),
        ] {
            fuzz_decode(s.as_bytes());
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn listing() -> Vec<FileInfo> {
        serde_json::from_str(
            r#"[{"Name":".c.stdout.fifo","IsDir":false,"Size":0,"ModTime":"2026-11-21T10:00:00Z"},
                {"Name":"c.stdout.1","IsDir":false,"Size":20,"ModTime":"2026-11-21T10:02:00Z"},
                {"Name":"c.stdout.0","IsDir":false,"Size":100,"ModTime":"2026-11-21T10:01:00Z"},
                {"Name":"c.stderr.0","IsDir":false,"Size":5,"ModTime":"2026-11-21T10:03:00Z"}]"#,
        )
        .unwrap()
    }

    #[test]
    fn bytes_get_their_files_time_or_the_read_time() {
        let times = Times::new(&listing());
        let now = ts("2026-11-21T11:00:00Z");
        let fr = Frame {
            data: b"0123456789".to_vec(),
            file: "alloc/logs/c.stdout.1".into(),
            offset: 25,
            file_event: String::new(),
        };
        // Bytes 15..20 were in the file at the listing, 20..25 came since.
        assert_eq!(
            times.stamp(&fr, now),
            vec![(&b"01234"[..], ts("2026-11-21T10:02:00Z")), (&b"56789"[..], now)]
        );
        let unknown = Frame { file: "alloc/logs/c.stdout.2".into(), ..fr.clone() };
        assert_eq!(times.stamp(&unknown, now), vec![(&b"0123456789"[..], now)]);
        let files = log_files(&listing(), "c", "stdout");
        assert_eq!(files.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(), vec![(0, 100), (1, 20)]);
        assert_eq!(since_offset(&files, ts("2026-11-21T10:00:30Z")), Some(0));
        assert_eq!(since_offset(&files, ts("2026-11-21T10:01:30Z")), Some(100));
        assert_eq!(since_offset(&files, ts("2026-11-21T10:05:00Z")), None);
        assert_eq!(absolute(&files, "alloc/logs/c.stdout.1", 7), 107);
        assert_eq!(absolute(&files, "alloc/logs/c.stdout.0", 7), 7);
    }

    #[test]
    fn lines_get_timestamps_and_merged_streams_whole_lines() {
        let t1 = ts("2026-11-21T10:00:00Z");
        let t2 = ts("2026-11-21T10:00:01.5Z");
        let mut l = Lines::new(true, false);
        l.push(b"a\nb", t1);
        l.push(b"c\nd\n", t2);
        assert_eq!(
            String::from_utf8(l.take(false)).unwrap(),
            "2026-11-21T10:00:00.000000000Z a\n2026-11-21T10:00:00.000000000Z bc\n\
             2026-11-21T10:00:01.500000000Z d\n"
        );
        let mut m = Lines::new(false, true);
        m.push(b"one\ntw", t1);
        assert_eq!(m.take(false), b"one\n");
        assert_eq!(m.take(false), b"");
        m.push(b"o\n", t1);
        assert_eq!(m.take(false), b"two\n");
        m.push(b"partial", t1);
        assert_eq!(m.take(true), b"partial");
        m.push(&vec![b'x'; MAX_PARTIAL_LINE + 1], t1);
        assert_eq!(m.take(false).len(), MAX_PARTIAL_LINE + 1);
        assert_eq!(count_lines(b"a\nb"), 2);
        assert_eq!(count_lines(b"a\nb\n"), 2);
        assert_eq!(count_lines(b""), 0);
        let mut lim = Limit(Some(5));
        assert_eq!(lim.cut(b"abc".to_vec()), (b"abc".to_vec(), false));
        assert_eq!(lim.cut(b"defg".to_vec()), (b"de".to_vec(), true));
    }

    use super::super::fake::{self, Reply};

    fn target(addr: &str) -> Target {
        let alloc: Allocation = serde_json::from_value(serde_json::json!({
            "ID": "a1", "JobID": "k8s-ns_p", "ClientStatus": "running",
            "TaskStates": {"c": {"State": "running", "Events": [{"Type": "Started", "Time": 5}]}}
        }))
        .unwrap();
        Target { client: fake::client(addr), alloc, task: "c".into() }
    }

    /// A task that just ended: the read waits until its log files exist and stop growing (Nomad's
    /// log shipper writes after the task state says dead); a running task or one that ended long
    /// ago is read at once.
    #[tokio::test]
    async fn a_just_ended_task_is_read_once_its_log_stops_growing() {
        let listings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = std::sync::Arc::clone(&listings);
        let (addr, _reqs) = fake::fake_nomad(move |line| {
            assert!(line.contains("/fs/ls/a1"), "{line}");
            let size = match n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => return Reply::Json("[]".into()),
                1 => 3,
                _ => 5,
            };
            Reply::Json(format!(
                r#"[{{"Name":"c.stdout.0","Size":{size},"ModTime":"2026-11-21T10:00:00Z"}}]"#
            ))
        })
        .await;
        let ended = |finished: Timestamp| {
            let mut t = target(&addr);
            let st = t.alloc.task_states.as_mut().unwrap().get_mut("c").unwrap();
            st.state = "dead".into();
            st.finished_at = Some(finished.to_string());
            t
        };
        let every = Duration::from_millis(10);
        settle(&ended(Timestamp::now()), every, Duration::from_secs(5)).await;
        assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 4, "none, 3, 5, 5");
        settle(&target(&addr), every, Duration::from_secs(5)).await;
        let long_ago = Timestamp::now() - std::time::Duration::from_secs(600);
        settle(&ended(long_ago), every, Duration::from_secs(5)).await;
        assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 4, "no wait for those");
        // Running, started just now: the read waits for its first output (here at once: 5 bytes).
        let mut fresh = target(&addr);
        let st = fresh.alloc.task_states.as_mut().unwrap().get_mut("c").unwrap();
        st.events.as_mut().unwrap()[0].time =
            i64::try_from(Timestamp::now().as_nanosecond()).unwrap();
        settle(&fresh, every, Duration::from_secs(5)).await;
        assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 5, "one listing");
        // Still pending in the allocation read (the pod's status may be ahead of it): the same.
        let mut pending = target(&addr);
        pending.alloc.task_states.as_mut().unwrap().get_mut("c").unwrap().state = "pending".into();
        settle(&pending, every, Duration::from_secs(5)).await;
        assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 6, "one listing");
    }

    /// A failed task whose log is its termination message: empty log files that stay empty are
    /// waited on until the output arrives (Nomad's docker log collector copies it after the task
    /// state says dead); plain [`settle`] takes the stable empty files as the end.
    #[tokio::test]
    async fn a_termination_read_waits_for_the_output_of_a_just_ended_task() {
        let listings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = std::sync::Arc::clone(&listings);
        let (addr, _reqs) = fake::fake_nomad(move |_| {
            let size = if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 4 { 0 } else { 5 };
            Reply::Json(format!(
                r#"[{{"Name":"c.stdout.0","Size":{size},"ModTime":"2026-11-21T10:00:00Z"}}]"#
            ))
        })
        .await;
        let mut t = target(&addr);
        let st = t.alloc.task_states.as_mut().unwrap().get_mut("c").unwrap();
        st.state = "dead".into();
        st.finished_at = Some(Timestamp::now().to_string());
        let every = Duration::from_millis(10);
        settle(&t, every, Duration::from_secs(5)).await;
        assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 2, "0, 0: stable");
        settle_output(&t, every, Duration::from_secs(5)).await;
        assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 6, "0, 0, 5, 5");
    }

    async fn collect(s: ByteStream) -> Result<Vec<u8>, ProviderError> {
        let mut s = s;
        let mut out = Vec::new();
        let all = async {
            while let Some(item) = s.next().await {
                out.extend_from_slice(&item?);
            }
            Ok::<(), ProviderError>(())
        };
        tokio::time::timeout(Duration::from_secs(10), all).await.unwrap()?;
        Ok(out)
    }

    const LS: &str = r#"[{"Name":"c.stdout.0","IsDir":false,"Size":4,"ModTime":"2026-11-21T10:00:00Z"},
        {"Name":"c.stderr.0","IsDir":false,"Size":4,"ModTime":"2026-11-21T10:00:05Z"}]"#;

    /// Not following, stream All: stdout, then stderr, each line stamped with its file's time,
    /// and bytes written after the listing with the time they were read.
    #[tokio::test]
    async fn all_streams_one_after_the_other_with_timestamps() {
        let (addr, mut reqs) = fake::fake_nomad(|line| {
            if line.contains("/fs/ls/a1") {
                return Reply::Json(LS.into());
            }
            match fake::param(line, "type").as_deref() {
                Some("stdout") => {
                    Reply::Json(format!("{}{{}}", frame("a\nb\n", "alloc/logs/c.stdout.0", 4)))
                }
                Some("stderr") => Reply::Json(format!(
                    "{}{}",
                    frame("e\n", "alloc/logs/c.stderr.0", 2),
                    frame("f\n", "alloc/logs/c.stderr.0", 6)
                )),
                _ => Reply::Status(404, "no".into()),
            }
        })
        .await;
        let opts = LogOptions { timestamps: true, ..Default::default() };
        let out = collect(logs(target(&addr), &opts).await.unwrap()).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert_eq!(lines[0], "2026-11-21T10:00:00.000000000Z a");
        assert_eq!(lines[1], "2026-11-21T10:00:00.000000000Z b");
        assert_eq!(lines[2], "2026-11-21T10:00:05.000000000Z e");
        assert!(lines[3].ends_with("Z f") && lines[3].starts_with("20"), "{}", lines[3]);
        let reqs = fake::drain(&mut reqs);
        let logs: Vec<&String> = reqs.iter().filter(|r| r.contains("/fs/logs/")).collect();
        assert_eq!(logs.len(), 2);
        for r in logs {
            assert_eq!(fake::param(r, "follow").as_deref(), Some("false"));
            assert_eq!(fake::param(r, "origin").as_deref(), Some("start"));
            assert_eq!(fake::param(r, "task").as_deref(), Some("c"));
        }
    }

    /// `tail_lines` reads the last 1024 bytes of the newest file, then the 2048 before them
    /// (here the rest), counting newlines, then streams from where the last window began with the
    /// lines before the cut dropped; stderr (no file) is not read.
    #[tokio::test]
    async fn tails_read_backwards_in_doubling_windows() {
        let log: String = (0..10).map(|i| format!("{i}{}\n", "x".repeat(298))).collect();
        assert_eq!(log.len(), 3000);
        let (addr, mut reqs) = fake::fake_nomad(move |line| {
            if line.contains("/fs/ls/a1") {
                return Reply::Json(
                    r#"[{"Name":"c.stdout.0","IsDir":false,"Size":3000,"ModTime":"2026-11-21T10:00:00Z"}]"#
                        .into(),
                );
            }
            let offset: usize = fake::param(line, "offset").unwrap().parse().unwrap();
            if line.contains("/fs/readat/a1") {
                let limit: usize = fake::param(line, "limit").unwrap().parse().unwrap();
                assert_eq!(fake::param(line, "path").as_deref(), Some("alloc/logs/c.stdout.0"));
                return Reply::Json(log[offset..offset + limit].to_owned());
            }
            match fake::param(line, "type").as_deref() {
                Some("stdout") => Reply::Json(frame(&log[offset..], "alloc/logs/c.stdout.0", 3000)),
                _ => Reply::Json("{}".into()),
            }
        })
        .await;
        let opts = LogOptions { tail_lines: Some(5), ..Default::default() };
        let out = collect(logs(target(&addr), &opts).await.unwrap()).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        let firsts: String = out.lines().map(|l| &l[..1]).collect();
        assert_eq!(firsts, "56789");
        let asked: Vec<String> = fake::drain(&mut reqs)
            .iter()
            .filter(|r| r.contains("/fs/logs/") || r.contains("/fs/readat/"))
            .map(|r| {
                let p = |k| fake::param(r, k).unwrap_or_default();
                match p("type").as_str() {
                    "" => format!("readat {} {}", p("offset"), p("limit")),
                    t => format!("logs {t} {} {}", p("origin"), p("offset")),
                }
            })
            .collect();
        assert_eq!(asked, ["readat 1976 1024", "readat 0 1976", "logs stdout start 0"]);
    }

    /// `since` skips the files last written before it (the read starts after them), and
    /// `limit_bytes` cuts the output.
    #[tokio::test]
    async fn since_skips_old_files_and_limit_cuts() {
        let (addr, mut reqs) = fake::fake_nomad(|line| {
            if line.contains("/fs/ls/a1") {
                return Reply::Json(
                    r#"[{"Name":"c.stdout.0","Size":10,"ModTime":"2026-11-21T10:00:00Z"},
                        {"Name":"c.stdout.1","Size":6,"ModTime":"2026-11-21T10:05:00Z"}]"#
                        .into(),
                );
            }
            Reply::Json(frame("later\n", "alloc/logs/c.stdout.1", 6))
        })
        .await;
        let opts = LogOptions {
            since: Some(ts("2026-11-21T10:03:00Z")),
            limit_bytes: Some(3),
            stream: LogStream::Stdout,
            ..Default::default()
        };
        let out = collect(logs(target(&addr), &opts).await.unwrap()).await.unwrap();
        assert_eq!(out, b"lat");
        let read = fake::drain(&mut reqs).into_iter().find(|r| r.contains("/fs/logs/")).unwrap();
        assert_eq!(fake::param(&read, "origin").as_deref(), Some("start"));
        assert_eq!(fake::param(&read, "offset").as_deref(), Some("10"));
        assert_eq!(fake::param(&read, "type").as_deref(), Some("stdout"));
    }

    /// Nomad's 404 for a task that has not started is the answer, before any byte.
    #[tokio::test]
    async fn refusals_come_before_the_stream() {
        let (addr, _reqs) = fake::fake_nomad(|line| {
            if line.contains("/fs/ls/") {
                return Reply::Json("[]".into());
            }
            Reply::Status(404, "task \"c\" not started yet. No logs available".into())
        })
        .await;
        let err = logs(target(&addr), &LogOptions::default()).await.err().unwrap();
        assert!(matches!(&err, ProviderError::NotFound(m) if m.contains("not started")), "{err}");
    }

    /// Following both streams: lines are merged as they come; once the allocation says the task
    /// is dead, each stream ends at Nomad's next heartbeat, and so does the output.
    #[tokio::test]
    async fn follow_merges_lines_and_ends_with_the_instance() {
        let (addr, mut reqs) = fake::fake_nomad(|line| {
            if line.contains("/fs/ls/a1") {
                return Reply::Json("[]".into());
            }
            if line.contains("/v1/allocation/a1") {
                let state = if fake::param(line, "index").as_deref() == Some("0") {
                    "running"
                } else {
                    "dead"
                };
                return Reply::Json(format!(
                    r#"{{"ID":"a1","JobID":"j","ClientStatus":"running","TaskStates":{{"c":{{"State":"{state}","Events":[{{"Type":"Started","Time":5}}]}}}}}}"#
                ));
            }
            let ms = Duration::from_millis;
            match fake::param(line, "type").as_deref() {
                Some("stdout") => Reply::Stream(
                    vec![
                        (ms(0), frame("x1\npart", "alloc/logs/c.stdout.0", 8)),
                        (ms(150), frame("ial\n", "alloc/logs/c.stdout.0", 12)),
                        (ms(400), "{}".into()),
                    ],
                    true,
                ),
                _ => Reply::Stream(
                    vec![(ms(50), frame("e1\n", "alloc/logs/c.stderr.0", 3)), (ms(450), "{}".into())],
                    true,
                ),
            }
        })
        .await;
        let opts = LogOptions { follow: true, ..Default::default() };
        let out = collect(logs(target(&addr), &opts).await.unwrap()).await.unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "x1\ne1\npartial\n");
        let reqs = fake::drain(&mut reqs);
        assert!(reqs.iter().any(|r| r.contains("/v1/allocation/a1") && r.contains("index=7")));
        assert!(
            reqs.iter()
                .filter(|r| r.contains("/fs/logs/"))
                .all(|r| fake::param(r, "follow").as_deref() == Some("true"))
        );
    }

    /// Attach follows from the end into the channels until the instance ends.
    #[tokio::test]
    async fn attach_streams_new_output_until_the_task_ends() {
        let (addr, mut reqs) = fake::fake_nomad(|line| {
            if line.contains("/fs/ls/a1") {
                return Reply::Json(LS.into());
            }
            if line.contains("/v1/allocation/a1") {
                let state = if fake::param(line, "index").as_deref() == Some("0") { "running" } else { "dead" };
                return Reply::Json(format!(
                    r#"{{"ID":"a1","JobID":"j","ClientStatus":"running","TaskStates":{{"c":{{"State":"{state}"}}}}}}"#
                ));
            }
            let ms = Duration::from_millis;
            Reply::Stream(
                vec![(ms(0), frame("now\n", "alloc/logs/c.stdout.0", 4)), (ms(200), "{}".into())],
                true,
            )
        })
        .await;
        let (tx, mut rx) = futures::channel::mpsc::channel(4);
        let mut t = target(&addr);
        t.alloc.task_states = serde_json::from_str(r#"{"c":{"State":"running"}}"#).unwrap();
        tokio::time::timeout(Duration::from_secs(10), attach(t, Some(tx), None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.next().await.as_deref(), Some(&b"now\n"[..]));
        let read = fake::drain(&mut reqs).into_iter().find(|r| r.contains("/fs/logs/")).unwrap();
        // From the end of the files listed (4 bytes of stdout): Nomad's `origin=end&offset=0`
        // would be the start of the newest file.
        assert_eq!(fake::param(&read, "origin").as_deref(), Some("start"));
        assert_eq!(fake::param(&read, "offset").as_deref(), Some("4"));
        assert_eq!(fake::param(&read, "type").as_deref(), Some("stdout"));
    }
}
