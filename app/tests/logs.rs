//! What the pod controller logs, captured at TRACE as text and JSON: every pod operation runs in
//! a span naming the namespace, the pod and the job, and no Secret value or token is ever written.
//! A binary of its own: tracing's callsite interest is process-wide, and another test thread
//! registering a callsite while the capturing subscriber is being set could leave it disabled.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use vk_domain::jiff::Timestamp;
use vk_ports::PodWatchEvent;

use support::*;

/// A `MakeWriter` keeping everything written, for reading back what was logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn logs_carry_namespace_pod_and_job_and_never_secrets_or_tokens() {
    use tracing_subscriber::layer::SubscriberExt as _;
    // Every event and span at TRACE, as text and as JSON (with span fields), on this thread: the
    // test runtime is single-threaded, so the controller's tasks all log here.
    let (text, json) = (Captured::default(), Captured::default());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::TRACE)
        .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer({
            let w = text.clone();
            move || w.clone()
        }))
        .with(tracing_subscriber::fmt::layer().json().with_writer({
            let w = json.clone();
            move || w.clone()
        }));
    let _guard = tracing::subscriber::set_default(subscriber);

    const SECRET: &str = "hunter2-the-password-value";
    let provider = FakeProvider::default();
    let h = Harness::start(provider);
    h.api.set_secret("db", &[("password", SECRET)]);
    let spec = json!({
        "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "1"],
            "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
            "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}],
        "volumes": [
            {"name": "creds", "secret": {"secretName": "db"}},
            {"name": "token", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]}}
        ]
    });
    h.api.send(PodWatchEvent::Relisted(vec![pod("s", "u20", "Pending", spec.clone())]));
    h.until("created", |h| h.provider.calls() == ["create ns/s"]).await;
    h.until("Running and ready", |h| {
        h.api.statuses_of(&key("s")).iter().any(|s| {
            s.phase.as_deref() == Some("Running")
                && s.container_statuses.as_ref().is_some_and(|c| c[0].ready)
        })
    })
    .await;
    // The volume refresh rewrites the Secret's and the token's files.
    h.controller.refresh_once().await;
    assert!(
        h.provider.calls().iter().any(|c| c.starts_with("update ns/s") && c.contains(TOKEN)),
        "the refresh carried the token to the provider: {:?}",
        h.provider.calls()
    );
    // A failure naming the Secret: a pod reading a key the Secret lacks.
    let missing = json!({"containers": [{"name": "main", "image": "busybox",
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope"}}}]}]});
    h.api.send(PodWatchEvent::Applied(pod("m", "u21", "Pending", missing)));
    h.until("the missing key reported", |h| !h.api.statuses_of(&key("m")).is_empty()).await;
    // Then the pod is deleted: stop, purge, delete the object.
    let mut deleting = pod("s", "u20", "Running", spec);
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::now() + Duration::from_secs(30),
        ));
    h.api.send(PodWatchEvent::Applied(deleting));
    h.until("the object deleted", |h| h.api.deleted.lock().unwrap().contains(&key("s"))).await;
    drop(h);

    let (text, json) = (text.text(), json.text());
    for (format, out) in [("text", &text), ("json", &json)] {
        assert!(!out.contains(SECRET), "the Secret's value was logged as {format}:\n{out}");
        assert!(!out.contains(TOKEN), "the token was logged as {format}:\n{out}");
        // Nor as the bytes a derived `Debug` of Secret data would print.
        let bytes = format!("{:?}", SECRET.as_bytes());
        assert!(!out.contains(&bytes[1..bytes.len() - 1]), "Secret bytes logged as {format}");
    }
    // The pod operations ran in spans naming the namespace, the pod and the job.
    for span in ["sync_pod", "refresh_pod", "probe"] {
        let want = format!("{span}{{namespace=ns pod=s job=job-ns/s");
        assert!(text.contains(&want), "no {want}}} in the text logs:\n{text}");
    }
    for (what, needle) in [
        ("created", "workload created"),
        ("stopped", "workload stopping"),
        ("purged", "workload purged"),
        ("object deleted", "pod object deleted"),
        ("status written", "pod status written"),
        ("readiness", "readiness changed"),
    ] {
        let line = text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| {
            panic!("no log line for {what}:\n{text}");
        });
        assert!(
            line.contains("namespace=ns pod=s job=job-ns/s"),
            "{what} without its span: {line}"
        );
    }
    let lines: Vec<serde_json::Value> =
        json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let created = lines
        .iter()
        .find(|l| l["fields"]["message"] == "workload created")
        .unwrap_or_else(|| panic!("no JSON line for the create:\n{json}"));
    assert_eq!(created["span"]["name"], "sync_pod");
    assert_eq!(created["span"]["namespace"], "ns");
    assert_eq!(created["span"]["pod"], "s");
    assert_eq!(created["span"]["job"], "job-ns/s", "the job ID recorded once created");
    // The pod whose workload was never made has no job, but its namespace and name.
    let waiting = lines
        .iter()
        .find(|l| l["fields"]["reason"] == "MandatorySecretKeyNotFound")
        .unwrap_or_else(|| panic!("no JSON line for the missing key:\n{json}"));
    assert_eq!(waiting["span"]["pod"], "m");
    assert_eq!(waiting["span"]["namespace"], "ns");
    assert!(waiting["span"].get("job").is_none(), "{waiting}");
}
