//! What the operator lets pods choose on the Nomad side through annotations: the task driver, the
//! Nomad namespace and region, the node pool, the datacenters, the priority and the network mode.
//!
//! Pod Security admission cannot see annotations, so each of these is a door the operator opens
//! deliberately: the base grant comes from the settings (`--allowed-drivers`, ...), rules of the
//! policy file widen it for the namespaces they select ([`vk_domain::policy::Rules`]). Whatever the
//! grants, a pod may always ask for what it would get without asking (the operator's own
//! `--nomad-driver`, `--nomad-namespace`, `--nomad-region`, `--nomad-datacenters`, its driver's
//! network mode: `bridge` on docker and exec, `host` on raw_exec) and may lower its priority. The
//! host's network on docker and exec is a grant whether asked by annotation or by
//! `spec.hostNetwork`. Anything else is refused before a single request reaches Nomad, with an
//! error naming the field, the value, and the setting and rules that refused it.

use vk_domain::error::Unsupported;
use vk_domain::policy::{Applicable, Rules, list};

/// Nomad's default job priority; pods get it unless they ask for another.
pub const DEFAULT_PRIORITY: u8 = 50;

/// What one grant (the settings, or one policy-file rule) lets pods choose. Empty lists allow
/// nothing beyond the operator's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NomadGrant {
    /// Task drivers (`docker`, `raw_exec`, `exec`) of `nomad.hashicorp.com/driver`.
    pub drivers: Vec<String>,
    /// Nomad namespaces of `nomad.hashicorp.com/namespace`.
    pub namespaces: Vec<String>,
    /// Nomad regions of `nomad.hashicorp.com/region`.
    pub regions: Vec<String>,
    /// Node pools of `nomad.hashicorp.com/node-pool`.
    pub node_pools: Vec<String>,
    /// Group network modes (`host`, `bridge`, `none`, `cni/<name>`) of
    /// `nomad.hashicorp.com/network-mode`.
    pub network_modes: Vec<String>,
    /// Datacenters, or patterns with `*` as Nomad reads them, that
    /// `nomad.hashicorp.com/datacenters` may name.
    pub datacenters: Vec<String>,
    /// The highest `nomad.hashicorp.com/priority` (1 to 100); `None` adds nothing to
    /// [`DEFAULT_PRIORITY`].
    pub max_priority: Option<u8>,
}

/// The field of annotation `key`.
fn ann(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// The Nomad policy: the settings' grant and the policy file's rules.
pub type NomadPolicy = Rules<NomadGrant>;

/// What the operator's own settings give every pod, which it may always ask for by name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Own<'a> {
    pub(crate) driver: &'a str,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) region: Option<&'a str>,
    pub(crate) datacenters: &'a [String],
    pub(crate) node_pool: Option<&'a str>,
    pub(crate) network_mode: &'a str,
}

/// One choice a pod's annotations make, checked against the grants of its namespace.
pub(crate) struct Check<'a, 'g> {
    pub(crate) namespace: &'a str,
    pub(crate) applicable: &'a Applicable<'g, NomadGrant>,
    pub(crate) own: Own<'a>,
}

impl Check<'_, '_> {
    fn refuse(
        &self,
        field: String,
        value: &str,
        what: &str,
        own: &[String],
        flag: &str,
        granted: impl Fn(&NomadGrant) -> &Vec<String>,
    ) -> Unsupported {
        let mut allowed: Vec<String> = own.to_vec();
        for g in &self.applicable.grants {
            for v in granted(g) {
                if !allowed.contains(v) {
                    allowed.push(v.clone());
                }
            }
        }
        let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        Unsupported::new(
            field,
            format!(
                "{what} {value:?} is not allowed in namespace {:?} (allowed: {}; set by {flag} and the policy file; {})",
                self.namespace,
                list(&allowed),
                self.applicable.describe(self.namespace)
            ),
        )
    }

    fn granted(&self, value: &str, f: impl Fn(&NomadGrant) -> &Vec<String>) -> bool {
        self.applicable.grants.iter().any(|g| f(g).iter().any(|v| v == value))
    }

    /// The task driver.
    pub(crate) fn driver(&self, annotation: &str, d: &str) -> Result<(), Unsupported> {
        if d == self.own.driver || self.granted(d, |g| &g.drivers) {
            return Ok(());
        }
        Err(self.refuse(
            ann(annotation),
            d,
            "task driver",
            &[self.own.driver.to_owned()],
            "--allowed-drivers",
            |g| &g.drivers,
        ))
    }

    /// The Nomad namespace (the operator's, else `default`, may always be named).
    pub(crate) fn namespace(&self, annotation: &str, n: &str) -> Result<(), Unsupported> {
        let own = self.own.namespace.unwrap_or("default");
        if n == own || self.granted(n, |g| &g.namespaces) {
            return Ok(());
        }
        Err(self.refuse(
            ann(annotation),
            n,
            "Nomad namespace",
            &[own.to_owned()],
            "--allowed-nomad-namespaces",
            |g| &g.namespaces,
        ))
    }

    /// The Nomad region.
    pub(crate) fn region(&self, annotation: &str, r: &str) -> Result<(), Unsupported> {
        let own: Vec<String> = self.own.region.map(str::to_owned).into_iter().collect();
        if own.iter().any(|o| o == r) || self.granted(r, |g| &g.regions) {
            return Ok(());
        }
        Err(self
            .refuse(ann(annotation), r, "Nomad region", &own, "--allowed-regions", |g| &g.regions))
    }

    /// The node pool.
    pub(crate) fn node_pool(&self, annotation: &str, p: &str) -> Result<(), Unsupported> {
        if self.own.node_pool == Some(p) || self.granted(p, |g| &g.node_pools) {
            return Ok(());
        }
        let own: Vec<String> = self.own.node_pool.map(str::to_owned).into_iter().collect();
        Err(self.refuse(
            ann(annotation),
            p,
            "node pool",
            &own,
            "--nomad-node-pool, --allowed-node-pools",
            |g| &g.node_pools,
        ))
    }

    /// The group network mode, chosen by `field` (the annotation, or `spec.hostNetwork`).
    pub(crate) fn network_mode(&self, field: String, m: &str) -> Result<(), Unsupported> {
        if m == self.own.network_mode || self.granted(m, |g| &g.network_modes) {
            return Ok(());
        }
        Err(self.refuse(
            field,
            m,
            "network mode",
            &[self.own.network_mode.to_owned()],
            "--allowed-network-modes",
            |g| &g.network_modes,
        ))
    }

    /// Each datacenter (or pattern) must lie within a pattern the operator allows.
    pub(crate) fn datacenters(&self, annotation: &str, dcs: &[String]) -> Result<(), Unsupported> {
        for dc in dcs {
            let covered = self
                .own
                .datacenters
                .iter()
                .chain(self.applicable.grants.iter().flat_map(|g| &g.datacenters))
                .any(|p| glob_covers(p, dc));
            if !covered {
                return Err(self.refuse(
                    ann(annotation),
                    dc,
                    "datacenter",
                    self.own.datacenters,
                    "--nomad-datacenters, --allowed-datacenters",
                    |g| &g.datacenters,
                ));
            }
        }
        Ok(())
    }

    /// The priority, 1 to the highest any grant allows ([`DEFAULT_PRIORITY`] at least).
    pub(crate) fn priority(&self, annotation: &str, p: i32) -> Result<(), Unsupported> {
        let max = self
            .applicable
            .grants
            .iter()
            .filter_map(|g| g.max_priority)
            .fold(DEFAULT_PRIORITY, u8::max);
        if (1..=i32::from(max)).contains(&p) {
            return Ok(());
        }
        Err(Unsupported::new(
            format!("metadata.annotations[{annotation}]"),
            format!(
                "priority {p} is not allowed in namespace {:?} (1 to {max}; set by --max-priority and the policy file; {})",
                self.namespace,
                self.applicable.describe(self.namespace)
            ),
        ))
    }
}

/// Whether every datacenter that `dc` can select (read as a Nomad pattern, `*` matching any run of
/// characters) is selected by `pattern`: `pattern` matches the text of `dc`, its `*` taken
/// literally. Then each `*` of `dc` lies inside a run matched by a `*` of `pattern`.
pub fn glob_covers(pattern: &str, dc: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), dc.chars().collect());
    // Classic wildcard matching with back-tracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if i < p.len() && p[i] == t[j] {
            i += 1;
            j += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datacenter_patterns_cover_what_they_select() {
        for (p, dc, want) in [
            ("*", "dc1", true),
            ("*", "us-*", true),
            ("dc1", "dc1", true),
            ("dc1", "dc2", false),
            ("us-*", "us-east-1", true),
            ("us-*", "us-*", true),
            ("us-*", "us-e*", true),
            ("us-*", "u*", false),
            ("us-*", "*", false),
            ("dc1", "*", false),
            ("a*c", "abbc", true),
            ("a*c", "a*xc", true),
            ("a*c", "abcd", false),
        ] {
            assert_eq!(glob_covers(p, dc), want, "{p} covers {dc}");
        }
    }
}
