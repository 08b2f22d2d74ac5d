//! The loader whatever the provider: the kubelet's settings alone ([`NodeOnly`]) and beside a
//! toy provider's (`Toy`, table `toy`). Nomad's settings are tested in the `virtual-kubelet`
//! binary, which owns them.

use std::path::PathBuf;

use super::*;

/// A provider's settings as a binary declares them: the clap group `toy` is their table.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "toy")]
struct ToyArgs {
    /// Where the toy backend listens.
    #[arg(long, env = "TOY_ADDR", default_value = "toy://local")]
    toy_addr: String,
    /// Its secret.
    #[arg(long, env = "TOY_TOKEN", hide_env_values = true, value_parser = parse_token)]
    toy_token: Option<Redacted>,
    /// Its zones.
    #[arg(long, value_delimiter = ',')]
    zones: Vec<String>,
    /// Its CA.
    #[arg(long, value_hint = ValueHint::FilePath)]
    toy_ca: Option<PathBuf>,
    /// Read from `PATH` if clap were let read the process environment.
    #[arg(long, env = "PATH")]
    toy_path: Option<String>,
}

fn parse_token(s: &str) -> Result<Redacted, String> {
    if s.len() < 4 { Err("too short".into()) } else { Ok(Redacted(s.to_owned())) }
}

/// The toy's keys of a policy rule.
#[derive(Debug, serde::Deserialize)]
struct ToyKeys {
    #[serde(default)]
    allowed_zones: Vec<String>,
}

impl RuleGrant for ToyKeys {
    type Grant = Vec<String>;
    fn into_grant(self) -> Result<Vec<String>, String> {
        match self.allowed_zones.iter().find(|z| z.contains(' ')) {
            Some(z) => Err(format!("allowed_zones: {z:?} is not a zone")),
            None => Ok(self.allowed_zones),
        }
    }
}

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "toy-kubelet")]
struct Toy {
    #[command(flatten)]
    node: KubeletArgs,
    #[command(flatten)]
    toy: ToyArgs,
}

impl Settings for Toy {
    const PROVIDER_TABLE: Option<&'static str> = Some("toy");
    type Grant = ToyKeys;
    fn kubelet(&self) -> &KubeletArgs {
        &self.node
    }
}

fn load_as<A: Settings>(args: &[&str], env: &Env) -> Result<Loaded<A>, LoadError> {
    load(std::iter::once("test").chain(args.iter().copied()), env)
}

fn refused<A: Settings + std::fmt::Debug>(args: &[&str], env: &Env) -> Invalid {
    match load_as::<A>(args, env) {
        Err(LoadError::Invalid(e)) => e,
        Err(LoadError::Flags(e)) => panic!("a flag error instead: {e}"),
        Ok(loaded) => panic!("accepted: {:?}", loaded.args),
    }
}

/// A TOML file in a directory kept as long as the returned guard.
fn toml(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vk.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.display().to_string())
}

#[test]
fn the_kubelet_alone_has_no_provider_settings() {
    let node = load_as::<NodeOnly>(&[], &Env::default()).unwrap().args.node;
    assert_eq!(node.nodename, "virtual-kubelet");
    let config = node.node_config("timer://1".into(), "timer", None);
    assert_eq!(config.taint.unwrap().value.as_deref(), Some("timer"), "the provider's name");
    assert!(config.kubelet_version.starts_with("v1.36.3-vk-timer-"));
    let build = format!("-{}+{}", crate::build::VERSION, crate::build::COMMIT);
    assert!(config.kubelet_version.ends_with(&build), "{}", config.kubelet_version);
    let older = node.node_config("timer://1".into(), "timer", Some("v1.34.2+k3s1"));
    assert!(older.kubelet_version.starts_with("v1.34.2-vk-timer-"), "{}", older.kubelet_version);
    let help = command::<NodeOnly>().render_long_help().to_string();
    for absent in ["--nomad", "nomad.", "--provider ", "--allowed-drivers", "--job-prefix"] {
        assert!(!help.contains(absent), "{absent} in the help:\n{help}");
    }
    for present in ["--nodename", "[env: DEFAULT_NODE_NAME] [file: nodename]", "--policy-file"] {
        assert!(help.contains(present), "{present} missing from the help:\n{help}");
    }
    // No table of a provider, nothing at the top level of --provider-config.
    let (_d, config) = toml("[nomad]\naddr = \"x\"\n");
    let got = refused::<NodeOnly>(&["--config", &config], &Env::default());
    assert_eq!((got.key.as_str(), got.reason.as_str()), ("nomad", "unknown setting"));
    let (_d, provider) = toml("nodename = \"x\"\n");
    let got = refused::<NodeOnly>(&["--provider-config", &provider], &Env::default());
    assert_eq!((got.key.as_str(), got.reason.as_str()), ("nodename", "unknown setting"));
}

#[test]
fn provider_settings_follow_the_flattened_group() {
    let all = settings::<Toy>();
    let get = |id: &str| all.iter().find(|s| s.id == id).unwrap().clone();
    let addr = get("toy_addr");
    assert_eq!((addr.env.as_str(), addr.file_key.as_str()), ("TOY_ADDR", "toy.addr"));
    assert_eq!(addr.provider_key.as_deref(), Some("addr"));
    let zones = get("zones");
    assert_eq!((zones.env.as_str(), zones.file_key.as_str()), ("VK_ZONES", "toy.zones"));
    assert!(zones.list && get("toy_token").secret && get("toy_ca").file);
    let port = get("kubelet_port");
    assert_eq!((port.env.as_str(), port.file_key.as_str()), ("KUBELET_PORT", "kubelet_port"));
    assert_eq!(port.provider_key, None);
    assert!(all.iter().all(|s| !matches!(s.id.as_str(), "config" | "provider_config")));
    let help = command::<Toy>().render_long_help().to_string();
    assert!(help.contains("[env: TOY_ADDR] [file: toy.addr]"), "{help}");
    assert!(!help.contains("[env: TOY_ADDR="), "clap's own env note: {help}");

    let (_d1, config) =
        toml("nodename = \"file\"\n[toy]\naddr = \"toy://file\"\nzones = [\"a\"]\n");
    let (_d2, provider) = toml("addr = \"toy://provider-file\"\n");
    let env = Env::from([("VK_ZONES", "b,c")]);
    let args = ["--config", &config, "--provider-config", &provider];
    let toy = load_as::<Toy>(&args, &env).unwrap().args;
    assert_eq!(toy.node.nodename, "file");
    assert_eq!(toy.toy.toy_addr, "toy://provider-file", "provider file over the table");
    assert_eq!(toy.toy.zones, ["b", "c"], "environment over the file");
    let (_d, config) = toml("toy_addr = \"x\"\n");
    let got = refused::<Toy>(&["--config", &config], &Env::default());
    assert_eq!((got.key.as_str(), got.reason.as_str()), ("toy_addr", "unknown setting"));
}

/// clap's own reading of the environment is off: `PATH` is set in every test process.
#[test]
fn the_process_environment_is_read_through_env_only() {
    assert!(std::env::var_os("PATH").is_some());
    let toy = load_as::<Toy>(&[], &Env::default()).unwrap().args;
    assert_eq!(toy.toy.toy_path, None);
    let toy = load_as::<Toy>(&[], &Env::from([("PATH", "/bin")])).unwrap().args;
    assert_eq!(toy.toy.toy_path.as_deref(), Some("/bin"));
}

#[test]
fn refusals_name_key_value_and_origin() {
    let got = refused::<Toy>(&[], &Env::from([("TOY_TOKEN", "abc")]));
    assert_eq!((got.key.as_str(), got.value.as_str()), ("TOY_TOKEN", "<redacted>"));
    assert_eq!(got.origin, Origin::Env("TOY_TOKEN".into()));
    assert!(got.reason.contains("too short"), "{got}");
    let (_d, provider) = toml("token = \"abc\"\n");
    let got = refused::<Toy>(&["--provider-config", &provider], &Env::default());
    assert_eq!((got.key.as_str(), got.value.as_str()), ("token", "<redacted>"));
    let got = refused::<Toy>(&[], &Env::from([("VK_TOY_CA", "/nonexistent/ca")]));
    assert_eq!((got.key.as_str(), got.reason.as_str()), ("VK_TOY_CA", "no such file"));
    let (_d, cert) = toml("not read");
    let got = refused::<NodeOnly>(&["--tls-cert-file", &cert], &Env::default());
    assert_eq!(got.key, "--tls-cert-file");
    assert!(got.reason.contains("needs --tls-private-key-file"), "{got}");
}

#[test]
fn the_policy_file_holds_generic_and_provider_keys() {
    let rule = "[[rule]]\nname = \"x\"\nnamespaces = [\"a\"]\n";
    let (_d, path) =
        toml(&format!("{rule}allowed_zones = [\"z1\"]\nallowed_probe_hosts = [\"10.0.0.0/8\"]\n"));
    let loaded = load_as::<Toy>(&["--policy-file", &path], &Env::default()).unwrap();
    assert_eq!(loaded.rules.len(), 1);
    assert_eq!(loaded.rules[0].grant, ["z1"]);
    let probes = loaded.args.node.probe_policy(&loaded.rules);
    assert_eq!(probes.for_namespace("a", None).grants.len(), 2);
    assert!(!probes.uses_labels());
    for (keys, reason) in [
        ("allowed_zones = [\"z 1\"]\n", "rule 1 (\"x\"): allowed_zones: \"z 1\" is not a zone"),
        ("allowed_zone = [\"z1\"]\n", "unknown field"),
    ] {
        let (_d, path) = toml(&format!("{rule}{keys}"));
        let e = refused::<Toy>(&["--policy-file", &path], &Env::default());
        assert_eq!((e.key.as_str(), e.value.as_str()), ("--policy-file", path.as_str()));
        assert!(e.reason.contains(reason), "{keys}: {e}");
    }
    // Without a provider, a provider's key is unknown.
    let (_d, path) = toml(&format!("{rule}allowed_zones = [\"z1\"]\n"));
    let e = refused::<NodeOnly>(&["--policy-file", &path], &Env::default());
    assert!(e.reason.contains("unknown field `allowed_zones`"), "{e}");
}
