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
//!
//! Submodules: `frames` (the codec of the stream), `window` (tail, since and limit over the log
//! bytes, and their times), `lines` (timestamps, whole lines), `follow` (the reads of a request,
//! following until the instance ends; attach), `settle` (waiting for the log shippers).

mod follow;
mod frames;
mod lines;
mod settle;
mod window;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use tokio::sync::mpsc;
use vk_domain::logs::{LogOptions, LogStream};
use vk_ports::{ByteStream, ProviderError};

use self::follow::Produce;
pub use self::follow::{attach, instance_ended};
pub use self::frames::{Frame, FrameDecoder, Item, MAX_FRAME, decode, fuzz_decode};
pub use self::lines::Lines;
pub use self::settle::{SETTLE_AFTER_END, SETTLE_AFTER_START, settle, settle_output};
use self::window::tail;
pub use self::window::{
    FileInfo, MAX_TAIL_WINDOW, TAIL_BYTES_PER_LINE, Times, absolute, count_lines, log_files,
    since_offset, total,
};
use super::api::Allocation;
use super::client::NomadClient;

/// Nomad sends a heartbeat every second: this long without any byte means the stream broke.
const SILENCE: Duration = Duration::from_secs(30);

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
