//! Registry credentials from a pod's `imagePullSecrets`, matched to a container's image as the
//! kubelet matches them (`pkg/credentialprovider`: `BasicDockerKeyring`, `URLsMatch`).
//!
//! A Secret of type `kubernetes.io/dockerconfigjson` holds `.dockerconfigjson`
//! (`{"auths": {"<key>": {"username", "password", "auth"}}}`), one of type
//! `kubernetes.io/dockercfg` holds `.dockercfg` (the same map without `auths`); `auth` is base64
//! of `user:password` and is read when `username` is absent. A key is a registry address with an
//! optional scheme and path (`https://registry.example:5000/team`); it matches an image when its
//! host matches (same number of dot-separated labels, each a glob where `*` matches within the
//! label; the port must be equal) and its path is a prefix of the image's repository path. Docker
//! Hub's keys (`index.docker.io`, `registry-1.docker.io`, `https://index.docker.io/v1/`,
//! `docker.io`) all stand for `docker.io`, the registry of images without a host; a key's `/v1/`
//! or `/v2/` path stands for the host. The most specific key (the longest) wins; secrets are read
//! in the pod's order.

/// One registry login: where, who, the password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry's address (`host[:port]`; `https://index.docker.io/v1/` for Docker Hub, the
    /// address Docker's own login records).
    pub server: String,
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One entry of a docker config: its key, user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The key as written (`registry.example:5000/team`, `https://index.docker.io/v1/`).
    pub key: String,
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for ConfigEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigEntry").field("key", &self.key).finish_non_exhaustive()
    }
}

/// Docker Hub's registry, as image references name it.
const DOCKER_HUB: &str = "docker.io";

/// The registry host (`host[:port]`, `docker.io` when the reference names none) and the
/// repository path of image reference `image` (Docker's normalization: the first component is a
/// host when it holds a `.` or a `:` or is `localhost`; Docker Hub's official images are under
/// `library/`). Tag and digest are dropped.
pub fn split_image(image: &str) -> (String, String) {
    let name = image.split('@').next().unwrap_or(image);
    // A tag follows the last ':' after the last '/'.
    let name = match (name.rfind(':'), name.rfind('/')) {
        (Some(c), Some(s)) if c > s => &name[..c],
        (Some(c), None) => &name[..c],
        _ => name,
    };
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            let host = if is_docker_hub(first) { DOCKER_HUB } else { first };
            (host.to_owned(), rest.to_owned())
        }
        Some(_) => (DOCKER_HUB.to_owned(), name.to_owned()),
        None => (DOCKER_HUB.to_owned(), format!("library/{name}")),
    }
}

fn is_docker_hub(host: &str) -> bool {
    matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io")
}

/// The entries of a Secret's docker config: `.dockerconfigjson` or `.dockercfg` of `data`.
///
/// # Errors
/// Neither key present, or its JSON not a docker config (a message naming the key).
pub fn parse_config(
    data: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<Vec<ConfigEntry>, String> {
    let (key, auths) = if let Some(raw) = data.get(".dockerconfigjson") {
        let v: serde_json::Value = serde_json::from_slice(raw)
            .map_err(|e| format!(".dockerconfigjson is not JSON: {e}"))?;
        (".dockerconfigjson", v.get("auths").cloned().unwrap_or(serde_json::Value::Null))
    } else if let Some(raw) = data.get(".dockercfg") {
        let v: serde_json::Value =
            serde_json::from_slice(raw).map_err(|e| format!(".dockercfg is not JSON: {e}"))?;
        (".dockercfg", v)
    } else {
        return Err("neither .dockerconfigjson nor .dockercfg".into());
    };
    let map = auths.as_object().ok_or_else(|| format!("{key} holds no registry map"))?;
    let mut out = Vec::new();
    for (registry, entry) in map {
        let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let (mut username, mut password) =
            (field("username").to_owned(), field("password").to_owned());
        if username.is_empty() && !field("auth").is_empty() {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(field("auth"))
                .map_err(|_| format!("{key}: the auth of {registry:?} is not base64"))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| format!("{key}: the auth of {registry:?} is not text"))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| format!("{key}: the auth of {registry:?} is not user:password"))?;
            (username, password) = (u.to_owned(), p.to_owned());
        }
        out.push(ConfigEntry { key: registry.clone(), username, password });
    }
    Ok(out)
}

/// A key as the keyring parses it: host (Docker Hub's aliases as `docker.io`), port, path.
fn parse_key(key: &str) -> (String, String) {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = if is_docker_hub(host) { DOCKER_HUB } else { host };
    // `/v1/` and `/v2/` stand for the host itself (Docker's `ResolveAuthConfig`).
    let path = path.trim_end_matches('/');
    let path = ["v1", "v2"]
        .iter()
        .find_map(|v| if path == *v { Some("") } else { path.strip_prefix(&format!("{v}/")) })
        .unwrap_or(path);
    (host.to_ascii_lowercase(), path.to_owned())
}

/// `filepath.Match` of one host label against a pattern whose only special character is `*`.
fn label_matches(pattern: &str, label: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == label,
        Some((head, tail)) => {
            label.len() >= head.len()
                && label.starts_with(head)
                && (0..=label.len() - head.len())
                    .any(|i| label_matches(tail, &label[head.len() + i..]))
        }
    }
}

/// The kubelet's `URLsMatch`: hosts label by label (ports equal), the key's path a prefix of
/// the image's.
fn key_matches(key: &str, host: &str, path: &str) -> bool {
    let (key_host, key_path) = parse_key(key);
    let split = |h: &str| -> (String, String) {
        match h.rsplit_once(':') {
            Some((name, port)) => (name.to_owned(), port.to_owned()),
            None => (h.to_owned(), String::new()),
        }
    };
    let ((kh, kp), (ih, ip)) = (split(&key_host), split(&host.to_ascii_lowercase()));
    if kp != ip {
        return false;
    }
    let (kl, il): (Vec<&str>, Vec<&str>) = (kh.split('.').collect(), ih.split('.').collect());
    kl.len() == il.len()
        && kl.iter().zip(&il).all(|(p, l)| label_matches(p, l))
        && path.starts_with(&key_path)
}

/// The credentials for `image` among `entries` (the pod's `imagePullSecrets`, in order): the
/// most specific matching key's (longest first, then the first secret), `None` when no key
/// matches. `server` is the image's registry (`https://index.docker.io/v1/` for Docker Hub).
pub fn credentials_for(image: &str, entries: &[ConfigEntry]) -> Option<RegistryAuth> {
    let (host, path) = split_image(image);
    let best = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| key_matches(&e.key, &host, &path))
        .max_by_key(|(i, e)| (e.key.len(), std::cmp::Reverse(*i)))?
        .1;
    let server =
        if host == DOCKER_HUB { "https://index.docker.io/v1/".to_owned() } else { host.clone() };
    Some(RegistryAuth { server, username: best.username.clone(), password: best.password.clone() })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn images_split_into_registry_and_repository() {
        for (image, host, path) in [
            ("busybox", "docker.io", "library/busybox"),
            ("busybox:1.36", "docker.io", "library/busybox"),
            ("team/app:v1", "docker.io", "team/app"),
            ("docker.io/team/app", "docker.io", "team/app"),
            ("index.docker.io/team/app", "docker.io", "team/app"),
            ("127.0.0.1:5000/private/bb:1", "127.0.0.1:5000", "private/bb"),
            ("localhost/app", "localhost", "app"),
            ("registry.example/a/b/c@sha256:abcd", "registry.example", "a/b/c"),
            ("registry.example:443/a:tag@sha256:abcd", "registry.example:443", "a"),
        ] {
            assert_eq!(split_image(image), (host.to_owned(), path.to_owned()), "{image}");
        }
    }

    fn config(json: &str) -> Vec<ConfigEntry> {
        parse_config(&BTreeMap::from([(".dockerconfigjson".to_owned(), json.as_bytes().to_vec())]))
            .unwrap()
    }

    #[test]
    fn docker_configs_are_read_with_auth_as_a_fallback() {
        let e = config(
            r#"{"auths": {"r.example": {"username": "u", "password": "p"}, "q.example": {"auth": "YWxpY2U6czNjcjN0OnRvbw=="}}}"#,
        );
        let pairs: Vec<(&str, &str, &str)> =
            e.iter().map(|e| (e.key.as_str(), e.username.as_str(), e.password.as_str())).collect();
        assert_eq!(pairs, [("q.example", "alice", "s3cr3t:too"), ("r.example", "u", "p")]);
        let legacy = parse_config(&BTreeMap::from([(
            ".dockercfg".to_owned(),
            br#"{"r.example": {"username": "u", "password": "p"}}"#.to_vec(),
        )]))
        .unwrap();
        assert_eq!(legacy[0].key, "r.example");
        assert!(parse_config(&BTreeMap::new()).is_err());
        let bad = BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            br#"{"auths": {"r": {"auth": "!"}}}"#.to_vec(),
        )]);
        assert!(parse_config(&bad).unwrap_err().contains("not base64"));
        assert!(!format!("{e:?}").contains("s3cr3t"), "Debug shows no password");
    }

    /// The kubelet's keyring: host globs label by label, equal ports, the key's path a prefix,
    /// the longest key first, Docker Hub's aliases.
    #[test]
    fn credentials_match_as_the_kubelets_keyring() {
        let e = config(
            r#"{"auths": {
                "https://index.docker.io/v1/": {"username": "hub", "password": "1"},
                "127.0.0.1:5000": {"username": "local", "password": "2"},
                "127.0.0.1:5000/private": {"username": "private", "password": "3"},
                "*.example.com": {"username": "glob", "password": "4"},
                "registry.example.com/team/app": {"username": "app", "password": "5"}
            }}"#,
        );
        let user = |image: &str| credentials_for(image, &e).map(|a| (a.username, a.server));
        let some = |u: &str, s: &str| Some((u.to_owned(), s.to_owned()));
        assert_eq!(user("busybox"), some("hub", "https://index.docker.io/v1/"));
        assert_eq!(user("docker.io/team/app:1"), some("hub", "https://index.docker.io/v1/"));
        assert_eq!(user("127.0.0.1:5000/public/x:1"), some("local", "127.0.0.1:5000"));
        assert_eq!(user("127.0.0.1:5000/private/bb:1"), some("private", "127.0.0.1:5000"));
        assert_eq!(user("127.0.0.1:5001/private/bb:1"), None, "ports must be equal");
        assert_eq!(user("registry.example.com/other:1"), some("glob", "registry.example.com"));
        assert_eq!(user("registry.example.com/team/app:2"), some("app", "registry.example.com"));
        assert_eq!(user("a.b.example.com/x"), None, "a * spans one label");
        assert_eq!(user("quay.io/x/y"), None);
        let auth = credentials_for("busybox", &e).unwrap();
        assert!(format!("{auth:?}").contains("password: \"<redacted>\""), "{auth:?}");
    }
}
