use std::collections::HashMap;

use super::*;
use crate::Size;
use crate::kubelets::ProcStats;

/// A run of `n` pods taking `seconds`, with `rss_mib` steady and twice that at its peak.
fn scale_run(n: usize, seconds: Option<f64>, rss_mib: u64) -> ScaleRun {
    #[allow(clippy::cast_precision_loss)]
    let pods = n as f64;
    ScaleRun {
        n,
        seconds,
        running: if seconds.is_some() { n } else { n / 2 },
        create_seconds: 2.0,
        stats: ProcStats { rss: rss_mib << 20, peak_rss: (2 * rss_mib) << 20, cpu_seconds: 4.0 },
        requests: HashMap::from([
            ("PATCH pods/status".to_owned(), 2.0 * pods),
            ("POST events".to_owned(), pods),
            ("LIST pods".to_owned(), 1.0),
            ("WATCH pods".to_owned(), 1.0),
            ("GET nodes".to_owned(), pods),
        ]),
    }
}

/// Our propagation histogram with `fast` samples under 0.1 s and `slow` under 0.5 s.
fn histogram(fast: u32, slow: u32) -> String {
    format!(
        "# TYPE {PROPAGATION} histogram\n{PROPAGATION}_bucket{{le=\"0.1\"}} {fast}\n\
{PROPAGATION}_bucket{{le=\"0.5\"}} {}\n{PROPAGATION}_bucket{{le=\"+Inf\"}} {}\n",
        fast + slow,
        fast + slow
    )
}

/// A report of every benchmark at the full size, with made-up figures.
fn report() -> Report {
    let plan = Plan::of(Size::Full);
    let mut scale = Vec::new();
    for (who, secs, rss) in [
        (Contender::Ours, 10.0, 20),
        (Contender::OursTuned, 10.0, 22),
        (Contender::Upstream, 40.0, 100),
        (Contender::UpstreamTuned, 30.0, 110),
        (Contender::Floor, 8.0, 10),
    ] {
        for &n in &plan.p7_sizes {
            scale.push((who, scale_run(n, Some(secs), rss)));
        }
        scale.push((who, scale_run(plan.p1_pods, Some(secs), rss)));
    }
    scale.push((Contender::Upstream, scale_run(2000, None, 100)));
    let ours = |seconds: f64| OursRun {
        seconds: Some(seconds),
        outside: vec![0.1, 0.2, 0.3, 0.6],
        metrics: histogram(80, 20),
        calm_outside: vec![0.05, 0.1],
        calm_nomad_share: vec![0.02, 0.04],
        calm_metrics: histogram(90, 30),
    };
    Report {
        tiny: false,
        plan,
        machine: "2 CPUs (test), 4.0 GiB RAM".to_owned(),
        versions: vec![("ours", "v0.1.0".to_owned()), ("Nomad", "v1.11.3".to_owned())],
        date: "2025-01-01 00:00 UTC".to_owned(),
        scale,
        p4_ours: vec![ours(12.0), ours(14.0)],
        p4_alone: vec![Some(11.0), None, Some(12.0)],
        streams: Some(StreamRuns {
            bytes: 100_000_000,
            kubectl_logs: vec![(100 << 20, 2.0), (100 << 20, 4.0)],
            nomad_logs: vec![(100 << 20, 2.0)],
            kubectl_exec: vec![0.2, 0.3, 0.25],
            nomad_exec: vec![0.2, 0.22],
            kubectl_get: vec![0.1],
        }),
        notes: vec!["upstream with 2000 pods, run 0:\nfailed: timeout".to_owned()],
        elapsed: Duration::from_secs(600),
    }
}

const ALL_BENCHES: [Bench; 7] =
    [Bench::P1, Bench::P2, Bench::P3, Bench::P4, Bench::P5, Bench::P6, Bench::P7];

/// The `## ` headings of `doc` before the hand-written findings.
fn headings(doc: &str) -> Vec<&str> {
    doc.lines()
        .filter(|l| l.starts_with("## "))
        .take_while(|l| !l.starts_with("## Findings"))
        .collect()
}

#[test]
fn the_document_has_a_section_per_benchmark_in_order() {
    let doc = report().render(&ALL_BENCHES);
    assert!(doc.starts_with(
        "# Benchmarks\n\nWritten by `bench/run.sh` on 2025-01-01 00:00 UTC in 600 s."
    ));
    assert_eq!(
        headings(&doc),
        [
            "## Machine and versions",
            "## How to reproduce",
            "## Targets (reported, not asserted)",
            "## P1: 500 bound pods until all are Running",
            "## P2: memory and CPU with 1000 pods",
            "## P3: Nomad allocation change to pod status written",
            "## P4: 100 pods through the real Nomad (raw_exec `sleep`) until all Running",
            "## P5: `kubectl logs` of a pod that wrote 100 MB",
            "## P6: exec round trip",
            "## P7: how time and memory grow with the number of pods",
            "## Failures in this run",
        ]
    );
    // Every benchmark's section ends with the machine and the versions.
    let footer = "_Machine: 2 CPUs (test), 4.0 GiB RAM. Versions: ours v0.1.0; Nomad v1.11.3._";
    assert_eq!(doc.matches(footer).count(), 7);
    // A note's line breaks are flattened into its one list item.
    assert!(doc.contains("\n- upstream with 2000 pods, run 0: failed: timeout\n"));
}

#[test]
fn targets_and_figures_are_the_medians_ratios() {
    let doc = report().render(&ALL_BENCHES);
    for row in [
        "| P1 | 500 pods: ≥ 3× faster than upstream's defaults | 4.00× | yes |",
        "| P1 | within 1.5× of the floor (ours, defaults) | 1.25× | yes |",
        "| P2 | 1000 pods: peak RSS ≤ ¼ of upstream's | 0.20× | yes |",
        "| P3 | p99 < 0.5 s, burst (our histogram) | 480 ms | yes |",
        "| P3 | p99 < 0.5 s, burst (watched from outside) | 600 ms | **no** |",
        "| P4 | 100 pods: within 1.2× of Nomad alone | 1.13× | yes |",
        "| P5 | `kubectl logs` ≥ 0.8× of Nomad's fs/logs | 0.75× | **no** |",
        "| P6 | `kubectl exec -- true` p50 within 1.2× of Nomad's exec | 1.19× | yes |",
        "| ours (defaults) | upstream mock (defaults) | 10.00 | 40.00 | 4.00× faster |",
        "| ours (defaults) | floor (minimal client) | 10.00 | 8.00 | 1.25× of the floor's time |",
        "| ours (defaults) | 2.00 | 1.00 | 0.00 |",
        "| upstream mock (--pod-sync-workers 50) | peak RSS (MiB) | 40.00 | 220.00 | 0.18× |",
        "| 13.00 | 11.50 | 1.13× | 12.00, 14.00; 11.00, —, 12.00 |",
        "| 37.50 | 50.00 | 0.75× | 100.00; 100.00 |",
        "| 250 ms | 210 ms | 1.19× | 300 ms | 220 ms | 100 ms |",
        "| upstream mock (defaults) | 2000 | — | — | 200.00 | 100.00 | 4.00 |",
        "| floor (minimal client) | 2000 | 8.00 | 250 | 20.00 | 10.00 | 4.00 |",
    ] {
        assert!(doc.lines().any(|l| l == row), "no row {row}");
    }
}

#[test]
fn only_the_chosen_benchmarks_are_rendered() {
    let doc = report().render(&[Bench::P1]);
    let sections = headings(&doc);
    assert_eq!(
        sections[3..],
        ["## P1: 500 bound pods until all are Running", "## Failures in this run"]
    );
    assert!(doc.lines().any(|l| l.starts_with("| P1 |")));
    assert!(!doc.lines().any(|l| l.starts_with("| P2 |")));
    // Without the streams measured, P5 has no section; a tiny run says its figures mean nothing.
    let mut tiny = report();
    tiny.tiny = true;
    tiny.streams = None;
    tiny.notes.clear();
    let doc = tiny.render(&[Bench::P3, Bench::P5, Bench::P7]);
    assert!(doc.contains("**Tiny run** (a few pods, one run each)"));
    assert_eq!(
        headings(&doc)[3..],
        [
            "## P3: Nomad allocation change to pod status written",
            "## P7: how time and memory grow with the number of pods",
        ]
    );
    assert!(
        doc.lines()
            .any(|l| l == "| P5 | `kubectl logs` ≥ 0.8× of Nomad's fs/logs | — | not measured |")
    );
}
