//! What the provider knows of Nomad between requests, in one struct behind one lock: per job
//! (by job ID) where it lives, what was last written for it and the pod it runs; per cluster the
//! Nomad nodes' CPU speed, addresses and version. Everything here is a memory of an answer
//! Nomad gave: losing it costs requests, never correctness (a miss asks Nomad again).
//!
//! The event stream's filter holds it too ([`Known::pod_of`]): an `Arc` is shared with that
//! task. Locks follow the one policy of the crate (a poisoned lock is taken as it is).

use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use vk_domain::pod::PodKey;
use vk_domain::workload::WorkloadSpec;

use crate::api;
use crate::job::{self, JobRef};

/// What was last written for a job: its containers' images and its Variable's items. A refresh
/// that computes the same makes no request at all.
#[derive(Clone, PartialEq)]
pub(crate) struct Written {
    pub(crate) images: BTreeMap<String, String>,
    pub(crate) items: BTreeMap<String, String>,
}

impl Written {
    /// What writing `pod_job` (made from `spec`) writes.
    pub(crate) fn of(spec: &WorkloadSpec, pod_job: &job::PodJob) -> Self {
        Self {
            images: spec.all_containers().map(|c| (c.name.clone(), c.image.clone())).collect(),
            items: pod_job.items.clone(),
        }
    }
}

/// The items are the pod's Variable: keys only.
impl std::fmt::Debug for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Written")
            .field("images", &self.images)
            .field("items", &api::RedactedItems(&self.items))
            .finish()
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Known(RwLock<State>);

#[derive(Debug, Default)]
struct State {
    /// By job ID; an entry with nothing left in it is removed.
    jobs: HashMap<String, KnownJob>,
    mhz_per_core: Option<u64>,
    /// Nomad node ID to its address.
    node_ips: HashMap<String, String>,
    version: Option<String>,
}

#[derive(Debug, Default)]
struct KnownJob {
    /// Where the job lives, as last listed, located or created.
    location: Option<JobRef>,
    /// What was last written for it.
    written: Option<Written>,
    /// The pod it runs, as last seen (for the event stream and messages).
    pod: Option<PodKey>,
}

impl KnownJob {
    fn is_empty(&self) -> bool {
        self.location.is_none() && self.written.is_none() && self.pod.is_none()
    }
}

impl Known {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes job `id`'s entry with `f`, dropping it when nothing is left.
    fn update(&self, id: &str, f: impl FnOnce(&mut KnownJob)) {
        let mut st = self.write();
        let entry = st.jobs.entry(id.to_owned()).or_default();
        f(entry);
        if entry.is_empty() {
            st.jobs.remove(id);
        }
    }

    /// Where job `id` lives, if known.
    pub(crate) fn location(&self, id: &str) -> Option<JobRef> {
        self.read().jobs.get(id).and_then(|j| j.location.clone())
    }

    /// Remembers where job `r.id` lives.
    pub(crate) fn remember_location(&self, r: &JobRef) {
        self.update(&r.id, |j| j.location = Some(r.clone()));
    }

    /// Forgets where job `id` lives (it is gone).
    pub(crate) fn forget_location(&self, id: &str) {
        self.update(id, |j| j.location = None);
    }

    /// Replaces every job's location by those of a full list: a job not in `locations` is no
    /// longer known to live anywhere.
    pub(crate) fn replace_locations(&self, mut locations: HashMap<String, JobRef>) {
        let mut st = self.write();
        for (id, j) in &mut st.jobs {
            j.location = locations.remove(id);
        }
        for (id, r) in locations {
            st.jobs.insert(id, KnownJob { location: Some(r), ..KnownJob::default() });
        }
        st.jobs.retain(|_, j| !j.is_empty());
    }

    /// What was last written for job `id`.
    pub(crate) fn written(&self, id: &str) -> Option<Written> {
        self.read().jobs.get(id).and_then(|j| j.written.clone())
    }

    /// Remembers `w` as what was last written for job `id`.
    pub(crate) fn remember_written(&self, id: &str, w: Written) {
        self.update(id, |j| j.written = Some(w));
    }

    /// The pod job `id` runs, as last seen.
    pub(crate) fn pod_of(&self, id: &str) -> Option<PodKey> {
        self.read().jobs.get(id).and_then(|j| j.pod.clone())
    }

    /// Remembers that job `id` runs pod `key`.
    pub(crate) fn remember_pod(&self, id: &str, key: &PodKey) {
        self.update(id, |j| j.pod = Some(key.clone()));
    }

    /// Forgets job `id` whole: it was purged.
    pub(crate) fn forget(&self, id: &str) {
        self.write().jobs.remove(id);
    }

    /// The Nomad nodes' MHz per core, once read.
    pub(crate) fn mhz_per_core(&self) -> Option<u64> {
        self.read().mhz_per_core
    }

    /// The address of Nomad node `node_id`, if it was in the last node list.
    pub(crate) fn node_ip(&self, node_id: &str) -> Option<String> {
        self.read().node_ips.get(node_id).cloned()
    }

    /// The Nomad version of the last node list.
    pub(crate) fn version(&self) -> Option<String> {
        self.read().version.clone()
    }

    /// Remembers what a node list (`GET /v1/nodes`) said: the MHz per core (kept when this list
    /// cannot tell), every node's address, the first version given.
    pub(crate) fn nodes_seen(&self, nodes: &[api::NodeStub]) {
        let mut st = self.write();
        st.mhz_per_core = crate::capacity::mhz_per_core(nodes).or(st.mhz_per_core);
        st.node_ips = nodes.iter().map(|n| (n.id.clone(), n.address.clone())).collect();
        st.version = nodes.iter().map(|n| n.version.clone()).find(|v| !v.is_empty());
    }

    /// Jobs with an entry (for tests).
    #[cfg(test)]
    pub(crate) fn jobs(&self) -> usize {
        self.read().jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: &str) -> JobRef {
        JobRef { id: id.into(), namespace: None, region: None }
    }

    #[test]
    fn an_entry_goes_when_nothing_is_known_of_its_job() {
        let k = Known::default();
        let key = PodKey::new("ns", "p").unwrap();
        k.remember_location(&at("a"));
        k.remember_pod("a", &key);
        k.forget_location("a");
        assert_eq!(k.pod_of("a"), Some(key));
        assert_eq!(k.jobs(), 1);
        k.forget("a");
        assert_eq!(k.jobs(), 0);
        k.remember_location(&at("b"));
        k.forget_location("b");
        assert_eq!(k.jobs(), 0);
    }

    #[test]
    fn a_full_list_replaces_every_location() {
        let k = Known::default();
        k.remember_location(&at("gone"));
        k.remember_location(&at("kept"));
        k.remember_pod("gone", &PodKey::new("ns", "p").unwrap());
        k.replace_locations(HashMap::from([
            ("kept".to_owned(), at("kept")),
            ("new".to_owned(), at("new")),
        ]));
        assert_eq!(k.location("gone"), None);
        assert!(k.pod_of("gone").is_some(), "the pod stays known until the job is purged");
        assert_eq!(k.location("kept").map(|r| r.id), Some("kept".to_owned()));
        assert_eq!(k.location("new").map(|r| r.id), Some("new".to_owned()));
        assert_eq!(k.jobs(), 3);
    }
}
