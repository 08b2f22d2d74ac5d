//! The status write: the strategic-merge patch body that turns the status the API server holds
//! into the one the kubelet computed, carrying only what changed (the kubelet's `PatchPodStatus`).

use k8s_openapi::api::core::v1::PodStatus;

use super::conditions::KUBELET_CONDITIONS;

/// Whether writing `new` would change what the API server holds in `old`, ignoring the
/// timestamps of conditions (which [`pod_status`](super::pod_status) carries over anyway). Used to skip writes.
pub fn differs(old: Option<&PodStatus>, new: &PodStatus) -> bool {
    patch(old, new).is_some()
}

/// Fields the kubelet owns that are written as `null` when they become unset, so that an old
/// `reason`, `message` or IP does not linger after a strategic merge.
const CLEARED_WHEN_UNSET: [&str; 6] = ["reason", "message", "podIP", "podIPs", "hostIP", "hostIPs"];

/// Lists merged by key in a strategic merge (`patchMergeKey` in `k8s.io/api/core/v1/types.go`)
/// that this function writes whole, with the `$patch: replace` directive.
const REPLACED_LISTS: [&str; 2] = ["podIPs", "hostIPs"];

/// The strategic-merge patch body (`{"status": {...}}`) that turns `old` (the status the API server
/// last showed) into `new`, carrying only what changed, as the kubelet's `PatchPodStatus` does with
/// a two-way merge patch:
/// - a top-level field goes in only when its value changed (`null` when it became unset);
/// - `conditions` merge by `type`: only conditions whose status, reason or message changed go in
///   (a condition that only got new timestamps does not), a vanished one as `$patch: delete`;
/// - `podIPs` / `hostIPs` (merged by `ip`) go in whole with `$patch: replace`; the container status
///   lists have no merge key and are replaced whole by the API server anyway.
///
/// `None` when nothing would change, and when `new` would move a pod backwards: a pod that is
/// `Succeeded` or `Failed` in `old` stays so (a kubelet never leaves a terminal phase,
/// `pkg/kubelet/status/status_manager.go` `checkContainerStateTransition`).
pub fn patch(old: Option<&PodStatus>, new: &PodStatus) -> Option<serde_json::Value> {
    use serde_json::{Map, Value};
    let terminal = |s: &PodStatus| matches!(s.phase.as_deref(), Some("Succeeded" | "Failed"));
    if old.is_some_and(|o| terminal(o) && o.phase != new.phase) {
        return None;
    }
    let object = |s: Option<&PodStatus>| match s.map(serde_json::to_value) {
        Some(Ok(Value::Object(mut m))) => {
            drop_zero_states(&mut m);
            m
        }
        _ => Map::new(),
    };
    let (before, after) = (object(old), object(Some(new)));
    let mut out = Map::new();
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for key in keys {
        let (b, a) = (before.get(key), after.get(key));
        if b == a {
            continue;
        }
        let value = match (key.as_str(), a) {
            ("conditions", _) => match condition_patch(b, a) {
                Some(v) => v,
                None => continue,
            },
            (k, Some(Value::Array(items))) if REPLACED_LISTS.contains(&k) => {
                let mut items = items.clone();
                items.push(serde_json::json!({ "$patch": "replace" }));
                Value::Array(items)
            }
            (_, Some(v)) => v.clone(),
            (_, None) => Value::Null,
        };
        out.insert(key.clone(), value);
    }
    if old.is_none() {
        for k in CLEARED_WHEN_UNSET {
            out.entry(k).or_insert(Value::Null);
        }
    }
    (!out.is_empty()).then(|| serde_json::json!({ "status": out }))
}

/// The container status lists, whose entries hold Go structs that are never omitted.
const CONTAINER_STATUS_LISTS: [&str; 3] =
    ["initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"];

/// Drops the empty objects (`{}`) from the entries of the container status lists of `status` (a
/// serialized [`PodStatus`]), so that a status as this crate builds it and the same status as the
/// API server returns it compare equal: `ContainerStatus.lastState` (and `state`) are Go structs
/// tagged `omitempty`, which `encoding/json` never omits, so the API server shows `"lastState": {}`
/// for a container that never terminated, where [`pod_status`](super::pod_status) leaves it unset. Without this, the
/// echo of every first write looked changed and the same status was written twice (found by the
/// benchmarks, `bench/`, P1's requests per pod).
fn drop_zero_states(status: &mut serde_json::Map<String, serde_json::Value>) {
    for list in CONTAINER_STATUS_LISTS {
        let Some(serde_json::Value::Array(entries)) = status.get_mut(list) else { continue };
        for entry in entries.iter_mut().filter_map(serde_json::Value::as_object_mut) {
            entry.retain(|_, v| v.as_object().is_none_or(|o| !o.is_empty()));
        }
    }
}

/// The `conditions` part of [`patch`]: changed or new conditions whole, vanished ones deleted by
/// `type`; `None` when they differ only in timestamps.
fn condition_patch(
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
) -> Option<serde_json::Value> {
    use serde_json::Value;
    let list = |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
    let (before, after) = (list(before), list(after));
    let kind = |c: &Value| c.get("type").cloned().unwrap_or(Value::Null);
    let bare = |c: &Value| {
        let mut c = c.clone();
        if let Some(m) = c.as_object_mut() {
            m.remove("lastTransitionTime");
            m.remove("lastProbeTime");
        }
        c
    };
    let mut out = Vec::new();
    for c in &after {
        let earlier = before.iter().find(|b| kind(b) == kind(c));
        if earlier.is_some_and(|b| bare(b) == bare(c)) {
            continue;
        }
        // A merge keeps what the patch leaves out: a reason or message the condition no longer
        // has is written as null, else a Ready condition back to True would keep its old reason.
        let mut c = c.clone();
        if let (Some(b), Some(m)) = (earlier.and_then(Value::as_object), c.as_object_mut()) {
            for f in ["reason", "message"] {
                if b.contains_key(f) && !m.contains_key(f) {
                    m.insert(f.to_owned(), Value::Null);
                }
            }
        }
        out.push(c);
    }
    // Conditions of other writers (readiness gates' types, the controller manager's
    // DisruptionTarget) are theirs: only the kubelet's own types are ever deleted.
    for b in &before {
        let own = kind(b).as_str().is_some_and(|k| KUBELET_CONDITIONS.contains(&k));
        if own && !after.iter().any(|c| kind(c) == kind(b)) {
            out.push(serde_json::json!({ "type": kind(b), "$patch": "delete" }));
        }
    }
    (!out.is_empty()).then_some(Value::Array(out))
}
