//! Nomad's event stream (`GET /v1/event/stream`), followed so that pod status is pushed, not polled;
//! blocking queries when the stream is refused.
//!
//! The stream is newline-delimited JSON: `{}` heartbeats (one at once, then every 30 s) and
//! `{"Index":N,"Events":[{"Topic","Type","Key","Namespace","FilterKeys","Index","Payload"}]}`
//! (`nomad/stream/ndjson.go`). [`follow`] reconnects with back-off, resumes from the last index
//! seen, and announces every (re)connection with [`Change::Resync`]: Nomad silently skips events
//! that fell out of its buffer (`event_buffer_size`, 100 by default), so the caller must list
//! everything again whenever the stream restarts. A malformed line is logged and skipped; a stream
//! silent for longer than two heartbeats is treated as broken.
//!
//! When Nomad answers the stream request with an HTTP error (403: the ACL token lacks
//! `namespace:read-job` on every namespace or `node:read`, which the Allocation, Job, Evaluation
//! and Node topics need; 404, 500 or 501: the agent runs with `enable_event_broker = false`), [`follow`]
//! falls back to blocking queries for [`STREAM_RETRY`]
//! (<https://developer.hashicorp.com/nomad/api-docs#blocking-queries>), then tries the stream
//! again. In that mode it sends [`Change::Resync`] once, then long-polls
//! `GET /v1/allocations?namespace=*&index=I&wait=W` and
//! `GET /v1/nodes?index=I&wait=W` side by side, `I` being the last `X-Nomad-Index` answered: an
//! allocation whose `ModifyIndex` passed `I` becomes [`Change::Job`], a node index that moved
//! becomes [`Change::Node`], an index that went backwards (Nomad restored a snapshot) a
//! [`Change::Resync`]. Should Nomad refuse a blocking query too (a 4xx other than 429), that
//! endpoint is left alone until the stream is tried again: the application's periodic list
//! (`--status-interval`) is then the only source, plain polling as the last resort. Connection
//! failures, 5xx and 429 answers to blocking queries are retried with back-off; connection
//! failures to the stream never switch modes. Like the stream, these long-held requests bypass the
//! client's bound on requests in flight.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::client::NomadClient;

/// How long the stream may stay silent (Nomad sends a heartbeat every 30 s).
pub const SILENCE: Duration = Duration::from_secs(65);

/// What changed, as the provider tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Something about job `job` (in `namespace`) or one of its allocations changed at Nomad
    /// `index`, at Unix time `time_ns` (ns) when the event says.
    Job {
        /// Job ID.
        job: String,
        /// Nomad namespace.
        namespace: String,
        /// Raft index of the change.
        index: u64,
        /// When Nomad made the change, Unix ns (the allocation's `ModifyTime`, the job's
        /// `SubmitTime`); 0 when the event does not say.
        time_ns: i64,
    },
    /// A Nomad node changed (registered, drained, down, up).
    Node,
    /// The stream (re)connected: events may have been missed, list everything again.
    Resync,
}

/// One line of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// `{}`.
    Heartbeat,
    /// A batch of events at `index`.
    Events {
        /// The batch's index.
        index: u64,
        /// What the events are about.
        changes: Vec<Change>,
    },
    /// Not JSON, or not an event batch: skipped.
    Malformed(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Batch {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    events: Option<Vec<Event>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Event {
    #[serde(default)]
    topic: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    index: u64,
    #[serde(default)]
    payload: serde_json::Value,
}

/// Reads one line of the stream; only events about jobs whose ID starts with `prefix` (and nodes)
/// are kept.
pub fn parse_line(line: &str, prefix: &str) -> Line {
    let line = line.trim();
    if line.is_empty() || line == "{}" {
        return Line::Heartbeat;
    }
    let batch: Batch = match serde_json::from_str(line) {
        Ok(b) => b,
        Err(e) => return Line::Malformed(e.to_string()),
    };
    let Some(events) = batch.events else {
        return Line::Malformed("no Events in a non-empty line".into());
    };
    let mut changes = Vec::new();
    for e in events {
        let (job, time_ns) = match e.topic.as_str() {
            "Allocation" => {
                let a = &e.payload["Allocation"];
                (a["JobID"].as_str().map(str::to_owned), a["ModifyTime"].as_i64().unwrap_or(0))
            }
            "Job" => (Some(e.key.clone()), e.payload["Job"]["SubmitTime"].as_i64().unwrap_or(0)),
            // A placement that failed (or succeeded after waiting) changes no allocation of the
            // job until it does: its evaluation says so first.
            "Evaluation" => (e.payload["Evaluation"]["JobID"].as_str().map(str::to_owned), 0),
            "Node" => {
                if !changes.contains(&Change::Node) {
                    changes.push(Change::Node);
                }
                continue;
            }
            _ => (None, 0),
        };
        if let Some(job) = job.filter(|j| j.starts_with(prefix)) {
            let index = if e.index > 0 { e.index } else { batch.index };
            // One change per job and batch: the earliest time, the latest index.
            match changes.iter_mut().find(|c| matches!(c, Change::Job { job: j, .. } if *j == job))
            {
                Some(Change::Job { index: i, time_ns: t, .. }) => {
                    *i = (*i).max(index);
                    if *t == 0 || (time_ns > 0 && time_ns < *t) {
                        *t = time_ns;
                    }
                }
                _ => changes.push(Change::Job { job, namespace: e.namespace, index, time_ns }),
            }
        }
    }
    Line::Events { index: batch.index, changes }
}

/// The longest line of Nomad's event stream kept (bytes): a batch over it is skipped whole and
/// counted as lost ([`LineSplitter::push`]). Job events carry the whole job, which any Nomad user
/// may make large; 16 MiB is far beyond any job Nomad accepts by default (its HTTP body limit).
pub const MAX_EVENT_LINE: usize = 16 << 20;

/// Counter: event stream batches skipped for being longer than [`MAX_EVENT_LINE`].
pub const EVENT_LINES_SKIPPED: &str = "vk_nomad_event_lines_skipped_total";

/// One piece of the event stream, as [`LineSplitter::push`] splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A complete line, without its newline.
    Line(String),
    /// A line longer than the cap was dropped: its changes are lost.
    Oversize,
}

/// Splits a byte stream into lines in linear time: each chunk is scanned once (the bytes held for
/// a line under way hold no newline), and a line longer than `max` is dropped as it arrives (its bytes are not kept)
/// up to its newline.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// Dropping the rest of an oversize line.
    skipping: bool,
    max: usize,
}

impl LineSplitter {
    /// Lines of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { buf: Vec::new(), skipping: false, max }
    }

    /// Adds `chunk`; returns the pieces it completed.
    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<Piece> {
        let mut out = Vec::new();
        while !chunk.is_empty() {
            let nl = chunk.iter().position(|b| *b == b'\n');
            if self.skipping {
                match nl {
                    Some(i) => {
                        self.skipping = false;
                        chunk = &chunk[i + 1..];
                    }
                    None => return out,
                }
                continue;
            }
            match nl {
                Some(i) if self.buf.len() + i <= self.max => {
                    self.buf.extend_from_slice(&chunk[..i]);
                    out.push(Piece::Line(String::from_utf8_lossy(&self.buf).into_owned()));
                    self.buf.clear();
                    chunk = &chunk[i + 1..];
                }
                Some(i) => {
                    self.buf.clear();
                    out.push(Piece::Oversize);
                    chunk = &chunk[i + 1..];
                }
                None if self.buf.len() + chunk.len() <= self.max => {
                    self.buf.extend_from_slice(chunk);
                    return out;
                }
                None => {
                    self.buf.clear();
                    self.skipping = true;
                    out.push(Piece::Oversize);
                    return out;
                }
            }
        }
        out
    }

    /// Bytes held for the line under way.
    pub fn held(&self) -> usize {
        self.buf.len()
    }
}

/// How long [`follow`] relies on blocking queries after Nomad refused the event stream, before it
/// asks for the stream again.
pub const STREAM_RETRY: Duration = Duration::from_secs(5 * 60);

/// How long Nomad may hold a blocking query (`wait`; Nomad adds up to `wait / 16` of jitter and
/// caps it at 5 minutes, `MaxBlockingRPCQueryTime`).
pub const BLOCKING_WAIT: Duration = Duration::from_secs(60);

/// The durations [`follow`] works with; tests shorten them.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// See [`STREAM_RETRY`].
    stream_retry: Duration,
    /// See [`BLOCKING_WAIT`].
    wait: Duration,
    /// Shortest and longest delay between failed attempts.
    min_delay: Duration,
    max_delay: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            stream_retry: STREAM_RETRY,
            wait: BLOCKING_WAIT,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl Timing {
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .without_max_times()
    }
}

/// Follows the stream until `tx` is closed: sends [`Change::Resync`] after each connection, then
/// the changes of every batch. Reconnects with exponential back-off (0.5 s to 30 s) and resumes
/// after the last index seen. When Nomad refuses the stream (an HTTP error status), watches
/// allocations and nodes with blocking queries for [`STREAM_RETRY`] instead (see the module
/// documentation), then asks for the stream again.
pub async fn follow(client: NomadClient, prefix: String, tx: mpsc::Sender<Change>) {
    follow_with(client, prefix, tx, Timing::default()).await;
}

/// [`follow`] with `timing` (tests shorten it).
async fn follow_with(
    client: NomadClient,
    prefix: String,
    tx: mpsc::Sender<Change>,
    timing: Timing,
) {
    let mut last_index: u64 = 0;
    let builder = timing.backoff();
    let mut backoff = builder.build();
    let mut warned = Warned::default();
    loop {
        if tx.is_closed() {
            return;
        }
        let index = (last_index + 1).to_string();
        let req = client
            .at(Some("*"), None)
            .request(Method::GET, &["v1", "event", "stream"])
            .query(&[
                ("topic", "Allocation"),
                ("topic", "Job"),
                ("topic", "Evaluation"),
                ("topic", "Node"),
                ("index", &index),
            ])
            // The stream never ends on its own: no total timeout (`read_stream` checks silence).
            .timeout(Duration::from_secs(365 * 24 * 3600));
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                info!(from_index = last_index + 1, "following Nomad's event stream");
                backoff = builder.build();
                if tx.send(Change::Resync).await.is_err() {
                    return;
                }
                if !read_stream(resp, &prefix, &tx, &mut last_index).await {
                    return;
                }
            }
            Ok(resp) => {
                let status = resp.status();
                let retry_in = timing.stream_retry;
                if warned.stream {
                    debug!(%status, ?retry_in, "Nomad refused the event stream again");
                } else {
                    warn!(
                        %status,
                        ?retry_in,
                        "Nomad refused the event stream; watching with blocking queries until it \
                         is asked for again"
                    );
                    warned.stream = true;
                }
                backoff = builder.build();
                if !watch_blocking(&client, &prefix, &tx, &timing, &mut warned).await {
                    return;
                }
                continue;
            }
            Err(e) => debug!(error = %e, "connecting to Nomad's event stream failed"),
        }
        let delay = backoff.next().unwrap_or(timing.max_delay);
        tokio::time::sleep(delay).await;
    }
}

/// Reads one connection of the event stream into `tx` until Nomad closes it, it breaks or it goes
/// silent for [`SILENCE`]; `last_index` follows the batches read. A batch over
/// [`MAX_EVENT_LINE`] is answered with [`Change::Resync`]. `false` once `tx` is closed.
async fn read_stream(
    resp: reqwest::Response,
    prefix: &str,
    tx: &mpsc::Sender<Change>,
    last_index: &mut u64,
) -> bool {
    let mut body = resp.bytes_stream();
    let mut lines = LineSplitter::new(MAX_EVENT_LINE);
    loop {
        let chunk = match tokio::time::timeout(SILENCE, body.next()).await {
            Err(_) => {
                warn!("Nomad's event stream went silent; reconnecting");
                break;
            }
            Ok(None) => {
                debug!("Nomad closed the event stream");
                break;
            }
            Ok(Some(Err(e))) => {
                warn!(error = %e, "reading Nomad's event stream failed");
                break;
            }
            Ok(Some(Ok(c))) => c,
        };
        for piece in lines.push(&chunk) {
            let line = match piece {
                Piece::Line(l) => l,
                Piece::Oversize => {
                    warn!(
                        max_bytes = MAX_EVENT_LINE,
                        "a batch of Nomad's event stream is too long and was skipped; listing everything again"
                    );
                    metrics::counter!(EVENT_LINES_SKIPPED).increment(1);
                    if tx.send(Change::Resync).await.is_err() {
                        return false;
                    }
                    continue;
                }
            };
            match parse_line(&line, prefix) {
                Line::Heartbeat => {}
                Line::Malformed(why) => {
                    warn!(%why, "skipping a malformed line of Nomad's event stream");
                }
                Line::Events { index, changes } => {
                    *last_index = (*last_index).max(index);
                    for c in changes {
                        if tx.send(c).await.is_err() {
                            return false;
                        }
                    }
                }
            }
        }
    }
    true
}

/// Whether each refusal (of the stream, of each blocking query) was already logged as a warning:
/// later ones, every [`STREAM_RETRY`], are only debug.
#[derive(Debug, Default)]
struct Warned {
    stream: bool,
    allocations: bool,
    nodes: bool,
}

/// Blocking-query mode, for `timing.stream_retry`: [`Change::Resync`] first, then allocations and
/// nodes watched side by side. `false` once `tx` is closed.
async fn watch_blocking(
    client: &NomadClient,
    prefix: &str,
    tx: &mpsc::Sender<Change>,
    timing: &Timing,
    warned: &mut Warned,
) -> bool {
    if tx.send(Change::Resync).await.is_err() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + timing.stream_retry;
    let allocations = watch(
        client,
        &["v1", "allocations"],
        tx,
        timing,
        |body, after, _| allocation_changes(body, after, prefix),
        &mut warned.allocations,
        "pod status comes only from the periodic list (--status-interval)",
    );
    let nodes = watch(
        client,
        &["v1", "nodes"],
        tx,
        timing,
        |_, after, index| Ok(if index > after { vec![Change::Node] } else { Vec::new() }),
        &mut warned.nodes,
        "Nomad node changes are seen only by the periodic node status check",
    );
    tokio::select! {
        () = tx.closed() => false,
        () = tokio::time::sleep_until(deadline) => true,
        // Either returns only once `tx` is closed.
        () = allocations => false,
        () = nodes => false,
    }
}

/// Why a blocking query failed.
#[derive(Debug)]
enum QueryError {
    /// Nomad refused it (a 4xx other than 429): asking again will not help.
    Refused(reqwest::StatusCode),
    /// Anything else: worth retrying.
    Failed(String),
}

/// One blocking query: `GET segments?namespace=*&index=index&wait=…`, answering the
/// `X-Nomad-Index` header (at least 1, so that the next query blocks) and the body.
async fn blocking_get(
    client: &NomadClient,
    segments: &[&str],
    index: u64,
    wait: Duration,
) -> Result<(u64, Vec<u8>), QueryError> {
    let failed = |e: reqwest::Error| QueryError::Failed(e.to_string());
    let resp = client
        .at(Some("*"), None)
        .request(Method::GET, segments)
        .query(&[("index", index.to_string()), ("wait", format!("{}ms", wait.as_millis()))])
        // Longer than Nomad may hold the query: `wait` plus its jitter (`wait / 16`), plus slack.
        .timeout(wait + wait / 16 + Duration::from_secs(10))
        .send()
        .await
        .map_err(failed)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(
            if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
                QueryError::Refused(status)
            } else {
                QueryError::Failed(format!("Nomad answered {status}"))
            },
        );
    }
    let index = resp
        .headers()
        .get("X-Nomad-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| QueryError::Failed("no X-Nomad-Index in Nomad's answer".into()))?;
    let body = resp.bytes().await.map_err(failed)?;
    Ok((index.max(1), body.to_vec()))
}

/// Watches `segments` with blocking queries until `tx` is closed, sending what
/// `changes(body, previous index, new index)` makes of each answer but the first (which only
/// sets the index). An index gone backwards starts over with [`Change::Resync`]. When Nomad
/// refuses the query, logs it (a warning the first time, `fallback` saying what is left) and
/// waits for `tx` to close.
async fn watch<F>(
    client: &NomadClient,
    segments: &[&str],
    tx: &mpsc::Sender<Change>,
    timing: &Timing,
    changes: F,
    warned: &mut bool,
    fallback: &str,
) where
    F: Fn(&[u8], u64, u64) -> Result<Vec<Change>, String>,
{
    let what = segments.join("/");
    let builder = timing.backoff();
    let mut backoff = builder.build();
    let mut index: u64 = 0;
    loop {
        let error = match blocking_get(client, segments, index, timing.wait).await {
            Ok((new, _)) if new < index => {
                info!(%what, from = index, to = new, "Nomad's index went backwards; listing again");
                index = 0;
                if tx.send(Change::Resync).await.is_err() {
                    return;
                }
                continue;
            }
            Ok((new, _)) if index == 0 => {
                // The first answer only sets the index: a Resync was just sent.
                debug!(%what, index = new, "watching with blocking queries");
                backoff = builder.build();
                index = new;
                continue;
            }
            Ok((new, body)) => match changes(&body, index, new) {
                Ok(found) => {
                    backoff = builder.build();
                    index = new;
                    for c in found {
                        if tx.send(c).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                Err(e) => e,
            },
            Err(QueryError::Refused(status)) => {
                if *warned {
                    debug!(%what, %status, "Nomad refused the blocking query");
                } else {
                    warn!(%what, %status, "Nomad refused the blocking query; {fallback}");
                    *warned = true;
                }
                tx.closed().await;
                return;
            }
            Err(QueryError::Failed(e)) => e,
        };
        debug!(%what, error = %error, "blocking query failed");
        tokio::time::sleep(backoff.next().unwrap_or(timing.max_delay)).await;
    }
}

/// One allocation of `GET /v1/allocations` (`AllocListStub`), the fields used.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AllocStub {
    #[serde(rename = "JobID", default)]
    job_id: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    modify_index: u64,
    #[serde(default)]
    modify_time: i64,
}

/// Reads an answer of `GET /v1/allocations` (a JSON array of allocation stubs: `JobID`,
/// `Namespace`, `ModifyIndex`, `ModifyTime` in Unix ns) into one [`Change::Job`] per job whose ID
/// starts with `prefix` and with an allocation modified after index `after`: the latest
/// `ModifyIndex`, the earliest `ModifyTime` (0 when none says), in the order of first appearance.
///
/// # Errors
/// The reason, when the body is not such an array.
pub fn allocation_changes(body: &[u8], after: u64, prefix: &str) -> Result<Vec<Change>, String> {
    let stubs: Vec<AllocStub> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut changes = Vec::new();
    for a in stubs {
        if a.modify_index <= after || !a.job_id.starts_with(prefix) {
            continue;
        }
        let same = |c: &&mut Change| {
            matches!(c, Change::Job { job, namespace, .. }
                if *job == a.job_id && *namespace == a.namespace)
        };
        match changes.iter_mut().find(same) {
            Some(Change::Job { index, time_ns, .. }) => {
                *index = (*index).max(a.modify_index);
                if *time_ns == 0 || (a.modify_time > 0 && a.modify_time < *time_ns) {
                    *time_ns = a.modify_time;
                }
            }
            _ => changes.push(Change::Job {
                job: a.job_id,
                namespace: a.namespace,
                index: a.modify_index,
                time_ns: a.modify_time,
            }),
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests;
