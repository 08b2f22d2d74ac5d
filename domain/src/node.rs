//! The Node object and Lease a kubelet keeps, built from configuration and what the backend
//! reports about its capacity.
//!
//! Sources: the kubelet's node status setters (`pkg/kubelet/nodestatus/setters.go`), its lease
//! controller (`pkg/kubelet/kubelet.go`, `component-helpers/apimachinery/lease`), and the
//! NodeRestriction admission plugin for what a `system:node:` identity may set.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

/// Namespace that holds node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// `leaseDurationSeconds` written on the Lease, as the kubelet's default.
pub const LEASE_DURATION_SECONDS: i32 = 40;

/// What the operator configured about the node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// The Node's name (`--nodename`).
    pub name: String,
    /// `kubernetes.io/os` and `nodeInfo.operatingSystem` (`--os`, `linux` by default).
    pub os: String,
    /// `kubernetes.io/arch` and `nodeInfo.architecture` (`amd64`, `arm64`, ...).
    pub arch: String,
    /// Extra labels set at registration.
    pub labels: BTreeMap<String, String>,
    /// Whether to add `kubernetes.io/role=agent` as upstream does. NodeRestriction refuses it for
    /// `system:node:` identities, so it is off by default.
    pub role_label: bool,
    /// The taint that keeps pods away unless they tolerate it; `None` when disabled.
    pub taint: Option<Taint>,
    /// The kubelet API port (`status.daemonEndpoints.kubeletEndpoint.Port`).
    pub kubelet_port: u16,
    /// `capacity.pods` and `allocatable.pods` (`--max-pods`); `None`: what the backend says its
    /// machines hold ([`NodeCapacity::pods`]), else [`DEFAULT_MAX_PODS`].
    pub max_pods: Option<u32>,
    /// The node's InternalIP: where the API server reaches the kubelet API.
    pub internal_ip: String,
    /// The node's Hostname address.
    pub hostname: String,
    /// `nodeInfo.kubeletVersion`, such as `v1.36.3-vk-nomad-0.1.0` with Nomad as the backend.
    pub kubelet_version: String,
    /// `nodeInfo.containerRuntimeVersion`, such as `nomad://1.11.3` with Nomad as the backend.
    pub runtime_version: String,
    /// What the node says while its backend does not answer (`--backend-outage`).
    pub outage: OutagePolicy,
}

/// What the node says while its backend does not answer (`--backend-outage`).
///
/// A node whose `Ready` is `False` (or `Unknown`) is tainted `node.kubernetes.io/not-ready:NoExecute`
/// (or `unreachable`) by the node lifecycle controller, and every pod on it without a longer
/// toleration is evicted once its `tolerationSeconds` run out: 300 s unless the pod says
/// otherwise (the `DefaultTolerationSeconds` admission plugin). A backend's machines keep running
/// their work while its API is away (Nomad clients do), so an outage of the API alone is no reason
/// to delete the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutagePolicy {
    /// `keep-pods` (default): `Ready` stays `True`; the condition [`BACKEND_UNREACHABLE`] is
    /// `True` with the backend's reason and since when; `allocatable.pods` is 0, so the scheduler
    /// places nothing new here (`Too many pods`) until the backend answers again.
    #[default]
    KeepPods,
    /// `not-ready`: `Ready=False` with the backend's reason, as a machine kubelet whose runtime is
    /// down: the pods are evicted after their toleration, and their controllers replace them on
    /// other nodes.
    NotReady,
}

/// The node condition that says whether the backend answers: `True` (the problem is there, as
/// node-problem-detector's conditions) with the backend's reason (`NomadUnreachable`), `False`
/// with reason `BackendAnswers`.
pub const BACKEND_UNREACHABLE: &str = "BackendUnreachable";

/// What the backend can run, summed over its machines that are ready and eligible and in the
/// node's scope: the node's `status.capacity`; `status.allocatable` is that less
/// [`NodeCapacity::reserved`] ([`NodeCapacity::allocatable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeCapacity {
    /// CPU in millicores (1000 per core).
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage_bytes: u64,
    /// Pods the machines hold, when the backend can tell (for Nomad, [`DEFAULT_MAX_PODS`] per
    /// ready, eligible client, as a kubelet per machine); `None`: [`DEFAULT_MAX_PODS`].
    pub pods: Option<u32>,
    /// What work that is not this node's pods already holds of the machines (for Nomad, the
    /// allocations of other jobs): kept out of `allocatable`, as the kubelet keeps
    /// `--system-reserved` out of it. The node's own pods are not in it: kube-scheduler counts
    /// their requests against `allocatable` itself.
    pub reserved: Reserved,
}

/// Resources held by work that is not the node's pods ([`NodeCapacity::reserved`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reserved {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage_bytes: u64,
}

impl NodeCapacity {
    /// What kube-scheduler may place pods into: the capacity less [`NodeCapacity::reserved`]
    /// (never below 0), with nothing reserved.
    #[must_use]
    pub fn allocatable(self) -> Self {
        let r = self.reserved;
        Self {
            cpu_millis: self.cpu_millis.saturating_sub(r.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(r.memory_bytes),
            ephemeral_storage_bytes: self
                .ephemeral_storage_bytes
                .saturating_sub(r.ephemeral_storage_bytes),
            pods: self.pods,
            reserved: Reserved::default(),
        }
    }
}

/// A kubelet's `--max-pods` default (per machine).
pub const DEFAULT_MAX_PODS: u32 = 110;

/// Whether the backend answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The backend answers: `Ready=True`, reason `KubeletReady`.
    Ready,
    /// The backend does not answer; what the node says then is its [`OutagePolicy`].
    Unreachable {
        /// CamelCase reason naming the backend, for example Nomad's `NomadUnreachable`.
        reason: String,
        /// What failed.
        message: String,
    },
}

impl NodeConfig {
    /// The labels the node registers with: `type=virtual-kubelet`, `kubernetes.io/{os,arch,hostname}`,
    /// `node.kubernetes.io/exclude-from-external-load-balancers=true` (the only label the service
    /// controller honours to keep a node out of load balancers), `kubernetes.io/role=agent` when
    /// configured, then the configured extra labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        l.insert("type".into(), "virtual-kubelet".into());
        l.insert("kubernetes.io/os".into(), self.os.clone());
        l.insert("kubernetes.io/arch".into(), self.arch.clone());
        l.insert("kubernetes.io/hostname".into(), self.name.clone());
        l.insert("node.kubernetes.io/exclude-from-external-load-balancers".into(), "true".into());
        if self.role_label {
            l.insert("kubernetes.io/role".into(), "agent".into());
        }
        l.extend(self.labels.clone());
        l
    }

    /// The Node to create: labels, taint, and an initial status (not ready until the backend was
    /// asked; the first status update follows at once).
    pub fn node(&self, capacity: Option<NodeCapacity>, health: &Health, now: Timestamp) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: self.taint.clone().map(|t| vec![t]),
                ..NodeSpec::default()
            }),
            status: Some(self.status(capacity, health, None, now)),
        }
    }

    /// The node status to write: capacity and allocatable (absent until the backend reported
    /// them), conditions, addresses, daemon endpoints and node info.
    ///
    /// `previous` is the status the API server holds; conditions that did not change keep their
    /// `lastTransitionTime`. Every condition's `lastHeartbeatTime` is `now`.
    pub fn status(
        &self,
        capacity: Option<NodeCapacity>,
        health: &Health,
        previous: Option<&NodeStatus>,
        now: Timestamp,
    ) -> NodeStatus {
        let resources = capacity.map(|c| self.resources(c));
        let allocatable = capacity.map(|c| self.resources(c.allocatable()));
        // Nothing new fits while the backend cannot run it (the scheduler's `Too many pods`).
        let keep_pods = self.outage == OutagePolicy::KeepPods;
        let allocatable = match health {
            Health::Unreachable { .. } if keep_pods => allocatable.map(|mut r| {
                r.insert("pods".to_owned(), Quantity("0".to_owned()));
                r
            }),
            _ => allocatable,
        };
        let conditions =
            self.conditions(health).into_iter().map(|(type_, status, reason, message)| {
                let prev = previous
                    .and_then(|p| p.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
                let since = match prev {
                    Some(p) if p.status == status => p.last_transition_time.clone(),
                    _ => None,
                };
                NodeCondition {
                    type_: type_.to_owned(),
                    status: status.to_owned(),
                    reason: Some(reason),
                    message: Some(message),
                    last_heartbeat_time: Some(Time(now)),
                    last_transition_time: since.or(Some(Time(now))),
                }
            });
        NodeStatus {
            capacity: resources,
            allocatable,
            conditions: Some(conditions.collect()),
            addresses: Some(vec![
                NodeAddress { type_: "InternalIP".into(), address: self.internal_ip.clone() },
                NodeAddress { type_: "Hostname".into(), address: self.hostname.clone() },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(self.kubelet_port) }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: self.arch.clone(),
                operating_system: self.os.clone(),
                kubelet_version: self.kubelet_version.clone(),
                container_runtime_version: self.runtime_version.clone(),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }
    }

    /// `capacity` as the node's resources: CPU in millicores, memory and ephemeral storage in
    /// bytes, and pods (`--max-pods`, else what the backend's machines hold, else 110).
    fn resources(&self, c: NodeCapacity) -> BTreeMap<String, Quantity> {
        let pods = self.max_pods.or(c.pods).unwrap_or(DEFAULT_MAX_PODS);
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(format!("{}m", c.cpu_millis))),
            ("memory".to_owned(), Quantity(c.memory_bytes.to_string())),
            ("ephemeral-storage".to_owned(), Quantity(c.ephemeral_storage_bytes.to_string())),
            ("pods".to_owned(), Quantity(pods.to_string())),
        ])
    }

    /// The node's conditions as (type, status, reason, message), `Ready` first: `Ready` and
    /// [`BACKEND_UNREACHABLE`] from `health` and the [`OutagePolicy`], the pressure conditions
    /// always `False` (the backend's machines handle their own pressure).
    fn conditions(&self, health: &Health) -> [(&'static str, &'static str, String, String); 6] {
        let (ready, reason, message) = match (health, self.outage) {
            (Health::Ready, _) => (
                "True",
                "KubeletReady".to_owned(),
                "virtual-kubelet is ready and its backend answers".to_owned(),
            ),
            (Health::Unreachable { .. }, OutagePolicy::KeepPods) => (
                "True",
                "KubeletReady".to_owned(),
                format!(
                    "virtual-kubelet is ready; its backend does not answer ({BACKEND_UNREACHABLE}): \
                     its pods keep running, new pods wait"
                ),
            ),
            (Health::Unreachable { reason, message }, OutagePolicy::NotReady) => {
                ("False", reason.clone(), message.clone())
            }
        };
        let (unreachable, why, what) = match health {
            Health::Ready => {
                ("False", "BackendAnswers".to_owned(), "the backend answers".to_owned())
            }
            Health::Unreachable { reason, message } => ("True", reason.clone(), message.clone()),
        };
        let quiet = |type_, reason: &str, message: &str| {
            (type_, "False", reason.to_owned(), message.to_owned())
        };
        [
            ("Ready", ready, reason, message),
            (BACKEND_UNREACHABLE, unreachable, why, what),
            quiet("MemoryPressure", "KubeletHasSufficientMemory", "no memory pressure"),
            quiet("DiskPressure", "KubeletHasNoDiskPressure", "no disk pressure"),
            quiet("PIDPressure", "KubeletHasSufficientPID", "no PID pressure"),
            quiet("NetworkUnavailable", "RouteCreated", "the backend routes pod traffic"),
        ]
    }

    /// The node Lease (`kube-node-lease/<name>`) renewed at `now`, owned by the Node with `node_uid`
    /// so that deleting the Node deletes it.
    pub fn lease(&self, node_uid: &str, now: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(LEASE_NAMESPACE.into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: self.name.clone(),
                    uid: node_uid.to_owned(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.name.clone()),
                lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                renew_time: Some(MicroTime(now)),
                ..LeaseSpec::default()
            }),
        }
    }
}

/// The Kubernetes version a node built for `ours` (`v1.36.3`) reports against an API server of
/// `server` (its `gitVersion`, `v1.34.1`, `v1.33.5+k3s1`, `v1.32.2-gke.1000`): the older of
/// the two as `vMAJOR.MINOR.PATCH`, so that `nodeInfo.kubeletVersion` is never newer than the
/// control plane (the version skew policy: a kubelet must not be newer than kube-apiserver).
/// `ours` when `server` is unknown or not a version.
pub fn kubelet_base_version(ours: &str, server: Option<&str>) -> String {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let v = v.strip_prefix('v')?;
        let core = v.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(str::parse::<u64>);
        let version = (parts.next()?.ok()?, parts.next()?.ok()?, parts.next()?.ok()?);
        parts.next().is_none().then_some(version)
    };
    match (parse(ours), server.and_then(parse)) {
        (Some(o), Some(s)) if s < o => format!("v{}.{}.{}", s.0, s.1, s.2),
        _ => ours.to_owned(),
    }
}

/// Whether two node statuses differ in anything but heartbeat and transition times: the status is
/// written when this is true, and otherwise at the report interval.
pub fn status_differs(old: Option<&NodeStatus>, new: &NodeStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
            c.last_transition_time = None;
        }
        s.conditions.get_or_insert_default().sort_by(|a, b| a.type_.cmp(&b.type_));
        (
            s.capacity,
            s.allocatable,
            s.conditions,
            s.addresses,
            s.daemon_endpoints,
            s.node_info.map(|i| {
                (i.kubelet_version, i.container_runtime_version, i.operating_system, i.architecture)
            }),
        )
    };
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        NodeConfig {
            name: "vk-nomad".into(),
            os: "linux".into(),
            arch: "amd64".into(),
            labels: BTreeMap::new(),
            role_label: false,
            taint: Some(Taint {
                key: "virtual-kubelet.io/provider".into(),
                value: Some("nomad".into()),
                effect: "NoSchedule".into(),
                time_added: None,
            }),
            kubelet_port: 10250,
            max_pods: None,
            internal_ip: "10.0.0.5".into(),
            hostname: "vk-nomad".into(),
            kubelet_version: "v1.36.3-vk-nomad-0.1.0".into(),
            runtime_version: "nomad://1.11.3".into(),
            outage: OutagePolicy::KeepPods,
        }
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn labels_avoid_what_node_restriction_refuses() {
        let l = config().labels();
        assert_eq!(l["node.kubernetes.io/exclude-from-external-load-balancers"], "true");
        assert_eq!(l["type"], "virtual-kubelet");
        assert_eq!(l["kubernetes.io/hostname"], "vk-nomad");
        assert!(!l.contains_key("kubernetes.io/role"));
        let l = NodeConfig { role_label: true, ..config() }.labels();
        assert_eq!(l["kubernetes.io/role"], "agent");
    }

    #[test]
    fn status_carries_capacity_pods_and_endpoints() {
        let cap = NodeCapacity {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: 1 << 30,
            pods: None,
            reserved: Reserved::default(),
        };
        let st = config().status(Some(cap), &Health::Ready, None, ts(0));
        let alloc = st.allocatable.as_ref().unwrap();
        assert_eq!(alloc["cpu"].0, "4000m");
        assert_eq!(alloc["memory"].0, (8u64 << 30).to_string());
        assert_eq!(alloc["pods"].0, "110");
        let three = NodeCapacity { pods: Some(330), ..cap };
        let st3 = config().status(Some(three), &Health::Ready, None, ts(0));
        assert_eq!(st3.capacity.unwrap()["pods"].0, "330", "the backend's machines");
        let capped = NodeConfig { max_pods: Some(20), ..config() };
        let st20 = capped.status(Some(three), &Health::Ready, None, ts(0));
        assert_eq!(st20.capacity.unwrap()["pods"].0, "20", "--max-pods wins");
        assert_eq!(st.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port, 10250);
        assert_eq!(st.addresses.unwrap()[0].address, "10.0.0.5");
        let ready = &st.conditions.unwrap()[0];
        assert_eq!((ready.type_.as_str(), ready.status.as_str()), ("Ready", "True"));
    }

    /// What other work holds is in `capacity` and not in `allocatable`; more reserved than
    /// there is leaves 0, not a negative quantity.
    #[test]
    fn allocatable_is_capacity_less_what_others_hold() {
        let cap = NodeCapacity {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: 1 << 30,
            pods: Some(110),
            reserved: Reserved {
                cpu_millis: 1500,
                memory_bytes: 4 << 30,
                ephemeral_storage_bytes: 2 << 30,
            },
        };
        let st = config().status(Some(cap), &Health::Ready, None, ts(0));
        let (c, a) = (st.capacity.unwrap(), st.allocatable.unwrap());
        assert_eq!((c["cpu"].0.as_str(), a["cpu"].0.as_str()), ("4000m", "2500m"));
        assert_eq!(c["memory"].0, (8u64 << 30).to_string());
        assert_eq!(a["memory"].0, (4u64 << 30).to_string());
        assert_eq!(a["ephemeral-storage"].0, "0");
        assert_eq!(a["pods"].0, "110");
        assert_eq!(cap.allocatable().reserved, Reserved::default());
    }

    #[test]
    fn readiness_changes_are_detected_and_stamped() {
        let c = config();
        let first = c.status(None, &Health::Ready, None, ts(0));
        let same = c.status(None, &Health::Ready, Some(&first), ts(10));
        assert!(!status_differs(Some(&first), &same));
        assert_eq!(same.conditions.as_ref().unwrap()[0].last_transition_time, Some(Time(ts(0))));
        let down =
            Health::Unreachable { reason: "NomadUnreachable".into(), message: "refused".into() };
        let c = NodeConfig { outage: OutagePolicy::NotReady, ..c };
        let second = c.status(None, &down, Some(&first), ts(20));
        assert!(status_differs(Some(&first), &second));
        let ready = &second.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("NomadUnreachable"))
        );
        assert_eq!(ready.last_transition_time, Some(Time(ts(20))));
    }

    /// `keep-pods`: an outage keeps `Ready=True` (no NoExecute eviction) while the condition says
    /// why and since when, and nothing new is allocatable; the answer coming back restores both.
    #[test]
    fn an_outage_keeps_the_node_ready_and_takes_no_new_pods() {
        let c = config();
        let cap =
            NodeCapacity { cpu_millis: 4000, memory_bytes: 1 << 30, ..NodeCapacity::default() };
        let cond = |st: &NodeStatus, t: &str| {
            st.conditions.as_ref().unwrap().iter().find(|c| c.type_ == t).unwrap().clone()
        };
        let up = c.status(Some(cap), &Health::Ready, None, ts(0));
        assert_eq!(cond(&up, BACKEND_UNREACHABLE).status, "False");
        assert_eq!(cond(&up, BACKEND_UNREACHABLE).reason.as_deref(), Some("BackendAnswers"));
        let down =
            Health::Unreachable { reason: "NomadUnreachable".into(), message: "refused".into() };
        let out = c.status(Some(cap), &down, Some(&up), ts(20));
        assert!(status_differs(Some(&up), &out));
        let ready = cond(&out, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time),
            ("True", Some(Time(ts(0))))
        );
        let u = cond(&out, BACKEND_UNREACHABLE);
        assert_eq!(
            (u.status.as_str(), u.reason.as_deref(), u.message.as_deref()),
            ("True", Some("NomadUnreachable"), Some("refused"))
        );
        assert_eq!(u.last_transition_time, Some(Time(ts(20))), "since when");
        assert_eq!(out.allocatable.as_ref().unwrap()["pods"].0, "0");
        assert_eq!(out.capacity.as_ref().unwrap()["pods"].0, "110");
        assert_eq!(out.allocatable.as_ref().unwrap()["cpu"].0, "4000m");
        let later = c.status(Some(cap), &down, Some(&out), ts(400));
        assert_eq!(cond(&later, BACKEND_UNREACHABLE).last_transition_time, Some(Time(ts(20))));
        let back = c.status(Some(cap), &Health::Ready, Some(&later), ts(410));
        assert_eq!(back.allocatable.as_ref().unwrap()["pods"].0, "110");
        assert_eq!(cond(&back, BACKEND_UNREACHABLE).status, "False");
        assert_eq!(cond(&back, "Ready").last_transition_time, Some(Time(ts(0))));
    }

    #[test]
    fn the_kubelet_version_is_never_newer_than_the_api_server() {
        assert_eq!(kubelet_base_version("v1.36.3", Some("v1.34.1")), "v1.34.1");
        assert_eq!(kubelet_base_version("v1.36.3", Some("v1.33.5+k3s1")), "v1.33.5");
        assert_eq!(kubelet_base_version("v1.36.3", Some("v1.36.1-gke.1000")), "v1.36.1");
        assert_eq!(kubelet_base_version("v1.36.3", Some("v1.36.3")), "v1.36.3");
        assert_eq!(kubelet_base_version("v1.36.3", Some("v1.37.0")), "v1.36.3");
        assert_eq!(kubelet_base_version("v1.36.3", Some("v1.4.10")), "v1.4.10");
        assert_eq!(kubelet_base_version("v1.36.3", Some("dev")), "v1.36.3");
        assert_eq!(kubelet_base_version("v1.36.3", None), "v1.36.3");
    }

    #[test]
    fn lease_is_owned_by_the_node() {
        let l = config().lease("uid-1", ts(5));
        assert_eq!(l.metadata.namespace.as_deref(), Some(LEASE_NAMESPACE));
        assert_eq!(l.metadata.owner_references.unwrap()[0].uid, "uid-1");
        let spec = l.spec.unwrap();
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.holder_identity.as_deref(), Some("vk-nomad"));
    }
}
