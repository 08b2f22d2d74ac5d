//! The example's flags are the kubelet's alone: no provider's, none of Nomad's.

#![allow(clippy::unwrap_used)] // test

#[test]
fn help_lists_the_kubelet_settings_and_no_provider_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vk-example-provider"))
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for absent in ["--nomad-", "nomad.", "--provider ", "--allowed-drivers", "--job-prefix"] {
        assert!(!help.contains(absent), "{absent} in --help:\n{help}");
    }
    for present in ["--nodename", "[env: DEFAULT_NODE_NAME] [file: nodename]", "--taint-value"] {
        assert!(help.contains(present), "{present} missing from --help:\n{help}");
    }
}

#[test]
fn a_bad_setting_exits_78_before_running() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vk-example-provider"))
        .env_clear()
        .env("NOMAD_ADDR", "unix:///ignored")
        .env("KUBELET_PORT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("vk-example-provider: invalid configuration: KUBELET_PORT"),
        "{stderr}"
    );
}
