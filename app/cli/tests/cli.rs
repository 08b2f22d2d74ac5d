//! The binary's exit codes and messages for bad configuration (issue: "Invalid configuration stops
//! the process before it binds a port, naming the key and the bad value, with a distinct exit
//! code"). Each case holds the metrics port itself: a process that tried to bind before checking
//! its configuration would fail with exit code 1 instead of 78.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

use std::net::TcpListener;
use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_virtual-kubelet"));
    cmd.args(args).env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A kubeconfig for an API server nobody listens on (nothing is asked of it before the ports).
const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
";

#[test]
fn invalid_configuration_exits_78_naming_key_and_value_before_any_port() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = format!("--metrics-addr={}", held.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.yaml");
    std::fs::write(&garbage, "{{ not a kubeconfig").unwrap();
    let garbage = garbage.display().to_string();
    for (args, env, needle) in [
        (
            vec![],
            vec![("KUBELET_PORT", "abc")],
            "KUBELET_PORT = \"abc\" (from environment variable KUBELET_PORT)",
        ),
        (vec!["--kubelet-port", "abc"], vec![], "'abc' for '--kubelet-port"),
        (vec![], vec![("NOMAD_ADDR", "unix:///x")], "NOMAD_ADDR = \"unix:///x\""),
        (vec!["--config", "/nonexistent.toml"], vec![], "--config = \"/nonexistent.toml\""),
        (
            vec![],
            vec![("APISERVER_CERT_LOCATION", "/nonexistent.pem")],
            "APISERVER_CERT_LOCATION = \"/nonexistent.pem\"",
        ),
        // Found by reading the file, after the settings were loaded: still before any port.
        (vec!["--kubeconfig", garbage.as_str()], vec![], "garbage.yaml"),
    ] {
        let mut all = args.clone();
        all.push(metrics.as_str());
        let out = run(&all, &env);
        assert_eq!(out.status.code(), Some(78), "{all:?} {env:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{all:?} {env:?}: {}", stderr(&out));
    }
}

#[test]
fn a_taken_port_is_a_runtime_failure() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, KUBECONFIG).unwrap();
    let out = run(
        &[
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            &format!("--metrics-addr={}", held.local_addr().unwrap()),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("binding --metrics-addr"), "{}", stderr(&out));
}

#[test]
fn help_lists_settings_with_defaults_and_variables() {
    let out = run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--nomad-addr",
        "[env: NOMAD_ADDR] [file: nomad.addr]",
        "[default: http://127.0.0.1:4646]",
        "[env: DEFAULT_NODE_NAME]",
        "--provider-config",
    ] {
        assert!(help.contains(needle), "{needle} missing from --help:\n{help}");
    }
}
