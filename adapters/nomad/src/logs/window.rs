//! Windows over a task's log bytes: where a read starts for `tail_lines` (reading the files
//! backwards) and for `since` (the files' modification times), the times of the bytes, and the
//! cut after `limit_bytes`.

use std::collections::HashMap;

use futures::StreamExt as _;
use reqwest::Method;
use serde::Deserialize;
use vk_domain::jiff::Timestamp;
use vk_ports::ProviderError;

use super::frames::Frame;
use super::{From, KINDS, SILENCE, Target, unavailable};

/// Bytes read per wanted line in the first window of a tail (the Nomad CLI's `bytesToLines`); the
/// windows double, backwards through the files, until the lines are found or the log began.
pub const TAIL_BYTES_PER_LINE: u64 = 120;

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

/// Cuts the output after `limit_bytes`.
#[derive(Debug)]
pub(super) struct Limit(pub(super) Option<u64>);

impl Limit {
    /// The part of `data` to send; `done` once the limit is reached.
    pub(super) fn cut(&mut self, mut data: Vec<u8>) -> (Vec<u8>, bool) {
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
/// As [`NomadClient::send`](crate::client::NomadClient::send); a file rotated away meanwhile ends the walk there instead.
pub(super) async fn tail(
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
pub(super) struct Tail {
    pub(super) from: From,
    pub(super) skip: u64,
    pub(super) lines: u64,
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
pub(super) fn skip_lines(data: &[u8], mut skip: u64) -> (&[u8], u64) {
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
