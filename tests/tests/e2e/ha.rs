//! Two replicas of one node: leader election on a Lease.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The identity `--leader-elect` gives the replica with process ID `pid`.
fn identity(pid: u32) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}_{pid}", host.trim())
}

/// The holder of Lease `ns/name`, if any.
async fn holder(cx: &Ctx<'_>, ns: &str, name: &str) -> anyhow::Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(cx.client.clone(), ns);
    Ok(leases.get_opt(name).await?.and_then(|l| l.spec?.holder_identity))
}

/// Two replicas of one node (its node identity, and a ServiceAccount token for the leader Lease)
/// with `--leader-elect` (a 10 s Lease): the first holds the leader
/// Lease and runs the node and its pods, the second stands by and writes nothing; the leader
/// SIGKILLed, the standby holds the Lease within 15 s and runs the node: the node stays Ready
/// throughout (the gap in its node Lease renewals stays under the 40 s the node lifecycle
/// controller waits), and no pod is touched (the same jobs at version 0, the same allocations,
/// the pods Running).
pub(crate) async fn leader_election(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-ha", "e2e-ha");
    let lease = format!("virtual-kubelet-{node}");
    cx.stack.namespace(ns).await?;
    // The leader Lease is written with the pod's ServiceAccount (a node identity may write no
    // Lease but its node's): it may get, create and patch Leases in the namespace.
    let rbac = cx.stack.dir.join("leader-election-rbac.yaml");
    std::fs::write(
        &rbac,
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: leader-election\n  namespace: {ns}\n\
rules:\n- apiGroups: [coordination.k8s.io]\n  resources: [leases]\n  verbs: [get, create, patch]\n---\n\
apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: leader-election\n  namespace: {ns}\n\
roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: leader-election\n\
subjects:\n- kind: ServiceAccount\n  name: vk-ha\n  namespace: {ns}\n---\n\
apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: vk-ha\n  namespace: {ns}\n"
        ),
    )?;
    cx.stack.kubectl(&["apply", "-f", &rbac.display().to_string()])?;
    let sa = cx.stack.service_account_dir(ns, "vk-ha")?;
    let args = [
        "--leader-elect",
        "--leader-elect-lease-namespace",
        ns,
        "--leader-elect-lease-duration",
        "10s",
    ];
    let mut first = cx.stack.virtual_kubelet_replica(node, "vk-ha-1", Some(&sa), &args)?;
    cx.wait_ready(node, Duration::from_secs(60)).await?;
    let leader = identity(first.pid());
    ensure!(
        holder(&cx, ns, &lease).await?.as_deref() == Some(leader.as_str()),
        "the first replica does not lead"
    );
    for name in ["a", "b"] {
        cx.create(
            &pod(name).namespace(ns).on_node(node).container("main", &["sleep", "600"]).build(),
        )
        .await?;
    }
    for name in ["a", "b"] {
        cx.wait_phase(ns, name, "Running", Duration::from_secs(60)).await?;
    }
    let before: Vec<(String, Value)> = {
        let mut out = Vec::new();
        for name in ["a", "b"] {
            let job = format!("k8s-{ns}_{name}");
            let allocs = cx.allocations(&job).await?;
            out.push((
                job,
                serde_json::json!(allocs.iter().map(|a| a["ID"].clone()).collect::<Vec<_>>()),
            ));
        }
        out
    };
    let second = cx.stack.virtual_kubelet_replica(node, "vk-ha-2", Some(&sa), &args)?;
    let standby = identity(second.pid());
    let log = cx.stack.dir.join("logs/virtual-kubelet-vk-ha-2.log");
    wait_for(
        "the second replica standing by",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Ok(text.contains("standing by until this replica holds the leader Lease").then_some(()))
        },
    )
    .await?;
    ensure!(
        holder(&cx, ns, &lease).await?.as_deref() == Some(leader.as_str()),
        "the standby took the Lease"
    );

    // Watch the node while the leader dies and the standby takes over.
    let leases: Api<Lease> = Api::namespaced(cx.client.clone(), "kube-node-lease");
    let watch = async {
        let (mut renewals, mut not_ready) = (Vec::new(), Vec::new());
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(50) {
            if let Some(t) = leases.get_opt(node).await?.and_then(|l| l.spec?.renew_time)
                && renewals.last() != Some(&t.0)
            {
                renewals.push(t.0);
            }
            let ready = cx.ready_status(node).await?;
            if ready.as_deref() != Some("True") {
                not_ready.push(format!("{:?}: Ready={ready:?}", started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::Ok((renewals, not_ready))
    };
    let takeover = async {
        first.kill();
        let killed = Instant::now();
        let took = wait_for(
            "the standby holding the Lease",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async {
                Ok((holder(&cx, ns, &lease).await?.as_deref() == Some(standby.as_str()))
                    .then(|| killed.elapsed()))
            },
        )
        .await?;
        anyhow::Ok(took)
    };
    let (watched, took) = tokio::join!(watch, takeover);
    let ((renewals, not_ready), took) = (watched?, took?);
    let gap = renewals
        .windows(2)
        .filter_map(|w| std::time::Duration::try_from(w[1].duration_since(w[0])).ok())
        .max()
        .unwrap_or_default();
    println!(
        "the standby led {took:?} after the leader's kill; node Lease renewals {gap:?} apart at most"
    );
    ensure!(took <= Duration::from_secs(15), "the standby took {took:?} to lead");
    ensure!(not_ready.is_empty(), "the node left Ready: {not_ready:?}");
    ensure!(gap < Duration::from_secs(40), "the node Lease went {gap:?} without a renewal");
    ensure!(renewals.len() >= 3, "the node Lease was renewed {} times in 50 s", renewals.len());
    for (job, allocs) in before {
        let j = cx.nomad(&format!("/v1/job/{job}")).await?.context("a job went")?;
        ensure!(j["Version"] == 0 && j["Stop"] == false, "{job} was touched: {j}");
        let now = cx.allocations(&job).await?;
        let ids = serde_json::json!(now.iter().map(|a| a["ID"].clone()).collect::<Vec<_>>());
        ensure!(ids == allocs, "{job}: allocations {ids} after, {allocs} before");
    }
    for name in ["a", "b"] {
        cx.wait_phase(ns, name, "Running", Duration::from_secs(5)).await?;
    }
    drop(second);
    Ok(())
}
