//! The loader of a binary's settings: defaults < `--config` < `--provider-config` < environment <
//! flags, every value through its flag's own parser whatever its origin, so that an error names
//! the key, the value and where it came from. What it knows of each setting comes from its clap
//! argument: the environment variable declared with the flag (`env = "NOMAD_ADDR"`, else
//! `VK_<ID>`), whether it is the provider's (a member of the clap group [`Settings::PROVIDER_TABLE`]
//! names: the flattened provider arguments), read from the command line only (a member of
//! [`super::Sources`]' group), secret (`hide_env_values`) or a file that must exist
//! (`value_hint = ValueHint::FilePath`). The process environment is read only through [`Env`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::KubeletArgs;
use super::policy::{self, PolicyRule, RuleGrant};

/// The clap group of [`super::Sources`] (`#[group(id = "sources")]`): settings read from the
/// command line only.
const SOURCES: &str = "sources";

/// A binary's settings: [`KubeletArgs`] flattened beside its provider's arguments.
pub trait Settings: clap::Parser {
    /// The provider's settings: the id of the clap group of its flattened arguments
    /// (`#[group(id = "nomad")]` on the struct) and the table of the `--config` file that holds
    /// them (`[nomad]`; the top level of `--provider-config` holds them too). A provider setting
    /// `nomad_addr` is `nomad.addr` in `--config` and `addr` in `--provider-config`. `None`: the
    /// provider has no settings.
    const PROVIDER_TABLE: Option<&'static str>;
    /// The provider's keys in a `--policy-file` rule ([`super::NoGrant`] for none).
    type Grant: RuleGrant;
    /// The provider's settings (clap ids, `nomad_node_pool`) a `[[nodes]]` entry of `--config`
    /// may set for its node alone, besides the kubelet's ([`NODE_SETTINGS`]). None by default.
    const NODE_SETTINGS: &'static [&'static str] = &[];

    /// The kubelet's settings within these.
    fn kubelet(&self) -> &KubeletArgs;

    /// Checks across the provider's settings (a certificate without its key), naming each as
    /// `origins` says it was given. Nothing by default.
    ///
    /// # Errors
    /// [`Invalid`] for the first setting refused.
    fn check(&self, origins: &Origins<'_>) -> Result<(), Invalid> {
        let _ = origins;
        Ok(())
    }
}

/// The settings of a binary whose provider has none of its own: the kubelet's alone (the
/// example provider's).
#[derive(Debug, Clone, clap::Parser)]
#[command(version, about = "A virtual kubelet: a Kubernetes node whose pods run on a provider.")]
pub struct NodeOnly {
    /// The kubelet's settings.
    #[command(flatten)]
    pub node: KubeletArgs,
}

impl Settings for NodeOnly {
    const PROVIDER_TABLE: Option<&'static str> = None;
    type Grant = super::NoGrant;

    fn kubelet(&self) -> &KubeletArgs {
        &self.node
    }
}

/// The kubelet's settings a `[[nodes]]` entry of `--config` may set for its node alone: its
/// name, credentials and certificates, address and port, and what the Node object says (labels,
/// taint, pod limit). Every other setting is the process's, shared by all its nodes.
pub const NODE_SETTINGS: &[&str] = &[
    "nodename",
    "kubeconfig",
    "bootstrap_kubeconfig",
    "cert_dir",
    "rotate_server_certificates",
    "internal_ip",
    "kubelet_port",
    "tls_cert_file",
    "tls_private_key_file",
    "max_pods",
    "node_labels",
    "role_label",
    "disable_taint",
    "taint_key",
    "taint_value",
    "taint_effect",
];

/// What [`load`] read.
#[derive(Debug)]
pub struct Loaded<A: Settings> {
    /// The settings (of the one node, or the process's and the first node's with `[[nodes]]`).
    pub args: A,
    /// The rules of `--policy-file`, in the file's order (none without it).
    pub rules: Vec<PolicyRule<<A::Grant as RuleGrant>::Grant>>,
    /// One entry per `[[nodes]]` table of `--config`, in the file's order: the settings with
    /// that entry's on top (its `cert_dir` defaulting to `<cert_dir>/<nodename>`, so that nodes
    /// never share certificate files). Empty without `[[nodes]]`: the process runs the one node
    /// of `args`.
    pub nodes: Vec<A>,
}

impl<A: Settings> Loaded<A> {
    /// The settings of each node the process runs: the `[[nodes]]` entries', else `args` alone.
    pub fn each_node(&self) -> Vec<&A> {
        if self.nodes.is_empty() { vec![&self.args] } else { self.nodes.iter().collect() }
    }
}

/// One setting of a binary: its flag, variable and file keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// clap's id, the field's name (`kubelet_port`).
    pub id: String,
    /// Its flag (`--kubelet-port`).
    pub flag: String,
    /// Its environment variable: the one declared with the flag, else `VK_<ID>`.
    pub env: String,
    /// Its key in the `--config` file: the id, or `<table>.<name>` for a provider setting
    /// (`nomad.addr`).
    pub file_key: String,
    /// Its key at the top level of `--provider-config`, for a provider setting (`addr`).
    pub provider_key: Option<String>,
    /// Secret (`hide_env_values`): its value is never shown in an error.
    pub secret: bool,
    /// Takes a list (repeated flag; comma-separated in the environment; an array in a file).
    pub list: bool,
    /// Names a file that must exist (`value_hint = ValueHint::FilePath`).
    pub file: bool,
}

/// The settings of `A`'s command, in its order (flag-only ones, help and version left out).
pub fn settings<A: Settings>() -> Vec<Setting> {
    layout::<A>().1.settings
}

/// What the loader knows of a command's settings.
struct Layout {
    /// The program's name.
    name: String,
    settings: Vec<Setting>,
    /// [`Settings::PROVIDER_TABLE`].
    table: Option<&'static str>,
    /// [`NODE_SETTINGS`] and [`Settings::NODE_SETTINGS`].
    node_scoped: Vec<&'static str>,
}

impl Layout {
    fn get(&self, id: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.id == id)
    }

    /// `id` as `origin` names it: the flag, the variable or the file key.
    fn key(&self, id: &str, origin: &Origin) -> String {
        let Some(s) = self.get(id) else { return id.to_owned() };
        match origin {
            Origin::Flag => s.flag.clone(),
            Origin::Env(_) => s.env.clone(),
            Origin::File(_) => s.file_key.clone(),
            Origin::ProviderFile(_) => s.provider_key.clone().unwrap_or_else(|| s.id.clone()),
            Origin::Node { .. } => format!("nodes.{}", s.file_key),
        }
    }

    fn invalid(&self, id: &str, value: &str, origin: &Origin, reason: &str) -> Invalid {
        let secret = self.get(id).is_some_and(|s| s.secret);
        let value = if secret { "<redacted>".to_owned() } else { value.to_owned() };
        Invalid {
            key: self.key(id, origin),
            value,
            origin: origin.clone(),
            reason: reason.to_owned(),
        }
    }
}

/// `A`'s command with the environment reset (the loader reads [`Env`], never the process's)
/// and every setting's help completed with its variable and file key, and its [`Layout`].
fn layout<A: Settings>() -> (clap::Command, Layout) {
    let mut cmd = <A as clap::CommandFactory>::command().args_override_self(true);
    let members = |group: &str| -> Vec<String> {
        cmd.get_groups()
            .find(|g| g.get_id() == group)
            .map(|g| g.get_args().map(ToString::to_string).collect())
            .unwrap_or_default()
    };
    let table = A::PROVIDER_TABLE;
    debug_assert!(
        table.is_none_or(|t| cmd.get_groups().any(|g| g.get_id() == t)),
        "PROVIDER_TABLE {table:?} names no clap group: add #[group(id = ...)] to the provider's Args"
    );
    let provider = table.map(members).unwrap_or_default();
    let flag_only = members(SOURCES);
    let mut settings = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if flag_only.iter().any(|f| f == id) || matches!(id, "help" | "version") {
            continue;
        }
        let env = arg.get_env().map_or_else(
            || format!("VK_{}", id.to_uppercase()),
            |e| e.to_string_lossy().into_owned(),
        );
        let provider_key = match table {
            Some(t) if provider.iter().any(|p| p == id) => {
                Some(id.strip_prefix(&format!("{t}_")).unwrap_or(id).to_owned())
            }
            _ => None,
        };
        let file_key = match (&provider_key, table) {
            (Some(k), Some(t)) => format!("{t}.{k}"),
            _ => id.to_owned(),
        };
        settings.push(Setting {
            id: id.to_owned(),
            flag: format!("--{}", arg.get_long().unwrap_or(id)),
            env,
            file_key,
            provider_key,
            secret: arg.is_hide_env_values_set(),
            list: matches!(arg.get_action(), clap::ArgAction::Append),
            file: arg.get_value_hint() == clap::ValueHint::FilePath,
        });
    }
    let ids: Vec<String> = cmd.get_arguments().map(|a| a.get_id().to_string()).collect();
    for id in ids {
        let more = settings
            .iter()
            .find(|s| s.id == id)
            .map(|s| format!("[env: {}] [file: {}]", s.env, s.file_key));
        cmd = cmd.mut_arg(&id, |a| {
            let a = a.env(None::<&str>);
            let Some(more) = more else { return a };
            let help = a.get_help().map(ToString::to_string).unwrap_or_default();
            let a = a.help(format!("{help} {more}"));
            match a.get_long_help().map(ToString::to_string) {
                Some(long) => a.long_help(format!("{long}\n{more}")),
                None => a,
            }
        });
    }
    let name = cmd.get_name().to_owned();
    let node_scoped = NODE_SETTINGS.iter().chain(A::NODE_SETTINGS).copied().collect();
    (cmd, Layout { name, settings, table, node_scoped })
}

/// `A`'s command with its help completed: every setting says its environment variable and file
/// key (`[env: NOMAD_ADDR] [file: nomad.addr]`). The environment is not read when it parses.
pub fn command<A: Settings>() -> clap::Command {
    layout::<A>().0
}

/// The process environment, or any map standing in for it (tests pass their own instead of
/// changing the process's).
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// The process's environment (variables whose name or value is not UTF-8 are left out).
    pub fn from_process() -> Self {
        Self(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        )
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl<const N: usize> From<[(&str, &str); N]> for Env {
    fn from(vars: [(&str, &str); N]) -> Self {
        Self(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    Flag,
    /// This environment variable.
    Env(String),
    /// The TOML file of `--config`.
    File(PathBuf),
    /// The TOML file of `--provider-config`.
    ProviderFile(PathBuf),
    /// A `[[nodes]]` entry of the `--config` file: the file and the entry's place (0 first).
    Node {
        /// The `--config` file.
        file: PathBuf,
        /// The entry's place in the file's `[[nodes]]`, from 0.
        index: usize,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag => f.write_str("the command line"),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::File(path) | Origin::ProviderFile(path) => write!(f, "file {}", path.display()),
            Origin::Node { file, index } => {
                write!(f, "[[nodes]] entry {} of file {}", index + 1, file.display())
            }
        }
    }
}

/// A setting refused, named with its value and where that came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key} = {value:?} (from {origin}): {reason}")]
pub struct Invalid {
    /// The setting: its key (`nomad.addr`), flag (`--nomad-addr`) or variable (`NOMAD_ADDR`), as
    /// it was given.
    pub key: String,
    /// The value given (`<redacted>` for a secret).
    pub value: String,
    /// Where it came from.
    pub origin: Origin,
    /// Why it was refused.
    pub reason: String,
}

/// Why [`load`] returned no settings.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `--help` or `--version` was asked for (the text is in the error), or a flag is unknown
    /// or malformed (clap's message names it).
    #[error(transparent)]
    Flags(#[from] clap::Error),
    /// A setting is refused.
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

impl LoadError {
    /// Exit code 78 (`EX_CONFIG` of sysexits.h) for an invalid configuration, from any source.
    pub const EXIT_CODE: u8 = 78;

    /// Prints the error (`program: ...` on stderr), or the help or version text on stdout, and
    /// returns the exit code for `main` to return: 0 for `--help` and `--version`,
    /// [`LoadError::EXIT_CODE`] otherwise. It never exits itself.
    pub fn report(&self, program: &str) -> std::process::ExitCode {
        match self {
            LoadError::Flags(e)
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ) =>
            {
                let _ = e.print();
                std::process::ExitCode::SUCCESS
            }
            LoadError::Flags(e) => {
                let _ = e.print();
                std::process::ExitCode::from(Self::EXIT_CODE)
            }
            LoadError::Invalid(e) => {
                eprintln!("{program}: {e}");
                std::process::ExitCode::from(Self::EXIT_CODE)
            }
        }
    }
}

/// The values a setting took and where they came from, for checks across settings
/// ([`Settings::check`], [`KubeletArgs::check`]).
pub struct Origins<'a> {
    layout: &'a Layout,
    values: &'a Values,
}

impl Origins<'_> {
    /// Where setting `id`'s value came from (the command line for a default).
    pub fn origin(&self, id: &str) -> Origin {
        self.values.get(id).map_or(Origin::Flag, |(_, o)| o.clone())
    }

    /// The refusal of `value` of setting `id`, named as its origin names it.
    pub fn refuse(&self, id: &str, value: &str, reason: &str) -> Invalid {
        self.layout.invalid(id, value, &self.origin(id), reason)
    }

    /// Refuses a setting of a pair given without the other (a certificate and its key), naming
    /// the missing one as the given one's origin names settings.
    ///
    /// # Errors
    /// [`Invalid`] `needs <other> too` when exactly one of the pair is set.
    pub fn check_pair(&self, a: (&str, bool), b: (&str, bool)) -> Result<(), Invalid> {
        if a.1 == b.1 {
            return Ok(());
        }
        let (set, unset) = if a.1 { (a.0, b.0) } else { (b.0, a.0) };
        let value = self.values.get(set).map(|(v, _)| v.join(",")).unwrap_or_default();
        let origin = self.origin(set);
        let reason = format!("needs {} too", self.layout.key(unset, &origin));
        Err(self.layout.invalid(set, &value, &origin, &reason))
    }
}

/// Reads the settings of `A`: defaults < `--config` < `--provider-config` < `env` < `args` (the
/// first of `args` is the program name), then the rules of `--policy-file`, then, for each
/// `[[nodes]]` entry of `--config`, the settings of that node: the same with the entry's
/// node-scoped settings on top of every source ([`Loaded::nodes`]). Every value,
/// wherever it comes from, goes through the flag's own parser, and files named by settings must
/// exist, so that a bad value stops the process before anything starts.
///
/// # Errors
/// - [`LoadError::Flags`] for `--help`, `--version`, an unknown flag or a bad value on the command
///   line;
/// - [`LoadError::Invalid`] for a bad value from a file or the environment (naming its key or
///   variable, the value and the file), an unreadable or malformed file, an unknown key in a
///   file, a certificate without its key, a file setting naming a file that does not exist, a
///   bad policy file, or a `[[nodes]]` entry without `nodename`, setting one of the process's
///   settings, or taking another entry's name or kubelet port.
pub fn load<A, I, T>(args: I, env: &Env) -> Result<Loaded<A>, LoadError>
where
    A: Settings,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let (cmd, layout) = layout::<A>();
    let matches = cmd.clone().try_get_matches_from(args)?;
    let sources: Vec<(&str, PathBuf)> = ["config", "provider_config"]
        .into_iter()
        .filter_map(|id| Some((id, matches.try_get_one::<PathBuf>(id).ok().flatten()?.clone())))
        .collect();
    let (values, node_entries) = layered(&layout, &matches, &sources, env)?;
    let args = build::<A>(&cmd, &layout, &sources, &values)?;
    let origins = Origins { layout: &layout, values: &values };
    let rules = match &args.kubelet().policy_file {
        Some(path) => policy::read_policy_file::<A::Grant>(path).map_err(|reason| {
            origins.refuse("policy_file", &path.display().to_string(), &reason)
        })?,
        None => Vec::new(),
    };
    let mut nodes: Vec<A> = Vec::new();
    for (file, index, entry) in node_entries {
        let origin = Origin::Node { file: file.clone(), index };
        let mut values = values.clone();
        let mut own_cert_dir = false;
        for (id, vals) in entry {
            own_cert_dir |= id == "cert_dir";
            values.insert(id, (vals, origin.clone()));
        }
        let Some((names, _)) = values.get("nodename").filter(|(_, o)| *o == origin) else {
            return Err(Invalid {
                key: "nodes".into(),
                value: format!("entry {}", index + 1),
                origin: Origin::File(file),
                reason: "names no nodename: each [[nodes]] entry is one node".into(),
            }
            .into());
        };
        let name = names.concat();
        if !own_cert_dir {
            let dir = args.kubelet().cert_dir.join(&name);
            values.insert("cert_dir".into(), (vec![dir.display().to_string()], origin.clone()));
        }
        let node = build::<A>(&cmd, &layout, &sources, &values)?;
        let twin = nodes.iter().find(|n| {
            let (a, b) = (n.kubelet(), node.kubelet());
            a.nodename == b.nodename || a.kubelet_port == b.kubelet_port
        });
        if let Some(twin) = twin {
            let same_name = twin.kubelet().nodename == node.kubelet().nodename;
            let (id, value) = if same_name {
                ("nodename", name.clone())
            } else {
                ("kubelet_port", node.kubelet().kubelet_port.to_string())
            };
            let reason = format!("also node {}'s: each node has its own", twin.kubelet().nodename);
            return Err(layout.invalid(id, &value, &origin, &reason).into());
        }
        nodes.push(node);
    }
    Ok(Loaded { args, rules, nodes })
}

/// The settings of `values` (id to values and origin, as [`layered`] made them), every value
/// through its flag's parser so that an error names where it came from, and checked across
/// settings.
///
/// # Errors
/// As [`load`].
fn build<A: Settings>(
    cmd: &clap::Command,
    layout: &Layout,
    sources: &[(&str, PathBuf)],
    values: &Values,
) -> Result<A, LoadError> {
    let mut argv = vec![layout.name.clone()];
    for (id, path) in sources {
        argv.push(format!("--{}={}", id.replace('_', "-"), path.display()));
    }
    for (id, (vals, origin)) in values {
        let Some(arg) = cmd.get_arguments().find(|a| a.get_id() == id.as_str()) else {
            continue;
        };
        let long = arg.get_long().unwrap_or(id.as_str());
        for v in vals {
            if *origin != Origin::Flag {
                parse_one(arg, &format!("--{long}={v}"))
                    .map_err(|e| layout.invalid(id, v, origin, &clap_reason(&e)))?;
            }
            argv.push(format!("--{long}={v}"));
        }
    }
    let settings_error = |e: clap::Error| Invalid {
        key: "(settings)".into(),
        value: argv[1..].join(" "),
        origin: Origin::Flag,
        reason: clap_reason(&e),
    };
    let matches = cmd.clone().try_get_matches_from(&argv).map_err(settings_error)?;
    let origins = Origins { layout, values };
    check_files(layout, &matches, &origins)?;
    let args = <A as clap::FromArgMatches>::from_arg_matches(&matches).map_err(settings_error)?;
    args.kubelet().check(&origins)?;
    args.check(&origins)?;
    Ok(args)
}

/// [`load`] from the process's arguments and environment. For `main` functions, which report
/// an error with [`LoadError::report`].
///
/// # Errors
/// As [`load`].
pub fn load_from_process<A: Settings>() -> Result<Loaded<A>, LoadError> {
    load(std::env::args_os(), &Env::from_process())
}

/// The values of every setting given somewhere, layer by layer, lowest first: each value
/// replaces the one below.
/// Also returns the `[[nodes]]` entries of `--config`: its path, each entry's place and values.
fn layered(
    layout: &Layout,
    matches: &clap::ArgMatches,
    sources: &[(&str, PathBuf)],
    env: &Env,
) -> Result<(Values, NodeEntries), Invalid> {
    let mut values = Values::new();
    let mut nodes = Vec::new();
    for (id, path) in sources {
        let provider = *id == "provider_config";
        let origin =
            if provider { Origin::ProviderFile(path.clone()) } else { Origin::File(path.clone()) };
        let (file, entries) = read_file(layout, path, provider)?;
        for (id, vals) in file {
            values.insert(id, (vals, origin.clone()));
        }
        nodes.extend(entries.into_iter().enumerate().map(|(i, e)| (path.clone(), i, e)));
    }
    for s in &layout.settings {
        if matches.value_source(&s.id) == Some(clap::parser::ValueSource::CommandLine) {
            let raw = matches
                .get_raw(&s.id)
                .into_iter()
                .flatten()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            values.insert(s.id.clone(), (raw, Origin::Flag));
        } else if let Some(v) = env.get(&s.env) {
            let vals =
                if s.list { v.split(',').map(str::to_owned).collect() } else { vec![v.to_owned()] };
            values.insert(s.id.clone(), (vals, Origin::Env(s.env.clone())));
        }
    }
    Ok((values, nodes))
}

/// `flag_and_value` (`--name=value`) parsed by `arg` alone.
fn parse_one(arg: &clap::Arg, flag_and_value: &str) -> Result<(), clap::Error> {
    clap::Command::new("setting")
        .no_binary_name(true)
        .arg(arg.clone())
        .try_get_matches_from([flag_and_value])
        .map(drop)
}

/// Files named by settings (`value_hint = ValueHint::FilePath`) must exist.
fn check_files(
    layout: &Layout,
    matches: &clap::ArgMatches,
    origins: &Origins<'_>,
) -> Result<(), Invalid> {
    for s in layout.settings.iter().filter(|s| s.file) {
        for path in matches.get_raw(&s.id).into_iter().flatten() {
            if !Path::new(path).is_file() {
                let value = path.to_string_lossy();
                return Err(origins.refuse(&s.id, &value, "no such file"));
            }
        }
    }
    Ok(())
}

/// The reason in a clap error, without its "error:" prefix and usage hints.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The settings of one file, or of one `[[nodes]]` entry: (setting id, values).
type FileValues = Vec<(String, Vec<String>)>;

/// Every setting given somewhere: its values and where they came from, by setting id.
type Values = BTreeMap<String, (Vec<String>, Origin)>;

/// The `[[nodes]]` entries of `--config`: the file, each entry's place (0 first) and values.
type NodeEntries = Vec<(PathBuf, usize, FileValues)>;

/// The setting a file names `shown` (`in_provider`: its key within the provider's settings; a
/// provider setting's own id is taken too, `nomad_addr` for `addr`).
fn file_setting<'a>(
    layout: &'a Layout,
    shown: &str,
    in_provider: Option<&str>,
) -> Option<&'a Setting> {
    layout.settings.iter().find(|s| match (in_provider, &s.provider_key) {
        (Some(k), Some(key)) => key == k || s.id == k,
        (Some(_), None) => false,
        (None, key) => key.is_none() && s.file_key == shown,
    })
}

/// The settings of a TOML file as (setting, values), and those of each of its `[[nodes]]`
/// entries. `provider`: the file is `--provider-config`, whose top level holds the provider's
/// settings (and which has no `[[nodes]]`); in `--config` they are in the provider's table.
fn read_file(
    layout: &Layout,
    path: &Path,
    provider: bool,
) -> Result<(FileValues, Vec<FileValues>), Invalid> {
    let key = if provider { "--provider-config" } else { "--config" };
    let refuse = |value: String, reason: String| Invalid {
        key: key.to_owned(),
        value,
        origin: Origin::Flag,
        reason,
    };
    let table = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml).required(true))
        .build()
        .and_then(|c| c.try_deserialize::<config::Map<String, config::Value>>())
        .map_err(|e| refuse(path.display().to_string(), e.to_string()))?;
    let origin = if provider {
        Origin::ProviderFile(path.to_path_buf())
    } else {
        Origin::File(path.to_path_buf())
    };
    let unknown = |key: String, value: &config::Value, reason: &str| Invalid {
        key,
        value: value.to_string(),
        origin: origin.clone(),
        reason: reason.into(),
    };
    let mut out = Vec::new();
    let mut nodes = Vec::new();
    // `shown`: the key as the file has it; `in_provider`: the key within the provider's settings.
    let mut take = |shown: String, in_provider: Option<&str>, value: config::Value| {
        let Some(s) = file_setting(layout, &shown, in_provider) else {
            return Err(unknown(shown, &value, "unknown setting"));
        };
        let vals = strings(value)
            .map_err(|(value, reason)| layout.invalid(&s.id, &value, &origin, &reason))?;
        out.push((s.id.clone(), vals));
        Ok(())
    };
    for (k, v) in table {
        match layout.table {
            _ if provider => take(k.clone(), Some(&k), v)?,
            _ if k == "nodes" => nodes = read_nodes(layout, path, v)?,
            Some(t) if k == t => {
                let inner = v.clone().into_table().map_err(|_| {
                    unknown(k.clone(), &v, "must be a table of the provider's settings")
                })?;
                for (k2, v2) in inner {
                    take(format!("{t}.{k2}"), Some(&k2), v2)?;
                }
            }
            _ => take(k, None, v)?,
        }
    }
    Ok((out, nodes))
}

/// The `[[nodes]]` entries of the `--config` file at `path`: each a table of node-scoped
/// settings ([`NODE_SETTINGS`], and the provider's [`Settings::NODE_SETTINGS`] in its table).
fn read_nodes(
    layout: &Layout,
    path: &Path,
    value: config::Value,
) -> Result<Vec<FileValues>, Invalid> {
    let entries = value.clone().into_array().map_err(|_| Invalid {
        key: "nodes".into(),
        value: value.to_string(),
        origin: Origin::File(path.to_path_buf()),
        reason: "must be an array of tables ([[nodes]])".into(),
    })?;
    let mut nodes = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let origin = Origin::Node { file: path.to_path_buf(), index };
        let refuse = |key: String, value: &config::Value, reason: String| Invalid {
            key,
            value: value.to_string(),
            origin: origin.clone(),
            reason,
        };
        let table = entry
            .clone()
            .into_table()
            .map_err(|_| refuse("nodes".into(), &entry, "must be a table".into()))?;
        let mut flat = Vec::new();
        for (k, v) in table {
            match layout.table {
                Some(t) if k == t => {
                    let inner = v.clone().into_table().map_err(|_| {
                        refuse(
                            format!("nodes.{k}"),
                            &v,
                            "must be a table of the provider's settings".into(),
                        )
                    })?;
                    flat.extend(
                        inner.into_iter().map(|(k2, v2)| (format!("{t}.{k2}"), Some(k2), v2)),
                    );
                }
                _ => flat.push((k, None, v)),
            }
        }
        let mut values = Vec::new();
        for (shown, in_provider, v) in flat {
            let Some(s) = file_setting(layout, &shown, in_provider.as_deref()) else {
                return Err(refuse(format!("nodes.{shown}"), &v, "unknown setting".into()));
            };
            if !layout.node_scoped.contains(&s.id.as_str()) {
                let allowed: Vec<String> = layout
                    .node_scoped
                    .iter()
                    .filter_map(|id| layout.get(id))
                    .map(|s| s.file_key.clone())
                    .collect();
                let reason = format!(
                    "the process's setting, not one node's (a [[nodes]] entry may set {})",
                    allowed.join(", ")
                );
                return Err(refuse(format!("nodes.{shown}"), &v, reason));
            }
            let vals = strings(v)
                .map_err(|(value, reason)| layout.invalid(&s.id, &value, &origin, &reason))?;
            values.push((s.id.clone(), vals));
        }
        nodes.push(values);
    }
    Ok(nodes)
}

/// A TOML value as the strings a flag would take: scalars as they read, arrays one value per
/// element, a table as `key=value` pairs (node labels).
fn strings(value: config::Value) -> Result<Vec<String>, (String, String)> {
    use config::ValueKind;
    let shown = value.to_string();
    match value.kind {
        ValueKind::Array(items) => items
            .into_iter()
            .map(|v| match v.kind {
                ValueKind::Array(_) | ValueKind::Table(_) | ValueKind::Nil => {
                    Err((shown.clone(), "must be a list of strings".to_owned()))
                }
                _ => Ok(v.to_string()),
            })
            .collect(),
        ValueKind::Table(t) => t
            .into_iter()
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .map(|(k, v)| match v.kind {
                ValueKind::Array(_) | ValueKind::Table(_) | ValueKind::Nil => {
                    Err((shown.clone(), "must be a table of key = \"value\"".to_owned()))
                }
                _ => Ok(format!("{k}={v}")),
            })
            .collect(),
        ValueKind::Nil => Err((shown, "has no value".into())),
        _ => Ok(vec![shown]),
    }
}
