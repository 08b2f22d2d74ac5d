//! `conformance`: runs the Kubernetes e2e suite (`e2e.test` of k8s.io/kubernetes v1.36.3, built
//! with its test images by `scripts/conformance.sh`, which is the usual way in) against the
//! virtual kubelet: starts the local stack with Nomad's docker driver, `virtual-kubelet --provider
//! nomad --nomad-driver docker --disable-taint --allowed-network-modes host` as node `vk-nomad`
//! (the only node, so the only schedulable one; pods may ask for the host's network, as a
//! kubelet's default `--host-network-sources=*` lets them), waits for it Ready, runs `e2e.test` with the admin kubeconfig, the focus and
//! skip regexes and a report directory, then writes `summary.txt` there (one line per spec run)
//! and exits with e2e.test's status.
//!
//! ```text
//! conformance --e2e-test <path> [--focus <regex>] [--skip <regex>] [--report-dir <dir>]
//!             [--timeout <ginkgo duration>] [--procs <n>] [-- <more e2e.test flags>]
//! ```
//!
//! With `--procs` above 1 the specs run in that many parallel processes through the `ginkgo`
//! CLI found beside `e2e.test` (built by `scripts/conformance.sh`); Ginkgo then skips specs marked
//! `[Serial]` itself.
//!
//! In the report directory: `junit_01.xml` (the e2e framework's JUnit report),
//! `ginkgo/report.json` (Ginkgo's complete report), `e2e.log` (e2e.test's output, verbose),
//! `summary.txt`, and the virtual kubelet's log. `VK_KEEP_STACK=1` keeps the stack's directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use vk_tests::{Process, Stack, StackOptions};

const NODE: &str = "vk-nomad";

/// The default focus: `[sig-node]` specs tagged `[NodeConformance]` or `[Conformance]`, and the
/// `[sig-storage]` ConfigMap, Secrets, Downward API, Projected and EmptyDir ones (the volume
/// plugins a kubelet itself implements).
const DEFAULT_FOCUS: &str = r"\[sig-node\].*\[(NodeConformance|Conformance)\]|\[sig-storage\] (ConfigMap|Secrets|Downward API|Projected|EmptyDir)";

/// The default skip: what needs a dedicated cluster, breaks nodes, takes long, or needs a feature
/// gate or a component this stack does not have.
const DEFAULT_SKIP: &str = r"\[Serial\]|\[Disruptive\]|\[Slow\]|\[Feature:";

struct Args {
    e2e_test: PathBuf,
    focus: String,
    skip: String,
    report_dir: PathBuf,
    timeout: String,
    procs: u32,
    /// Runs of a failing spec before it counts as failed (Ginkgo's `--flake-attempts`; 1: none).
    flake_attempts: u32,
    extra: Vec<String>,
}

fn usage() -> String {
    format!(
        "usage: conformance --e2e-test <path> [--focus <regex>] [--skip <regex>] \
[--report-dir <dir>] [--timeout <duration>] [--procs <n>] [--flake-attempts <n>] [-- <e2e.test flags>]\n  default focus: {DEFAULT_FOCUS}\n  \
default skip: {DEFAULT_SKIP}\n  default timeout: 3h"
    )
}

/// `v`, the value of `flag`, as a number above 0.
fn above_zero(flag: &str, v: &str) -> anyhow::Result<u32> {
    v.parse().ok().filter(|n| *n > 0).with_context(|| format!("{flag} needs a number above 0"))
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut e2e_test = None;
    let mut focus = DEFAULT_FOCUS.to_owned();
    let mut skip = DEFAULT_SKIP.to_owned();
    let mut report_dir = None;
    let mut timeout = "3h".to_owned();
    let mut procs = 1;
    let mut flake_attempts = 1;
    let mut extra = Vec::new();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        let mut value = || -> anyhow::Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().with_context(|| format!("{flag} needs a value\n{}", usage())),
            }
        };
        match flag.as_str() {
            "--e2e-test" => e2e_test = Some(PathBuf::from(value()?)),
            "--focus" => focus = value()?,
            "--skip" => skip = value()?,
            "--report-dir" => report_dir = Some(PathBuf::from(value()?)),
            "--timeout" => timeout = value()?,
            "--procs" => procs = above_zero(&flag, &value()?)?,
            "--flake-attempts" => flake_attempts = above_zero(&flag, &value()?)?,
            "--" => {
                extra.extend(it.by_ref());
            }
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            _ => bail!("unknown argument {a}\n{}", usage()),
        }
    }
    let e2e_test = e2e_test.with_context(usage)?;
    let report_dir = match report_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!(
            "vk-conformance-{}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs()
        )),
    };
    Ok(Args { e2e_test, focus, skip, report_dir, timeout, procs, flake_attempts, extra })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    anyhow::ensure!(
        args.e2e_test.is_file(),
        "{} not found (scripts/conformance.sh builds it)",
        args.e2e_test.display()
    );
    std::fs::create_dir_all(&args.report_dir)?;
    let report_dir = std::fs::canonicalize(&args.report_dir)?;

    eprintln!("conformance: starting the local stack with Nomad's docker driver ...");
    let stack = Stack::start_with(StackOptions { docker: true, ..StackOptions::default() }).await?;
    let mut vk = start_node(&stack).await?;

    let log_path = report_dir.join("e2e.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = e2e_command(&args, &stack, &report_dir, log)?;
    eprintln!(
        "conformance: running {} (focus {:?}, skip {:?}); follow it with\n  tail -f {}",
        args.e2e_test.display(),
        args.focus,
        args.skip,
        log_path.display()
    );
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", args.e2e_test.display()))?;
    let status = tokio::select! {
        s = child.wait() => s?,
        _ = tokio::signal::ctrl_c() => {
            // e2e.test, in the same process group, got the interrupt too: Ginkgo runs its
            // cleanup (test namespaces) and exits; then the stack goes.
            eprintln!("conformance: interrupted; waiting for e2e.test to clean up ...");
            child.wait().await?
        }
    };
    let took = start.elapsed();

    let _ = std::fs::copy(&vk.log, report_dir.join("virtual-kubelet.log"));
    let summary = match summarize(&report_dir.join("ginkgo/report.json")) {
        Ok(s) => s,
        Err(e) => format!("no summary: {e:#}\n"),
    };
    std::fs::write(report_dir.join("summary.txt"), &summary)?;
    println!("{summary}");
    println!(
        "conformance: e2e.test exited with {status} after {} s; reports in {}",
        took.as_secs(),
        report_dir.display()
    );
    vk.terminate(Duration::from_secs(10));
    drop(stack);
    std::process::exit(status.code().unwrap_or(1));
}

/// Starts the virtual kubelet as node [`NODE`] on Nomad's docker driver (no taint; pods may ask
/// for the host's network) and waits (90 s) for it Ready and for the `default` ServiceAccount;
/// on failure prints its log's end and where the peers' logs are.
async fn start_node(stack: &Stack) -> anyhow::Result<Process> {
    let flags = ["--nomad-driver", "docker", "--disable-taint", "--allowed-network-modes", "host"];
    let vk = stack.virtual_kubelet(NODE, &flags)?;
    let ready = async {
        stack.wait_node_ready(NODE, Duration::from_secs(90)).await?;
        // The controller manager's ServiceAccount controller is up once `default` has its own.
        stack.namespace("default").await
    }
    .await;
    if let Err(e) = ready {
        eprintln!(
            "conformance: {e:#}\nvirtual-kubelet log ({}):\n{}\npeer logs:\n{}",
            vk.log.display(),
            vk.tail(30),
            stack.logs()
        );
        return Err(e);
    }
    eprintln!(
        "conformance: node {NODE} Ready\n  export KUBECONFIG={}\n  export NOMAD_ADDR={}\n  \
virtual-kubelet log: {}\npeer logs:\n{}",
        stack.admin_kubeconfig.display(),
        stack.nomad_addr,
        vk.log.display(),
        stack.logs()
    );
    Ok(vk)
}

/// The `e2e.test` command line (through the `ginkgo` CLI beside it when `--procs` is above 1):
/// the focus, skip and timeout, the stack's admin kubeconfig and kubectl, reports in
/// `report_dir`, output to `log`.
fn e2e_command(
    args: &Args,
    stack: &Stack,
    report_dir: &Path,
    log: std::fs::File,
) -> anyhow::Result<tokio::process::Command> {
    let mut ginkgo_flags = vec![
        format!("focus={}", args.focus),
        format!("skip={}", args.skip),
        format!("timeout={}", args.timeout),
        "v".to_owned(),
        "no-color".to_owned(),
        "show-node-events".to_owned(),
        "silence-skips".to_owned(),
    ];
    if args.flake_attempts > 1 {
        ginkgo_flags.push(format!("flake-attempts={}", args.flake_attempts));
    }
    let mut cmd = if args.procs > 1 {
        // The ginkgo CLI runs the compiled suite in parallel processes: its own flags, then the
        // suite, then the suite's flags.
        let ginkgo = args.e2e_test.with_file_name("ginkgo");
        let mut c = tokio::process::Command::new(&ginkgo);
        c.arg(format!("--procs={}", args.procs))
            .args(ginkgo_flags.iter().map(|f| format!("--{f}")))
            .arg(&args.e2e_test)
            .arg("--");
        c
    } else {
        let mut c = tokio::process::Command::new(&args.e2e_test);
        c.args(ginkgo_flags.iter().map(|f| format!("--ginkgo.{f}")));
        c
    };
    cmd.arg("--provider=skeleton")
        .arg(format!("--kubeconfig={}", stack.admin_kubeconfig.display()))
        .arg(format!("--kubectl-path={}", stack.peers.kubectl.display()))
        .arg(format!("--report-dir={}", report_dir.display()))
        .arg("--report-complete-ginkgo")
        .arg(format!("--e2e-output-dir={}", report_dir.display()))
        // No cluster/log-dump.sh here (it needs a checkout and SSH to nodes).
        .arg("--disable-log-dump")
        // The stack runs nothing in kube-system: no system pod to wait for (the default, 0,
        // already waits for none; -1 skips the check).
        .arg("--minStartupPods=-1")
        .arg("--system-pods-startup-timeout=1m")
        .arg("--node-schedulable-timeout=2m")
        .arg("--allowed-not-ready-nodes=0")
        .args(&args.extra)
        .env_remove("KUBECONFIG")
        .env_remove("KUBE_TEST_REPO_LIST")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(cmd)
}

/// One line per spec Ginkgo ran (and per failed suite-level node), `PASS`/`FLAKE` (passed on a
/// retry)/`FAIL`/`SKIP` (skipped while running, by `e2eskipper`)/... with its run time and, for a failure, the first lines of
/// its message; then the totals.
fn summarize(report: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(report).with_context(|| report.display().to_string())?;
    let reports: serde_json::Value = serde_json::from_str(&text)?;
    let mut out = String::new();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for spec in reports
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["SpecReports"].as_array().into_iter().flatten())
    {
        let state = spec["State"].as_str().unwrap_or("?");
        let kind = spec["LeafNodeType"].as_str().unwrap_or("?");
        let ran = spec["RunTime"].as_i64().unwrap_or(0) > 0 || state != "skipped";
        let failed = !matches!(state, "passed" | "skipped" | "pending");
        if kind != "It" && !failed {
            continue;
        }
        if kind == "It" && !ran {
            // Filtered out by focus/skip: not run.
            *counts.entry("not selected".into()).or_default() += 1;
            continue;
        }
        let mut name: Vec<&str> = spec["ContainerHierarchyTexts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .collect();
        let leaf = spec["LeafNodeText"].as_str().unwrap_or_default();
        if !leaf.is_empty() {
            name.push(leaf);
        }
        let name = if name.is_empty() { kind.to_owned() } else { name.join(" ") };
        let attempts = spec["NumAttempts"].as_i64().unwrap_or(1);
        let label = match state {
            // Passed on a later attempt (`--flake-attempts`): a pass, counted apart.
            "passed" if attempts > 1 => "FLAKE",
            "passed" => "PASS",
            "skipped" => "SKIP",
            "failed" => "FAIL",
            other => other,
        };
        *counts.entry(label.to_owned()).or_default() += 1;
        let secs = spec["RunTime"].as_i64().unwrap_or(0) as f64 / 1e9;
        let _ = writeln!(out, "{label:<6} {secs:>6.1}s  {name}");
        let message = spec["Failure"]["Message"].as_str().unwrap_or_default();
        if state != "passed" && !message.is_empty() {
            let short: Vec<&str> =
                message.lines().filter(|l| !l.trim().is_empty()).take(4).collect();
            let mut short = short.join(" | ");
            if short.len() > 400 {
                let cut = (0..=400).rev().find(|&i| short.is_char_boundary(i)).unwrap_or(0);
                short.truncate(cut);
                short.push_str(" ...");
            }
            let _ = writeln!(out, "         {short}");
        }
    }
    let totals: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let _ = writeln!(out, "total: {}", totals.join(", "));
    Ok(out)
}
