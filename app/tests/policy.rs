//! The operator's policy as the pod controller and the prober apply it: probe hosts refused before
//! the backend sees the pod, namespace labels read for rules selecting by label, and probes that
//! dial only the pod or an allowed host and follow redirects as the kubelet does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vk_domain::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use vk_domain::policy::{HostPattern, NamespaceSelector, ProbeGrant, Rule, Rules};
use vk_ports::PodWatchEvent;

use support::*;

fn probed(host: &str) -> serde_json::Value {
    json!({"containers": [{"name": "web", "image": "i",
        "readinessProbe": {"httpGet": {"host": host, "port": 80, "path": "/"}}}]})
}

fn grant(hosts: &[&str]) -> ProbeGrant {
    ProbeGrant { hosts: hosts.iter().map(|h| HostPattern::parse(h).unwrap()).collect() }
}

#[tokio::test]
async fn a_probe_host_the_operator_did_not_allow_is_refused_before_the_backend_sees_the_pod() {
    let h = Harness::start_with(FakeProvider::default(), FakeApi::new(), |s| {
        s.probe_policy = Arc::new(Rules { base: grant(&["10.20.0.0/16"]), rules: Vec::new() });
    });
    h.api.send(PodWatchEvent::Relisted(vec![
        pod("metadata", "u1", "Pending", probed("169.254.169.254")),
        pod("internal", "u2", "Pending", probed("10.96.0.1")),
        pod("allowed", "u3", "Pending", probed("10.20.3.4")),
        // A lifecycle hook's httpGet reaches hosts as a probe does, under the same rules.
        pod(
            "hooked",
            "u4",
            "Pending",
            json!({"containers": [{"name": "web", "image": "i",
            "lifecycle": {"preStop": {"httpGet": {"host": "10.96.0.1", "port": 80}}}}]}),
        ),
    ]));
    h.until("three refusals and one create", |h| {
        h.api.statuses_of(&key("metadata")).len() == 1
            && h.api.statuses_of(&key("internal")).len() == 1
            && h.api.statuses_of(&key("hooked")).len() == 1
            && h.provider.calls().contains(&"create ns/allowed".to_owned())
    })
    .await;
    let message = |name: &str| h.api.statuses_of(&key(name))[0].message.clone().unwrap();
    let m = message("metadata");
    assert!(
        m.starts_with("spec.containers[0].readinessProbe.httpGet.host: \"169.254.169.254\"")
            && m.contains("never probed"),
        "{m}"
    );
    let m = message("internal");
    assert!(
        m.contains("--allowed-probe-hosts allows 10.20.0.0/16")
            && m.contains("no policy-file rule selects namespace \"ns\""),
        "{m}"
    );
    let m = message("hooked");
    assert!(
        m.starts_with(
            "spec.containers[0].lifecycle.preStop.httpGet.host: \"10.96.0.1\" is not allowed"
        ),
        "{m}"
    );
    assert_eq!(h.api.statuses_of(&key("metadata"))[0].reason.as_deref(), Some("ProviderFailed"));
    let events = h.api.recorded.lock().unwrap().clone();
    assert_eq!(events.iter().filter(|(r, _)| r == "ProviderCreateFailed").count(), 3, "{events:?}");
    assert_eq!(h.provider.calls(), ["create ns/allowed"], "nothing else reached the backend");
}

#[tokio::test]
async fn namespace_labels_are_read_for_rules_that_select_by_label() {
    let rules = Rules {
        base: ProbeGrant::default(),
        rules: vec![Rule {
            name: "trusted".into(),
            namespaces: NamespaceSelector {
                names: Default::default(),
                labels: Some(LabelSelector {
                    match_labels: Some([("trust".to_owned(), "high".to_owned())].into()),
                    ..Default::default()
                }),
            },
            grant: grant(&["10.1.1.1"]),
        }],
    };
    for (labels, created) in [(Some("high"), true), (Some("low"), false), (None, false)] {
        let api = FakeApi::new();
        if let Some(v) = labels {
            let l: BTreeMap<String, String> = [("trust".to_owned(), v.to_owned())].into();
            api.namespace_labels.lock().unwrap().insert("ns".into(), l);
        }
        let rules = Arc::new(rules.clone());
        let h = Harness::start_with(FakeProvider::default(), api, |s| {
            s.probe_policy = rules;
            s.namespace_labels = true;
        });
        h.api.send(PodWatchEvent::Relisted(vec![pod("p", "u1", "Pending", probed("10.1.1.1"))]));
        h.until("created or refused", |h| {
            !h.provider.calls().is_empty() || !h.api.statuses_of(&key("p")).is_empty()
        })
        .await;
        assert_eq!(h.provider.calls() == ["create ns/p"], created, "labels {labels:?}");
    }
}

/// A tiny HTTP server on `addr`: `/ok` answers 200, `/to-other` redirects to `other`,
/// `/to-same` to its own `/ok`, `/loop` to itself; every request line is recorded.
async fn server(addr: &str, other: String) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let host = addr.split(':').next().unwrap().to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let (log, other, host) = (Arc::clone(&log), other.clone(), host.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let line =
                    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_owned();
                log.lock().unwrap().push(line.clone());
                let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                let location = match path.as_str() {
                    "/to-other" => Some(other),
                    "/to-same" => Some(format!("http://{host}:{port}/ok")),
                    "/loop" => Some(format!("http://{host}:{port}/loop")),
                    _ => None,
                };
                let answer = match location {
                    Some(l) => {
                        let body = format!("<a href=\"{l}\">Found</a>.\n");
                        format!(
                            "HTTP/1.1 302 Found\r\nLocation: {l}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    None => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_owned(),
                };
                let _ = sock.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

/// The prober of a running pod at 127.0.0.1 (the pod's own address may be loopback, as on a
/// dev agent): redirects to another host are not followed (the 3xx counts as success, as the
/// kubelet counts it), redirects to the same host are, ten at most; a `host` that is loopback
/// (not the pod's address) is never dialled, even for a pod adopted without the creation check.
#[tokio::test]
async fn probes_follow_redirects_as_the_kubelet_does_and_never_dial_loopback_hosts() {
    let (other_port, other_seen) = server("127.0.0.2:0", String::new()).await;
    let (port, seen) = server("127.0.0.1:0", format!("http://localhost:{other_port}/ok")).await;
    let provider = FakeProvider::default();
    let mut rt = running(&key("p"), "u1", &["other", "same", "looping", "sneaky"]);
    rt.sandbox.as_mut().unwrap().pod_ip = Some("127.0.0.1".into());
    provider.pods.lock().unwrap().insert(key("p"), rt);
    let h = Harness::start(provider);
    let c = |name: &str, get: serde_json::Value| json!({"name": name, "image": "i", "readinessProbe": {"httpGet": get, "periodSeconds": 1}});
    let spec = json!({"containers": [
        c("other", json!({"port": port, "path": "/to-other"})),
        c("same", json!({"port": port, "path": "/to-same"})),
        c("looping", json!({"port": port, "path": "/loop"})),
        c("sneaky", json!({"host": "127.0.0.2", "port": other_port, "path": "/ok"})),
    ]});
    h.api.send(PodWatchEvent::Relisted(vec![pod("p", "u1", "Pending", spec)]));
    let ready = |h: &Harness| -> BTreeMap<String, bool> {
        h.api
            .statuses_of(&key("p"))
            .last()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.name, c.ready))
            .collect()
    };
    h.until("other and same ready", |h| {
        let r = ready(h);
        r.get("other") == Some(&true) && r.get("same") == Some(&true)
    })
    .await;
    // A few more periods for the others.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = ready(&h);
    assert_eq!((r["looping"], r["sneaky"]), (false, false), "{r:?}");
    assert!(other_seen.lock().unwrap().is_empty(), "dialled: {:?}", other_seen.lock().unwrap());
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|l| l.starts_with("GET /ok ")), "the same-host redirect followed");
    let loops = seen.iter().filter(|l| l.starts_with("GET /loop ")).count();
    assert!(loops >= 10 && loops % 10 == 0, "ten requests per probe of /loop: {loops}");
    // The kubelet's Events: a redirect not followed is a ProbeWarning with the answer's body,
    // each failure is Unhealthy with why; a success is silent.
    let events = h.api.container_events.lock().unwrap().clone();
    let of = |c: &str| -> Vec<(String, String)> {
        let path = format!("spec.containers{{{c}}}");
        let probe =
            |e: &&(String, _, String, String)| e.0 == path && e.2 != "Created" && e.2 != "Started";
        events.iter().filter(probe).map(|e| (e.2.clone(), e.3.clone())).collect()
    };
    let warning = format!(
        "Readiness probe warning: Probe terminated redirects, Response body: <a href=\"http://localhost:{other_port}/ok\">Found</a>.\n"
    );
    let other = of("other");
    assert!(
        !other.is_empty() && other.iter().all(|e| *e == ("ProbeWarning".into(), warning.clone())),
        "{other:?}"
    );
    assert!(
        of("same").iter().all(|(r, _)| r != "Unhealthy" && r != "ProbeWarning"),
        "{:?}",
        of("same")
    );
    let sneaky = of("sneaky");
    assert!(
        sneaky.first().is_some_and(|(r, m)| r == "Unhealthy"
            && m == "Readiness probe failed: the probe's host \"127.0.0.2\" is not one the operator allows"),
        "{sneaky:?}"
    );
    let looping = of("looping");
    assert!(
        looping.first().is_some_and(|(r, m)| r == "Unhealthy"
            && m.starts_with("Readiness probe failed: Get \"http://127.0.0.1:")),
        "{looping:?}"
    );
    let probes = events.iter().filter(|e| e.2 == "Unhealthy" || e.2 == "ProbeWarning");
    assert!(
        probes.clone().count() > 0 && probes.clone().all(|e| e.1 == vk_ports::EventType::Warning)
    );
}
