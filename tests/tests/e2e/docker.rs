//! End-to-end tests on Nomad's docker driver: real containers from the offline test images
//! (`scripts/images.sh`), in the pod's own network namespace (Nomad's bridge mode, CNI).
//!
//! The tests are in `docker/`: a pod in real containers (`pods.rs`), what the runtime enforces
//! (`security.rs`), volumes (`volumes.rs`) and image pulls (`images.rs`); this module holds the
//! helpers they share.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use vk_tests::wait_for;

use super::Ctx;

#[path = "docker/images.rs"]
pub(crate) mod images;
#[path = "docker/pods.rs"]
pub(crate) mod pods;
#[path = "docker/security.rs"]
pub(crate) mod security;
#[path = "docker/volumes.rs"]
pub(crate) mod volumes;

/// Every container of `p` without resources requests 10m of CPU and 32 MiB: Nomad's defaults
/// (100 MHz and 300 MB a task) would fill the test node's CPU with the pods all the tests leave
/// running, and new pods would wait unplaced.
pub(crate) fn lean(mut p: Pod) -> Pod {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let spec = p.spec.get_or_insert_with(Default::default);
    let init = spec.init_containers.iter_mut().flatten();
    for c in init.chain(spec.containers.iter_mut()) {
        let r = c.resources.get_or_insert_with(Default::default);
        if r.requests.is_none() && r.limits.is_none() {
            r.requests = Some(
                [
                    ("cpu".to_owned(), Quantity("10m".into())),
                    ("memory".to_owned(), Quantity("32Mi".into())),
                ]
                .into(),
            );
        }
    }
    p
}

/// Creates `p` made [`lean`].
pub(crate) async fn create(cx: &Ctx<'_>, p: &Pod) -> anyhow::Result<Pod> {
    cx.create(&lean(p.clone())).await
}

/// Waits (90 s at most) for pod `ns/name` to be Running; on a timeout the error holds the pod's
/// status.
async fn running(cx: &Ctx<'_>, ns: &str, name: &str) -> anyhow::Result<Pod> {
    cx.wait_phase(ns, name, "Running", Duration::from_secs(90)).await.with_context(|| {
        let st = cx.stack.kubectl(&["get", "pod", "-n", ns, name, "-o", "jsonpath={.status}"]);
        format!("{name}'s status: {}", st.unwrap_or_else(|e| e.to_string()))
    })
}

/// Waits (`timeout` at most) until `kubectl logs` of `container` of pod `ns/name` holds
/// `needle` (any output when empty); returns the log.
async fn log_with(
    cx: &Ctx<'_>,
    (ns, name, container): (&str, &str, &str),
    needle: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    wait_for(
        &format!("{needle:?} in the log of {name}/{container}"),
        timeout,
        Duration::from_millis(250),
        || async {
            let o = cx.stack.kubectl(&["logs", "-n", ns, name, "-c", container]).ok();
            Ok(o.filter(|o| !o.is_empty() && o.contains(needle)))
        },
    )
    .await
}

/// Deletes pod `ns/name` and waits (30 s at most) until it is gone.
async fn delete_and_wait(cx: &Ctx<'_>, ns: &str, name: &str) -> anyhow::Result<()> {
    cx.pods(ns).delete(name, &DeleteParams::default()).await?;
    wait_for(
        &format!("{name} gone"),
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async { Ok(cx.pods(ns).get_opt(name).await?.is_none().then_some(())) },
    )
    .await
}

/// The pod's containers as Docker runs them: `(name, container ID)` of the allocation's
/// containers (Nomad labels each with `com.hashicorp.nomad.alloc_id`), the pause container
/// included (`nomad_init_<alloc>`).
fn containers_of(alloc: &str) -> anyhow::Result<Vec<(String, String)>> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}} {{.ID}}"])
        .arg("--filter")
        .arg(format!("label=com.hashicorp.nomad.alloc_id={alloc}"))
        .output()?;
    ensure!(out.status.success(), "docker ps: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, i)| (n.to_owned(), i.to_owned()))
        .collect())
}

/// `docker inspect` of container `name` of allocation `alloc`.
fn inspect(alloc: &str, name: &str) -> anyhow::Result<serde_json::Value> {
    let out = Command::new("docker").args(["inspect", &format!("{name}-{alloc}")]).output()?;
    ensure!(out.status.success(), "docker inspect: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v[0].clone())
}
