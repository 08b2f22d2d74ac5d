//! The policy file (`--policy-file`): rules that widen what the pods of some Kubernetes
//! namespaces may choose. A rule's generic keys (its name, the namespaces it selects, the probe
//! hosts it allows) are read here; the provider's keys are flattened into the same table and
//! read by the provider's [`RuleGrant`].

use std::path::Path;

use vk_domain::policy::{HostPattern, NamespaceSelector, ProbeGrant};

/// A rule of `--policy-file`: what the pods of the namespaces it selects may choose, besides
/// what the settings allow every namespace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyRule<G> {
    /// Its name, shown in refusals.
    pub name: String,
    /// The namespaces it selects.
    pub namespaces: NamespaceSelector,
    /// What it allows on the provider's side.
    pub grant: G,
    /// The hosts probes may name.
    pub probes: ProbeGrant,
}

/// The provider's keys of a policy-file rule, as written (flattened into the rule's table, so
/// they must not be named like its generic keys: `name`, `namespaces`, `selector`,
/// `allowed_probe_hosts`), and their check.
pub trait RuleGrant: serde::de::DeserializeOwned {
    /// What the provider is granted.
    type Grant: Clone + std::fmt::Debug + PartialEq;

    /// The grant, every value checked as its flag would check it.
    ///
    /// # Errors
    /// `<key>: <why>` for the first value refused.
    fn into_grant(self) -> Result<Self::Grant, String>;
}

/// No provider keys: a policy file of probe hosts only.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
pub struct NoGrant {}

impl RuleGrant for NoGrant {
    type Grant = NoGrant;

    fn into_grant(self) -> Result<Self, String> {
        Ok(self)
    }
}

/// The rules of a policy file (TOML, one `[[rule]]` table each):
///
/// ```toml
/// [[rule]]
/// name = "infra"                          # shown in refusals
/// namespaces = ["infra"]                  # Kubernetes namespaces by name, and/or
/// selector = { matchLabels = { "example.com/trust" = "high" } }   # a metav1.LabelSelector
/// allowed_probe_hosts = ["10.1.0.0/16"]   # as --allowed-probe-hosts
/// allowed_drivers = ["raw_exec"]          # the provider's keys (G), e.g. Nomad's
/// ```
///
/// # Errors
/// A message naming the rule and the key: unreadable or malformed file, an unknown key, a rule
/// without a name or selecting nothing, a value its flag would refuse.
pub(super) fn read_policy_file<G: RuleGrant>(
    path: &Path,
) -> Result<Vec<PolicyRule<G::Grant>>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File<G> {
        #[serde(default = "Vec::new")]
        rule: Vec<RawRule<G>>,
    }
    // `deny_unknown_fields` with a flattened field: serde refuses the keys neither takes.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawRule<G> {
        name: String,
        #[serde(default)]
        namespaces: Vec<String>,
        selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
        #[serde(default)]
        allowed_probe_hosts: Vec<String>,
        #[serde(flatten)]
        grant: G,
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let file: File<G> = toml::from_str(&text).map_err(|e| e.to_string())?;
    let mut names = std::collections::BTreeSet::new();
    file.rule
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let at = |key: &str| format!("rule {} ({:?}): {key}", i + 1, r.name);
            if r.name.trim().is_empty() {
                return Err(format!("rule {}: name is empty", i + 1));
            }
            if !names.insert(r.name.clone()) {
                return Err(format!("{}: a rule of that name comes earlier", at("name")));
            }
            let namespaces = NamespaceSelector {
                names: r.namespaces.iter().cloned().collect(),
                labels: r.selector.clone(),
            };
            namespaces.check().map_err(|e| format!("{}: {e}", at("namespaces, selector")))?;
            let prefix = at("");
            let grant = r.grant.into_grant().map_err(|e| format!("{prefix}{e}"))?;
            let hosts = r
                .allowed_probe_hosts
                .iter()
                .map(|h| {
                    HostPattern::parse(h).map_err(|e| format!("{}: {e}", at("allowed_probe_hosts")))
                })
                .collect::<Result<_, _>>()?;
            Ok(PolicyRule { name: r.name, namespaces, grant, probes: ProbeGrant { hosts } })
        })
        .collect()
}
