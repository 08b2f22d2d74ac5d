//! What a pod reads from the cluster besides itself (ConfigMaps, Secrets, Services, service-account
//! tokens, the node's allocatable resources), and how those inputs become environment values and
//! files, as the kubelet resolves them.
//!
//! The application fetches what [`references`] lists into an [`Inputs`]; the translation to a
//! [`crate::workload::WorkloadSpec`] is then a pure function of the pod and the inputs.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    ConfigMapKeySelector, Container, EnvFromSource, EnvVarSource, ObjectFieldSelector, Pod,
    ResourceFieldSelector, SecretKeySelector,
};

use crate::env::{self, Env, EnvVar, Segment, Value};
use crate::error::{Missing, Notice, Unsupported};
use crate::node::NodeCapacity;
use crate::quantity::Quantity;

/// The kubelet's default `expirationSeconds` of a projected service-account token (1 h).
pub const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// A service-account token a projected volume asks for (`serviceAccountToken` source).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenSpec {
    /// `audience`; empty for the API server's own audiences.
    pub audience: String,
    /// `expirationSeconds` (default [`DEFAULT_TOKEN_SECONDS`]).
    pub expiration_seconds: i64,
}

/// Everything outside the pod object that the pod's containers read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// ConfigMaps in the pod's namespace, by name.
    pub config_maps: BTreeSet<String>,
    /// Secrets in the pod's namespace, by name.
    pub secrets: BTreeSet<String>,
    /// Tokens for the pod's service account.
    pub tokens: BTreeSet<TokenSpec>,
    /// Whether Services of the pod's namespace give link variables (`enableServiceLinks`, default
    /// true). The `kubernetes` Service of `default` always does.
    pub service_links: bool,
}

/// A Service as the link variables need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.clusterIP` (`None` or empty: headless, no variables).
    pub cluster_ip: String,
    /// `spec.ports` as `(name, port, protocol)`.
    pub ports: Vec<(String, i32, String)>,
}

/// What was read for a pod's [`References`]. Its `Debug` names Secret keys and token specs but
/// never shows their values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// ConfigMap data and binaryData by name; `None` when the ConfigMap does not exist.
    pub config_maps: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// Secret data by name; `None` when the Secret does not exist.
    pub secrets: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// Services of the pod's namespace and the `kubernetes` Service of `default`.
    pub services: Vec<ServiceInfo>,
    /// Tokens obtained through the TokenRequest API.
    pub tokens: BTreeMap<TokenSpec, String>,
    /// The node's allocatable resources, the value of `limits.*` a container does not set.
    pub node_allocatable: NodeCapacity,
    /// The node's operating system (`kubernetes.io/os`, `--os`); empty is `linux`.
    pub node_os: String,
    /// The labels of the pod's Namespace, when the operator's policy selects namespaces by label
    /// (`None`: not read).
    pub namespace_labels: Option<BTreeMap<String, String>>,
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secrets: BTreeMap<&String, Option<Vec<&String>>> = self
            .secrets
            .iter()
            .map(|(name, data)| (name, data.as_ref().map(|d| d.keys().collect())))
            .collect();
        let tokens: Vec<&TokenSpec> = self.tokens.keys().collect();
        f.debug_struct("Inputs")
            .field("config_maps", &self.config_maps)
            .field("secrets (keys, values redacted)", &secrets)
            .field("services", &self.services)
            .field("tokens (redacted)", &tokens)
            .field("node_allocatable", &self.node_allocatable)
            .field("namespace_labels", &self.namespace_labels)
            .finish()
    }
}

/// The ConfigMaps, Secrets and tokens `pod` reads, from `env`, `envFrom` and volumes of every
/// container (init containers included), and the Secrets of its `imagePullSecrets`.
pub fn references(pod: &Pod) -> References {
    let mut r = References { service_links: true, ..References::default() };
    let Some(spec) = &pod.spec else { return r };
    r.service_links = spec.enable_service_links != Some(false);
    let containers = spec.init_containers.iter().flatten().chain(spec.containers.iter());
    for c in containers {
        for e in c.env.iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(k) = &from.config_map_key_ref {
                    r.config_maps.insert(k.name.clone());
                }
                if let Some(k) = &from.secret_key_ref {
                    r.secrets.insert(k.name.clone());
                }
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(s) = &e.config_map_ref {
                r.config_maps.insert(s.name.clone());
            }
            if let Some(s) = &e.secret_ref {
                r.secrets.insert(s.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            r.config_maps.insert(cm.name.clone());
        }
        if let Some(s) = &v.secret {
            r.secrets.insert(s.secret_name.clone().unwrap_or_default());
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &p.config_map {
                r.config_maps.insert(cm.name.clone());
            }
            if let Some(s) = &p.secret {
                r.secrets.insert(s.name.clone());
            }
            if let Some(t) = &p.service_account_token {
                r.tokens.insert(TokenSpec {
                    audience: t.audience.clone().unwrap_or_default(),
                    expiration_seconds: t.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS),
                });
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        r.secrets.insert(s.name.clone());
    }
    r.config_maps.retain(|n| !n.is_empty());
    r.secrets.retain(|n| !n.is_empty());
    r
}

/// The value of a downward API `fieldRef` (`ExtractFieldPathAsString` and
/// `podFieldSelectorRuntimeValue` in the kubelet). `status.podIP(s)` and `status.hostIP(s)` are
/// run-time segments.
///
/// # Errors
/// [`Unsupported`] on `field` for a path the downward API does not define.
pub fn field_ref(pod: &Pod, field: &str, sel: &ObjectFieldSelector) -> Result<Value, Unsupported> {
    let meta = &pod.metadata;
    let path = sel.field_path.as_str();
    let text = |s: Option<&String>| Ok(Value::text(s.cloned().unwrap_or_default()));
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
    };
    match path {
        "metadata.name" => text(meta.name.as_ref()),
        "metadata.namespace" => text(meta.namespace.as_ref()),
        "metadata.uid" => text(meta.uid.as_ref()),
        "metadata.labels" => {
            Ok(Value::text(env::format_map(&meta.labels.clone().unwrap_or_default())))
        }
        "metadata.annotations" => {
            Ok(Value::text(env::format_map(&meta.annotations.clone().unwrap_or_default())))
        }
        "spec.nodeName" => text(pod.spec.as_ref().and_then(|s| s.node_name.as_ref())),
        "spec.serviceAccountName" => {
            text(pod.spec.as_ref().and_then(|s| s.service_account_name.as_ref()))
        }
        "status.podIP" | "status.podIPs" => Ok(Value(vec![Segment::PodIp])),
        "status.hostIP" | "status.hostIPs" => Ok(Value(vec![Segment::HostIp])),
        _ => {
            if let Some(k) = subscript("metadata.labels") {
                return text(meta.labels.as_ref().and_then(|l| l.get(k)));
            }
            if let Some(k) = subscript("metadata.annotations") {
                return text(meta.annotations.as_ref().and_then(|a| a.get(k)));
            }
            Err(Unsupported::new(
                format!("{field}.fieldPath"),
                format!("field path {path:?} is not supported by the downward API"),
            ))
        }
    }
}

/// The value of a `resourceFieldRef` for `container` (`ExtractContainerResourceValue`): the
/// request or limit divided by `divisor` and rounded up; a divisor left out, which the API server
/// stores as `"0"`, is 1 (one core, one byte); a limit the container does not set is the node's
/// allocatable amount, a request it does not set is 0.
///
/// # Errors
/// [`Unsupported`] on `field` for an unknown resource, a malformed quantity, or a divisor smaller
/// than the unit the resource is read in (below one millicore or one byte).
pub fn resource_field_ref(
    field: &str,
    container: &Container,
    sel: &ResourceFieldSelector,
    node: &NodeCapacity,
) -> Result<String, Unsupported> {
    let r = container.resources.as_ref();
    let get = |kind: &str, name: &str| {
        let m = if kind == "limits" {
            r.and_then(|r| r.limits.as_ref())
        } else {
            r.and_then(|r| r.requests.as_ref())
        };
        m.and_then(|m| m.get(name)).map(|q| q.0.clone())
    };
    let parse =
        |f: &str, q: &str| Quantity::parse(q).map_err(|e| Unsupported::new(f.to_owned(), e));
    let divisor_text = sel.divisor.as_ref().map_or("1", |d| d.0.as_str()).to_owned();
    let mut divisor = parse(&format!("{field}.divisor"), &divisor_text)?;
    if divisor.is_zero() {
        divisor = parse(&format!("{field}.divisor"), "1")?;
    }
    let (kind, name) = sel.resource.split_once('.').ok_or_else(|| {
        Unsupported::new(
            format!("{field}.resource"),
            format!("unknown resource {:?}", sel.resource),
        )
    })?;
    // Values in the smallest unit each resource is read at: millicores for CPU, bytes otherwise.
    let (value, div) = match name {
        "cpu" => {
            let v = match get(kind, "cpu") {
                Some(q) => parse(field, &q)?.to_units(-3),
                None if kind == "limits" => Some(node.cpu_millis),
                None => Some(0),
            };
            (v, divisor.to_units(-3))
        }
        "memory" | "ephemeral-storage" => {
            let fallback =
                if name == "memory" { node.memory_bytes } else { node.ephemeral_storage_bytes };
            let v = match get(kind, name) {
                Some(q) => parse(field, &q)?.to_units(0),
                None if kind == "limits" => Some(fallback),
                None => Some(0),
            };
            (v, divisor.to_units(0))
        }
        _ => (None, None),
    };
    if !matches!(kind, "limits" | "requests")
        || !matches!(name, "cpu" | "memory" | "ephemeral-storage")
    {
        return Err(Unsupported::new(
            format!("{field}.resource"),
            format!("unknown resource {:?}", sel.resource),
        ));
    }
    let value = value.ok_or_else(|| Unsupported::new(field.to_owned(), "quantity out of range"))?;
    let div = div.filter(|d| *d > 0).ok_or_else(|| {
        Unsupported::new(
            format!("{field}.divisor"),
            format!("{divisor_text:?} is not a usable divisor"),
        )
    })?;
    Ok(value.div_ceil(div).to_string())
}

/// Where a key lookup of `env[].valueFrom` or `envFrom` went.
enum Lookup<'a> {
    Found(&'a BTreeMap<String, Vec<u8>>),
    Absent,
}

fn lookup<'a>(
    objects: &'a BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    name: &str,
) -> Lookup<'a> {
    match objects.get(name) {
        Some(Some(d)) => Lookup::Found(d),
        _ => Lookup::Absent,
    }
}

/// Builds the environment of `container` (index `field` in the pod) as the kubelet does, with the
/// Warning events it would record in `notices`.
///
/// # Errors
/// - [`Missing`] when a mandatory ConfigMap, Secret or key is absent (upstream's
///   `MandatoryConfigMapNotFound`, `MandatoryConfigMapKeyNotFound`, `MandatorySecretNotFound`,
///   `MandatorySecretKeyNotFound`): the container cannot be created yet;
/// - [`Unsupported`] for an unsupported field path or resource.
pub fn container_env(
    pod: &Pod,
    field: &str,
    container: &Container,
    inputs: &Inputs,
    notices: &mut Vec<Notice>,
) -> Result<Vec<EnvVar>, EnvError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let service_env = service_env(pod, ns, inputs);
    let mut envs = Env::default();
    for (i, from) in container.env_from.iter().flatten().enumerate() {
        env_from(&mut envs, ns, &format!("{field}.envFrom[{i}]"), from, inputs, notices)?;
    }
    for (i, e) in container.env.iter().flatten().enumerate() {
        let f = format!("{field}.env[{i}]");
        let value = match &e.value_from {
            None => {
                let lookup = |n: &str| envs.get(n).or_else(|| service_env.get(n)).cloned();
                env::expand(e.value.as_deref().unwrap_or_default(), lookup)
            }
            Some(from) => match value_from(pod, ns, &f, container, from, inputs, notices)? {
                Some(v) => v,
                None => continue,
            },
        };
        envs.set(&e.name, value);
    }
    // Service variables the container did not define come last (kubelet order).
    for v in service_env.into_vars() {
        if envs.get(&v.name).is_none() {
            envs.set(&v.name, v.value);
        }
    }
    Ok(envs.into_vars())
}

/// The service link variables of the pod's container (`getServiceEnvVarMap`): those of
/// `default/kubernetes` always, and of every Service of namespace `ns` unless the pod turns
/// `enableServiceLinks` off.
fn service_env(pod: &Pod, ns: &str, inputs: &Inputs) -> Env {
    let mut service_env = Env::default();
    let links = pod.spec.as_ref().is_none_or(|s| s.enable_service_links != Some(false));
    let mut seen = BTreeSet::new();
    // `default/kubernetes` first so a same-named Service of the pod's namespace cannot shadow it
    // when links are off, and wins when on (the kubelet's map: the namespace's entry replaces it).
    let mut services: Vec<&ServiceInfo> = inputs
        .services
        .iter()
        .filter(|s| s.namespace == "default" && s.name == "kubernetes")
        .collect();
    if links {
        services.extend(inputs.services.iter().filter(|s| s.namespace == ns));
    }
    let mut by_name: BTreeMap<&str, &ServiceInfo> = BTreeMap::new();
    for s in services {
        by_name.insert(s.name.as_str(), s);
    }
    for s in by_name.values() {
        if seen.insert(s.name.clone()) {
            for v in env::service_vars(&s.name, &s.cluster_ip, &s.ports) {
                service_env.set(&v.name, v.value);
            }
        }
    }
    service_env
}

/// Adds to `envs` the variables of `envFrom` source `from` (at path `f`): every key of the
/// ConfigMap or Secret with the source's prefix, Secret data as such. An absent optional object is
/// passed over with an `Optional...NotFound` notice; keys that are not valid variable names are
/// skipped with one `InvalidEnvironmentVariableNames` notice.
///
/// # Errors
/// [`Missing`] for an absent mandatory object; [`Unsupported`] when `from` names neither a
/// ConfigMap nor a Secret.
fn env_from(
    envs: &mut Env,
    ns: &str,
    f: &str,
    from: &EnvFromSource,
    inputs: &Inputs,
    notices: &mut Vec<Notice>,
) -> Result<(), EnvError> {
    let prefix = from.prefix.clone().unwrap_or_default();
    let (kind, name, optional, objects, secret) = match (&from.config_map_ref, &from.secret_ref) {
        (Some(c), _) => {
            ("ConfigMap", &c.name, c.optional == Some(true), &inputs.config_maps, false)
        }
        (None, Some(s)) => ("Secret", &s.name, s.optional == Some(true), &inputs.secrets, true),
        (None, None) => {
            return Err(Unsupported::new(
                f,
                "envFrom names neither a configMapRef nor a secretRef",
            )
            .into());
        }
    };
    let data = match lookup(objects, name) {
        Lookup::Found(d) => d,
        Lookup::Absent => {
            let msg = format!("{} {ns}/{name} not found", kind.to_lowercase());
            if optional {
                notices.push(Notice::new(optional_reason(kind, false), msg));
                return Ok(());
            }
            return Err(Missing::new(mandatory_reason(kind, false), msg).into());
        }
    };
    let mut invalid = Vec::new();
    for (k, v) in data {
        let name = format!("{prefix}{k}");
        if !env::is_valid_name(&name) {
            invalid.push(name);
            continue;
        }
        let v = String::from_utf8_lossy(v).into_owned();
        envs.set(&name, Value(vec![if secret { Segment::Secret(v) } else { Segment::Text(v) }]));
    }
    if !invalid.is_empty() {
        notices.push(Notice::new(
            "InvalidEnvironmentVariableNames",
            format!(
                "Keys [{}] from the EnvFrom {} {ns}/{name} were skipped since they are considered invalid environment variable names.",
                invalid.join(", "),
                if secret { "secret" } else { "configMap" },
            ),
        ));
    }
    Ok(())
}

/// The value of `env[].valueFrom` `from` (at path `f`) of `container`: a downward API field, a
/// resource, a ConfigMap's or a Secret's key (Secret data as such). `None` when an optional
/// object or key is absent (with its notice): the variable is left out.
///
/// # Errors
/// [`Unsupported`] unless exactly one source is set, for `fileKeyRef`, and for what
/// [`field_ref`] and [`resource_field_ref`] refuse; [`Missing`] for an absent mandatory object or
/// key.
fn value_from(
    pod: &Pod,
    ns: &str,
    f: &str,
    container: &Container,
    from: &EnvVarSource,
    inputs: &Inputs,
    notices: &mut Vec<Notice>,
) -> Result<Option<Value>, EnvError> {
    let set = [
        from.field_ref.is_some(),
        from.resource_field_ref.is_some(),
        from.config_map_key_ref.is_some(),
        from.secret_key_ref.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(Unsupported::new(
            format!("{f}.valueFrom"),
            "exactly one of fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef must be set",
        )
        .into());
    }
    if from.file_key_ref.is_some() {
        return Err(Unsupported::new(format!("{f}.valueFrom.fileKeyRef"), "not supported").into());
    }
    let value = if let Some(sel) = &from.field_ref {
        field_ref(pod, &format!("{f}.valueFrom.fieldRef"), sel)?
    } else if let Some(sel) = &from.resource_field_ref {
        let target = match sel.container_name.as_deref().filter(|n| !n.is_empty()) {
            None => container,
            Some(n) => find_container(pod, n).ok_or_else(|| {
                Unsupported::new(
                    format!("{f}.valueFrom.resourceFieldRef.containerName"),
                    format!("no container named {n:?}"),
                )
            })?,
        };
        let v = resource_field_ref(
            &format!("{f}.valueFrom.resourceFieldRef"),
            target,
            sel,
            &inputs.node_allocatable,
        )?;
        Value::text(v)
    } else if let Some(sel) = &from.config_map_key_ref {
        match key_ref(ns, "ConfigMap", KeyRef::from(sel), &inputs.config_maps, notices)? {
            Some(v) => Value::text(v),
            None => return Ok(None),
        }
    } else if let Some(sel) = &from.secret_key_ref {
        match key_ref(ns, "Secret", KeyRef::from(sel), &inputs.secrets, notices)? {
            Some(v) => Value(vec![Segment::Secret(v)]),
            None => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    Ok(Some(value))
}

/// Why an environment could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvError {
    /// The pod can never be run as written.
    Unsupported(Unsupported),
    /// An input the pod needs is absent; it may appear later.
    Missing(Missing),
}

impl From<Unsupported> for EnvError {
    fn from(e: Unsupported) -> Self {
        Self::Unsupported(e)
    }
}

impl From<Missing> for EnvError {
    fn from(e: Missing) -> Self {
        Self::Missing(e)
    }
}

struct KeyRef<'a> {
    name: &'a str,
    key: &'a str,
    optional: bool,
}

impl<'a> From<&'a ConfigMapKeySelector> for KeyRef<'a> {
    fn from(s: &'a ConfigMapKeySelector) -> Self {
        Self { name: &s.name, key: &s.key, optional: s.optional == Some(true) }
    }
}

impl<'a> From<&'a SecretKeySelector> for KeyRef<'a> {
    fn from(s: &'a SecretKeySelector) -> Self {
        Self { name: &s.name, key: &s.key, optional: s.optional == Some(true) }
    }
}

fn key_ref(
    ns: &str,
    kind: &str,
    r: KeyRef<'_>,
    objects: &BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    notices: &mut Vec<Notice>,
) -> Result<Option<String>, EnvError> {
    let lower = kind.to_lowercase();
    let (key_missing, msg) = match lookup(objects, r.name) {
        Lookup::Found(d) => match d.get(r.key) {
            Some(v) => return Ok(Some(String::from_utf8_lossy(v).into_owned())),
            None => (true, format!("key {:?} not found in {lower} {ns}/{}", r.key, r.name)),
        },
        Lookup::Absent => (false, format!("{lower} {ns}/{} not found", r.name)),
    };
    if r.optional {
        notices.push(Notice::new(optional_reason(kind, key_missing), msg));
        Ok(None)
    } else {
        Err(Missing::new(mandatory_reason(kind, key_missing), msg).into())
    }
}

fn optional_reason(kind: &str, key: bool) -> &'static str {
    match (kind, key) {
        ("ConfigMap", false) => "OptionalConfigMapNotFound",
        ("ConfigMap", true) => "OptionalConfigMapKeyNotFound",
        (_, false) => "OptionalSecretNotFound",
        (_, true) => "OptionalSecretKeyNotFound",
    }
}

fn mandatory_reason(kind: &str, key: bool) -> &'static str {
    match (kind, key) {
        ("ConfigMap", false) => "MandatoryConfigMapNotFound",
        ("ConfigMap", true) => "MandatoryConfigMapKeyNotFound",
        (_, false) => "MandatorySecretNotFound",
        (_, true) => "MandatorySecretKeyNotFound",
    }
}

/// The container (init or app) named `name` in `pod`.
pub fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kubelet's `ExtractContainerResourceValue`: the API server stores a divisor left out
    /// as `"0"`, which means 1; a limit not set is the node's allocatable; values round up.
    #[test]
    fn resource_field_refs_divide_as_the_kubelet_does() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "resources": {"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}
        }))
        .unwrap_or_default();
        let node =
            NodeCapacity { cpu_millis: 2500, memory_bytes: 8 << 30, ..NodeCapacity::default() };
        let value = |resource: &str, divisor: Option<&str>| {
            let sel = ResourceFieldSelector {
                container_name: None,
                resource: resource.into(),
                divisor: divisor
                    .map(|d| k8s_openapi::apimachinery::pkg::api::resource::Quantity(d.into())),
            };
            resource_field_ref("env[0].valueFrom.resourceFieldRef", &c, &sel, &node)
        };
        for (resource, divisor, want) in [
            ("requests.cpu", Some("0"), "1"),
            ("requests.cpu", None, "1"),
            ("requests.cpu", Some("1m"), "250"),
            ("limits.cpu", Some("0"), "3"),
            ("limits.cpu", Some("1m"), "2500"),
            ("requests.memory", Some("0"), "33554432"),
            ("limits.memory", Some("1Mi"), "64"),
            ("limits.memory", Some("1Gi"), "1"),
            ("requests.ephemeral-storage", Some("0"), "0"),
        ] {
            assert_eq!(value(resource, divisor).as_deref(), Ok(want), "{resource} / {divisor:?}");
        }
    }

    #[test]
    fn debug_names_secret_keys_and_hides_values_and_tokens() {
        let mut inputs = Inputs::default();
        inputs.secrets.insert("db".into(), Some([("password".into(), b"hunter2".to_vec())].into()));
        inputs.secrets.insert("gone".into(), None);
        let spec = TokenSpec { audience: "api".into(), expiration_seconds: 3600 };
        inputs.tokens.insert(spec, "eyJ-token".into());
        let shown = format!("{inputs:?}");
        assert!(shown.contains(r#""db": Some(["password"])"#), "{shown}");
        assert!(shown.contains(r#""gone": None"#), "{shown}");
        assert!(shown.contains("audience: \"api\""), "{shown}");
        assert!(!shown.contains("hunter2") && !shown.contains("104, 117"), "{shown}");
        assert!(!shown.contains("eyJ-token"), "{shown}");
    }
}
