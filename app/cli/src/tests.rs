//! The settings as `virtual-kubelet` loads them: the kubelet's and Nomad's, layered, named with
//! their origin when refused, and listed in `--help` and the README.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use vk_app::config::{Env, Invalid, LoadError, Origin, PolicyRule, command, settings};
use vk_domain::policy::{ProbeGrant, Rules};
use vk_nomad::ProviderConfig;
use vk_nomad::policy::{NomadGrant, NomadPolicy};

use super::{Args, Provider};

/// The settings as `main` gets them, read as the kubelet's (`Deref`), with Nomad's views.
#[derive(Debug)]
struct Cli {
    args: Args,
    rules: Vec<PolicyRule<NomadGrant>>,
}

impl std::ops::Deref for Cli {
    type Target = vk_app::config::KubeletArgs;
    fn deref(&self) -> &Self::Target {
        &self.args.node
    }
}

impl Cli {
    fn nomad(&self) -> ProviderConfig {
        self.args.nomad.provider_config(&self.args.node.nodename, &self.rules)
    }

    fn nomad_policy(&self) -> NomadPolicy {
        self.args.nomad.policy(&self.rules)
    }

    fn probe_policy(&self) -> Rules<ProbeGrant> {
        self.args.node.probe_policy(&self.rules)
    }

    fn policy_uses_labels(&self) -> bool {
        self.probe_policy().uses_labels()
    }
}

/// The environment variable of the setting whose flag is `flag`.
fn env_name(flag: &str) -> String {
    let all = settings::<Args>();
    all.into_iter().find(|s| s.flag == flag).map(|s| s.env).unwrap_or_default()
}

fn load_with(args: &[&str], env: &Env) -> Result<Cli, LoadError> {
    let argv = std::iter::once("virtual-kubelet").chain(args.iter().copied());
    let loaded = vk_app::config::load::<Args, _, _>(argv, env)?;
    Ok(Cli { args: loaded.args, rules: loaded.rules })
}

fn ok(args: &[&str], env: &Env) -> Cli {
    match load_with(args, env) {
        Ok(cli) => cli,
        Err(e) => panic!("{e}"),
    }
}

fn refused(args: &[&str], env: &Env) -> Invalid {
    match load_with(args, env) {
        Err(LoadError::Invalid(e)) => e,
        Err(LoadError::Flags(e)) => panic!("a flag error instead: {e}"),
        Ok(cli) => panic!("accepted: {cli:?}"),
    }
}

/// A TOML file in a directory kept as long as the returned guard.
fn toml(text: &str) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vk.toml");
    std::fs::write(&path, text).unwrap();
    let shown = path.display().to_string();
    (dir, path, shown)
}

#[test]
fn defaults_follow_upstream() {
    let cli = ok(&[], &Env::default());
    assert_eq!(cli.args.provider, Provider::Nomad);
    assert_eq!(cli.nodename, "virtual-kubelet");
    assert_eq!(cli.metrics_addr, "127.0.0.1:10255".parse().unwrap());
    assert_eq!(cli.full_resync_period, Duration::from_secs(30));
    assert_eq!(cli.startup_timeout, Duration::ZERO);
    let node = cli.node_config("nomad://1.11.3".into(), "nomad", None);
    let taint = node.taint.unwrap();
    assert_eq!(
        (taint.key.as_str(), taint.value.as_deref(), taint.effect.as_str()),
        ("virtual-kubelet.io/provider", Some("nomad"), "NoSchedule")
    );
    assert_eq!(node.kubelet_port, 10250);
    assert!(node.kubelet_version.starts_with("v1.36.3-vk-nomad-"));
    let nomad = cli.nomad();
    assert_eq!(nomad.job_prefix, "k8s-");
    assert_eq!(nomad.client.address, "http://127.0.0.1:4646");
    assert_eq!(nomad.datacenters, ["*"]);
    assert_eq!(nomad.node_pool, None);
}

/// `--leader-elect`: the Lease `virtual-kubelet-<node>` unless named, renewed when a third of its
/// duration is left, this replica named `<hostname>_<pid>`; nothing without the flag.
#[test]
fn leader_election_settings() {
    assert!(ok(&[], &Env::default()).election("n").is_none());
    let cli = ok(
        &[
            "--leader-elect",
            "--leader-elect-lease-duration",
            "12s",
            "--leader-elect-lease-namespace",
            "vk",
        ],
        &Env::default(),
    );
    let e = cli.election("n").unwrap();
    assert_eq!((e.name.as_str(), e.namespace.as_str()), ("virtual-kubelet-n", "vk"));
    assert_eq!((e.duration, e.grace), (Duration::from_secs(12), Duration::from_secs(4)));
    assert!(e.identity.ends_with(&format!("_{}", std::process::id())), "{}", e.identity);
    let named = ok(&["--leader-elect", "--leader-elect-lease-name", "x"], &Env::default());
    assert_eq!(named.election("n").unwrap().name, "x");
}

/// `--nomad-node-pool` and `--nomad-datacenters` make the node's scope; a name Nomad would refuse
/// is refused here.
#[test]
fn the_node_pool_and_datacenters_are_checked() {
    let cli = ok(&["--nomad-node-pool", "batch", "--nomad-datacenters", "eu-*"], &Env::default());
    let nomad = cli.nomad();
    assert_eq!(
        (nomad.node_pool.as_deref(), nomad.datacenters.as_slice()),
        (Some("batch"), &["eu-*".to_owned()][..])
    );
    for bad in [&["--nomad-node-pool", "a b"][..], &["--nomad-datacenters", "dc/1"][..]] {
        assert!(matches!(load_with(bad, &Env::default()), Err(LoadError::Flags(_))), "{bad:?}");
    }
}

#[test]
fn flags_and_upstream_aliases() {
    let cli = ok(
        &[
            "--disable-taint",
            "--node-label",
            "a=b",
            "--node-label=c=d",
            "--role-label",
            "--status-interval",
            "5s",
            "--nomad-datacenters",
            "dc1,dc2",
        ],
        &Env::default(),
    );
    let node = cli.node_config(String::new(), "nomad", None);
    assert!(node.taint.is_none());
    assert_eq!((node.labels["a"].as_str(), node.labels["c"].as_str()), ("b", "d"));
    assert!(node.role_label);
    assert_eq!(cli.full_resync_period, Duration::from_secs(5));
    assert_eq!(cli.args.nomad.nomad_datacenters, ["dc1", "dc2"]);
}

#[test]
fn every_upstream_and_nomad_variable_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| {
        let p = dir.path().join(n);
        std::fs::write(&p, "x").unwrap();
        p.display().to_string()
    };
    let (kc, cert, key, ca, ncert, nkey, nca) = (
        file("kc"),
        file("cert"),
        file("key"),
        file("ca"),
        file("ncert"),
        file("nkey"),
        file("nca"),
    );
    let env = Env::from([
        ("DEFAULT_NODE_NAME", "vk-env"),
        ("KUBECONFIG", kc.as_str()),
        ("VKUBELET_POD_IP", "10.1.2.3"),
        ("KUBELET_PORT", "11250"),
        ("APISERVER_CERT_LOCATION", cert.as_str()),
        ("APISERVER_KEY_LOCATION", key.as_str()),
        ("APISERVER_CA_CERT_LOCATION", ca.as_str()),
        ("VKUBELET_TAINT_KEY", "example.com/nomad"),
        ("VKUBELET_TAINT_VALUE", "yes"),
        ("VKUBELET_TAINT_EFFECT", "NoExecute"),
        ("NOMAD_ADDR", "nomad.example:4646"),
        ("NOMAD_TOKEN", "s3cr3t"),
        ("NOMAD_NAMESPACE", "apps"),
        ("NOMAD_REGION", "eu"),
        ("NOMAD_CACERT", nca.as_str()),
        ("NOMAD_CLIENT_CERT", ncert.as_str()),
        ("NOMAD_CLIENT_KEY", nkey.as_str()),
        ("NOMAD_SKIP_VERIFY", "1"),
        ("NOMAD_TLS_SERVER_NAME", "server.eu.nomad"),
    ]);
    let cli = ok(&[], &env);
    assert_eq!(cli.nodename, "vk-env");
    assert_eq!(cli.kubeconfig.as_deref(), Some(std::path::Path::new(&kc)));
    assert_eq!(cli.internal_ip.to_string(), "10.1.2.3");
    assert_eq!(cli.kubelet_port, 11250);
    assert_eq!(cli.tls_cert_file.as_deref(), Some(std::path::Path::new(&cert)));
    assert_eq!(cli.tls_private_key_file.as_deref(), Some(std::path::Path::new(&key)));
    assert_eq!(cli.client_ca_file.as_deref(), Some(std::path::Path::new(&ca)));
    let taint = cli.node_config(String::new(), "nomad", None).taint.unwrap();
    assert_eq!(
        (taint.key.as_str(), taint.value.as_deref(), taint.effect.as_str()),
        ("example.com/nomad", Some("yes"), "NoExecute")
    );
    let nomad = cli.nomad().client;
    assert_eq!(nomad.address, "nomad.example:4646");
    assert_eq!(nomad.token.as_deref(), Some("s3cr3t"));
    assert_eq!(nomad.namespace.as_deref(), Some("apps"));
    assert_eq!(nomad.region.as_deref(), Some("eu"));
    assert_eq!(nomad.ca_cert.as_deref(), Some(std::path::Path::new(&nca)));
    assert_eq!(nomad.client_cert.as_deref(), Some(std::path::Path::new(&ncert)));
    assert_eq!(nomad.client_key.as_deref(), Some(std::path::Path::new(&nkey)));
    assert!(nomad.skip_verify);
    assert_eq!(nomad.tls_server_name.as_deref(), Some("server.eu.nomad"));
    // The token never shows in the settings' Debug.
    assert!(!format!("{cli:?}").contains("s3cr3t"));
}

#[test]
fn other_settings_have_vk_variables() {
    let env = Env::from([
        ("VK_POD_SYNC_WORKERS", "3"),
        ("VK_NOMAD_DATACENTERS", "dc1,dc2"),
        ("VK_NODE_LABELS", "a=b,c=d"),
        ("VK_PROVIDER", "nomad"),
        ("VK_DISABLE_TAINT", "true"),
        ("VK_FULL_RESYNC_PERIOD", "2m"),
        ("VK_METRICS_ADDR", ":9100"),
    ]);
    let cli = ok(&[], &env);
    assert_eq!(cli.pod_sync_workers, 3);
    assert_eq!(cli.args.nomad.nomad_datacenters, ["dc1", "dc2"]);
    assert_eq!(cli.node_labels, [("a".into(), "b".into()), ("c".into(), "d".into())]);
    assert!(cli.disable_taint);
    assert_eq!(cli.full_resync_period, Duration::from_secs(120));
    assert_eq!(cli.metrics_addr.port(), 9100);
}

#[test]
fn layers_in_order_defaults_file_provider_file_env_flags() {
    let (_d1, config, config_s) = toml(
        r#"
        nodename = "from-file"
        kubelet_port = 1111
        max_pods = 20
        pod_sync_workers = 4
        disable_taint = true
        node_labels = { tier = "edge", zone = "a" }
        [nomad]
        addr = "http://file:4646"
        driver = "exec"
        datacenters = ["dc1", "dc2"]
        region = "file-region"
        "#,
    );
    let (_d2, provider, provider_s) = toml(
        r#"
        addr = "http://provider-file:4646"
        region = "provider-region"
        job_prefix = "pf-"
        "#,
    );
    let env = Env::from([
        ("KUBELET_PORT", "2222"),
        ("VK_MAX_PODS", "30"),
        ("NOMAD_REGION", "env-region"),
    ]);
    let cli = ok(
        &["--config", &config_s, "--provider-config", &provider_s, "--kubelet-port", "3333"],
        &env,
    );
    assert_eq!(cli.sources.config.as_deref(), Some(config.as_path()));
    assert_eq!(cli.sources.provider_config.as_deref(), Some(provider.as_path()));
    assert_eq!(cli.nodename, "from-file", "file over default");
    assert_eq!(cli.pod_sync_workers, 4, "file over default");
    assert!(cli.disable_taint, "file over default");
    assert_eq!(cli.max_pods, Some(30), "environment over file");
    assert_eq!(cli.kubelet_port, 3333, "flag over environment over file");
    assert_eq!(cli.node_labels, [("tier".into(), "edge".into()), ("zone".into(), "a".into())]);
    let nomad = cli.nomad();
    assert_eq!(nomad.client.address, "http://provider-file:4646", "provider file over [nomad]");
    assert_eq!(nomad.client.region.as_deref(), Some("env-region"), "environment over files");
    assert_eq!(nomad.default_driver, "exec");
    assert_eq!(nomad.datacenters, ["dc1", "dc2"]);
    assert_eq!(nomad.job_prefix, "pf-");
    // A flag turns a file's true back to false.
    let cli = ok(&["--config", &config_s, "--disable-taint=false"], &Env::default());
    assert!(!cli.disable_taint);
}

#[test]
fn every_invalid_value_is_named_with_its_origin() {
    let env = |k: &str, v: &str| Env::from([(k, v)]);
    let e = |k: &str| Origin::Env(k.to_owned());
    for (vars, key, value, reason) in [
        (env("KUBELET_PORT", "abc"), "KUBELET_PORT", "abc", "invalid digit"),
        (env("KUBELET_PORT", "0"), "KUBELET_PORT", "0", "not in 1..=65535"),
        (env("VK_POD_SYNC_WORKERS", "0"), "VK_POD_SYNC_WORKERS", "0", "at least 1"),
        (env("VK_MAX_PODS", "-1"), "VK_MAX_PODS", "-1", "not in 1.."),
        (
            env("VKUBELET_TAINT_EFFECT", "Sometimes"),
            "VKUBELET_TAINT_EFFECT",
            "Sometimes",
            "possible values",
        ),
        (env("VK_PROVIDER", "docker"), "VK_PROVIDER", "docker", "possible values"),
        (env("VK_FULL_RESYNC_PERIOD", "0s"), "VK_FULL_RESYNC_PERIOD", "0s", "longer than 0"),
        (env("VK_SHUTDOWN_GRACE", "soon"), "VK_SHUTDOWN_GRACE", "soon", "expected number"),
        (env("VK_LOG_LEVEL", "info,a=[b"), "VK_LOG_LEVEL", "info,a=[b", "invalid"),
        (env("VK_LOG_FORMAT", "xml"), "VK_LOG_FORMAT", "xml", "possible values"),
        (env("VKUBELET_POD_IP", "node-1"), "VKUBELET_POD_IP", "node-1", "invalid IP address"),
        (env("VK_METRICS_ADDR", "10255"), "VK_METRICS_ADDR", "10255", "not host:port"),
        (env("VK_KUBELET_ADDRESS", "any"), "VK_KUBELET_ADDRESS", "any", "invalid IP address"),
        (env("VK_JOB_PREFIX", "a.b"), "VK_JOB_PREFIX", "a.b", "up to 16"),
        (env("VK_KUBE_API_QPS", "NaN"), "VK_KUBE_API_QPS", "NaN", "0 or more"),
        (env("VK_KUBE_API_BURST", "lots"), "VK_KUBE_API_BURST", "lots", "invalid digit"),
        (env("VK_NODE_LABELS", "a=b,c"), "VK_NODE_LABELS", "c", "not key=value"),
        (
            env("NOMAD_ADDR", "unix:///run/nomad.sock"),
            "NOMAD_ADDR",
            "unix:///run/nomad.sock",
            "http or https",
        ),
        (env("NOMAD_SKIP_VERIFY", "maybe"), "NOMAD_SKIP_VERIFY", "maybe", "invalid value"),
        (env("VK_NOMAD_MAX_REQUESTS", "-2"), "VK_NOMAD_MAX_REQUESTS", "-2", "invalid digit"),
        (
            env("KUBECONFIG", "/nonexistent/kubeconfig"),
            "KUBECONFIG",
            "/nonexistent/kubeconfig",
            "no such file",
        ),
        (
            env("APISERVER_CA_CERT_LOCATION", "/nonexistent/ca"),
            "APISERVER_CA_CERT_LOCATION",
            "/nonexistent/ca",
            "no such file",
        ),
        (env("NOMAD_CACERT", "/nonexistent/ca"), "NOMAD_CACERT", "/nonexistent/ca", "no such file"),
    ] {
        let got = refused(&[], &vars);
        assert_eq!(
            (got.key.as_str(), got.value.as_str(), &got.origin),
            (key, value, &e(key)),
            "{got}"
        );
        assert!(got.reason.contains(reason), "{key}: {got}");
        assert!(got.to_string().contains(key) && got.to_string().contains(value), "{got}");
    }
}

#[test]
fn a_certificate_needs_its_key() {
    let (_d, cert, cert_s) = toml("not read");
    let got = refused(&[], &Env::from([("APISERVER_CERT_LOCATION", cert_s.as_str())]));
    assert_eq!(got.key, "APISERVER_CERT_LOCATION");
    assert_eq!(got.value, cert.display().to_string());
    assert!(got.reason.contains("needs APISERVER_KEY_LOCATION"), "{got}");
    let got = refused(&["--nomad-client-key", &cert_s], &Env::default());
    assert_eq!(got.key, "--nomad-client-key");
    assert!(got.reason.contains("needs --nomad-client-cert"), "{got}");
}

#[test]
fn bad_files_are_named() {
    // A value of the wrong kind, in each file.
    let (_d, _p, config) = toml("kubelet_port = 70000\n");
    let got = refused(&["--config", &config], &Env::default());
    assert_eq!((got.key.as_str(), got.value.as_str()), ("kubelet_port", "70000"), "{got}");
    assert!(matches!(got.origin, Origin::File(_)) && got.to_string().contains(&config), "{got}");
    let (_d, _p, config) = toml("[nomad]\naddr = \"unix:///x\"\n");
    let got = refused(&["--config", &config], &Env::default());
    assert_eq!((got.key.as_str(), got.value.as_str()), ("nomad.addr", "unix:///x"), "{got}");
    let (_d, _p, provider) = toml("max_requests = \"many\"\n");
    let got = refused(&["--provider-config", &provider], &Env::default());
    assert_eq!((got.key.as_str(), got.value.as_str()), ("max_requests", "many"), "{got}");
    assert!(matches!(got.origin, Origin::ProviderFile(_)), "{got}");
    // Unknown keys, at each level.
    for (text, key) in [
        ("nodenam = \"x\"\n", "nodenam"),
        ("[nomad]\nadress = \"x\"\n", "nomad.adress"),
        ("addr = \"x\"\n", "addr"),
        ("config = \"other.toml\"\n", "config"),
    ] {
        let (_d, _p, config) = toml(text);
        let got = refused(&["--config", &config], &Env::default());
        assert_eq!((got.key.as_str(), got.reason.as_str()), (key, "unknown setting"), "{got}");
    }
    let (_d, _p, provider) = toml("nodename = \"x\"\n");
    let got = refused(&["--provider-config", &provider], &Env::default());
    assert_eq!((got.key.as_str(), got.reason.as_str()), ("nodename", "unknown setting"));
    // Shapes a setting cannot take.
    let (_d, _p, config) = toml("nomad = 3\n");
    let got = refused(&["--config", &config], &Env::default());
    assert_eq!(got.key, "nomad");
    let (_d, _p, config) = toml("node_labels = { a = { b = \"c\" } }\n");
    let got = refused(&["--config", &config], &Env::default());
    assert_eq!(got.key, "node_labels");
    assert!(got.reason.contains("key = \"value\""), "{got}");
    // The token is never shown, even refused.
    let (_d, _p, config) = toml("[nomad]\ntoken = [\"s3cr3t\", [1]]\n");
    let got = refused(&["--config", &config], &Env::default());
    assert_eq!((got.key.as_str(), got.value.as_str()), ("nomad.token", "<redacted>"));
    // Not TOML, and no file at all.
    let (_d, _p, config) = toml("nodename = \n");
    let got = refused(&["--config", &config], &Env::default());
    assert_eq!((got.key.as_str(), got.value.as_str()), ("--config", config.as_str()));
    let got = refused(&["--config", "/nonexistent/vk.toml"], &Env::default());
    assert_eq!((got.key.as_str(), got.value.as_str()), ("--config", "/nonexistent/vk.toml"));
}

#[test]
fn bad_flags_are_clap_errors_naming_the_flag() {
    for (args, flag) in [
        (&["--provider", "docker"][..], "--provider"),
        (&["--taint-effect", "Sometimes"][..], "--taint-effect"),
        (&["--node-label", "novalue"][..], "--node-label"),
        (&["--full-resync-period", "soon"][..], "--full-resync-period"),
        (&["--pod-sync-workers", "0"][..], "--pod-sync-workers"),
        (&["--no-such-flag"][..], "--no-such-flag"),
    ] {
        match load_with(args, &Env::default()) {
            Err(LoadError::Flags(e)) => {
                assert!(e.to_string().contains(flag), "{flag}: {e}");
            }
            other => panic!("{args:?}: {other:?}"),
        }
    }
}

/// The policy's settings: a fresh install allows nothing; each flag, variable and file key
/// widens the base grant; bad values are refused naming where they came from.
#[test]
fn policy_settings_start_closed_and_are_checked() {
    let none = ok(&[], &Env::default());
    let p = none.nomad_policy();
    assert_eq!(p.base, NomadGrant { max_priority: Some(50), ..NomadGrant::default() });
    assert!(p.rules.is_empty() && none.probe_policy().base.hosts.is_empty());
    assert!(!none.policy_uses_labels());
    assert_eq!(none.args.nomad.seccomp_profile_root, "/var/lib/kubelet/seccomp");
    let (_d, path, _) = toml("[nomad]\nallowed_drivers = [\"exec\"]\nmax_priority = 70\n");
    let env = Env::from([
        ("VK_ALLOWED_NODE_POOLS", "gpu,spot"),
        ("VK_ALLOWED_PROBE_HOSTS", "10.0.0.0/8,db.internal"),
    ]);
    let cli = ok(&["--config", path.to_str().unwrap(), "--allowed-network-modes", "bridge"], &env);
    let g = cli.nomad_policy().base;
    assert_eq!(g.drivers, ["exec"]);
    assert_eq!(g.max_priority, Some(70));
    assert_eq!(g.node_pools, ["gpu", "spot"]);
    assert_eq!(g.network_modes, ["bridge"]);
    assert_eq!(cli.probe_policy().base.hosts.len(), 2);
    for (flag, value, reason) in [
        ("--allowed-drivers", "qemu", "not a task driver"),
        ("--allowed-nomad-namespaces", "a/b", "not a Nomad namespace"),
        ("--allowed-node-pools", "pool one", "not a Nomad node pool"),
        ("--allowed-network-modes", "overlay", "not a network mode"),
        ("--allowed-datacenters", "dc 1", "not a Nomad datacenter"),
        ("--max-priority", "101", "101"),
        ("--allowed-probe-hosts", "169.254.169.254", "never probed"),
        ("--allowed-probe-hosts", "127.0.0.0/8", "never probed"),
        ("--seccomp-profile-root", "profiles", "not an absolute path"),
    ] {
        let env = Env::from([(env_name(flag).as_str(), value)]);
        let e = refused(&[], &env);
        assert!(e.reason.contains(reason), "{flag}={value}: {e}");
    }
}

#[test]
fn the_policy_file_holds_rules_by_name_and_label() {
    let (_d, path, shown) = toml(
        r#"
[[rule]]
name = "infra"
namespaces = ["infra", "ops"]
allowed_drivers = ["raw_exec"]
allowed_probe_hosts = ["10.1.0.0/16"]

[[rule]]
name = "trusted"
selector = { matchLabels = { "example.com/trust" = "high" }, matchExpressions = [{ key = "tier", operator = "In", values = ["a"] }] }
allowed_nomad_namespaces = ["trusted"]
max_priority = 80
"#,
    );
    let cli = ok(&["--policy-file", &shown], &Env::default());
    assert!(cli.policy_uses_labels());
    let p = cli.nomad_policy();
    assert_eq!(p.rules.len(), 2);
    assert_eq!(p.rules[0].grant.drivers, ["raw_exec"]);
    assert_eq!(p.rules[1].grant.max_priority, Some(80));
    let labels: BTreeMap<String, String> =
        [("example.com/trust".to_owned(), "high".to_owned()), ("tier".to_owned(), "a".to_owned())]
            .into();
    let applicable = p.for_namespace("web", Some(&labels));
    assert_eq!(applicable.rules, ["trusted"]);
    assert_eq!(p.for_namespace("ops", None).rules, ["infra"]);
    assert_eq!(cli.probe_policy().for_namespace("infra", None).grants.len(), 2);
    drop(path);
    for (text, reason) in [
        (
            "[[rule]]\nname = \"x\"\nallowed_drivers = [\"docker\"]\n",
            "namespace names or a label selector",
        ),
        (
            "[[rule]]\nname = \"x\"\nnamespaces = [\"a\"]\nallowed_drivers = [\"qemu\"]\n",
            "rule 1 (\"x\"): allowed_drivers: \"qemu\"",
        ),
        ("[[rule]]\nname = \"x\"\nnamespaces = [\"a\"]\nmax_priority = 0\n", "max_priority: 0"),
        (
            "[[rule]]\nname = \"x\"\nnamespaces = [\"a\"]\nallowed_probe_hosts = [\"localhost\"]\n",
            "allowed_probe_hosts",
        ),
        ("[[rule]]\nname = \"x\"\nselector = {}\n", "every namespace"),
        (
            "[[rule]]\nname = \"x\"\nselector = { matchExpressions = [{ key = \"a\", operator = \"Gt\", values = [\"1\"] }] }\n",
            "not a selector operator",
        ),
        (
            "[[rule]]\nname = \"x\"\nnamespaces = [\"a\"]\nallowed_drivrs = [\"exec\"]\n",
            "unknown field",
        ),
        (
            "[[rule]]\nname = \"x\"\nnamespaces = [\"a\"]\n[[rule]]\nname = \"x\"\nnamespaces = [\"b\"]\n",
            "comes earlier",
        ),
        ("rule = 3\n", "invalid type"),
    ] {
        let (_d, _path, shown) = toml(text);
        let e = refused(&["--policy-file", &shown], &Env::default());
        assert_eq!((e.key.as_str(), e.value.as_str()), ("--policy-file", shown.as_str()));
        assert!(e.reason.contains(reason), "{text}: {e}");
    }
    let missing = refused(&["--policy-file", "/nonexistent/policy.toml"], &Env::default());
    assert!(missing.reason.contains("no such file"), "{missing}");
}

/// Every setting, its default and its environment variable, in `--help` and in the README's
/// table (so neither can fall behind the code).
#[test]
fn help_and_readme_list_every_setting() {
    let help = command::<Args>().render_long_help().to_string();
    let readme = include_str!("../../../README.md");
    let all = settings::<Args>();
    for arg in command::<Args>().get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        let long = format!("--{}", arg.get_long().unwrap_or(id));
        assert!(help.contains(&long), "{long} missing from --help");
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{long}`")))
            .unwrap_or_else(|| panic!("no README configuration row starts with `{long}`"));
        if let Some(s) = all.iter().find(|s| s.id == id) {
            let env = &s.env;
            assert!(help.contains(&format!("[env: {env}]")), "{env} missing from --help");
            assert!(row.contains(&format!("`{env}`")), "README row of {long} lacks `{env}`");
            assert!(
                row.contains(&format!("`{}`", s.file_key)),
                "README row of {long} lacks its file key"
            );
        } else {
            // Only the settings that say where the others are come from the command line alone.
            assert!(matches!(id, "config" | "provider_config"), "{id} has no variable nor key");
        }
        for default in arg.get_default_values() {
            let d = default.to_string_lossy();
            if id != "arch" {
                assert!(
                    row.contains(&format!("`{d}`")),
                    "README row of {long} lacks its default `{d}`"
                );
            }
        }
    }
}

/// The nodes of a `--config` file's `[[nodes]]`, as `main` runs them.
fn nodes_of(args: &[&str], env: &Env) -> Vec<Args> {
    let argv = std::iter::once("virtual-kubelet").chain(args.iter().copied());
    match vk_app::config::load::<Args, _, _>(argv, env) {
        Ok(loaded) => loaded.nodes,
        Err(e) => panic!("refused: {e}"),
    }
}

#[test]
fn nodes_of_one_process_each_take_their_scope() {
    let (_d, _p, config) = toml(
        "cert_dir = \"/var/lib/vk\"\nnode_status_interval = \"7s\"\n[nomad]\nnamespace = \"shared\"\n\
         datacenters = [\"*\"]\n\n\
         [[nodes]]\nnodename = \"vk-a\"\nkubelet_port = 10260\nnode_labels = { team = \"a\" }\n\
         [nodes.nomad]\nnode_pool = \"pool-a\"\ndatacenters = [\"dc-a\"]\nregion = \"eu\"\n\n\
         [[nodes]]\nnodename = \"vk-b\"\nkubelet_port = 10261\ncert_dir = \"/srv/b\"\n\
         [nodes.nomad]\nnode_pool = \"pool-b\"\nnamespace = \"team-b\"\n",
    );
    // A flag of the process (not node-scoped) reaches every node; an entry wins over a flag.
    let nodes = nodes_of(
        &["--config", &config, "--kube-api-qps", "9", "--kubelet-port", "1"],
        &Env::default(),
    );
    let [a, b] = nodes.as_slice() else { panic!("{nodes:?}") };
    assert_eq!((a.node.nodename.as_str(), a.node.kubelet_port), ("vk-a", 10260));
    assert_eq!((b.node.nodename.as_str(), b.node.kubelet_port), ("vk-b", 10261));
    assert_eq!(a.node.node_labels, [("team".to_owned(), "a".to_owned())]);
    assert!(b.node.node_labels.is_empty());
    // Each node's certificates apart: `<cert_dir>/<nodename>` unless its entry says.
    assert_eq!(a.node.cert_dir, PathBuf::from("/var/lib/vk/vk-a"));
    assert_eq!(b.node.cert_dir, PathBuf::from("/srv/b"));
    for n in [a, b] {
        assert!((n.node.kube_api_qps - 9.0).abs() < f32::EPSILON, "{}", n.node.kube_api_qps);
        assert_eq!(n.node.node_status_interval, Duration::from_secs(7));
    }
    let scope = |n: &Args| {
        let c = n.nomad.provider_config(&n.node.nodename, &[]);
        (c.node_pool, c.datacenters, c.client.namespace, c.client.region, c.node_name)
    };
    assert_eq!(
        scope(a),
        (
            Some("pool-a".into()),
            vec!["dc-a".into()],
            Some("shared".into()),
            Some("eu".into()),
            "vk-a".into()
        )
    );
    assert_eq!(
        scope(b),
        (Some("pool-b".into()), vec!["*".into()], Some("team-b".into()), None, "vk-b".into())
    );
    // Without [[nodes]], the one node of the settings.
    let (_d, _p, plain) = toml("nodename = \"solo\"\n");
    assert!(nodes_of(&["--config", &plain], &Env::default()).is_empty());
}

#[test]
fn nodes_entries_are_refused_by_name() {
    let entry =
        |body: &str| format!("[[nodes]]\nnodename = \"vk-a\"\nkubelet_port = 10260\n{body}");
    // A process-wide setting, an unknown one, a bad value: named with the entry and the file.
    for (body, key, reason) in [
        ("metrics_addr = \"127.0.0.1:1\"\n", "nodes.metrics_addr", "the process's setting"),
        ("[nodes.nomad]\naddr = \"http://x:1\"\n", "nodes.nomad.addr", "the process's setting"),
        ("nodenam = \"x\"\n", "nodes.nodenam", "unknown setting"),
        ("[nodes.nomad]\nnode_pool = \"bad pool!\"\n", "nodes.nomad.node_pool", "node pool"),
    ] {
        let (_d, _p, config) = toml(&entry(body));
        let got = refused(&["--config", &config], &Env::default());
        assert_eq!(got.key, key, "{got}");
        assert!(got.reason.contains(reason), "{got}");
        assert!(
            matches!(got.origin, Origin::Node { index: 0, .. })
                && got.to_string().contains("[[nodes]] entry 1 of file"),
            "{got}"
        );
    }
    // Each entry is one node, with its own name and port.
    let (_d, _p, config) = toml("[[nodes]]\nkubelet_port = 10260\n");
    let got = refused(&["--config", &config], &Env::default());
    assert!(got.key == "nodes" && got.reason.contains("names no nodename"), "{got}");
    for (second, key) in [
        ("nodename = \"vk-a\"\nkubelet_port = 10261\n", "nodes.nodename"),
        ("nodename = \"vk-b\"\nkubelet_port = 10260\n", "nodes.kubelet_port"),
    ] {
        let (_d, _p, config) = toml(&format!("{}\n[[nodes]]\n{second}", entry("")));
        let got = refused(&["--config", &config], &Env::default());
        assert_eq!(got.key, key, "{got}");
        assert!(got.reason.contains("also node vk-a's"), "{got}");
        assert!(matches!(got.origin, Origin::Node { index: 1, .. }), "{got}");
    }
    // `nodes` must be an array of tables.
    let (_d, _p, config) = toml("nodes = \"vk-a\"\n");
    let got = refused(&["--config", &config], &Env::default());
    assert!(got.key == "nodes" && got.reason.contains("array of tables"), "{got}");
}
