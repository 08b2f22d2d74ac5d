//! The contenders of P1, P2 and P7: this virtual kubelet (`--provider memory`), upstream
//! virtual-kubelet v1.13.0 (`--provider mock`), each with its defaults and with its best flags, and
//! the floor (`vk-bench floor`); how each is started, and what /proc says of its process.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use vk_tests::{Process, Stack, free_port};

/// One process that makes bound pods Running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contender {
    /// `virtual-kubelet --provider memory` with its defaults (10 workers, 50 requests/s, burst 100).
    Ours,
    /// The same with `--kube-api-qps 0` (no client-side limit) and 50 workers.
    OursTuned,
    /// Upstream `virtual-kubelet --provider mock` with its defaults (10 workers; client-go's
    /// default client limit of 5 requests/s, burst 10, which it has no flag for).
    Upstream,
    /// The same with `--pod-sync-workers 50`, its only flag that bears on throughput.
    UpstreamTuned,
    /// `vk-bench floor`: watch the node's pods, patch each one's status to Running, nothing else.
    Floor,
}

impl Contender {
    /// The name in tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Ours => "ours (defaults)",
            Self::OursTuned => "ours (--kube-api-qps 0, 50 workers)",
            Self::Upstream => "upstream mock (defaults)",
            Self::UpstreamTuned => "upstream mock (--pod-sync-workers 50)",
            Self::Floor => "floor (minimal client)",
        }
    }

    /// A short slug for node names.
    pub(crate) fn slug(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::OursTuned => "ourst",
            Self::Upstream => "up",
            Self::UpstreamTuned => "upt",
            Self::Floor => "floor",
        }
    }
}

/// Workers of the tuned contenders, and of the floor's concurrent patches.
pub(crate) const TUNED_WORKERS: &str = "50";

/// Starts `who` as node `node`. The kubelets run with their own log level defaults (info); ours
/// takes `VK_BENCH_LOG` as its `RUST_LOG` when set (its log is in the stack's
/// `logs/bench-<node>.log`, kept with `VK_KEEP_STACK=1`), and runs under the command line in
/// `VK_BENCH_WRAP` when set (a profiler, such as `heaptrack -o /tmp/ht`; its figures then measure
/// the wrapper too).
///
/// # Errors
/// A binary missing, a kubeconfig or config file not written, or the process not starting.
pub(crate) fn start(stack: &Stack, who: Contender, node: &str) -> anyhow::Result<Process> {
    let log = stack.dir.join("logs").join(format!("bench-{node}.log"));
    let cmd = match who {
        Contender::Ours | Contender::OursTuned => {
            let bin = vk_tests::virtual_kubelet_bin()?;
            // VK_BENCH_WRAP: a command line to run ours under (a profiler), for a look inside.
            let wrap = std::env::var("VK_BENCH_WRAP").unwrap_or_default();
            let mut cmd = match wrap.split_whitespace().collect::<Vec<_>>().split_first() {
                Some((program, args)) => {
                    let mut cmd = Command::new(program);
                    cmd.args(args).arg(bin);
                    cmd
                }
                None => Command::new(bin),
            };
            cmd.args(["--provider", "memory", "--nodename", node])
                .arg(format!("--kubeconfig={}", stack.node_kubeconfig(node)?.display()))
                .args(["--internal-ip", "127.0.0.1", "--max-pods", "100000"])
                .args(["--kubelet-port", &free_port()?.to_string()])
                .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port()?)])
                .env_remove("RUST_LOG")
                .env_remove("KUBECONFIG");
            if let Ok(filter) = std::env::var("VK_BENCH_LOG") {
                cmd.env("RUST_LOG", filter);
            }
            if who == Contender::OursTuned {
                cmd.args(["--kube-api-qps", "0", "--pod-sync-workers", TUNED_WORKERS]);
            }
            cmd
        }
        Contender::Upstream | Contender::UpstreamTuned => upstream(stack, node, who)?,
        Contender::Floor => {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.arg("floor")
                .arg(format!("--kubeconfig={}", stack.node_kubeconfig(node)?.display()))
                .args(["--node", node, "--workers", TUNED_WORKERS]);
            cmd
        }
    };
    Process::spawn(&format!("bench-{node}"), cmd, &log)
}

/// Upstream's command: the mock provider with room for every pod (`pods` in its JSON config),
/// the API server's kubelet client pair as its serving certificate (upstream requires one, and no
/// one calls it here), the admin kubeconfig (its informers list Secrets, ConfigMaps and Services
/// cluster-wide, which the Node authorizer refuses a `system:node:` identity).
fn upstream(stack: &Stack, node: &str, who: Contender) -> anyhow::Result<Command> {
    let config = stack.dir.join(format!("mock-{node}.json"));
    let body = serde_json::json!({ node: {"cpu": "20", "memory": "100Gi", "pods": "100000"} });
    std::fs::write(&config, body.to_string()).context("writing the mock config")?;
    let (cert, key) = stack.kubelet_client_identity();
    let mut cmd = Command::new(&stack.peers.virtual_kubelet_upstream);
    cmd.args(["--provider", "mock", "--nodename", node])
        .arg(format!("--provider-config={}", config.display()))
        .arg(format!("--kubeconfig={}", stack.admin_kubeconfig.display()))
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port()?)])
        .env("KUBELET_PORT", free_port()?.to_string())
        .env("VKUBELET_POD_IP", "127.0.0.1")
        .env("APISERVER_CERT_LOCATION", &cert)
        .env("APISERVER_KEY_LOCATION", &key)
        .env_remove("APISERVER_CA_CERT_LOCATION")
        .env_remove("KUBECONFIG");
    if who == Contender::UpstreamTuned {
        cmd.args(["--pod-sync-workers", TUNED_WORKERS]);
    }
    Ok(cmd)
}

/// What /proc says of one process.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcStats {
    /// Resident set now (`VmRSS`), bytes.
    pub(crate) rss: u64,
    /// Peak resident set (`VmHWM`), bytes.
    pub(crate) peak_rss: u64,
    /// User plus system CPU time since it started (`utime + stime` of /proc/<pid>/stat), seconds.
    pub(crate) cpu_seconds: f64,
}

/// Reads [`ProcStats`] of `pid`.
///
/// # Errors
/// The process gone, or /proc not in the expected format.
pub(crate) fn proc_stats(pid: u32) -> anyhow::Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
        let n: u64 = line.split_whitespace().nth(1).context("no value")?.parse()?;
        Ok(n * 1024)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses: state is field 3,
    // utime field 14 and stime field 15 (proc(5)).
    let rest = stat.rsplit_once(')').context("no ')' in /proc/<pid>/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short /proc/<pid>/stat")?.parse::<f64>()?)
    };
    let cpu = (ticks(11)? + ticks(12)?) / clock_ticks();
    Ok(ProcStats { rss: kib("VmRSS:")?, peak_rss: kib("VmHWM:")?, cpu_seconds: cpu })
}

/// `getconf CLK_TCK` (100 on Linux when it cannot be read).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The first line `program args` prints (a version banner), or `?`.
pub(crate) fn version_of(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let out = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&out).lines().next().unwrap_or("?").trim().to_owned()
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// Our binary (as the stack finds it).
///
/// # Errors
/// Not built.
pub(crate) fn ours_bin() -> anyhow::Result<PathBuf> {
    vk_tests::virtual_kubelet_bin()
}
