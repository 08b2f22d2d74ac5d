//! Tests of the event stream and of the blocking-query fallback, against the fake Nomad.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;
use crate::fake::{self, Reply};

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
            {"Topic":"Evaluation","Type":"EvaluationUpdated","Key":"e1","Namespace":"apps","Index":42,
             "Payload":{"Evaluation":{"ID":"e1","JobID":"k8s-ns_big","Status":"blocked"}}},
            {"Topic":"Evaluation","Type":"EvaluationUpdated","Key":"e2","Namespace":"apps","Index":42,
             "Payload":{"Evaluation":{"ID":"e2","JobID":"someone-elses"}}},
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
                Change::Job {
                    job: "k8s-ns_big".into(),
                    namespace: "apps".into(),
                    index: 42,
                    time_ns: 0
                },
                Change::Node,
            ]
        }
    );
}

fn lines(p: Vec<Piece>) -> Vec<String> {
    p.into_iter()
        .map(|p| match p {
            Piece::Line(l) => l,
            Piece::Oversize => "<oversize>".into(),
        })
        .collect()
}

#[test]
fn lines_are_split_across_chunks() {
    let mut s = LineSplitter::new(1024);
    assert_eq!(lines(s.push(b"{}\n{\"Index\":1,")), ["{}"]);
    assert_eq!(s.held(), 11);
    assert_eq!(lines(s.push(b"\"Events\":[]}\n{}\n")), ["{\"Index\":1,\"Events\":[]}", "{}"]);
    assert_eq!(s.held(), 0);
}

/// A line over the cap is dropped as it comes, never held; the next line is whole.
#[test]
fn an_oversize_line_is_dropped_without_being_held() {
    let mut s = LineSplitter::new(8);
    assert_eq!(lines(s.push(b"{}\n0123")), ["{}"]);
    assert_eq!(lines(s.push(b"456789")), ["<oversize>"]);
    assert_eq!(s.held(), 0);
    assert!(s.push(&[b'x'; 4096]).is_empty());
    assert_eq!(s.held(), 0, "the rest of the long line is not kept");
    assert_eq!(lines(s.push(b"tail\n{\"a\":1}\n")), ["{\"a\":1}"]);
    assert_eq!(lines(s.push(b"123456789\nok\n")), ["<oversize>", "ok"]);
}

/// Many small chunks of one long line cost linear time: each byte is looked at once.
#[test]
fn a_line_in_many_chunks_is_scanned_once() {
    let mut s = LineSplitter::new(MAX_EVENT_LINE);
    for _ in 0..100_000 {
        assert!(s.push(&[b'a'; 64]).is_empty());
    }
    assert_eq!(lines(s.push(b"\n")).first().map(String::len), Some(6_400_000));
}

fn alloc_event(job: &str, index: u64) -> String {
    format!(
        r#"{{"Index":{index},"Events":[{{"Topic":"Allocation","Type":"AllocationUpdated","Key":"a","Namespace":"default","Index":{index},"Payload":{{"Allocation":{{"JobID":"{job}"}}}}}}]}}"#
    )
}

/// The fake Nomad ends the stream twice: the follower reconnects, resumes after the last
/// index, announces each connection, and skips a malformed line without dropping the
/// connection.
#[tokio::test]
async fn follow_reconnects_resumes_and_skips_malformed_lines() {
    let bodies = [
        format!(
            "{{}}\n{}\nnot json at all\n{}\n",
            alloc_event("k8s-ns_a", 7),
            alloc_event("k8s-ns_b", 9)
        ),
        format!("{{}}\n{}\n", alloc_event("k8s-ns_c", 12)),
    ];
    let connections = AtomicUsize::new(0);
    let (addr, mut req_rx) = fake::fake_nomad(move |_| {
        match bodies.get(connections.fetch_add(1, Ordering::SeqCst)) {
            Some(body) => Reply::Stream(vec![(Duration::ZERO, body.clone())], false),
            // The third connection stays open, silent.
            None => Reply::Stream(Vec::new(), true),
        }
    })
    .await;
    let client = fake::client(&addr);
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
        let c = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
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

#[test]
fn allocation_answers_become_job_changes() {
    let body = br#"[
            {"ID":"a1","JobID":"k8s-ns_web","Namespace":"default","ModifyIndex":12,"ModifyTime":1700000000500000000},
            {"ID":"a2","JobID":"k8s-ns_web","Namespace":"default","ModifyIndex":11,"ModifyTime":1700000000000000000},
            {"ID":"a3","JobID":"k8s-ns_web","Namespace":"apps","ModifyIndex":11},
            {"ID":"a4","JobID":"k8s-ns_old","Namespace":"default","ModifyIndex":10,"ModifyTime":1},
            {"ID":"a5","JobID":"other-job","Namespace":"default","ModifyIndex":12,"ModifyTime":1}
        ]"#;
    let job = |ns: &str, index, time_ns| Change::Job {
        job: "k8s-ns_web".into(),
        namespace: ns.into(),
        index,
        time_ns,
    };
    assert_eq!(
        allocation_changes(body, 10, "k8s-").unwrap(),
        [job("default", 12, 1_700_000_000_000_000_000), job("apps", 11, 0)]
    );
    assert_eq!(allocation_changes(body, 12, "k8s-").unwrap(), []);
    assert_eq!(allocation_changes(b"[]", 0, "k8s-").unwrap(), []);
    assert!(allocation_changes(b"{\"not\":\"a list\"}", 0, "k8s-").is_err());
}

fn quick(stream_retry: Duration) -> Timing {
    Timing {
        stream_retry,
        wait: Duration::from_secs(1),
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    }
}

async fn next(rx: &mut mpsc::Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap()
}

/// The fake Nomad refuses the event stream (403): the follower announces a Resync, takes the
/// indexes from the first answers (no change for the allocations already there), then, on the
/// blocking queries after them, reports the job whose allocation moved (not the other
/// prefix's, nor the one modified before), the node change, and a Resync when the node index
/// goes backwards.
#[tokio::test]
async fn follow_falls_back_to_blocking_queries_when_the_stream_is_refused() {
    let (allocations_listed, nodes_listed) = (AtomicBool::new(false), AtomicBool::new(false));
    let (addr, mut req_rx) = fake::fake_nomad(move |line| {
            let path = line.split_whitespace().nth(1).unwrap_or_default();
            if path.starts_with("/v1/event/stream") {
                Reply::Status(403, "Permission denied".into())
            } else if path.starts_with("/v1/allocations?") {
                if path.contains("&index=5&") {
                    Reply::Indexed(
                        8,
                        r#"[{"ID":"a1","JobID":"k8s-ns_a","Namespace":"default","ModifyIndex":8,"ModifyTime":1700000000000000000},
                            {"ID":"a2","JobID":"other-job","Namespace":"default","ModifyIndex":8,"ModifyTime":1},
                            {"ID":"a3","JobID":"k8s-ns_b","Namespace":"default","ModifyIndex":3,"ModifyTime":1}]"#
                            .into(),
                    )
                } else if path.contains("&index=0&") && !allocations_listed.swap(true, Ordering::SeqCst) {
                    Reply::Indexed(
                        5,
                        r#"[{"ID":"a0","JobID":"k8s-ns_a","Namespace":"default","ModifyIndex":5,"ModifyTime":1},
                            {"ID":"a3","JobID":"k8s-ns_b","Namespace":"default","ModifyIndex":3,"ModifyTime":1}]"#
                            .into(),
                    )
                } else {
                    Reply::Silent
                }
            } else if path.starts_with("/v1/nodes?") {
                if path.contains("&index=4&") {
                    Reply::Indexed(6, "[]".into())
                } else if path.contains("&index=6&") {
                    Reply::Indexed(3, "[]".into())
                } else if path.contains("&index=0&") && !nodes_listed.swap(true, Ordering::SeqCst) {
                    Reply::Indexed(4, "[]".into())
                } else {
                    Reply::Silent
                }
            } else {
                Reply::Status(404, String::new())
            }
        })
        .await;
    let client = fake::client(&addr);
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(follow_with(client, "k8s-".into(), tx, quick(Duration::from_secs(60))));
    assert_eq!(next(&mut rx).await, Change::Resync);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut rx).await);
    }
    let job = Change::Job {
        job: "k8s-ns_a".into(),
        namespace: "default".into(),
        index: 8,
        time_ns: 1_700_000_000_000_000_000,
    };
    // Allocations and nodes are watched side by side: only each one's order is certain.
    assert!(got.contains(&job), "{got:?}");
    let node = got.iter().position(|c| *c == Change::Node);
    let resync = got.iter().position(|c| *c == Change::Resync);
    assert!(matches!((node, resync), (Some(n), Some(r)) if n < r), "{got:?}");
    let more = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(more.is_err(), "nothing else: {more:?}");

    let requests: Vec<String> = std::iter::from_fn(|| req_rx.try_recv().ok()).collect();
    let count = |p: &str| requests.iter().filter(|r| r.contains(p)).count();
    assert_eq!(count("/v1/event/stream"), 1, "{requests:?}");
    let blocking = |p: &str, index: &str| {
        requests.iter().any(|r| r.contains(p) && r.contains(index) && r.contains("&wait="))
    };
    assert!(blocking("/v1/allocations?namespace=*&", "&index=5&"), "{requests:?}");
    assert!(blocking("/v1/nodes?", "&index=4&"), "{requests:?}");
    assert!(blocking("/v1/nodes?", "&index=6&"), "{requests:?}");
    // Started over after the index went backwards.
    assert_eq!(count("/v1/nodes?namespace=*&index=0&"), 2, "{requests:?}");
}

/// When Nomad refuses the blocking queries too, nothing is retried until the stream is asked
/// for again, after `stream_retry`; each try of the stream announces a Resync.
#[tokio::test]
async fn follow_waits_for_the_stream_when_blocking_queries_are_refused() {
    let (addr, mut req_rx) =
        fake::fake_nomad(|_| Reply::Status(403, "Permission denied".into())).await;
    let client = fake::client(&addr);
    let (tx, mut rx) = mpsc::channel(16);
    let start = tokio::time::Instant::now();
    tokio::spawn(follow_with(client, "k8s-".into(), tx, quick(Duration::from_millis(400))));
    assert_eq!(next(&mut rx).await, Change::Resync);
    assert_eq!(next(&mut rx).await, Change::Resync);
    assert!(start.elapsed() >= Duration::from_millis(400));
    let requests: Vec<String> = std::iter::from_fn(|| req_rx.try_recv().ok()).collect();
    let count = |p: &str| requests.iter().filter(|r| r.contains(p)).count();
    let streams = count("/v1/event/stream");
    assert!(streams >= 2, "{requests:?}");
    assert!(count("/v1/allocations?") <= streams, "{requests:?}");
    assert!(count("/v1/nodes?") <= streams, "{requests:?}");
    assert!(count("/v1/allocations?") >= 1, "{requests:?}");
}
