//! `virtual-kubelet --provider nomad`: parse flags, set up tracing, run.

use clap::Parser;
use vk_app::config::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    vk_app::init_tracing(&cli);
    let cancel = vk_app::shutdown_on_signals();
    match vk_app::run(cli, cancel).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "virtual-kubelet failed");
            // 78 (EX_CONFIG): the configuration is unusable.
            std::process::ExitCode::from(78)
        }
    }
}
