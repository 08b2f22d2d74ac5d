//! The node controller wired to in-memory fakes, on tokio's paused clock: Lease cadence, Ready
//! following the backend, and re-registration of a deleted Node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use tokio_util::sync::CancellationToken;
use vk_app::node_controller::{self, Timing};
use vk_domain::node::{BACKEND_UNREACHABLE, NodeCapacity, NodeConfig, OutagePolicy};
use vk_ports::{ClusterError, NodeApi, NodeProvider, ProviderError};

#[derive(Default)]
struct Backend {
    down: AtomicBool,
}

impl NodeProvider for Backend {
    async fn capacity(&self) -> Result<NodeCapacity, ProviderError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ProviderError::Unavailable {
                message: "connection refused".into(),
                source: None,
            });
        }
        Ok(NodeCapacity {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            ephemeral_storage_bytes: 0,
            pods: None,
            ..Default::default()
        })
    }
    async fn runtime_version(&self) -> Result<String, ProviderError> {
        Ok("fake://1".into())
    }
    fn unreachable_reason(&self) -> &'static str {
        "FakeUnreachable"
    }
}

#[derive(Default)]
struct Api {
    registered: AtomicUsize,
    statuses: Mutex<Vec<NodeStatus>>,
    leases: Mutex<Vec<Lease>>,
    node_gone: AtomicBool,
}

impl NodeApi for Api {
    async fn register(&self, node: &Node) -> Result<Node, ClusterError> {
        self.registered.fetch_add(1, Ordering::SeqCst);
        self.node_gone.store(false, Ordering::SeqCst);
        let mut n = node.clone();
        n.metadata.uid = Some(format!("uid-{}", self.registered.load(Ordering::SeqCst)));
        Ok(n)
    }
    async fn update_status(&self, _name: &str, status: &NodeStatus) -> Result<(), ClusterError> {
        if self.node_gone.load(Ordering::SeqCst) {
            return Err(ClusterError::NotFound("node".into()));
        }
        self.statuses.lock().unwrap().push(status.clone());
        Ok(())
    }
    async fn renew_lease(&self, lease: &Lease) -> Result<(), ClusterError> {
        self.leases.lock().unwrap().push(lease.clone());
        Ok(())
    }
}

fn config() -> NodeConfig {
    NodeConfig {
        name: "vk".into(),
        os: "linux".into(),
        arch: "amd64".into(),
        labels: BTreeMap::new(),
        role_label: false,
        taint: None,
        kubelet_port: 10250,
        max_pods: None,
        internal_ip: "127.0.0.1".into(),
        hostname: "vk".into(),
        kubelet_version: "v1.36.3-vk-nomad-test".into(),
        runtime_version: "fake://1".into(),
        outage: OutagePolicy::KeepPods,
    }
}

fn condition(s: &NodeStatus, type_: &str) -> (String, Option<String>) {
    let c = s.conditions.as_ref().unwrap().iter().find(|c| c.type_ == type_).unwrap();
    (c.status.clone(), c.reason.clone())
}

fn ready(s: &NodeStatus) -> (String, Option<String>) {
    condition(s, "Ready")
}

/// The node through a backend outage under `outage`: the last status written while the backend
/// is down, and the one after it answers again.
async fn through_an_outage(outage: OutagePolicy) -> (NodeStatus, NodeStatus) {
    let backend = Arc::new(Backend::default());
    let api = Arc::new(Api::default());
    let cancel = CancellationToken::new();
    let timing = Timing {
        status_interval: Duration::from_secs(10),
        report_interval: Duration::from_secs(60),
    };
    let task = tokio::spawn(node_controller::run(
        Arc::clone(&backend),
        Arc::clone(&api),
        NodeConfig { outage, ..config() },
        timing,
        tokio::sync::watch::channel(NodeCapacity::default()).0,
        Arc::new(tokio::sync::Notify::new()),
        cancel.clone(),
    ));

    tokio::time::sleep(Duration::from_secs(45)).await;
    let leases = api.leases.lock().unwrap().len();
    assert_eq!(leases, 5, "renewals at 0, 10, 20, 30, 40 s");
    let lease = api.leases.lock().unwrap()[0].clone();
    assert_eq!(lease.metadata.owner_references.unwrap()[0].uid, "uid-1");
    let statuses = api.statuses.lock().unwrap().clone();
    assert_eq!(statuses.len(), 1, "unchanged status is not rewritten before the report interval");
    assert_eq!(ready(&statuses[0]).0, "True");

    backend.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let down = api.statuses.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        down.capacity.as_ref().unwrap()["cpu"].0,
        "2000m",
        "capacity kept while the backend is down"
    );
    assert_eq!(
        condition(&down, BACKEND_UNREACHABLE),
        ("True".to_owned(), Some("FakeUnreachable".to_owned()))
    );
    let leases_while_down = api.leases.lock().unwrap().len();
    assert!(leases_while_down >= 6, "the Lease is renewed while the backend is down");

    backend.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let back = api.statuses.lock().unwrap().last().cloned().unwrap();
    assert_eq!(ready(&back).0, "True");
    assert_eq!(condition(&back, BACKEND_UNREACHABLE).0, "False");
    assert_eq!(back.allocatable.as_ref().unwrap()["pods"].0, "110");
    cancel.cancel();
    task.await.unwrap();
    (down, back)
}

/// The default: an outage keeps `Ready=True` (no NoExecute eviction of the pods) and takes no
/// new pods (`allocatable.pods` 0) until the backend answers again.
#[tokio::test(start_paused = true)]
async fn lease_renews_every_ten_seconds_and_an_outage_keeps_the_pods() {
    let (down, _) = through_an_outage(OutagePolicy::KeepPods).await;
    assert_eq!(ready(&down).0, "True");
    assert_eq!(down.allocatable.as_ref().unwrap()["pods"].0, "0");
}

/// `--backend-outage not-ready`: `Ready=False` with the backend's reason while it is down.
#[tokio::test(start_paused = true)]
async fn not_ready_when_the_operator_chose_it() {
    let (down, _) = through_an_outage(OutagePolicy::NotReady).await;
    assert_eq!(ready(&down), ("False".to_owned(), Some("FakeUnreachable".to_owned())));
    assert_eq!(down.allocatable.as_ref().unwrap()["pods"].0, "110");
}

#[tokio::test(start_paused = true)]
async fn a_deleted_node_is_registered_again() {
    let api = Arc::new(Api::default());
    let cancel = CancellationToken::new();
    let timing = Timing {
        status_interval: Duration::from_secs(10),
        report_interval: Duration::from_secs(10),
    };
    let task = tokio::spawn(node_controller::run(
        Arc::new(Backend::default()),
        Arc::clone(&api),
        config(),
        timing,
        tokio::sync::watch::channel(NodeCapacity::default()).0,
        Arc::new(tokio::sync::Notify::new()),
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(api.registered.load(Ordering::SeqCst), 1);
    api.node_gone.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(api.registered.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let lease = api.leases.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        lease.metadata.owner_references.unwrap()[0].uid,
        "uid-2",
        "the Lease follows the new Node"
    );
    cancel.cancel();
    task.await.unwrap();
}
