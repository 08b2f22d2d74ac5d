//! Nomad's event stream (`GET /v1/event/stream`), followed so that pod status is pushed, not polled.
//!
//! The stream is newline-delimited JSON: `{}` heartbeats (one at once, then every 30 s) and
//! `{"Index":N,"Events":[{"Topic","Type","Key","Namespace","FilterKeys","Index","Payload"}]}`
//! (`nomad/stream/ndjson.go`). [`follow`] reconnects with back-off, resumes from the last index
//! seen, and announces every (re)connection with [`Change::Resync`]: Nomad silently skips events
//! that fell out of its buffer (`event_buffer_size`, 100 by default), so the caller must list
//! everything again whenever the stream restarts. A malformed line is logged and skipped; a stream
//! silent for longer than two heartbeats is treated as broken.

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

/// Splits complete lines off `buf`, leaving a partial last line in it.
pub fn take_lines(buf: &mut Vec<u8>) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = buf.drain(..=pos).collect();
        out.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
    }
    out
}

/// Follows the stream until `tx` is closed: sends [`Change::Resync`] after each connection, then
/// the changes of every batch. Reconnects with exponential back-off (0.5 s to 30 s) and resumes
/// after the last index seen.
pub async fn follow(client: NomadClient, prefix: String, tx: mpsc::Sender<Change>) {
    let mut last_index: u64 = 0;
    let builder = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times();
    let mut backoff = builder.build();
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
                ("topic", "Node"),
                ("index", &index),
            ])
            // The stream never ends on its own: no total timeout (silence is checked below).
            .timeout(Duration::from_secs(365 * 24 * 3600));
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                info!(from_index = last_index + 1, "following Nomad's event stream");
                backoff = builder.build();
                if tx.send(Change::Resync).await.is_err() {
                    return;
                }
                let mut body = resp.bytes_stream();
                let mut buf = Vec::new();
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
                    buf.extend_from_slice(&chunk);
                    for line in take_lines(&mut buf) {
                        match parse_line(&line, &prefix) {
                            Line::Heartbeat => {}
                            Line::Malformed(why) => {
                                warn!(%why, "skipping a malformed line of Nomad's event stream");
                            }
                            Line::Events { index, changes } => {
                                last_index = last_index.max(index);
                                for c in changes {
                                    if tx.send(c).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Ok(resp) => {
                warn!(status = %resp.status(), "Nomad refused the event stream");
            }
            Err(e) => debug!(error = %e, "connecting to Nomad's event stream failed"),
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_parsed_and_filtered() {
        assert_eq!(parse_line("{}", "k8s-"), Line::Heartbeat);
        assert_eq!(parse_line("", "k8s-"), Line::Heartbeat);
        assert!(matches!(parse_line("{not json", "k8s-"), Line::Malformed(_)));
        assert!(matches!(parse_line(r#"{"Index":3}"#, "k8s-"), Line::Malformed(_)));
        let line = r#"{"Index":42,"Events":[
            {"Topic":"Allocation","Type":"AllocationUpdated","Key":"a1","Namespace":"default","Index":41,
             "Payload":{"Allocation":{"ID":"a1","JobID":"k8s-ns_web","ModifyTime":1700000000000000000}}},
            {"Topic":"Allocation","Type":"AllocationUpdated","Key":"a1","Namespace":"default","Index":42,
             "Payload":{"Allocation":{"ID":"a1","JobID":"k8s-ns_web","ModifyTime":1700000000500000000}}},
            {"Topic":"Allocation","Type":"AllocationUpdated","Key":"a2","Namespace":"default","Index":42,
             "Payload":{"Allocation":{"ID":"a2","JobID":"other-job"}}},
            {"Topic":"Job","Type":"JobRegistered","Key":"k8s-ns_db","Namespace":"apps","Index":42,"Payload":{"Job":{}}},
            {"Topic":"Node","Type":"NodeDrain","Key":"n1","Index":42,"Payload":{}},
            {"Topic":"Node","Type":"NodeRegistration","Key":"n2","Index":42,"Payload":{}}
        ]}"#
        .replace('\n', "");
        assert_eq!(
            parse_line(&line, "k8s-"),
            Line::Events {
                index: 42,
                changes: vec![
                    Change::Job {
                        job: "k8s-ns_web".into(),
                        namespace: "default".into(),
                        index: 42,
                        time_ns: 1_700_000_000_000_000_000
                    },
                    Change::Job {
                        job: "k8s-ns_db".into(),
                        namespace: "apps".into(),
                        index: 42,
                        time_ns: 0
                    },
                    Change::Node,
                ]
            }
        );
    }

    #[test]
    fn lines_are_split_across_chunks() {
        let mut buf = b"{}\n{\"Index\":1,".to_vec();
        assert_eq!(take_lines(&mut buf), ["{}"]);
        assert_eq!(buf, b"{\"Index\":1,");
        buf.extend_from_slice(b"\"Events\":[]}\n{}\n");
        assert_eq!(take_lines(&mut buf), ["{\"Index\":1,\"Events\":[]}", "{}"]);
        assert!(buf.is_empty());
    }

    fn alloc_event(job: &str, index: u64) -> String {
        format!(
            r#"{{"Index":{index},"Events":[{{"Topic":"Allocation","Type":"AllocationUpdated","Key":"a","Namespace":"default","Index":{index},"Payload":{{"Allocation":{{"JobID":"{job}"}}}}}}]}}"#
        )
    }

    /// A fake Nomad (a raw TCP server) ends the stream twice: the follower reconnects, resumes
    /// after the last index, announces each connection, and skips a malformed line without
    /// dropping the connection.
    #[tokio::test]
    async fn follow_reconnects_resumes_and_skips_malformed_lines() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (req_tx, mut req_rx) = mpsc::unbounded_channel::<String>();
        let bodies = [
            format!(
                "{{}}\n{}\nnot json at all\n{}\n",
                alloc_event("k8s-ns_a", 7),
                alloc_event("k8s-ns_b", 9)
            ),
            format!("{{}}\n{}\n", alloc_event("k8s-ns_c", 12)),
        ];
        tokio::spawn(async move {
            let mut held = Vec::new();
            for i in 0.. {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                        break;
                    }
                    head.push(byte[0]);
                }
                let line =
                    String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
                let _ = req_tx.send(line);
                let _ = sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n").await;
                match bodies.get(i) {
                    Some(body) => {
                        let _ = sock.write_all(body.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    }
                    // The third connection stays open, silent.
                    None => held.push(sock),
                }
            }
        });
        let client = NomadClient::new(&super::super::client::ClientConfig {
            address: format!("http://{addr}"),
            ..Default::default()
        })
        .unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        tokio::spawn(follow(client, "k8s-".into(), tx));
        let job = |j: &str, index| Change::Job {
            job: j.into(),
            namespace: "default".into(),
            index,
            time_ns: 0,
        };
        let mut got = Vec::new();
        for _ in 0..6 {
            let c =
                tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
            got.push(c);
        }
        assert_eq!(
            got,
            [
                Change::Resync,
                job("k8s-ns_a", 7),
                job("k8s-ns_b", 9),
                Change::Resync,
                job("k8s-ns_c", 12),
                Change::Resync
            ]
        );
        let requests: Vec<String> = std::iter::from_fn(|| req_rx.try_recv().ok()).collect();
        assert_eq!(requests.len(), 3, "{requests:?}");
        assert!(
            requests[0].contains("index=1 ") || requests[0].contains("index=1&"),
            "{}",
            requests[0]
        );
        assert!(requests[1].contains("index=10"), "resumes after 9: {}", requests[1]);
        assert!(requests[2].contains("index=13"), "resumes after 12: {}", requests[2]);
        assert!(
            requests[0].contains("topic=Allocation") && requests[0].contains("namespace=*"),
            "{}",
            requests[0]
        );
    }
}
