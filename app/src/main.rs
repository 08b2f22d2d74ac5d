//! `virtual-kubelet --provider nomad`: read the settings, set up tracing, run.
//!
//! Exit codes: 0 after a clean shutdown, 78 (`EX_CONFIG`) for an invalid configuration (from
//! flags, environment or files, reported before any port is bound), 1 when running failed.

use vk_app::RunError;
use vk_app::config::LoadError;

/// jemalloc with its background thread, which gives freed memory back to the system after its
/// decay time (10 s), where glibc's malloc keeps it in per-thread arenas: after a burst of
/// connections (a flood on the kubelet port, many log streams) the node's resident memory comes
/// back down.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = vk_app::config::load_from_process();
    vk_app::init_tracing(&cli);
    let cancel = vk_app::shutdown_on_signals();
    match vk_app::run(cli, cancel).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(RunError::Config(e)) => {
            tracing::error!(error = format!("{e:#}"), "invalid configuration");
            std::process::ExitCode::from(LoadError::EXIT_CODE)
        }
        Err(RunError::Failed(e)) => {
            tracing::error!(error = format!("{e:#}"), "virtual-kubelet failed");
            std::process::ExitCode::FAILURE
        }
    }
}
