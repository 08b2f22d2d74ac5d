//! Why Nomad could not place a pod's allocation, from the job's evaluations
//! (`GET /v1/job/<id>/evaluations`): the scheduler's `FailedTGAllocs` metrics in words, as
//! `nomad job status` prints them (`command/monitor.go`, `formatAllocMetrics`), for the container
//! waiting message and the `FailedPlacement` Event.

use std::collections::BTreeMap;

use crate::api::{AllocMetric, Evaluation};

/// What a failed placement says, from the evaluations of a job that has no allocation: the
/// newest evaluation with failed task group allocations, while a `blocked` evaluation waits for
/// the cluster to change (or it is the newest evaluation of all). `None` when the newest placement
/// attempt did not fail, or there was none.
///
/// The text: `Nomad could not place the allocation: 1 node exhausted on memory, 2 nodes filtered
/// by constraint ${node.pool} = gpu`.
pub fn failure(evals: &[Evaluation]) -> Option<String> {
    let failed = |e: &&Evaluation| e.failed_tg_allocs.as_ref().is_some_and(|f| !f.is_empty());
    let newest = evals.iter().max_by_key(|e| e.create_index)?;
    let failing = evals.iter().filter(failed).max_by_key(|e| e.create_index)?;
    let blocked = evals.iter().any(|e| e.status == "blocked");
    if !blocked && failing.create_index != newest.create_index {
        return None;
    }
    let groups = failing.failed_tg_allocs.as_ref()?;
    let parts: Vec<String> = groups.values().flat_map(metric_parts).collect();
    let why = if parts.is_empty() { "no node fits".to_owned() } else { parts.join(", ") };
    Some(format!("Nomad could not place the allocation: {why}"))
}

/// `1 node` or `n nodes`.
fn nodes(n: u64) -> String {
    if n == 1 { "1 node".to_owned() } else { format!("{n} nodes") }
}

/// One task group's metric as phrases, most telling first.
fn metric_parts(m: &AllocMetric) -> Vec<String> {
    let mut out = Vec::new();
    if m.nodes_evaluated == 0 {
        out.push(if m.nodes_in_pool == 0 && !m.node_pool.is_empty() {
            format!("no node in node pool {:?}", m.node_pool)
        } else if m.nodes_in_pool == 0 {
            "no node in the job's node pool".to_owned()
        } else {
            "no node was eligible".to_owned()
        });
    }
    let empty = BTreeMap::new();
    for (dc, n) in m.nodes_available.as_ref().unwrap_or(&empty) {
        if *n == 0 {
            out.push(format!("no node ready in datacenter {dc:?}"));
        }
    }
    let dimensions = m.dimension_exhausted.as_ref().unwrap_or(&empty);
    for (dimension, n) in dimensions {
        out.push(format!("{} exhausted on {dimension}", nodes(*n)));
    }
    if dimensions.is_empty() && m.nodes_exhausted > 0 {
        out.push(format!("{} exhausted", nodes(m.nodes_exhausted)));
    }
    for (constraint, n) in m.constraint_filtered.as_ref().unwrap_or(&empty) {
        out.push(format!("{} filtered by constraint {constraint}", nodes(*n)));
    }
    for (class, n) in m.class_filtered.as_ref().unwrap_or(&empty) {
        out.push(format!("{} filtered by node class {class:?}", nodes(*n)));
    }
    for quota in m.quota_exhausted.iter().flatten() {
        out.push(format!("quota {quota:?} reached"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(index: u64, status: &str, failed: Option<serde_json::Value>) -> Evaluation {
        let mut e =
            Evaluation { create_index: index, status: status.into(), ..Evaluation::default() };
        e.failed_tg_allocs =
            failed.map(|f| serde_json::from_value(serde_json::json!({ "pod": f })).unwrap());
        e
    }

    #[test]
    fn a_blocked_placement_names_the_scheduler_figures() {
        let metric = serde_json::json!({
            "NodesEvaluated": 3, "NodesInPool": 3, "NodesExhausted": 2,
            "DimensionExhausted": {"memory": 2},
            "ConstraintFiltered": {"${node.pool} = gpu": 1},
            "NodesAvailable": {"dc1": 3, "dc2": 0}
        });
        let evals = [eval(10, "complete", Some(metric)), eval(11, "blocked", None)];
        assert_eq!(
            failure(&evals).as_deref(),
            Some(
                "Nomad could not place the allocation: no node ready in datacenter \"dc2\", \
                 2 nodes exhausted on memory, 1 node filtered by constraint ${node.pool} = gpu"
            )
        );
    }

    #[test]
    fn an_empty_node_pool_says_so() {
        let metric =
            serde_json::json!({"NodesEvaluated": 0, "NodesInPool": 0, "NodePool": "empty"});
        let evals = [eval(5, "complete", Some(metric)), eval(6, "blocked", None)];
        assert_eq!(
            failure(&evals).as_deref(),
            Some("Nomad could not place the allocation: no node in node pool \"empty\"")
        );
    }

    #[test]
    fn a_later_successful_attempt_clears_it() {
        let metric = serde_json::json!({"NodesEvaluated": 1, "NodesExhausted": 1,
            "DimensionExhausted": {"cpu": 1}});
        assert_eq!(failure(&[]), None);
        assert_eq!(failure(&[eval(3, "complete", None)]), None);
        let placed = [eval(3, "complete", Some(metric.clone())), eval(4, "complete", None)];
        assert_eq!(failure(&placed), None, "the blocked evaluation was placed");
        let only = [eval(3, "complete", Some(metric))];
        assert_eq!(
            failure(&only).as_deref(),
            Some("Nomad could not place the allocation: 1 node exhausted on cpu")
        );
    }
}
