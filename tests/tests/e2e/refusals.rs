//! Pods the node cannot run: refused as ProviderFailed with a message naming the field and a
//! Warning Event, no job made, while good pods beside them run.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A pod with an unsupported volume gets ProviderFailed, a message naming the field, and a
/// Warning Event, while a good pod beside it runs.
pub(crate) async fn untranslatable_pod(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-bad", "e2e-bad");
    // The operator lets pods choose docker besides the node's raw_exec.
    let _vk = cx.node_and_namespace_with(node, ns, &["--allowed-drivers", "docker"]).await?;
    let bad = pod("bad")
        .namespace(ns)
        .on_node(node)
        .restart("Never")
        .container("main", &["sleep", "300"])
        .spec(serde_json::json!({"volumes": [{"name": "host", "hostPath": {"path": "/etc"}}]}))
        .build();
    cx.create(&bad).await?;
    // The driver annotation overrides the node's default (raw_exec here): the job asks for docker,
    // with the image and the command as entrypoint. (No Docker engine runs here, so it stays queued.)
    let docker = pod("docker")
        .namespace(ns)
        .on_node(node)
        .annotation("virtual-kubelet.io/nomad-driver", "docker")
        .container("main", &["sleep", "300"])
        .build();
    cx.create(&docker).await?;
    cx.create(
        &pod("good").namespace(ns).on_node(node).container("main", &["sleep", "300"]).build(),
    )
    .await?;
    let failed = cx.wait_phase(ns, "bad", "Failed", Duration::from_secs(30)).await?;
    let st = failed.status.context("status")?;
    ensure!(st.reason.as_deref() == Some("ProviderFailed"), "reason {:?}", st.reason);
    let msg = st.message.unwrap_or_default();
    ensure!(msg.contains("spec.volumes[0]") && msg.contains("hostPath"), "message {msg:?}");
    cx.wait_phase(ns, "good", "Running", Duration::from_secs(30)).await?;
    let events: Api<Event> = Api::namespaced(cx.client.clone(), ns);
    let ev = wait_for(
        "the ProviderCreateFailed Event",
        Duration::from_secs(15),
        Duration::from_millis(500),
        || async {
            let list =
                events.list(&ListParams::default().fields("involvedObject.name=bad")).await?;
            Ok(list.items.into_iter().find(|e| e.reason.as_deref() == Some("ProviderCreateFailed")))
        },
    )
    .await?;
    ensure!(ev.type_.as_deref() == Some("Warning"), "event type {:?}", ev.type_);
    ensure!(ev.message.unwrap_or_default().contains("hostPath"));
    let job = wait_for(
        "the docker pod's job",
        Duration::from_secs(15),
        Duration::from_millis(250),
        || async { cx.nomad(&format!("/v1/job/k8s-{ns}_docker")).await },
    )
    .await?;
    let task = &job["TaskGroups"][0]["Tasks"][0];
    ensure!(task["Driver"] == "docker", "driver {}", task["Driver"]);
    ensure!(
        task["Config"]["image"] == vk_tests::BUSYBOX
            && task["Config"]["entrypoint"] == serde_json::json!(["sleep", "300"]),
        "config {}",
        task["Config"]
    );
    ensure!(
        cx.nomad(&format!("/v1/job/k8s-{ns}_bad")).await?.is_none(),
        "a job exists for the bad pod"
    );
    // A pod for another OS is rejected as the kubelet's admission rejects it: Failed with the
    // kubelet's reason and message (even with restartPolicy Always), an Event, no job.
    let windows = pod("windows")
        .namespace(ns)
        .container("main", &["sleep", "300"])
        .spec(serde_json::json!({"nodeName": node, "os": {"name": "windows"}}))
        .build();
    cx.create(&windows).await?;
    let rejected = cx.wait_phase(ns, "windows", "Failed", Duration::from_secs(30)).await?;
    let st = rejected.status.context("status")?;
    ensure!(
        st.reason.as_deref() == Some("PodOSNotSupported")
            && st.message.as_deref()
                == Some(
                    "Pod was rejected: Failed to admit pod as the OS field doesn't match node OS"
                ),
        "status {:?}: {:?}",
        st.reason,
        st.message
    );
    wait_event(&cx, ns, "windows", "PodOSNotSupported").await?;
    ensure!(cx.nomad(&format!("/v1/job/k8s-{ns}_windows")).await?.is_none(), "a job for windows");
    Ok(())
}

/// The shared corpus of pods the node cannot run (`tests/corpus/unsupported.json`, the cases the
/// API server accepts): every one ends ProviderFailed with a message naming its field, no job is
/// made, and the process keeps serving (a good pod runs after them).
pub(crate) async fn unsupported_corpus(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-corpus", "e2e-corpus");
    let _vk = cx.node_and_namespace(node, ns).await?;
    let corpus: Vec<Value> = serde_json::from_str(include_str!("../../corpus/unsupported.json"))?;
    let cases: Vec<&Value> = corpus.iter().filter(|c| c["unit_only"] != true).collect();
    ensure!(cases.len() >= 30, "only {} cases", cases.len());
    for (i, case) in cases.iter().enumerate() {
        cx.create(&corpus_pod(case, &format!("case-{i}"), ns, node)?)
            .await
            .with_context(|| format!("case {:?}", case["case"]))?;
    }
    for (i, case) in cases.iter().enumerate() {
        let name = format!("case-{i}");
        provider_failed_as_the_case_says(&cx, ns, &name, case).await?;
        ensure!(
            cx.nomad(&format!("/v1/job/k8s-{ns}_{name}")).await?.is_none(),
            "a job exists for {:?}",
            case["case"]
        );
    }
    cx.create(
        &pod("good").namespace(ns).on_node(node).container("main", &["sleep", "300"]).build(),
    )
    .await?;
    cx.wait_phase(ns, "good", "Running", Duration::from_secs(30)).await?;
    Ok(())
}
