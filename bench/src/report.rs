//! BENCHMARKS.md: the tables (our figure, the reference's, the ratio, the target), the machine
//! and the versions, how to reproduce, and the hand-written findings of `bench/FINDINGS.md`.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use vk_tests::Stack;

use crate::kubelets::{self, Contender};
use crate::nomad::{OursRun, bucket_delta, bucket_quantile, buckets, quantile};
use crate::scale::{ScaleRun, median};
use crate::streams::StreamRuns;
use crate::{Bench, Plan};

/// Everything measured, and where.
#[derive(Debug)]
pub(crate) struct Report {
    tiny: bool,
    plan: Plan,
    machine: String,
    versions: Vec<(&'static str, String)>,
    date: String,
    /// P1, P2, P7 runs.
    pub(crate) scale: Vec<(Contender, ScaleRun)>,
    /// P4 (and P3) runs of ours.
    pub(crate) p4_ours: Vec<OursRun>,
    /// P4 runs of Nomad alone, seconds.
    pub(crate) p4_alone: Vec<Option<f64>>,
    /// P5 and P6.
    pub(crate) streams: Option<StreamRuns>,
    /// Failures and remarks, shown at the end.
    pub(crate) notes: Vec<String>,
    /// Wall time of the whole suite.
    pub(crate) elapsed: Duration,
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
        .unwrap_or_else(|| "?".to_owned())
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("?")
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or_else(|| "?".to_owned(), |k| format!("{:.1} GiB", k / 1024.0 / 1024.0));
    format!(
        "{} CPUs ({model}), {mem_gib} RAM, Linux {}, load average {} at start",
        first_line("nproc", &[]),
        first_line("uname", &["-r"]),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn secs(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |v| format!("{v:.2}"))
}

fn ms(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |v| format!("{:.0} ms", v * 1000.0))
}

#[allow(clippy::cast_precision_loss)]
fn mib(b: u64) -> f64 {
    b as f64 / f64::from(1 << 20)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn times(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |v| format!("{v:.2}×"))
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "not measured",
    }
}

impl Report {
    /// An empty report for `stack`, reading the machine and the versions now.
    pub(crate) fn new(stack: &Stack, tiny: bool, plan: &Plan) -> Self {
        let ours = kubelets::ours_bin()
            .map(|p| kubelets::version_of(&p, &["--version"]))
            .unwrap_or_else(|_| "?".to_owned());
        let commit = first_line(
            "git",
            &[
                "-C",
                &vk_tests::peers::repo_root().display().to_string(),
                "rev-parse",
                "--short",
                "HEAD",
            ],
        );
        let ours = format!(
            "{ours} (commit {commit}, {} build)",
            if cfg!(debug_assertions) { "debug" } else { "release" }
        );
        let upstream = kubelets::version_of(&stack.peers.virtual_kubelet_upstream, &["version"]);
        Self {
            tiny,
            plan: plan.clone(),
            machine: machine(),
            versions: vec![
                ("ours", ours),
                ("upstream virtual-kubelet", format!("v1.13.0 ({upstream})")),
                (
                    "kube-apiserver",
                    kubelets::version_of(&stack.peers.kube_apiserver, &["--version"]),
                ),
                ("etcd", kubelets::version_of(&stack.peers.etcd, &["--version"])),
                ("Nomad", kubelets::version_of(&stack.peers.nomad, &["version"])),
                ("kubectl", kubelets::version_of(&stack.peers.kubectl, &["version", "--client"])),
            ],
            date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            scale: Vec::new(),
            p4_ours: Vec::new(),
            p4_alone: Vec::new(),
            streams: None,
            notes: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// The machine, one line.
    pub(crate) fn machine_line(&self) -> &str {
        &self.machine
    }

    fn footer(&self) -> String {
        let v: Vec<String> = self.versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!("\n_Machine: {}. Versions: {}._\n", self.machine, v.join("; "))
    }

    fn runs(&self, who: Contender, n: usize) -> Vec<&ScaleRun> {
        self.scale.iter().filter(|(w, r)| *w == who && r.n == n).map(|(_, r)| r).collect()
    }

    /// Median seconds to all Running (`None` if any run timed out or none ran).
    fn time(&self, who: Contender, n: usize) -> Option<f64> {
        let runs = self.runs(who, n);
        if runs.is_empty() || runs.iter().any(|r| r.seconds.is_none()) {
            return None;
        }
        median(&runs.iter().filter_map(|r| r.seconds).collect::<Vec<_>>())
    }

    fn stat(&self, who: Contender, n: usize, f: impl Fn(&ScaleRun) -> f64) -> Option<f64> {
        median(&self.runs(who, n).into_iter().map(f).collect::<Vec<_>>())
    }

    fn contenders_table(&self, out: &mut String, n: usize) {
        out.push_str(
            "| contender | runs | all Running (s, median) | of which creating (s) | peak RSS (MiB) | steady RSS (MiB) | CPU (s) |\n\
|---|---|---|---|---|---|---|\n",
        );
        for who in ALL {
            let runs = self.runs(who, n);
            if runs.is_empty() {
                continue;
            }
            let each: Vec<String> = runs
                .iter()
                .map(|r| {
                    r.seconds.map_or_else(
                        || format!("timeout ({}/{n})", r.running),
                        |s| format!("{s:.2}"),
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} ({}) | {} | {} | {} | {} |",
                who.label(),
                runs.len(),
                secs(self.time(who, n)),
                each.join(", "),
                secs(self.stat(who, n, |r| r.create_seconds)),
                secs(self.stat(who, n, |r| mib(r.stats.peak_rss))),
                secs(self.stat(who, n, |r| mib(r.stats.rss))),
                secs(self.stat(who, n, |r| r.stats.cpu_seconds)),
            );
        }
    }

    /// The whole document: the preamble, the targets, a section per benchmark in `only` (each with
    /// the machine and versions), the failures of the run and the hand-written findings.
    pub(crate) fn render(&self, only: &[Bench]) -> String {
        let mut o = String::new();
        self.preamble(&mut o);
        self.targets(&mut o, only);
        let sections: [(Bench, Section); 7] = [
            (Bench::P1, Self::p1_section),
            (Bench::P2, Self::p2_section),
            (Bench::P3, Self::p3_section),
            (Bench::P4, Self::p4_section),
            (Bench::P5, Self::p5_section),
            (Bench::P6, Self::p6_section),
            (Bench::P7, Self::p7_section),
        ];
        for (bench, section) in sections {
            // P5 and P6 have a section only when the streams were measured.
            let streams = matches!(bench, Bench::P5 | Bench::P6);
            if only.contains(&bench) && (!streams || self.streams.is_some()) {
                section(self, &mut o);
                o.push_str(&self.footer());
                o.push('\n');
            }
        }
        if !self.notes.is_empty() {
            o.push_str("## Failures in this run\n\n");
            for n in &self.notes {
                let _ = writeln!(o, "- {}", n.replace('\n', " "));
            }
            o.push('\n');
        }
        let findings = vk_tests::peers::repo_root().join("bench/FINDINGS.md");
        if let Ok(text) = std::fs::read_to_string(&findings) {
            o.push_str(&text);
        }
        o
    }

    /// The title, what the figures are, the machine and versions, how to reproduce them and what
    /// the contenders are.
    fn preamble(&self, o: &mut String) {
        o.push_str("# Benchmarks\n\n");
        if self.tiny {
            o.push_str("**Tiny run** (a few pods, one run each): it proves the harness works; the figures mean nothing.\n\n");
        }
        let _ = writeln!(
            o,
            "Written by `bench/run.sh` on {} in {:.0} s. Every figure is a median of runs alternated \
between the contenders on the same local stack (etcd, kube-apiserver, controller-manager, \
scheduler, a Nomad agent), and is read as a ratio to the reference measured in the same run: \
these machines are shared and noisy, so absolute figures move from run to run and only ratios \
are meaningful. Nothing here is asserted by a test.\n",
            self.date,
            self.elapsed.as_secs_f64()
        );
        o.push_str("## Machine and versions\n\n");
        let _ = writeln!(o, "- Machine: {}", self.machine);
        for (k, v) in &self.versions {
            let _ = writeln!(o, "- {k}: {v}");
        }
        o.push_str(HOW_TO_REPRODUCE);
    }

    /// The table of targets, one row per target of a benchmark in `only`: the figure and whether
    /// it is met.
    fn targets(&self, o: &mut String, only: &[Bench]) {
        let p = &self.plan;
        let n1 = p.p1_pods;
        let ours1 = self.time(Contender::Ours, n1);
        let up1 = self.time(Contender::Upstream, n1);
        let floor1 = self.time(Contender::Floor, n1);
        let tuned1 = self.time(Contender::OursTuned, n1);
        let n2 = p.p2_pods;
        let up_ref2 = if self.runs(Contender::Upstream, n2).is_empty() {
            Contender::UpstreamTuned
        } else {
            Contender::Upstream
        };
        let peak = |who| self.stat(who, n2, |r| mib(r.stats.peak_rss));
        let steady = |who| self.stat(who, n2, |r| mib(r.stats.rss));
        let (p3_p99, p3_out_p99) = self.p3(0.99);
        let (c99, co99) = self.p3_calm(0.99);
        let (p4_ours, p4_alone) = self.p4_medians();
        let (p5_ours, p5_nomad) = self.p5();
        let (p6_ours, p6_nomad) = self.p6();
        o.push_str("## Targets (reported, not asserted)\n\n| benchmark | target | figure | met |\n|---|---|---|---|\n");
        let mut row = |b: Bench, target: &str, figure: String, ok: Option<bool>| {
            if only.contains(&b) {
                let _ = writeln!(o, "| {b:?} | {target} | {figure} | {} |", met(ok));
            }
        };
        let r = ratio(up1, ours1);
        row(
            Bench::P1,
            &format!("{n1} pods: ≥ 3× faster than upstream's defaults"),
            times(r),
            r.map(|r| r >= 3.0),
        );
        let r = ratio(ours1, floor1);
        row(Bench::P1, "within 1.5× of the floor (ours, defaults)", times(r), r.map(|r| r <= 1.5));
        let r = ratio(tuned1, floor1);
        row(Bench::P1, "within 1.5× of the floor (ours, tuned)", times(r), r.map(|r| r <= 1.5));
        let r = ratio(peak(Contender::Ours), peak(up_ref2));
        row(
            Bench::P2,
            &format!("{n2} pods: peak RSS ≤ ¼ of upstream's"),
            times(r),
            r.map(|r| r <= 0.25),
        );
        let r = ratio(steady(Contender::Ours), steady(up_ref2));
        row(Bench::P2, "steady RSS ≤ ¼ of upstream's", times(r), r.map(|r| r <= 0.25));
        row(Bench::P3, "p99 < 0.5 s, burst (our histogram)", ms(p3_p99), p3_p99.map(|v| v < 0.5));
        row(
            Bench::P3,
            "p99 < 0.5 s, burst (watched from outside)",
            ms(p3_out_p99),
            p3_out_p99.map(|v| v < 0.5),
        );
        row(
            Bench::P3,
            "p99 < 0.5 s, one pod at a time (our histogram)",
            ms(c99),
            c99.map(|v| v < 0.5),
        );
        row(
            Bench::P3,
            "p99 < 0.5 s, one pod at a time (from outside)",
            ms(co99),
            co99.map(|v| v < 0.5),
        );
        let r = ratio(p4_ours, p4_alone);
        row(
            Bench::P4,
            &format!("{} pods: within 1.2× of Nomad alone", p.p4_pods),
            times(r),
            r.map(|r| r <= 1.2),
        );
        let r = ratio(p5_ours, p5_nomad);
        row(Bench::P5, "`kubectl logs` ≥ 0.8× of Nomad's fs/logs", times(r), r.map(|r| r >= 0.8));
        let r = ratio(p6_ours, p6_nomad);
        row(
            Bench::P6,
            "`kubectl exec -- true` p50 within 1.2× of Nomad's exec",
            times(r),
            r.map(|r| r <= 1.2),
        );
        o.push('\n');
    }

    /// P1: the contenders' times to all Running with P1's pods, ours against each reference, and
    /// the API server requests per pod.
    fn p1_section(&self, o: &mut String) {
        let n1 = self.plan.p1_pods;
        let _ = writeln!(o, "## P1: {n1} bound pods until all are Running\n");
        self.contenders_table(o, n1);
        o.push_str(
            "\n| ours | reference | ours (s) | reference (s) | ratio |\n|---|---|---|---|---|\n",
        );
        for who in [Contender::Upstream, Contender::UpstreamTuned, Contender::Floor] {
            for mine in [Contender::Ours, Contender::OursTuned] {
                let (a, b) = (self.time(mine, n1), self.time(who, n1));
                let r = if who == Contender::Floor {
                    format!("{} of the floor's time", times(ratio(a, b)))
                } else {
                    format!("{} faster", times(ratio(b, a)))
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {r} |",
                    mine.label(),
                    who.label(),
                    secs(a),
                    secs(b)
                );
            }
        }
        self.requests_table(o, n1);
    }

    /// P2: the contenders' memory and CPU, ours against each upstream.
    fn p2_section(&self, o: &mut String) {
        let n2 = self.plan.p2_pods;
        let _ = writeln!(o, "## P2: memory and CPU with {n2} pods\n");
        self.contenders_table(o, n2);
        o.push_str("\n| ours vs | measure | ours | reference | ratio (ours / reference) |\n|---|---|---|---|---|\n");
        for who in [Contender::Upstream, Contender::UpstreamTuned] {
            for (measure, f) in [
                ("peak RSS (MiB)", (|r: &ScaleRun| mib(r.stats.peak_rss)) as fn(&ScaleRun) -> f64),
                ("steady RSS (MiB)", |r: &ScaleRun| mib(r.stats.rss)),
                ("CPU (s)", |r: &ScaleRun| r.stats.cpu_seconds),
            ] {
                let (a, b) = (self.stat(Contender::Ours, n2, f), self.stat(who, n2, f));
                let _ = writeln!(
                    o,
                    "| {} | {measure} | {} | {} | {} |",
                    who.label(),
                    secs(a),
                    secs(b),
                    times(ratio(a, b))
                );
            }
        }
    }

    /// P3: the time from a change of a Nomad allocation to the pod's status written, from our
    /// histogram and from outside, during P4's burst and one pod at a time.
    fn p3_section(&self, o: &mut String) {
        let p = &self.plan;
        let (p3_p99, p3_out_p99) = self.p3(0.99);
        let (h50, o50) = self.p3(0.5);
        let (c50, co50) = self.p3_calm(0.5);
        let (c99, co99) = self.p3_calm(0.99);
        let share: Vec<f64> =
            self.p4_ours.iter().flat_map(|r| r.calm_nomad_share.iter().copied()).collect();
        let samples: usize = self.p4_ours.iter().map(|r| r.outside.len()).sum();
        let calm: usize = self.p4_ours.iter().map(|r| r.calm_outside.len()).sum();
        let _ = writeln!(
            o,
            "## P3: Nomad allocation change to pod status written\n\nFrom the P4 runs of ours: \
during the burst of {} pods, and then for {calm} pods created one at a time (each waited for). Our \
histogram `vk_status_propagation_seconds` (quantiles interpolated in its buckets, as \
`histogram_quantile` does) measures Nomad's allocation `ModifyTime` to the status write; from \
outside, the time a watch (burst) or a 20 ms poll (one at a time) saw the pod Running minus the \
time of its task's `Started` event in Nomad ({samples} and {calm} pods), which also holds the Nomad \
client's batching of allocation updates to the server (up to 200 ms).\n\n\
| measure | p50 | p99 | target (p99) |\n|---|---|---|---|\n\
| our histogram, burst | {} | {} | < 500 ms |\n| watched from outside, burst | {} | {} | < 500 ms |\n\
| our histogram, one at a time | {} | {} | < 500 ms |\n| polled from outside, one at a time | {} | {} | < 500 ms |\n\
| of which Nomad's own (task `Started` to allocation `ModifyTime`), one at a time | {} | {} | |",
            p.p4_pods,
            ms(h50),
            ms(p3_p99),
            ms(o50),
            ms(p3_out_p99),
            ms(c50),
            ms(c99),
            ms(co50),
            ms(co99),
            ms(quantile(&share, 0.5)),
            ms(quantile(&share, 0.99)),
        );
    }

    /// P4: pods through the real Nomad until all Running, ours against Nomad alone.
    fn p4_section(&self, o: &mut String) {
        let p = &self.plan;
        let (p4_ours, p4_alone) = self.p4_medians();
        let each = |v: Vec<Option<f64>>| v.iter().map(|s| secs(*s)).collect::<Vec<_>>().join(", ");
        let _ = writeln!(
            o,
            "## P4: {} pods through the real Nomad ({} `sleep`) until all Running\n\n\
| ours (s) | Nomad alone (s) | ratio (ours / Nomad alone) | runs (ours; alone) |\n|---|---|---|---|\n| {} | {} | {} | {}; {} |",
            p.p4_pods,
            crate::driver().nomad_name(),
            secs(p4_ours),
            secs(p4_alone),
            times(ratio(p4_ours, p4_alone)),
            each(self.p4_ours.iter().map(|r| r.seconds).collect()),
            each(self.p4_alone.clone()),
        );
    }

    /// P5: `kubectl logs` throughput against Nomad's own.
    fn p5_section(&self, o: &mut String) {
        let Some(s) = &self.streams else { return };
        let (p5_ours, p5_nomad) = self.p5();
        let got = |v: &[(u64, f64)]| median(&v.iter().map(|(b, _)| mib(*b)).collect::<Vec<_>>());
        let _ = writeln!(
            o,
            "## P5: `kubectl logs` of a pod that wrote {:.0} MB\n\n`kubectl logs` (API server, our \
kubelet API, Nomad's fs/logs) against `nomad alloc logs` (Nomad's fs/logs API directly); both CLIs \
started fresh each run, throughput = bytes printed / wall time.\n\n\
| ours (MiB/s) | Nomad directly (MiB/s) | ratio (ours / Nomad) | MiB printed (ours; Nomad) |\n|---|---|---|---|\n| {} | {} | {} | {}; {} |",
            s.bytes as f64 / 1e6,
            secs(p5_ours),
            secs(p5_nomad),
            times(ratio(p5_ours, p5_nomad)),
            secs(got(&s.kubectl_logs)),
            secs(got(&s.nomad_logs)),
        );
    }

    /// P6: the `kubectl exec` round trip against Nomad's own.
    fn p6_section(&self, o: &mut String) {
        let Some(s) = &self.streams else { return };
        let (p6_ours, p6_nomad) = self.p6();
        let _ = writeln!(
            o,
            "## P6: exec round trip\n\n`kubectl exec <pod> -- true` against `nomad alloc exec -task main <alloc> true`, \
alternated, {} runs each (both CLIs started fresh each run).\n\n\
| ours p50 | Nomad directly p50 | ratio (ours / Nomad) | ours p90 | Nomad p90 | `kubectl get pod` p50 (no kubelet) |\n|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} |",
            s.kubectl_exec.len(),
            ms(p6_ours),
            ms(p6_nomad),
            times(ratio(p6_ours, p6_nomad)),
            ms(quantile(&s.kubectl_exec, 0.9)),
            ms(quantile(&s.nomad_exec, 0.9)),
            ms(median(&s.kubectl_get)),
        );
    }

    /// P7: how time and memory grow with the number of pods, for each contender.
    fn p7_section(&self, o: &mut String) {
        let p = &self.plan;
        o.push_str("## P7: how time and memory grow with the number of pods\n\n");
        o.push_str("| contender | pods | all Running (s) | pods/s | peak RSS (MiB) | steady RSS (MiB) | CPU (s) |\n|---|---|---|---|---|---|---|\n");
        for who in ALL {
            for &n in &p.p7_sizes {
                if self.runs(who, n).is_empty() {
                    continue;
                }
                let t = self.time(who, n);
                #[allow(clippy::cast_precision_loss)]
                let rate = t.map(|t| n as f64 / t);
                let _ = writeln!(
                    o,
                    "| {} | {n} | {} | {} | {} | {} | {} |",
                    who.label(),
                    secs(t),
                    rate.map_or_else(|| "—".to_owned(), |r| format!("{r:.0}")),
                    secs(self.stat(who, n, |r| mib(r.stats.peak_rss))),
                    secs(self.stat(who, n, |r| mib(r.stats.rss))),
                    secs(self.stat(who, n, |r| r.stats.cpu_seconds)),
                );
            }
        }
        let _ = writeln!(
            o,
            "\nUpstream runs once per size, with its defaults up to {} pods only (at its fixed client limit of 5 requests/s \
larger sizes take many minutes), with `--pod-sync-workers 50` at {:?} pods only.",
            p.upstream_default_max, p.upstream_tuned_sizes
        );
    }

    /// P4's medians in seconds: (ours, Nomad alone).
    fn p4_medians(&self) -> (Option<f64>, Option<f64>) {
        let ours = median(&self.p4_ours.iter().filter_map(|r| r.seconds).collect::<Vec<_>>());
        let alone = median(&self.p4_alone.iter().filter_map(|s| *s).collect::<Vec<_>>());
        (ours, alone)
    }

    /// API server requests per pod while `n` pods became Running (the first run of each
    /// contender), from kube-apiserver's `apiserver_request_total`.
    fn requests_table(&self, out: &mut String, n: usize) {
        #[allow(clippy::cast_precision_loss)]
        let per_pod = |v: f64| format!("{:.2}", v / n as f64);
        out.push_str(&format!(
            "\nAPI server requests per pod while the {n} pods became Running (kube-apiserver's \
`apiserver_request_total`, all clients; the benchmark's own create per pod and its watch are \
taken out of \"other\"):\n\n| contender | PATCH pods/status | POST+PATCH events | other |\n|---|---|---|---|\n"
        ));
        for who in ALL {
            let Some(run) = self.runs(who, n).into_iter().next() else { continue };
            let get = |k: &str| run.requests.get(k).copied().unwrap_or(0.0);
            let status = get("PATCH pods/status") + get("PUT pods/status");
            let events = get("POST events") + get("PATCH events");
            let total: f64 = run.requests.values().sum();
            #[allow(clippy::cast_precision_loss)]
            let other = (total - status - events - n as f64 - get("LIST pods") - get("WATCH pods"))
                .max(0.0);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                who.label(),
                per_pod(status),
                per_pod(events),
                per_pod(other)
            );
        }
    }

    /// P3's `q` quantile during P4's burst: (our histogram, from outside).
    fn p3(&self, q: f64) -> (Option<f64>, Option<f64>) {
        // Each run is a fresh process holding its own histogram: the median over runs.
        let hist = median(
            &self
                .p4_ours
                .iter()
                .filter_map(|r| bucket_quantile(&buckets(&r.metrics, PROPAGATION), q))
                .collect::<Vec<_>>(),
        );
        let outside: Vec<f64> =
            self.p4_ours.iter().flat_map(|r| r.outside.iter().copied()).collect();
        (hist, quantile(&outside, q))
    }

    /// P3's `q` quantile for the pods created one at a time: (our histogram, from outside).
    fn p3_calm(&self, q: f64) -> (Option<f64>, Option<f64>) {
        let hist = median(
            &self
                .p4_ours
                .iter()
                .filter_map(|r| {
                    let d = bucket_delta(
                        &buckets(&r.metrics, PROPAGATION),
                        &buckets(&r.calm_metrics, PROPAGATION),
                    );
                    bucket_quantile(&d, q)
                })
                .collect::<Vec<_>>(),
        );
        let outside: Vec<f64> =
            self.p4_ours.iter().flat_map(|r| r.calm_outside.iter().copied()).collect();
        (hist, quantile(&outside, q))
    }

    /// P5's median throughputs in MiB/s: (ours, Nomad).
    fn p5(&self) -> (Option<f64>, Option<f64>) {
        let Some(s) = &self.streams else { return (None, None) };
        let rate =
            |v: &[(u64, f64)]| median(&v.iter().map(|(b, t)| mib(*b) / t).collect::<Vec<_>>());
        (rate(&s.kubectl_logs), rate(&s.nomad_logs))
    }

    /// P6's medians in seconds: (ours, Nomad).
    fn p6(&self) -> (Option<f64>, Option<f64>) {
        let Some(s) = &self.streams else { return (None, None) };
        (median(&s.kubectl_exec), median(&s.nomad_exec))
    }
}

/// The preamble's last part: how to reproduce the figures, and the contenders.
const HOW_TO_REPRODUCE: &str = "\n## How to reproduce\n\n```sh\nbench/run.sh                                  # everything at issue 7's sizes (about 16 min on 2 cores), writes BENCHMARKS.md\n\
bench/run.sh --only P1,P2 --out /tmp/bench.md   # some benchmarks, elsewhere\nbench/run.sh --size tiny --out /tmp/bench.md    # what CI runs (scripts/test.sh)\n```\n\n\
`bench/run.sh` builds `virtual-kubelet` and `vk-bench` in release mode and the peers \
(`scripts/peers.sh`, which also builds upstream virtual-kubelet v1.13.0 from its module), then runs \
`vk-bench` under `nice -n 19`. The contenders:\n\n\
- **ours**: `virtual-kubelet --provider memory` (pods Running at once, nothing run), defaults \
(10 workers, client limit 50 requests/s, burst 100), as a `system:node:` identity; and tuned \
(`--kube-api-qps 0 --pod-sync-workers 50`).\n\
- **upstream**: `virtual-kubelet --provider mock` of v1.13.0 (its `cmd/virtual-kubelet`), with its \
defaults (10 workers; client-go's default client limit of 5 requests/s, burst 10, for which it has no \
flag), and with `--pod-sync-workers 50`, its only flag bearing on throughput. It runs with the \
admin kubeconfig: its informers list Secrets, ConfigMaps and Services cluster-wide, which the Node \
authorizer refuses a node identity.\n\
- **floor**: `vk-bench floor`, a client with no kubelet logic: it watches the node's pods and writes \
each one's Running status (the status a kubelet writes: phase, conditions, container status, IPs) \
in one patch, 50 at once, with no client limit, as a node identity.\n\
- **Nomad alone** (P4): the job our kubelet registered for a pod, registered again under new IDs \
straight to Nomad's HTTP API, 10 at once, polled until running.\n\n\
Pods are bound (`spec.nodeName` set, the taint tolerated: the scheduler is not measured), one \
`sleep 3600` container, without a service-account token (no TokenRequest for anyone). A run \
starts the contender, waits for a canary pod to be Running, then starts the clock, creates the pods \
50 at a time and watches until all are Running; the creating share (no contender can shorten it) \
is shown. RSS and CPU come from `/proc/<pid>/status` (`VmHWM` peak, `VmRSS` steady after a quiet \
time) and `/proc/<pid>/stat` (`utime + stime` since start).\n\n";

/// A benchmark's section of the document, written into the string given.
type Section = fn(&Report, &mut String);

/// Our propagation histogram.
const PROPAGATION: &str = "vk_status_propagation_seconds";

/// Every contender, in table order.
const ALL: [Contender; 5] = [
    Contender::Ours,
    Contender::OursTuned,
    Contender::Upstream,
    Contender::UpstreamTuned,
    Contender::Floor,
];

#[cfg(test)]
mod tests;
