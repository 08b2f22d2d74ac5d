//! The reads of one request, run until Nomad ends them or, when following, until the container
//! instance ends (blocking queries on the allocation: Nomad's own stream never ends): the output
//! of `kubectl logs` ([`Produce`]) and of `kubectl attach` ([`attach`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tracing::debug;
use vk_domain::jiff::Timestamp;
use vk_domain::logs::LogOptions;
use vk_ports::ProviderError;

use super::frames::{FrameDecoder, Item};
use super::lines::Lines;
use super::window::{FileInfo, Limit, Times, log_files, skip_lines, total};
use super::{From, KINDS, SILENCE, Target, open, unavailable};
use crate::api::Allocation;

/// After the container instance ended, how long readers wait for Nomad to send what is left
/// (they stop earlier at Nomad's next heartbeat, which says it has caught up).
const DRAIN: Duration = Duration::from_secs(3);

#[derive(Debug)]
enum Ev {
    Data(usize, Vec<u8>, Timestamp),
    Idle(usize),
    Done(usize),
    Failed(ProviderError),
}

/// The events of a request's readers, with the end of the container instance watched beside them:
/// once it has ended, the readers are told (`ending`) to stop at Nomad's next heartbeat or after
/// [`DRAIN`].
struct Events<F> {
    rx: mpsc::Receiver<Ev>,
    ended: Pin<Box<F>>,
    /// The instance's end was seen (or is not watched): `ended` is not polled again.
    ended_seen: bool,
    ending_tx: watch::Sender<bool>,
}

impl<F: Future<Output = ()>> Events<F> {
    /// The events of `rx`; with `watch_end`, `ended` is watched and, once it resolves, `true` is
    /// sent on `ending_tx`.
    fn new(
        rx: mpsc::Receiver<Ev>,
        ended: F,
        ending_tx: watch::Sender<bool>,
        watch_end: bool,
    ) -> Self {
        Self { rx, ended: Box::pin(ended), ended_seen: !watch_end, ending_tx }
    }

    /// The next event; `None` once every reader (every sender) is gone.
    async fn next(&mut self) -> Option<Ev> {
        loop {
            tokio::select! {
                ev = self.rx.recv() => return ev,
                () = &mut self.ended, if !self.ended_seen => {
                    self.ended_seen = true;
                    let _ = self.ending_tx.send(true);
                }
            }
        }
    }
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

pub(super) struct Produce {
    pub(super) t: Target,
    pub(super) opts: LogOptions,
    pub(super) kinds: Vec<usize>,
    /// Lines each stream's read drops first (a tail read starts before its cut).
    pub(super) skips: [u64; 2],
    pub(super) reads: Vec<(usize, reqwest::Response)>,
    pub(super) times: Arc<Times>,
}

impl Produce {
    pub(super) async fn run(self, out: mpsc::Sender<Result<Bytes, ProviderError>>) {
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
        let (tx, rx) = mpsc::channel::<Ev>(16);
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
        let mut events = Events::new(rx, instance_ended(&t), ending_tx, opts.follow);
        while running > 0 {
            match events.next().await {
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
/// As [`logs`](super::logs); a stream breaking later is `Unavailable`.
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
    let (tx, rx) = mpsc::channel::<Ev>(16);
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
    let mut events = Events::new(rx, instance_ended(&t), ending_tx, true);
    while running > 0 {
        match events.next().await {
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
