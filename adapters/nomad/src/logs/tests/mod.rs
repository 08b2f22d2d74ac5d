//! Tests of logs and attach over a fake Nomad, by concern; the fixtures they share and the tests
//! of [`logs`](super::logs) as a whole are here.

mod follow;
mod frames;
mod settle;
mod window;

use super::super::fake::{self, Reply};
use super::lines::MAX_PARTIAL_LINE;
use super::window::Limit;
use base64::Engine as _;
use futures::StreamExt as _;
use vk_domain::jiff::Timestamp;

use super::*;

fn frame(data: &str, file: &str, offset: u64) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    format!(r#"{{"Data":"{b64}","File":"{file}","Offset":{offset}}}"#)
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn target(addr: &str) -> Target {
    let alloc: Allocation = serde_json::from_value(serde_json::json!({
        "ID": "a1", "JobID": "k8s-ns_p", "ClientStatus": "running",
        "TaskStates": {"c": {"State": "running", "Events": [{"Type": "Started", "Time": 5}]}}
    }))
    .unwrap();
    Target { client: fake::client(addr), alloc, task: "c".into() }
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
