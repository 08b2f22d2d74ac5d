//! A container's environment as the kubelet builds it (`makeEnvironmentVariables` in
//! `pkg/kubelet/kubelet_pods.go`), kept as [`Segment`]s so that a backend can tell literal text from
//! Secret data (which must not be written where workload definitions are readable) and from values
//! only known once the pod is placed (`status.podIP`, `status.hostIP`).
//!
//! Order and precedence are the kubelet's: service link variables, then `envFrom` in order (with
//! `prefix`), then `env` in order; later definitions win. `$(VAR)` in `env[].value`, `command` and
//! `args` is expanded as `k8s.io/kubernetes/third_party/forked/golang/expansion` does:
//! `$$` is a literal `$`, an undefined `$(VAR)` stays as written, a `$` before anything else is kept.

use std::collections::{BTreeMap, BTreeSet};

/// One piece of an environment value, command or argument. Its `Debug` never shows Secret text.
#[derive(Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text known now that may be shown (pod spec, ConfigMap data, downward API, service links).
    Text(String),
    /// Text read from a Secret: it must only be written where Secret data may be.
    Secret(String),
    /// The pod's IP (`status.podIP`, `status.podIPs`), known once the pod is placed.
    PodIp,
    /// The node's IP (`status.hostIP`, `status.hostIPs`), known once the pod is placed.
    HostIp,
    /// The value of the environment variable of that name at run time: what `$(NAME)` in a command
    /// or argument becomes when that variable is not plain text.
    EnvRef(String),
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(t) => f.debug_tuple("Text").field(t).finish(),
            Self::Secret(_) => f.write_str("Secret(<redacted>)"),
            Self::PodIp => f.write_str("PodIp"),
            Self::HostIp => f.write_str("HostIp"),
            Self::EnvRef(n) => f.debug_tuple("EnvRef").field(n).finish(),
        }
    }
}

/// A value made of [`Segment`]s, concatenated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Value(pub Vec<Segment>);

impl Value {
    /// A value of plain text.
    pub fn text(s: impl Into<String>) -> Self {
        Self(vec![Segment::Text(s.into())])
    }

    /// The value as one string when it is made of [`Segment::Text`] only.
    pub fn as_text(&self) -> Option<String> {
        self.0
            .iter()
            .map(|s| match s {
                Segment::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect::<Option<Vec<&str>>>()
            .map(|v| v.concat())
    }

    /// Whether any part comes from a Secret.
    pub fn has_secret(&self) -> bool {
        self.0.iter().any(|s| matches!(s, Segment::Secret(_)))
    }

    fn push(&mut self, seg: Segment) {
        match (self.0.last_mut(), seg) {
            (Some(Segment::Text(a)), Segment::Text(b)) => a.push_str(&b),
            (Some(Segment::Secret(a)), Segment::Secret(b)) => a.push_str(&b),
            (_, seg) => self.0.push(seg),
        }
    }
}

/// One environment variable of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// The name.
    pub name: String,
    /// The value.
    pub value: Value,
}

/// An environment being built, in the kubelet's precedence order. Names keep the position of
/// their first definition; later definitions replace the value.
#[derive(Debug, Clone, Default)]
pub struct Env {
    order: Vec<String>,
    values: BTreeMap<String, Value>,
}

impl Env {
    /// Defines (or redefines) `name`.
    pub fn set(&mut self, name: &str, value: Value) {
        if self.values.insert(name.to_owned(), value).is_none() {
            self.order.push(name.to_owned());
        }
    }

    /// The current value of `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// The variables in order of first definition.
    pub fn into_vars(mut self) -> Vec<EnvVar> {
        self.order
            .into_iter()
            .filter_map(|name| {
                let value = self.values.remove(&name)?;
                Some(EnvVar { name, value })
            })
            .collect()
    }
}

/// Expands `$(VAR)` references in `input` against `lookup`, as the kubelet does for
/// `env[].value`: a defined variable is inlined whatever its segments.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<Value>) -> Value {
    expand_with(input, |name| lookup(name).map(|v| v.0))
}

/// Expands `$(VAR)` in a command or argument against the container's final environment. A
/// variable of plain text is inlined; any other becomes [`Segment::EnvRef`], so that Secret data
/// and run-time values reach the argument through the runtime's own interpolation, never through
/// the workload definition.
pub fn expand_arg(input: &str, env: &[EnvVar]) -> Value {
    expand_with(input, |name| {
        let var = env.iter().rev().find(|v| v.name == name)?;
        Some(match var.value.as_text() {
            Some(t) => vec![Segment::Text(t)],
            None => vec![Segment::EnvRef(name.to_owned())],
        })
    })
}

fn expand_with(input: &str, lookup: impl Fn(&str) -> Option<Vec<Segment>>) -> Value {
    let mut out = Value::default();
    let mut text = String::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        text.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if after.is_empty() {
            // A trailing `$` is kept.
            text.push('$');
            rest = after;
            break;
        }
        if let Some(tail) = after.strip_prefix('$') {
            text.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(') {
            match tail.find(')') {
                Some(end) => {
                    let name = &tail[..end];
                    match lookup(name) {
                        Some(segs) => {
                            out.push(Segment::Text(std::mem::take(&mut text)));
                            for s in segs {
                                out.push(s);
                            }
                        }
                        None => {
                            text.push_str("$(");
                            text.push_str(name);
                            text.push(')');
                        }
                    }
                    rest = &tail[end + 1..];
                }
                None => {
                    // An unclosed reference is kept as written.
                    text.push_str("$(");
                    rest = tail;
                }
            }
        } else {
            text.push('$');
            rest = after;
        }
    }
    text.push_str(rest);
    out.push(Segment::Text(text));
    out.0.retain(|s| !matches!(s, Segment::Text(t) if t.is_empty()));
    out
}

/// Whether `name` is an environment variable name the kubelet accepts (Kubernetes ≥ 1.34,
/// `RelaxedEnvironmentVariableValidation`: printable ASCII other than `=`, not empty).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// The `_SERVICE_HOST`, `_SERVICE_PORT` and Docker link variables of one Service, as
/// `envvars.FromServices` (`pkg/kubelet/envvars/envvars.go`) writes them.
///
/// `ports` are `(name, port, protocol)`; a service without a cluster IP or ports has none.
pub fn service_vars(name: &str, cluster_ip: &str, ports: &[(String, i32, String)]) -> Vec<EnvVar> {
    let mut out = Vec::new();
    if cluster_ip.is_empty() || cluster_ip == "None" || ports.is_empty() {
        return out;
    }
    let prefix = name.replace('-', "_").to_uppercase();
    let mut add = |n: String, v: String| out.push(EnvVar { name: n, value: Value::text(v) });
    add(format!("{prefix}_SERVICE_HOST"), cluster_ip.to_owned());
    let port_var = format!("{prefix}_SERVICE_PORT");
    add(port_var.clone(), ports[0].1.to_string());
    for (pname, port, _) in ports {
        if !pname.is_empty() {
            add(format!("{port_var}_{}", pname.replace('-', "_").to_uppercase()), port.to_string());
        }
    }
    let host = if cluster_ip.contains(':') { format!("[{cluster_ip}]") } else { cluster_ip.into() };
    for (i, (_, port, proto)) in ports.iter().enumerate() {
        let proto = if proto.is_empty() { "TCP" } else { proto.as_str() };
        let url = format!("{}://{host}:{port}", proto.to_lowercase());
        if i == 0 {
            add(format!("{prefix}_PORT"), url.clone());
        }
        let pp = format!("{prefix}_PORT_{port}_{}", proto.to_uppercase());
        add(pp.clone(), url);
        add(format!("{pp}_PROTO"), proto.to_lowercase());
        add(format!("{pp}_PORT"), port.to_string());
        add(format!("{pp}_ADDR"), cluster_ip.to_owned());
    }
    out
}

/// Formats a label or annotation map as the downward API does (`fieldpath.FormatMap`): one
/// `key="value"` line per entry, keys sorted, values quoted as Go's `%q`, no trailing newline.
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter().map(|(k, v)| format!("{k}={}", go_quote(v))).collect::<Vec<_>>().join("\n")
}

/// Go's `strconv.Quote` for the printable and common control characters.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                let n = c as u32;
                if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The names of variables defined more than once in `vars` (for tests and diagnostics).
pub fn duplicates(vars: &[EnvVar]) -> BTreeSet<&str> {
    let mut seen = BTreeSet::new();
    vars.iter().filter(|v| !seen.insert(v.name.as_str())).map(|v| v.name.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secret_segments() {
        let v = Value(vec![Segment::Text("user=".into()), Segment::Secret("hunter2".into())]);
        let shown = format!("{v:?}");
        assert_eq!(shown, r#"Value([Text("user="), Secret(<redacted>)])"#);
    }

    fn env(pairs: &[(&str, Value)]) -> impl Fn(&str) -> Option<Value> {
        let m: BTreeMap<String, Value> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        move |n| m.get(n).cloned()
    }

    fn t(s: &str) -> Segment {
        Segment::Text(s.into())
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let defined = [
            ("VAR_A", Value::text("A")),
            ("VAR_B", Value::text("B")),
            ("EMPTY", Value::text("")),
            ("PASS", Value(vec![Segment::Secret("s3cr3t".into())])),
        ];
        let vars = env(&defined);
        // Cases from `third_party/forked/golang/expansion/expand_test.go`.
        let cases = [
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_A)-$(VAR_A)", "A-A"),
            ("$(VAR_A)$(VAR_B)", "AB"),
            ("$(EMPTY)", ""),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$(VAR_A", "$(VAR_A"),
            ("$VAR_A", "$VAR_A"),
            ("foo$", "foo$"),
            ("$()", "$()"),
            ("${VAR_A}", "${VAR_A}"),
            ("", ""),
            ("x$(VAR_A)y$$z", "xAy$z"),
            ("f00__(VAR_A)__", "f00__(VAR_A)__"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &vars).as_text().as_deref(), Some(want), "{input:?}");
        }
        assert_eq!(
            expand("u:$(PASS)@h", &vars),
            Value(vec![t("u:"), Segment::Secret("s3cr3t".into()), t("@h")])
        );
    }

    #[test]
    fn arguments_refer_to_non_text_variables_by_name() {
        let vars = vec![
            EnvVar { name: "A".into(), value: Value::text("1") },
            EnvVar { name: "IP".into(), value: Value(vec![Segment::PodIp]) },
            EnvVar { name: "A".into(), value: Value::text("2") },
        ];
        assert_eq!(
            expand_arg("--a=$(A) --ip=$(IP) $(B)", &vars),
            Value(vec![t("--a=2 --ip="), Segment::EnvRef("IP".into()), t(" $(B)")])
        );
    }

    #[test]
    fn later_definitions_win_and_keep_the_first_position() {
        let mut e = Env::default();
        e.set("A", Value::text("1"));
        e.set("B", Value::text("2"));
        e.set("A", Value::text("3"));
        let vars = e.into_vars();
        assert_eq!(vars.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(vars[0].value, Value::text("3"));
        assert!(duplicates(&vars).is_empty());
    }

    #[test]
    fn names_follow_relaxed_validation() {
        for ok in ["A", "a.b-c", "1X", "with space", "x:y"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "A=B", "tab\t", "é"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn service_links_match_the_kubelet() {
        let vars = service_vars(
            "my-svc",
            "10.0.0.11",
            &[("http".into(), 80, "TCP".into()), ("dns".into(), 53, "UDP".into())],
        );
        let got: Vec<(String, String)> =
            vars.into_iter().map(|v| (v.name, v.value.as_text().unwrap_or_default())).collect();
        let want = [
            ("MY_SVC_SERVICE_HOST", "10.0.0.11"),
            ("MY_SVC_SERVICE_PORT", "80"),
            ("MY_SVC_SERVICE_PORT_HTTP", "80"),
            ("MY_SVC_SERVICE_PORT_DNS", "53"),
            ("MY_SVC_PORT", "tcp://10.0.0.11:80"),
            ("MY_SVC_PORT_80_TCP", "tcp://10.0.0.11:80"),
            ("MY_SVC_PORT_80_TCP_PROTO", "tcp"),
            ("MY_SVC_PORT_80_TCP_PORT", "80"),
            ("MY_SVC_PORT_80_TCP_ADDR", "10.0.0.11"),
            ("MY_SVC_PORT_53_UDP", "udp://10.0.0.11:53"),
            ("MY_SVC_PORT_53_UDP_PROTO", "udp"),
            ("MY_SVC_PORT_53_UDP_PORT", "53"),
            ("MY_SVC_PORT_53_UDP_ADDR", "10.0.0.11"),
        ];
        let want: Vec<(String, String)> =
            want.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
        assert_eq!(got, want);
        assert!(service_vars("headless", "None", &[("a".into(), 1, "TCP".into())]).is_empty());
        assert_eq!(
            service_vars("v6", "fd00::1", &[(String::new(), 443, String::new())])[2].value,
            Value::text("tcp://[fd00::1]:443")
        );
    }

    #[test]
    fn maps_are_formatted_like_the_downward_api() {
        let m: BTreeMap<String, String> = [("b", "x\"y"), ("a", "1\n2")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(format_map(&m), "a=\"1\\n2\"\nb=\"x\\\"y\"");
        assert_eq!(go_quote("é\u{0}"), "\"é\\x00\"");
    }
}
