//! The operator's policy: what a pod author may choose beyond the pod spec the API server checks.
//!
//! A pod never chooses what the operator did not allow. Choices that Pod Security admission cannot
//! see (a backend's annotations) and those that reach past the pod (a probe's `host`) are granted
//! by the operator: a base grant for every namespace (the settings), widened for some namespaces
//! by rules that select them by name or by a label selector (the policy file). A namespace gets
//! the union of the base grant and of every rule that selects it; a fresh install grants nothing.
//!
//! This module holds what is common to every backend: the rules and their namespace selection
//! ([`Rules`], [`NamespaceSelector`], matched as `metav1.LabelSelector` is), and the probe grant
//! ([`ProbeGrant`]: which hosts a probe may name, [`check_probes`]). A backend defines its own
//! grant type for its own choices and asks [`Rules::for_namespace`] which grants apply.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::error::Unsupported;
use crate::lifecycle::Action;
use crate::probe::Handler;
use crate::workload::WorkloadSpec;

/// Which Kubernetes namespaces a rule applies to: those named, and those whose labels match the
/// selector (either suffices).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NamespaceSelector {
    /// Namespace names.
    pub names: BTreeSet<String>,
    /// A label selector on the Namespace object (`matchLabels` and `matchExpressions` with `In`,
    /// `NotIn`, `Exists`, `DoesNotExist`), as in `metav1.LabelSelector`.
    pub labels: Option<LabelSelector>,
}

impl NamespaceSelector {
    /// Checks the selector's shape: it selects something, and its expressions are well formed.
    ///
    /// # Errors
    /// What is wrong, in a sentence: no names and no selector, an empty selector (which would
    /// select every namespace: say so with `matchExpressions` instead), an unknown operator,
    /// `In`/`NotIn` without values, `Exists`/`DoesNotExist` with values.
    pub fn check(&self) -> Result<(), String> {
        let Some(sel) = &self.labels else {
            return if self.names.is_empty() {
                Err("a rule needs namespace names or a label selector".into())
            } else {
                Ok(())
            };
        };
        let exprs = sel.match_expressions.as_deref().unwrap_or_default();
        if sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty) && exprs.is_empty() {
            return Err("an empty label selector would select every namespace".into());
        }
        for e in exprs {
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!("operator {} on {:?} needs values", e.operator, e.key));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!("operator {} on {:?} takes no values", e.operator, e.key));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err(format!(
                        "{other:?} is not a selector operator (In, NotIn, Exists, DoesNotExist)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether namespace `name`, labelled `labels`, is selected. Without labels (not read), only
    /// the names can select it.
    pub fn matches(&self, name: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        if self.names.contains(name) {
            return true;
        }
        match (&self.labels, labels) {
            (Some(sel), Some(l)) => selector_matches(sel, l),
            _ => false,
        }
    }
}

/// Whether `labels` match `sel`, with the semantics of `metav1.LabelSelectorAsSelector`: every
/// `matchLabels` pair equal, every expression true (`NotIn` and `DoesNotExist` hold for an absent
/// key). An operator it does not know matches nothing.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = sel.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    pairs
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let v = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => v.is_some_and(|v| values.contains(v)),
                "NotIn" => v.is_none_or(|v| !values.contains(v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        })
}

/// A rule of the policy file: a grant for the namespaces it selects.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule<G> {
    /// The rule's name, shown in refusals (`rule "infra"`).
    pub name: String,
    /// The namespaces it applies to.
    pub namespaces: NamespaceSelector,
    /// What it allows there.
    pub grant: G,
}

/// A base grant for every namespace and the rules that widen it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rules<G> {
    /// What every namespace is allowed (the settings).
    pub base: G,
    /// The policy file's rules, in order.
    pub rules: Vec<Rule<G>>,
}

/// The grants that apply to one namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Applicable<'a, G> {
    /// The base grant, then each selecting rule's.
    pub grants: Vec<&'a G>,
    /// The names of the selecting rules, in order.
    pub rules: Vec<&'a str>,
}

impl<G> Applicable<'_, G> {
    /// Says which rules applied, for a refusal: `no policy-file rule selects namespace "a"`, or
    /// `policy-file rules "infra", "gpu" select namespace "a"`.
    pub fn describe(&self, namespace: &str) -> String {
        if self.rules.is_empty() {
            format!("no policy-file rule selects namespace {namespace:?}")
        } else {
            let names: Vec<String> = self.rules.iter().map(|r| format!("{r:?}")).collect();
            format!("policy-file rules {} select namespace {namespace:?}", names.join(", "))
        }
    }
}

impl<G> Rules<G> {
    /// The base grant and those of the rules selecting namespace `name` (labelled `labels`, when
    /// they were read: see [`Rules::uses_labels`]).
    pub fn for_namespace(
        &self,
        name: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Applicable<'_, G> {
        let mut out = Applicable { grants: vec![&self.base], rules: Vec::new() };
        for r in self.rules.iter().filter(|r| r.namespaces.matches(name, labels)) {
            out.grants.push(&r.grant);
            out.rules.push(&r.name);
        }
        out
    }

    /// Whether some rule selects by label, so that a pod's namespace labels must be read before
    /// its grants are known.
    pub fn uses_labels(&self) -> bool {
        self.rules.iter().any(|r| r.namespaces.labels.is_some())
    }

    /// Every grant, base first.
    pub fn all(&self) -> impl Iterator<Item = &G> {
        std::iter::once(&self.base).chain(self.rules.iter().map(|r| &r.grant))
    }
}

/// A host a probe may name in `httpGet.host` or `tcpSocket.host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// One address.
    Ip(IpAddr),
    /// A network: address and prefix length.
    Cidr(IpAddr, u8),
    /// A DNS name, matched exactly (ASCII case ignored); what it resolves to is checked when the
    /// probe runs ([`never_dialled`]).
    Name(String),
}

impl HostPattern {
    /// Reads `10.0.0.7`, `10.0.0.0/8`, `fd00::/8` or `db.example.internal`.
    ///
    /// # Errors
    /// A malformed address, prefix or name, or an address or network that contains a loopback,
    /// link-local, unspecified or multicast address: those are never dialled by a probe.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some((addr, len)) = s.split_once('/') {
            let ip: IpAddr = addr.parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len: u8 = len
                .parse()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{len:?} is not a prefix length (0 to {max})"))?;
            let net = Self::Cidr(network(ip, len), len);
            if let Some(bad) = forbidden_overlap(network(ip, len), len) {
                return Err(format!(
                    "{s} overlaps {bad}: loopback, link-local, unspecified and multicast addresses are never probed"
                ));
            }
            return Ok(net);
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            if never_dialled(ip) {
                return Err(format!(
                    "{s} is a loopback, link-local, unspecified or multicast address, which is never probed"
                ));
            }
            return Ok(Self::Ip(ip));
        }
        let label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if s.len() > 253 || !s.split('.').all(label) {
            return Err(format!("{s:?} is neither an IP address, a network nor a DNS name"));
        }
        if s.eq_ignore_ascii_case("localhost") || s.to_ascii_lowercase().ends_with(".localhost") {
            return Err(format!("{s:?} names the loopback interface, which is never probed"));
        }
        Ok(Self::Name(s.to_ascii_lowercase()))
    }

    /// Whether `ip` is this address or inside this network.
    pub fn matches_ip(&self, ip: IpAddr) -> bool {
        // An IPv4 address and its IPv4-mapped IPv6 form are the same host.
        let forms = [ip, canonical(ip), IpAddr::V6(mapped(ip))];
        match self {
            Self::Ip(a) => canonical(*a) == canonical(ip),
            Self::Cidr(net, len) => {
                forms.iter().any(|f| f.is_ipv4() == net.is_ipv4() && network(*f, *len) == *net)
            }
            Self::Name(_) => false,
        }
    }

    /// Whether `host` (an address or a DNS name, as written in the probe) is allowed by this
    /// pattern.
    pub fn matches_host(&self, host: &str) -> bool {
        match (host.parse::<IpAddr>(), self) {
            (Ok(ip), _) => self.matches_ip(ip),
            (Err(_), Self::Name(n)) => n.eq_ignore_ascii_case(host.trim_end_matches('.')),
            (Err(_), _) => false,
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Cidr(ip, len) => write!(f, "{ip}/{len}"),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `ip` as an IPv6 address (IPv4 as IPv4-mapped).
fn mapped(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// `ip` with all but its first `len` bits cleared (`len` at most 32 for IPv4, 128 for IPv6).
fn network(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// The networks [`never_dialled`] covers, as (address, prefix length).
const FORBIDDEN: [(&str, u8); 9] = [
    ("127.0.0.0", 8),
    ("169.254.0.0", 16),
    ("0.0.0.0", 8),
    ("224.0.0.0", 4),
    ("255.255.255.255", 32),
    ("::1", 128),
    ("::", 128),
    ("fe80::", 10),
    ("ff00::", 8),
];

/// The first forbidden network that shares an address with `net/len`, if any (IPv4 networks
/// also in their IPv4-mapped IPv6 form).
fn forbidden_overlap(net: IpAddr, len: u8) -> Option<String> {
    FORBIDDEN.iter().find_map(|(addr, flen)| {
        let f: IpAddr = addr.parse().ok()?;
        let forms = match f {
            IpAddr::V4(_) => vec![(f, *flen), (IpAddr::V6(mapped(f)), flen + 96)],
            IpAddr::V6(_) => vec![(f, *flen)],
        };
        forms.into_iter().find_map(|(f, flen)| {
            let common = len.min(flen);
            (f.is_ipv4() == net.is_ipv4() && network(f, common) == network(net, common))
                .then(|| format!("{addr}/{flen}"))
        })
    })
}

/// Addresses no probe ever dials unless the backend reports them as the pod's own: loopback
/// (the virtual kubelet's own services), link-local (cloud metadata at 169.254.169.254),
/// unspecified, multicast and broadcast.
pub fn never_dialled(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => {
            a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast()
        }
        IpAddr::V6(a) => {
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// What a namespace's probes may reach besides the pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeGrant {
    /// Hosts `httpGet.host` and `tcpSocket.host` may name.
    pub hosts: Vec<HostPattern>,
}

/// Whether a probe may name `host`, by any of `grants`.
pub fn probe_host_allowed<'a>(
    host: &str,
    grants: impl IntoIterator<Item = &'a ProbeGrant>,
) -> bool {
    if host.parse::<IpAddr>().is_ok_and(never_dialled) {
        return false;
    }
    grants.into_iter().flat_map(|g| &g.hosts).any(|p| p.matches_host(host))
}

/// Checks every probe and lifecycle hook `host` of `spec` against the rules: a probe or hook
/// reaches the pod's own address unless the operator allowed the host it names.
///
/// # Errors
/// [`Unsupported`] naming the `host` field (`spec.containers[0].readinessProbe.httpGet.host`)
/// and the setting and rules that refused it.
pub fn check_probes(spec: &WorkloadSpec, rules: &Rules<ProbeGrant>) -> Result<(), Unsupported> {
    let ns = spec.key.namespace();
    let applicable = rules.for_namespace(ns, spec.namespace_labels.as_ref());
    let containers = spec
        .init_containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("spec.initContainers[{i}]"), c))
        .chain(
            spec.containers.iter().enumerate().map(|(i, c)| (format!("spec.containers[{i}]"), c)),
        );
    for (field, c) in containers {
        let probes = [
            ("readinessProbe", c.readiness.as_ref().map(|p| &p.handler)),
            ("livenessProbe", c.liveness.as_ref().map(|p| &p.handler)),
            ("startupProbe", c.startup.as_ref().map(|p| &p.handler)),
        ];
        // Lifecycle hooks' httpGet reach hosts as probes do, under the same rules.
        fn hook(a: &Option<Action>) -> Option<&Handler> {
            match a {
                Some(Action::Run(h)) => Some(h),
                _ => None,
            }
        }
        let hooks = [
            ("lifecycle.postStart", hook(&c.hooks.post_start)),
            ("lifecycle.preStop", hook(&c.hooks.pre_stop)),
        ];
        for (name, handler) in probes.into_iter().chain(hooks) {
            let Some(handler) = handler else { continue };
            let (kind, host) = match handler {
                Handler::Http { host: Some(h), .. } => ("httpGet", h),
                Handler::Tcp { host: Some(h), .. } => ("tcpSocket", h),
                _ => continue,
            };
            if probe_host_allowed(host, applicable.grants.iter().copied()) {
                continue;
            }
            let why = if host.parse::<IpAddr>().is_ok_and(never_dialled) {
                "is a loopback, link-local, unspecified or multicast address, which is never probed"
                    .to_owned()
            } else {
                format!(
                    "is not allowed: a probe reaches the pod's own address unless the operator allows the host it names (--allowed-probe-hosts allows {}; {})",
                    list(&rules.base.hosts),
                    applicable.describe(ns)
                )
            };
            return Err(Unsupported::new(
                format!("{field}.{name}.{kind}.host"),
                format!("{host:?} {why}"),
            ));
        }
    }
    Ok(())
}

/// A list for a message: `none`, or the items joined with `, `.
pub fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn selectors_match_as_the_api_machinery_does() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("team", "infra")])),
            match_expressions: Some(vec![
                req("tier", "In", &["a", "b"]),
                req("env", "NotIn", &["prod"]),
                req("owner", "Exists", &[]),
                req("frozen", "DoesNotExist", &[]),
            ]),
        };
        let base = [("team", "infra"), ("tier", "a"), ("owner", "x")];
        assert!(selector_matches(&sel, &labels(&base)));
        let with = |extra: (&'static str, &'static str)| {
            let mut l = labels(&base);
            l.insert(extra.0.into(), extra.1.into());
            selector_matches(&sel, &l)
        };
        assert!(with(("env", "dev")), "NotIn holds for another value");
        assert!(!with(("env", "prod")));
        assert!(!with(("frozen", "")));
        assert!(!with(("tier", "c")));
        assert!(!with(("team", "apps")));
        assert!(!selector_matches(&sel, &labels(&[("team", "infra"), ("tier", "a")])), "owner");
        let odd = LabelSelector {
            match_expressions: Some(vec![req("a", "Gt", &["1"])]),
            ..Default::default()
        };
        assert!(!selector_matches(&odd, &labels(&[("a", "2")])));
    }

    #[test]
    fn selectors_are_checked() {
        let names = NamespaceSelector { names: ["a".to_owned()].into(), labels: None };
        assert_eq!(names.check(), Ok(()));
        assert!(NamespaceSelector::default().check().is_err());
        let empty =
            NamespaceSelector { labels: Some(LabelSelector::default()), ..Default::default() };
        assert!(empty.check().unwrap_err().contains("every namespace"));
        for (r, want) in [
            (req("a", "In", &[]), "needs values"),
            (req("a", "Exists", &["x"]), "takes no values"),
            (req("a", "Gt", &["1"]), "not a selector operator"),
        ] {
            let s = NamespaceSelector {
                labels: Some(LabelSelector {
                    match_expressions: Some(vec![r]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            assert!(s.check().unwrap_err().contains(want), "{want}");
        }
    }

    #[test]
    fn a_namespace_gets_the_base_and_every_rule_selecting_it() {
        let rule = |name: &str, names: &[&str], sel: Option<LabelSelector>, g: u8| Rule {
            name: name.into(),
            namespaces: NamespaceSelector {
                names: names.iter().map(|n| (*n).to_owned()).collect(),
                labels: sel,
            },
            grant: g,
        };
        let rules = Rules {
            base: 0u8,
            rules: vec![
                rule("by-name", &["infra"], None, 1),
                rule(
                    "by-label",
                    &[],
                    Some(LabelSelector {
                        match_labels: Some(labels(&[("trust", "high")])),
                        ..Default::default()
                    }),
                    2,
                ),
            ],
        };
        assert!(rules.uses_labels());
        let high = labels(&[("trust", "high")]);
        let a = rules.for_namespace("infra", Some(&high));
        assert_eq!((a.grants, a.rules.clone()), (vec![&0, &1, &2], vec!["by-name", "by-label"]));
        assert_eq!(rules.for_namespace("apps", Some(&high)).grants, vec![&0, &2]);
        assert_eq!(
            rules.for_namespace("apps", None).grants,
            vec![&0],
            "labels unread: no label rule"
        );
        let none = rules.for_namespace("apps", Some(&labels(&[])));
        assert_eq!(none.describe("apps"), "no policy-file rule selects namespace \"apps\"");
        assert_eq!(
            rules.for_namespace("infra", None).describe("infra"),
            "policy-file rules \"by-name\" select namespace \"infra\""
        );
    }

    #[test]
    fn probe_hosts_are_addresses_networks_or_names_and_never_loopback_or_link_local() {
        let p = |s: &str| HostPattern::parse(s);
        assert_eq!(p("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(p("10.1.2.3/8").unwrap(), HostPattern::Cidr([10, 0, 0, 0].into(), 8));
        assert!(p("10.0.0.0/8").unwrap().matches_host("10.200.1.1"));
        assert!(!p("10.0.0.0/8").unwrap().matches_host("11.0.0.1"));
        assert!(p("fd00::/8").unwrap().matches_host("fd12::1"));
        assert!(p("192.0.2.7").unwrap().matches_host("::ffff:192.0.2.7"), "mapped");
        assert!(p("DB.Example.internal").unwrap().matches_host("db.example.INTERNAL."));
        assert!(!p("db.example.internal").unwrap().matches_host("10.0.0.1"));
        for bad in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "224.0.0.1",
            "0.0.0.0/0",
            "169.254.0.0/16",
            "::/0",
            "127.0.0.0/8",
            "127.5.0.0/16",
            "169.254.169.0/24",
            "::ffff:127.1.0.0/112",
            "fe80::/16",
            "localhost",
            "a.localhost",
            "10.0.0.0/33",
            "x y",
            "-a.b",
            "10.0.0.0/x",
        ] {
            assert!(p(bad).is_err(), "{bad} accepted");
        }
        let g = ProbeGrant { hosts: vec![p("10.0.0.0/8").unwrap()] };
        assert!(probe_host_allowed("10.0.0.9", [&g]));
        assert!(!probe_host_allowed("169.254.169.254", [&g]));
        assert!(p("::ffff:0:0/96").is_err(), "holds ::ffff:127.0.0.1");
        let mapped = ProbeGrant { hosts: vec![p("::ffff:10.0.0.0/104").unwrap()] };
        assert!(probe_host_allowed("10.1.1.1", [&mapped]));
        assert!(!probe_host_allowed("::ffff:127.0.0.1", [&g]));
        assert!(!probe_host_allowed("metadata.google.internal", [&g]));
    }
}
