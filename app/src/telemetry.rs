//! The process's own metrics, served in the Prometheus text format with `/healthz` and `/readyz`
//! on `--metrics-addr` (upstream virtual-kubelet's flag, which upstream never served; loopback by
//! default here) and, for callers allowed `nodes/metrics`, on the kubelet port's `/metrics`.
//!
//! Series (names are `vk_`-prefixed; durations in seconds), each described (`# HELP`, [`describe`]):
//! - `vk_pod_operations_total{operation, result}`: reconcile steps done, by step (`create`,
//!   `sync_status`, `stop`, `kill`, `purge`, `delete_object`, `mark_lost`, `start_container`,
//!   `update_workload`, `fail_deadline`) and `result` (`ok`, or the failure's kind: `unavailable`, `not_found`, `conflict`, `refused`, `invalid_input`, `unsupported`, `missing_input`, `internal`);
//! - `vk_reconcile_duration_seconds`: one reconcile of one pod, histogram;
//! - `vk_pods{node,phase}`: pods bound to each node by phase (`Pending`, `Running`, `Succeeded`,
//!   `Failed`, `Unknown`);
//! - `vk_status_propagation_seconds`: Nomad's event time to the pod status written, histogram;
//! - `vk_nomad_requests_total{endpoint, method, code}` and
//!   `vk_nomad_request_duration_seconds{endpoint, method}`: Nomad API calls (endpoint as a route
//!   template such as `/v1/job/:id`; `code` is the HTTP status or `error` when no answer came);
//! - `vk_lease_renew_failures_total`: node Lease renewals that failed;
//! - `vk_events_dropped_total`: Events dropped because 1000 of them waited to be published.
//! - `vk_kubelet_open_streams{kind}`, `vk_kubelet_connections{state}`,
//!   `vk_kubelet_connections_refused_total{reason}`, `vk_kubelet_connections_evicted_total`,
//!   `vk_kubelet_reviews_refused_total{reason}`: the kubelet API's sessions, connections and the
//!   requests refused at its limits (`vk_kubelet_api::limits`);
//! - `vk_nomad_event_lines_skipped_total`: batches of Nomad's event stream over 16 MiB, skipped;
//! - `vk_build_info{version, commit, kubernetes}`: 1, with the build's version, commit and the
//!   Kubernetes version it serves ([`crate::build`]);
//! - `process_*` (the `metrics-process` crate, Prometheus' standard names): resident and virtual
//!   memory in bytes, CPU seconds, open and maximum file descriptors, threads, start time; read
//!   at each scrape ([`render`]).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Seconds buckets for the latency histograms: 1 ms to 60 s.
const BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

/// Installs the global Prometheus recorder (histograms as buckets for every `*_seconds` series).
///
/// # Errors
/// A recorder is already installed (twice in one process).
pub fn install() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        .context("metric buckets")?
        .install_recorder()
        .context("installing the metrics recorder")
}

/// Describes the series of this list (`# HELP`, and the unit of the `_seconds` ones) to the
/// installed recorder, the application's and its Kubernetes adapters' (a backend describes its
/// own: [`vk_ports::NodeProvider::describe_metrics`]).
pub fn describe() {
    use crate::pod_controller::{POD_OPERATIONS, PODS, RECONCILE_DURATION, STATUS_PROPAGATION};
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        POD_OPERATIONS,
        "Reconcile steps done, by step and result (ok or the failure's kind)."
    );
    describe_histogram!(RECONCILE_DURATION, Unit::Seconds, "Time of one reconcile of one pod.");
    describe_gauge!(PODS, "Pods bound to each node, by phase.");
    describe_histogram!(
        STATUS_PROPAGATION,
        Unit::Seconds,
        "From the backend's change (Nomad's event time) to the pod status written."
    );
    describe_counter!(
        crate::node_controller::LEASE_RENEW_FAILURES,
        "Node Lease renewals that failed."
    );
    describe_gauge!(
        BUILD_INFO,
        "1, labelled with the build's version, git commit and the Kubernetes version it serves."
    );
    metrics::gauge!(
        BUILD_INFO,
        "version" => crate::build::VERSION,
        "commit" => crate::build::COMMIT,
        "kubernetes" => crate::config::KUBERNETES_VERSION
    )
    .set(1.0);
    process_collector().describe();
    vk_kube::describe_metrics();
    vk_kubelet_api::describe_metrics();
}

/// The collector of the `process_*` series.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The metrics text of `handle`, the `process_*` series read just before.
pub fn render(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}

/// Gauge: 1, labelled `version`, `commit` and `kubernetes` (the build's).
pub const BUILD_INFO: &str = "vk_build_info";

/// Parses `--metrics-addr`: `host:port`, or `:port` for every address (Go's notation, as
/// upstream's flag takes it).
///
/// # Errors
/// Not an address and port.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') { format!("0.0.0.0{s}") } else { s.to_owned() };
    full.parse().map_err(|e| format!("{s:?} is not host:port or :port ({e})"))
}

/// Serves `/metrics`, `/healthz` (200 while the process runs) and `/readyz` (200 once `ready`
/// says so, 503 before) on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
    cancel: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(|State((h, _)): State<Shared>| async move { render(&h) }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State((_, ready)): State<Shared>| async move {
                if ready() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "pods and workloads not listed yet")
                }
            }),
        )
        .with_state((handle, ready));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving metrics, /healthz and /readyz");
    }
    if let Err(e) =
        axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await
    {
        warn!(error = %e, "the metrics server stopped");
    }
}

type Shared = (PrometheusHandle, Arc<dyn Fn() -> bool + Send + Sync>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_go_notation() {
        assert_eq!(parse_addr(":10255").unwrap(), "0.0.0.0:10255".parse().unwrap());
        assert_eq!(parse_addr("127.0.0.1:9").unwrap(), "127.0.0.1:9".parse().unwrap());
        assert!(parse_addr("10255").is_err());
        assert!(parse_addr("localhost").is_err());
    }
}
