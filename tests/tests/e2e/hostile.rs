//! End-to-end test of `tests/corpus/hostile.json`: pods a hostile author could write, run at once
//! against a node whose operator allowed nothing beyond its own settings.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};
use vk_tests::fixtures::pod;
use vk_tests::wait_for;

use super::{
    Ctx, container_state, corpus_pod, current_alloc, events_of, provider_failed_as_the_case_says,
};

/// Every refusal the API server accepts ends `ProviderFailed` with a message naming its field
/// and reason and a `ProviderCreateFailed` Warning Event, and no job is registered for it; every
/// `verbatim` pod prints what its author wrote (Nomad's interpolation reaches nothing); the two
/// pod names whose job IDs collided under the old FNV-1a hash run side by side, each as its own
/// job; a pod running before them all keeps its allocation, untouched; and the process never
/// panicked.
pub(crate) async fn hostile_corpus(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-hostile", "e2e-hostile");
    let vk = cx.node_and_namespace_with(node, ns, &["--nomad-datacenters", "dc1"]).await?;
    let corpus: Value = serde_json::from_str(include_str!("../../corpus/hostile.json"))?;
    ensure!(corpus["collision"]["namespace"] == ns, "the corpus' collision is for {ns}");
    cx.stack.kubectl(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        ns,
        "--from-literal=password=s3cr3t",
    ])?;
    cx.create(
        &pod("bystander").namespace(ns).on_node(node).container("main", &["sleep", "600"]).build(),
    )
    .await?;
    cx.wait_phase(ns, "bystander", "Running", Duration::from_secs(30)).await?;
    let bystander_alloc = current_alloc(&cx, &format!("k8s-{ns}_bystander")).await?;

    // All at once, bound directly (some would never be scheduled: the node is what is tested).
    let refused: Vec<&Value> = corpus["refused"]
        .as_array()
        .context("refused")?
        .iter()
        .filter(|c| c["unit_only"] != true)
        .collect();
    ensure!(refused.len() >= 40, "only {} refusals run end to end", refused.len());
    for (i, case) in refused.iter().enumerate() {
        cx.create(&corpus_pod(case, &format!("refused-{i}"), ns, node)?)
            .await
            .with_context(|| format!("case {}", case["case"]))?;
    }
    let verbatim = corpus["verbatim"].as_array().context("verbatim")?;
    for (i, case) in verbatim.iter().enumerate() {
        let mut env: Vec<Value> = Vec::new();
        for (k, v) in case["env"].as_object().into_iter().flatten() {
            env.push(json!({"name": k, "value": v}));
        }
        for (k, key) in case["secret_env"].as_object().into_iter().flatten() {
            env.push(
                json!({"name": k, "valueFrom": {"secretKeyRef": {"name": "creds", "key": key}}}),
            );
        }
        let mut args = vec![json!("%s\n")];
        args.extend(case["args"].as_array().into_iter().flatten().cloned());
        let spec = json!({"nodeName": node, "restartPolicy": "Never", "containers": [
            {"name": "main", "image": "busybox", "command": ["printf"], "args": args, "env": env}
        ]});
        cx.create(&pod(&format!("verbatim-{i}")).namespace(ns).spec(spec).build())
            .await
            .with_context(|| format!("case {}", case["case"]))?;
    }
    let names: Vec<&str> = corpus["collision"]["names"]
        .as_array()
        .context("collision")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for name in &names {
        cx.create(
            &pod(name).namespace(ns).on_node(node).container("main", &["sleep", "600"]).build(),
        )
        .await?;
    }

    for (i, case) in refused.iter().enumerate() {
        let name = format!("refused-{i}");
        let message = provider_failed_as_the_case_says(&cx, ns, &name, case).await?;
        // The Warning the kubelet (or upstream virtual-kubelet) records with each refusal.
        let event_reason = match case["reason"].as_str() {
            None => "ProviderCreateFailed",
            Some("CreateContainerConfigError") => "Failed",
            Some(r) => r,
        };
        let shown = message.trim_start_matches("Pod was rejected: ").to_owned();
        let events = wait_for(
            &format!("the {event_reason} Event of {}", case["case"]),
            Duration::from_secs(15),
            Duration::from_millis(500),
            || async {
                let events = events_of(&cx, ns, &name).await?;
                Ok(events
                    .iter()
                    .any(|e| {
                        e.reason.as_deref() == Some(event_reason)
                            && e.type_.as_deref() == Some("Warning")
                            && e.message.as_deref().is_some_and(|m| m.contains(&shown))
                    })
                    .then_some(()))
            },
        )
        .await;
        events.with_context(|| format!("case {}", case["case"]))?;
    }
    for (i, case) in verbatim.iter().enumerate() {
        let name = format!("verbatim-{i}");
        cx.wait_phase(ns, &name, "Succeeded", Duration::from_secs(60))
            .await
            .with_context(|| format!("case {}", case["case"]))?;
        let out = cx.stack.kubectl(&["logs", "-n", ns, &name])?;
        let want: Vec<&str> =
            case["output"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        ensure!(
            out.lines().collect::<Vec<_>>() == want,
            "{}: the task printed {out:?}, not {want:?}",
            case["case"]
        );
    }
    let mut collided = BTreeSet::new();
    for name in &names {
        cx.wait_phase(ns, name, "Running", Duration::from_secs(60)).await?;
        let jobs = cx.jobs_of(node).await?;
        let job = jobs
            .iter()
            .find(|j| j["Meta"]["k8s_pod_name"] == *name)
            .with_context(|| format!("no job names pod {name}"))?;
        collided.insert(job["ID"].as_str().unwrap_or_default().to_owned());
    }
    ensure!(collided.len() == 2, "the two colliding names share a job: {collided:?}");

    // Nothing else reached Nomad: the jobs of this node are the bystander's, the verbatim pods'
    // and the two colliding pods'.
    let jobs: BTreeSet<String> = cx
        .jobs_of(node)
        .await?
        .iter()
        .filter_map(|j| Some(j["Meta"]["k8s_pod_name"].as_str()?.to_owned()))
        .collect();
    let mut expected: BTreeSet<String> =
        (0..verbatim.len()).map(|i| format!("verbatim-{i}")).collect();
    expected.insert("bystander".into());
    expected.extend(names.iter().map(|n| (*n).to_owned()));
    ensure!(jobs == expected, "jobs of {node}: {jobs:?}, expected {expected:?}");
    let all = cx.nomad("/v1/jobs?namespace=*").await?.unwrap_or_default();
    let strays: Vec<&str> = all
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["ID"].as_str())
        .filter(|id| id.starts_with(&format!("k8s-{ns}_refused")))
        .collect();
    ensure!(strays.is_empty(), "jobs registered for refused pods: {strays:?}");

    let bystander = cx.pods(ns).get("bystander").await?;
    let phase = bystander.status.as_ref().and_then(|s| s.phase.clone());
    ensure!(phase.as_deref() == Some("Running"), "the bystander is {phase:?}");
    let restarts = container_state(&bystander, "main").map(|c| c.restart_count);
    ensure!(restarts == Some(0), "the bystander restarted: {restarts:?}");
    let now = current_alloc(&cx, &format!("k8s-{ns}_bystander")).await?;
    ensure!(now == bystander_alloc, "the bystander moved from {bystander_alloc} to {now}");
    let log = std::fs::read_to_string(
        cx.stack.dir.join("logs").join(format!("virtual-kubelet-{node}.log")),
    )?;
    ensure!(!log.contains("panicked"), "the virtual kubelet panicked");
    // Give the shared Nomad agent its capacity back for the tests that follow.
    cx.stack.kubectl(&["delete", "pods", "--all", "-n", ns, "--wait=false"])?;
    wait_for("the jobs purged", Duration::from_secs(60), Duration::from_millis(500), || async {
        Ok(cx.jobs_of(node).await?.is_empty().then_some(()))
    })
    .await?;
    drop(vk);
    Ok(())
}
