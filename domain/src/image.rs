//! Container image references, checked as the kubelet checks them before a pull
//! (`parsers.ParseImageName`, which uses the grammar of `github.com/distribution/reference`): a
//! reference that does not parse is `InvalidImageName` and never reaches a runtime.
//!
//! ```text
//! reference   := name [ ":" tag ] [ "@" digest ]
//! name        := [ domain "/" ] path-component [ "/" path-component ]*   (255 characters at most)
//! domain      := host [ ":" port ]        (a first component with '.' or ':', "localhost", or an
//!                                          upper-case letter)
//! path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag         := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest      := algorithm ":" [0-9a-fA-F]{32,}
//! ```

/// Checks `image` against the reference grammar.
///
/// # Errors
/// Why the reference is malformed, in a few words (`"the tag is malformed"`).
pub fn check_reference(image: &str) -> Result<(), &'static str> {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        check_digest(d)?;
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let mut chars = t.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !first_ok || !rest_ok || t.len() > 128 {
            return Err("the tag is malformed");
        }
    }
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > 255 {
        return Err("the name is longer than 255 characters");
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        let is_domain = first.contains(['.', ':'])
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase());
        if is_domain {
            check_domain(first)?;
            parts.remove(0);
        }
    }
    if parts.iter().all(|p| path_component(p)) { Ok(()) } else { Err("the name is malformed") }
}

fn check_digest(d: &str) -> Result<(), &'static str> {
    let (alg, hex) = d.split_once(':').ok_or("the digest has no algorithm")?;
    let alg_ok = alg.split(['+', '.', '-', '_']).all(|c| {
        let mut chars = c.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric())
    });
    if !alg_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("the digest is malformed");
    }
    Ok(())
}

fn check_domain(d: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(v6) = d.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("the registry host is malformed")?;
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err("the registry host is malformed");
        }
        if after.is_empty() {
            (None, None)
        } else {
            (None, Some(after.strip_prefix(':').ok_or("the registry host is malformed")?))
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("the registry port is malformed");
    }
    let label = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_some_and(|h| !h.split('.').all(label)) {
        return Err("the registry host is malformed");
    }
    Ok(())
}

fn path_component(p: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = p.as_bytes();
    if b.is_empty() || !alnum(char::from(b[0])) || !alnum(char::from(b[b.len() - 1])) {
        return false;
    }
    // Runs of separators between runs of [a-z0-9].
    let mut sep = String::new();
    for c in p.chars() {
        if alnum(c) {
            if !sep.is_empty() {
                let ok = matches!(sep.as_str(), "." | "_" | "__") || sep.chars().all(|c| c == '-');
                if !ok {
                    return false;
                }
                sep.clear();
            }
        } else if matches!(c, '.' | '_' | '-') {
            sep.push(c);
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::check_reference;

    #[test]
    fn references_parse_as_distribution_reference_parses_them() {
        let good = [
            "busybox",
            "busybox:1.37.0-1",
            "library/busybox:latest",
            "registry.k8s.io/e2e-test-images/agnhost:2.53",
            "127.0.0.1:5000/private/app:v1",
            "localhost/app",
            "Registry.Example/app",
            "[::1]:5000/app",
            "a__b/c---d/e.f_g",
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "busybox:1@sha256:0123456789abcdef0123456789abcdef",
        ];
        for g in good {
            assert_eq!(check_reference(g), Ok(()), "{g}");
        }
        let bad = [
            "",
            "${attr.unique.hostname}",
            "busybox:${NOMAD_META_x}",
            "registry.example/%{x}/app",
            "Busybox",
            "busy box",
            "busybox:",
            "busybox:-x",
            "a...b",
            "-a",
            "a-",
            "registry.example:port/app",
            "busybox@sha256:short",
            "busybox@:0123456789abcdef0123456789abcdef",
            "reg-.example/app",
        ];
        for b in bad {
            assert!(check_reference(b).is_err(), "{b:?} was accepted");
        }
        assert!(check_reference(&"a".repeat(256)).is_err());
        assert!(check_reference(&format!("busybox:{}", "t".repeat(129))).is_err());
    }
}
