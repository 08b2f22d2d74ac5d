//! The floor of P1: a client with no kubelet logic that watches the pods bound to a node (the
//! kubelet's field selector `spec.nodeName=<node>`) and, for each pod not yet Running, writes the
//! status a kubelet writes for a started pod (phase, the five conditions, one running status per
//! container, host and pod IP, start time) in one strategic-merge patch of the `status`
//! subresource, `workers` at once, with no client-side rate limit. That is the one API write per
//! pod that a kubelet cannot avoid; anything a kubelet takes beyond it is its own cost.

use std::sync::atomic::{AtomicU32, Ordering};

use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{Value, json};

/// Runs the floor for node `node` with the client of `kubeconfig` until killed. Prints
/// `floor: ready` once the first list is done.
///
/// # Errors
/// The kubeconfig unusable, or the watch failing for good.
pub(crate) async fn run(
    kubeconfig: &std::path::Path,
    node: &str,
    workers: usize,
) -> anyhow::Result<()> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    let client = Client::try_from(cfg)?;
    let all: Api<Pod> = Api::all(client.clone());
    let next_ip = AtomicU32::new(0);
    let selector = format!("spec.nodeName={node}");
    watcher(all, watcher::Config::default().fields(&selector))
        .map_err(anyhow::Error::from)
        .try_for_each_concurrent(workers, |event| {
            let client = client.clone();
            let next_ip = &next_ip;
            async move {
                let pod = match event {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
                    watcher::Event::InitDone => {
                        println!("floor: ready");
                        return Ok(());
                    }
                    watcher::Event::Init | watcher::Event::Delete(_) => return Ok(()),
                };
                let running =
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if running || pod.metadata.deletion_timestamp.is_some() {
                    return Ok(());
                }
                let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
                    return Ok(());
                };
                let n = next_ip.fetch_add(1, Ordering::Relaxed);
                let patch = running_status(&pod, n);
                let api: Api<Pod> = Api::namespaced(client, ns);
                if let Err(e) =
                    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch)).await
                {
                    eprintln!("floor: {ns}/{name}: {e}");
                }
                Ok(())
            }
        })
        .await
}

/// The status of a started pod, as a kubelet writes it.
fn running_status(pod: &Pod, n: u32) -> Value {
    let now = Timestamp::now().to_string();
    let ip = format!("198.18.{}.{}", (n >> 8) & 0xff, n & 0xff);
    let containers: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    let condition = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
    json!({"status": {
        "phase": "Running",
        "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": now,
        "conditions": [
            condition("PodReadyToStartContainers"), condition("Initialized"),
            condition("Ready"), condition("ContainersReady"), condition("PodScheduled"),
        ],
        "containerStatuses": containers,
    }})
}
