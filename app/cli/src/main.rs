//! `virtual-kubelet --provider nomad`: read the settings (the kubelet's, `vk_app::config`, and
//! Nomad's, [`nomad`]), set up tracing, build the provider `--provider` names (Nomad's or the
//! memory one) and run it with `vk_app::run_with_provider`.
//!
//! Exit codes: 0 after a clean shutdown, 78 (`EX_CONFIG`) for an invalid configuration (from
//! flags, environment or files, reported before any port is bound), 1 when running failed.

mod nomad;
#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use tokio_util::sync::CancellationToken;
use vk_app::RunError;
use vk_app::config::{Env, Invalid, KubeletArgs, LoadError, Loaded, Origins, Settings};
use vk_memory::{MemoryConfig, MemoryProvider};
use vk_nomad::NomadProvider;

use crate::nomad::{NomadArgs, NomadRuleKeys};

/// jemalloc with its background thread, which gives freed memory back to the system after its
/// decay time (10 s), where glibc's malloc keeps it in per-thread arenas: after a burst of
/// connections (a flood on the kubelet port, many log streams) the node's resident memory comes
/// back down.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Backends this binary can run pods on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Provider {
    /// HashiCorp Nomad.
    Nomad,
    /// Pods kept in this process's memory, Running at once (upstream's `mock`; for benchmarks and
    /// trials, see `vk_memory`).
    Memory,
}

/// `virtual-kubelet`: a Kubernetes node whose pods run on HashiCorp Nomad.
///
/// Every setting is read from, in rising precedence: its default, the TOML file of `--config`
/// (provider settings in its `[nomad]` table), the TOML file of `--provider-config` (provider
/// settings at its top level), the environment, and the command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "virtual-kubelet", version = vk_app::build::LONG_VERSION, about)]
struct Args {
    /// Backend that runs the pods: `nomad`, or `memory` (pods Running at once, nothing run; for
    /// demos, tests and benchmarks).
    #[arg(long, value_enum, default_value = "nomad")]
    provider: Provider,
    /// The kubelet's settings.
    #[command(flatten)]
    node: KubeletArgs,
    /// Nomad's settings (also read with `--provider memory`, and then unused).
    #[command(flatten)]
    nomad: NomadArgs,
}

impl Settings for Args {
    /// `#[group(id = "nomad")]` of [`NomadArgs`].
    const PROVIDER_TABLE: Option<&'static str> = Some("nomad");
    type Grant = NomadRuleKeys;
    /// A node's Nomad scope (namespace, region, datacenters, node pool) and the token for it.
    const NODE_SETTINGS: &'static [&'static str] =
        &["nomad_token", "nomad_namespace", "nomad_region", "nomad_datacenters", "nomad_node_pool"];

    fn kubelet(&self) -> &KubeletArgs {
        &self.node
    }

    fn check(&self, origins: &Origins<'_>) -> Result<(), Invalid> {
        self.nomad.check(origins)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let loaded = vk_app::config::load::<Args, _, _>(std::env::args_os(), &Env::from_process());
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => return e.report("virtual-kubelet"),
    };
    vk_app::init_tracing(&loaded.args.node);
    let cancel = vk_app::shutdown_on_signals();
    match run(&loaded, cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Config(e)) => {
            tracing::error!(error = format!("{e:#}"), "invalid configuration");
            ExitCode::from(LoadError::EXIT_CODE)
        }
        Err(RunError::Failed(e)) => {
            tracing::error!(error = format!("{e:#}"), "virtual-kubelet failed");
            ExitCode::FAILURE
        }
    }
}

/// Runs the virtual kubelet's nodes (the one of the settings, or one per `[[nodes]]` entry of
/// `--config`) with the provider `--provider` names until `cancel` fires. A Nomad node is
/// labelled with its topology ([`NomadProvider::topology_labels`]) unless `--node-label` sets
/// those labels.
///
/// # Errors
/// As `vk_app::run_nodes`; [`RunError::Config`] too when a node's Nomad settings are unusable
/// (address or TLS files).
async fn run(loaded: &Loaded<Args>, cancel: CancellationToken) -> Result<(), RunError> {
    let rules = loaded.rules.as_slice();
    match loaded.args.provider {
        Provider::Nomad => {
            let mut nodes = Vec::new();
            for args in loaded.each_node() {
                let config = args.nomad.provider_config(&args.node.nodename, rules);
                let provider = NomadProvider::new(config)
                    .with_context(|| format!("Nomad settings of node {}", args.node.nodename))
                    .map_err(RunError::Config)?;
                let mut node = args.node.clone();
                for (key, value) in provider.topology_labels().await {
                    if !node.node_labels.iter().any(|(k, _)| *k == key) {
                        node.node_labels.push((key, value));
                    }
                }
                nodes.push((node, Arc::new(provider)));
            }
            vk_app::run_nodes(nodes, rules, cancel).await
        }
        Provider::Memory => {
            let nodes = loaded
                .each_node()
                .into_iter()
                .map(|args| {
                    let node = &args.node;
                    let config = MemoryConfig::new(&node.nodename, node.internal_ip.to_string());
                    (node.clone(), Arc::new(MemoryProvider::new(config)))
                })
                .collect();
            vk_app::run_nodes(nodes, rules, cancel).await
        }
    }
}
