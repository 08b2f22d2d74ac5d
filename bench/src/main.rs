//! `vk-bench`: the benchmarks of issue 7, side by side with upstream virtual-kubelet v1.13.0 (mock
//! provider) and with the floor (a minimal client; Nomad alone), on the local stack of real peers
//! (`vk_tests::Stack`). One command runs them and writes BENCHMARKS.md:
//!
//! ```sh
//! bench/run.sh                      # full size, writes BENCHMARKS.md at the repository root
//! bench/run.sh --size tiny --out /tmp/b.md --only P1,P2
//! ```
//!
//! Every figure is a median of runs alternated between the contenders in the same stack, and is
//! reported beside its reference as a ratio; nothing is asserted (the machines are shared and
//! noisy). `vk-bench floor` is the floor's client itself, which the benchmark starts as a child.

mod floor;
mod kubelets;
mod nomad;
mod report;
mod scale;
mod streams;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use vk_tests::Stack;

use crate::kubelets::Contender;
use crate::report::Report;

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Size {
    /// A few pods and one run each: proves the harness works (CI), figures mean nothing.
    Tiny,
    /// The sizes of issue 7.
    Full,
}

/// The benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
#[value(rename_all = "UPPER")]
enum Bench {
    P1,
    P2,
    P3,
    P4,
    P5,
    P6,
    P7,
}

#[derive(Debug, Parser)]
#[command(name = "vk-bench", about = "Benchmarks against upstream virtual-kubelet and the floor")]
struct Cli {
    /// `full` (issue 7's sizes) or `tiny` (a few pods, for CI).
    #[arg(long, value_enum, default_value = "full")]
    size: Size,
    /// Benchmarks to run, comma-separated (all when absent).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Bench>,
    /// Where the report is written.
    #[arg(long)]
    out: Option<PathBuf>,
    /// P1, P2 and P7 only with these contenders, by the slug in their node names (`ours`,
    /// `ourst`, `up`, `upt`, `floor`), comma-separated: for a profile, not for a report.
    #[arg(long, value_delimiter = ',')]
    contenders: Vec<String>,
    /// The task driver of the pods run through Nomad (P3 to P6): `raw_exec` (a process on the
    /// host) or `docker` (a real container of the offline busybox image, in a bridge-mode
    /// network namespace; needs `scripts/docker.sh` and `scripts/images.sh`).
    #[arg(long, value_enum, default_value = "raw-exec")]
    driver: Driver,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The floor's client (started by the benchmark): patches each pod bound to `--node` to
    /// Running, nothing else.
    Floor {
        /// Kubeconfig of the node identity.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// The node whose pods it runs.
        #[arg(long)]
        node: String,
        /// Patches in flight at once.
        #[arg(long, default_value_t = 50)]
        workers: usize,
    },
}

/// The parameters of a size.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Pods of P1.
    pub(crate) p1_pods: usize,
    /// Runs of each contender at P1's size.
    pub(crate) p1_repeats: usize,
    /// Pods of P2.
    pub(crate) p2_pods: usize,
    /// Sizes of P7.
    pub(crate) p7_sizes: Vec<usize>,
    /// The largest size upstream with its defaults runs at (its fixed client limit of 5
    /// requests/s makes larger ones take many minutes). Upstream runs once per size: it is the
    /// slowest by far, and its spread is small next to its distance from the others.
    pub(crate) upstream_default_max: usize,
    /// The sizes upstream with `--pod-sync-workers 50` runs at (the flag cannot lift its client
    /// limit, so once is enough to show it).
    pub(crate) upstream_tuned_sizes: Vec<usize>,
    /// Longest wait for all pods Running in one run.
    pub(crate) limit: Duration,
    /// Quiet time before /proc is read for the steady figures.
    pub(crate) settle: Duration,
    /// Pods of P4 (and P3).
    pub(crate) p4_pods: usize,
    /// Pods created one at a time after P4's burst, for P3 without a queue.
    pub(crate) p3_calm_pods: usize,
    /// Runs of each side of P4.
    pub(crate) p4_repeats: usize,
    /// Bytes the P5 pod writes.
    pub(crate) p5_bytes: u64,
    /// Runs of each side of P5.
    pub(crate) p5_repeats: usize,
    /// Runs of each side of P6.
    pub(crate) p6_repeats: usize,
}

impl Plan {
    fn of(size: Size) -> Self {
        match size {
            Size::Tiny => Self {
                p1_pods: 10,
                p1_repeats: 1,
                p2_pods: 10,
                p7_sizes: vec![10],
                upstream_default_max: 10,
                upstream_tuned_sizes: vec![10],
                limit: Duration::from_secs(120),
                settle: Duration::from_secs(1),
                p4_pods: 3,
                p3_calm_pods: 2,
                p4_repeats: 1,
                p5_bytes: 1 << 20,
                p5_repeats: 1,
                p6_repeats: 2,
            },
            Size::Full => Self {
                p1_pods: 500,
                p1_repeats: 3,
                p2_pods: 1000,
                p7_sizes: vec![100, 500, 1000, 2000],
                upstream_default_max: 1000,
                upstream_tuned_sizes: vec![500],
                limit: Duration::from_secs(600),
                settle: Duration::from_secs(5),
                p4_pods: 100,
                p3_calm_pods: 20,
                p4_repeats: 2,
                p5_bytes: 100_000_000,
                p5_repeats: 3,
                p6_repeats: 20,
            },
        }
    }
}

/// The task driver of the pods run through Nomad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Driver {
    /// Nomad's `raw_exec`.
    RawExec,
    /// Nomad's `docker`.
    Docker,
}

impl Driver {
    /// Nomad's name of the driver.
    pub(crate) fn nomad_name(self) -> &'static str {
        match self {
            Self::RawExec => "raw_exec",
            Self::Docker => "docker",
        }
    }
}

/// The driver of this run (set once, from `--driver`).
static DRIVER: std::sync::OnceLock<Driver> = std::sync::OnceLock::new();

/// The task driver of the pods run through Nomad in this run.
pub(crate) fn driver() -> Driver {
    DRIVER.get().copied().unwrap_or(Driver::RawExec)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = DRIVER.set(cli.driver);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(Cmd::Floor { kubeconfig, node, workers }) = cli.cmd {
        return rt.block_on(floor::run(&kubeconfig, &node, workers));
    }
    let out = cli.out.clone().unwrap_or_else(|| vk_tests::peers::repo_root().join("BENCHMARKS.md"));
    let only = if cli.only.is_empty() {
        vec![Bench::P1, Bench::P2, Bench::P3, Bench::P4, Bench::P5, Bench::P6, Bench::P7]
    } else {
        cli.only.clone()
    };
    rt.block_on(run(cli.size, &only, &cli.contenders, &out))
}

/// Runs the benchmarks `only` at `size` (P1, P2 and P7 with `contenders` only, when given) on a
/// fresh stack, and writes the report to `out` (and stdout).
///
/// # Errors
/// The stack not starting, or the report not written; a benchmark that fails is a note in the
/// report.
async fn run(
    size: Size,
    only: &[Bench],
    contenders: &[String],
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let plan = Plan::of(size);
    let started = Instant::now();
    let docker = driver() == Driver::Docker;
    let stack = Stack::start_with(vk_tests::StackOptions { docker, ..Default::default() }).await?;
    let mut report = Report::new(&stack, size == Size::Tiny, &plan);
    eprintln!("bench: stack up in {:.0?}; {}", started.elapsed(), report.machine_line());

    run_scale(&stack, &plan, only, contenders, &mut report).await;
    if only.contains(&Bench::P4) || only.contains(&Bench::P3) {
        run_nomad(&stack, &plan, &mut report).await;
    }
    if only.contains(&Bench::P5) || only.contains(&Bench::P6) {
        run_streams(&stack, &plan, only, &mut report).await;
    }

    report.elapsed = started.elapsed();
    let text = report.render(only);
    println!("{text}");
    std::fs::write(out, &text)?;
    eprintln!("bench: wrote {} in {:.0?}", out.display(), started.elapsed());
    Ok(())
}

/// The pod counts P1, P2 and P7 run at, smallest first, each once.
fn scale_sizes(plan: &Plan, only: &[Bench]) -> Vec<usize> {
    let mut sizes: Vec<usize> = Vec::new();
    if only.contains(&Bench::P7) {
        sizes.extend(&plan.p7_sizes);
    }
    if only.contains(&Bench::P1) {
        sizes.push(plan.p1_pods);
    }
    if only.contains(&Bench::P2) {
        sizes.push(plan.p2_pods);
    }
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// Whether contender `who` sits out repetition `r` at `n` pods: upstream runs once per size, with
/// its defaults up to [`Plan::upstream_default_max`] pods and tuned at
/// [`Plan::upstream_tuned_sizes`] only; with `contenders` given, only those run.
fn sits_out(who: Contender, r: usize, n: usize, plan: &Plan, contenders: &[String]) -> bool {
    let skip = match who {
        Contender::Upstream => r > 0 || n > plan.upstream_default_max,
        Contender::UpstreamTuned => r > 0 || !plan.upstream_tuned_sizes.contains(&n),
        _ => false,
    };
    skip || !(contenders.is_empty() || contenders.iter().any(|c| c == who.slug()))
}

/// P1, P2, P7: one matrix of sizes, runs alternated between the contenders; each run's figures
/// (or its failure, as a note) go into `report`.
async fn run_scale(
    stack: &Stack,
    plan: &Plan,
    only: &[Bench],
    contenders: &[String],
    report: &mut Report,
) {
    let order = [
        Contender::Ours,
        Contender::Upstream,
        Contender::Floor,
        Contender::OursTuned,
        Contender::UpstreamTuned,
    ];
    for n in scale_sizes(plan, only) {
        let repeats =
            if only.contains(&Bench::P1) && n == plan.p1_pods { plan.p1_repeats } else { 1 };
        for r in 0..repeats {
            for who in order {
                if sits_out(who, r, n, plan, contenders) {
                    continue;
                }
                let node = format!("b-{}-{n}-{r}", who.slug());
                let ns = format!("bench-{}-{n}-{r}", who.slug());
                let t = Instant::now();
                match scale::run(stack, who, n, &ns, &node, plan.limit, plan.settle).await {
                    Ok(run) => {
                        eprintln!(
                            "bench: {} n={n} run {r}: {:?} s ({} Running), peak RSS {} MiB, {:.1} CPU s ({:.0?})",
                            who.label(),
                            run.seconds,
                            run.running,
                            run.stats.peak_rss >> 20,
                            run.stats.cpu_seconds,
                            t.elapsed()
                        );
                        report.scale.push((who, run));
                    }
                    Err(e) => {
                        eprintln!("bench: {} n={n} run {r} failed: {e:#}", who.label());
                        report
                            .notes
                            .push(format!("{} with {n} pods, run {r}: failed: {e:#}", who.label()));
                    }
                }
            }
        }
    }
}

/// P4 and P3 through Nomad: each repetition runs ours, then Nomad alone with the job ours
/// registered; figures and failures go into `report`.
async fn run_nomad(stack: &Stack, plan: &Plan, report: &mut Report) {
    let nomad = nomad::Nomad::new(stack);
    for r in 0..plan.p4_repeats {
        let ns = format!("bench-nomad-{r}");
        match nomad::run_ours(
            stack,
            &nomad,
            plan.p4_pods,
            &ns,
            &format!("b-nomad-{r}"),
            plan.limit,
            plan.p3_calm_pods,
        )
        .await
        {
            Ok((run, template)) => {
                eprintln!("bench: P4 ours run {r}: {:?} s", run.seconds);
                report.p4_ours.push(run);
                match nomad::run_alone(
                    &nomad,
                    &template,
                    plan.p4_pods,
                    &format!("bench-alone-{r}-"),
                    plan.limit,
                )
                .await
                {
                    Ok(s) => {
                        eprintln!("bench: P4 Nomad alone run {r}: {s:?} s");
                        report.p4_alone.push(s);
                    }
                    Err(e) => report.notes.push(format!("P4 Nomad alone run {r}: failed: {e:#}")),
                }
            }
            Err(e) => report.notes.push(format!("P4 ours run {r}: failed: {e:#}")),
        }
    }
}

/// P5 and P6 (those in `only`): their runs, or their failure as a note, go into `report`.
async fn run_streams(stack: &Stack, plan: &Plan, only: &[Bench], report: &mut Report) {
    let nomad = nomad::Nomad::new(stack);
    let (log_runs, exec_runs) = (
        if only.contains(&Bench::P5) { plan.p5_repeats } else { 0 },
        if only.contains(&Bench::P6) { plan.p6_repeats } else { 0 },
    );
    match streams::run(stack, &nomad, plan.p5_bytes, log_runs, exec_runs).await {
        Ok(s) => report.streams = Some(s),
        Err(e) => report.notes.push(format!("P5/P6: failed: {e:#}")),
    }
}
