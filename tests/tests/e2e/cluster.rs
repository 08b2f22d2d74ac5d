//! The node on a Nomad cluster it shares: what Nomad cannot place reaches the pod.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The waiting message of container `main` of `ns/name`, if it waits.
async fn waiting_message(cx: &Ctx<'_>, ns: &str, name: &str) -> anyhow::Result<Option<String>> {
    let p = cx.pods(ns).get(name).await?;
    let w = container_state(&p, "main").and_then(|c| c.state?.waiting);
    Ok(w.and_then(|w| w.message))
}

/// Placement failures reach the pod: a pod pinned to a node pool without clients, and a pod
/// asking for more memory than Nomad has left (bound directly: the scheduler counts the whole
/// node), each wait `ContainerCreating` with Nomad's reason and figures in their message and one
/// `FailedPlacement` Event; when the memory is freed the second is placed, runs and loses the
/// message. On a stack of its own: the test takes most of a Nomad client's memory.
pub(crate) async fn placement_failures(_shared: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-placement", "e2e-placement");
    let stack =
        Stack::start_with(StackOptions { nomad_server: true, ..StackOptions::default() }).await?;
    let _vk = stack.virtual_kubelet(node, &["--allowed-node-pools", "empty"])?;
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: reqwest::Client::new() };
    stack.namespace(ns).await?;
    cx.wait_ready(node, Duration::from_secs(60)).await?;
    let r = cx
        .http
        .put(format!("{}/v1/node/pools", stack.nomad_addr))
        .json(&serde_json::json!({"Name": "empty", "Description": "no clients"}))
        .send()
        .await?;
    ensure!(r.status().is_success(), "creating node pool empty: {}", r.status());

    let nowhere = pod("nowhere")
        .namespace(ns)
        .on_node(node)
        .annotation("nomad.hashicorp.com/node-pool", "empty")
        .container("main", &["sleep", "600"]);
    cx.create(&nowhere.build()).await?;

    // Three fifths of the client's memory each: the second cannot be placed beside the first.
    let nodes = cx.nomad("/v1/nodes?resources=true").await?.context("Nomad nodes")?;
    let client = nodes.as_array().and_then(|n| n.first()).context("no Nomad client")?;
    let total = client["NodeResources"]["Memory"]["MemoryMB"].as_u64().context("memory")?;
    let reserved = client["ReservedResources"]["Memory"]["MemoryMB"].as_u64().unwrap_or(0);
    let share = (total - reserved) * 3 / 5;
    let big = |name: &str| {
        let mut p = pod(name)
            .namespace(ns)
            .spec(serde_json::json!({"containers": [{"name": "main", "image": vk_tests::BUSYBOX,
                "command": ["sleep", "600"],
                "resources": {"requests": {"memory": format!("{share}Mi")}}}]}))
            .build();
        if let Some(spec) = p.spec.as_mut() {
            spec.node_name = Some(node.to_owned());
        }
        p
    };
    cx.create(&big("big-1")).await?;
    cx.wait_phase(ns, "big-1", "Running", Duration::from_secs(60)).await?;
    cx.create(&big("big-2")).await?;

    for (name, want) in
        [("nowhere", "no node in node pool \"empty\""), ("big-2", "1 node exhausted on memory")]
    {
        let message = wait_for(
            &format!("{name}'s waiting message"),
            Duration::from_secs(30),
            Duration::from_millis(500),
            || async { Ok(waiting_message(&cx, ns, name).await?.filter(|m| m.contains(want))) },
        )
        .await?;
        ensure!(
            message.starts_with("Nomad could not place the allocation: "),
            "{name}: {message:?}"
        );
        let event = wait_event(&cx, ns, name, "FailedPlacement").await?;
        ensure!(event.type_.as_deref() == Some("Warning"), "{event:?}");
        ensure!(event.message.as_deref() == Some(message.as_str()), "{event:?} vs {message:?}");
    }

    cx.pods(ns).delete("big-1", &Default::default()).await?;
    cx.wait_phase(ns, "big-2", "Running", Duration::from_secs(60)).await?;
    let left = waiting_message(&cx, ns, "big-2").await?;
    ensure!(left.is_none(), "big-2 still says {left:?}");
    let events = events_of(&cx, ns, "big-2").await?;
    let placements = events.iter().filter(|e| e.reason.as_deref() == Some("FailedPlacement"));
    let count: i32 = placements.map(|e| e.count.unwrap_or(1)).sum();
    ensure!(count == 1, "{count} FailedPlacement Events for big-2");
    Ok(())
}
