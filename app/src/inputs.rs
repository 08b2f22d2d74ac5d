//! Reading what a pod references (ConfigMaps, Secrets, Services, service-account tokens) into a
//! [`vk_domain::inputs::Inputs`], as the kubelet's managers do before it starts containers.
//!
//! A [`Resolver`] caches reads for one pass (one pod created, or one refresh round over every
//! running pod), so that a thousand pods reading the same ConfigMap cost one GET per round.
//! Tokens live longer, in [`Tokens`]: one per pod and token spec, renewed when 80 % of its
//! lifetime has passed or it is older than 24 h (the kubelet token manager's `requiresRefresh`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use vk_domain::inputs::{self, Inputs, ServiceInfo, TokenSpec};
use vk_domain::jiff::Timestamp;
use vk_domain::node::NodeCapacity;
use vk_ports::{ClusterError, InputsApi};

type Data = Option<BTreeMap<String, Vec<u8>>>;

/// What is read per namespace, shared between passes for [`SHARED_TTL`]: when the operator's
/// policy selects namespaces by label, every pod created reads its Namespace's labels, and a burst
/// of pods needs one read, not hundreds. (Services come from the API adapter's watch, fresh.)
#[derive(Debug)]
pub struct PerNamespace<T> {
    reads: Mutex<HashMap<String, (std::time::Instant, T)>>,
}

impl<T> Default for PerNamespace<T> {
    fn default() -> Self {
        Self { reads: Mutex::new(HashMap::new()) }
    }
}

/// The labels of each Namespace.
pub type NamespaceLabels = PerNamespace<BTreeMap<String, String>>;

/// How long a namespace's labels are reused.
pub const SHARED_TTL: Duration = Duration::from_secs(10);

impl<T: Clone> PerNamespace<T> {
    async fn get<F>(&self, ns: &str, read: F) -> Result<T, ClusterError>
    where
        F: std::future::Future<Output = Result<T, ClusterError>>,
    {
        let fresh = {
            let reads = self.reads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            reads.get(ns).filter(|(at, _)| at.elapsed() < SHARED_TTL).map(|(_, v)| v.clone())
        };
        if let Some(v) = fresh {
            return Ok(v);
        }
        let value = read.await?;
        let mut reads = self.reads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        reads.insert(ns.to_owned(), (std::time::Instant::now(), value.clone()));
        Ok(value)
    }
}

/// Reads for one pass.
pub struct Resolver<'a, K> {
    api: &'a K,
    tokens: &'a Tokens,
    /// The labels of pods' namespaces, read only when the policy needs them (`None`).
    namespace_labels: Option<&'a NamespaceLabels>,
    allocatable: NodeCapacity,
    node_os: &'a str,
    config_maps: HashMap<(String, String), Data>,
    secrets: HashMap<(String, String), Data>,
    services: HashMap<String, Vec<ServiceInfo>>,
}

impl<'a, K: InputsApi> Resolver<'a, K> {
    /// A resolver with empty caches for this pass, for a node offering `allocatable` and running
    /// `node_os` (both handed to the pod's translation with its inputs).
    pub fn new(
        api: &'a K,
        tokens: &'a Tokens,
        allocatable: NodeCapacity,
        node_os: &'a str,
    ) -> Self {
        Self {
            api,
            tokens,
            namespace_labels: None,
            allocatable,
            node_os,
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
            services: HashMap::new(),
        }
    }

    /// Also reads the labels of each pod's Namespace (shared through `labels`), for the
    /// operator's policy rules that select namespaces by label.
    pub fn with_namespace_labels(mut self, labels: &'a NamespaceLabels) -> Self {
        self.namespace_labels = Some(labels);
        self
    }

    /// Everything `pod` references.
    ///
    /// # Errors
    /// The first API error other than "not found" (a missing object is part of the answer).
    pub async fn inputs(&mut self, pod: &Pod) -> Result<Inputs, ClusterError> {
        let refs = inputs::references(pod);
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut out = Inputs {
            node_allocatable: self.allocatable,
            node_os: self.node_os.to_owned(),
            ..Inputs::default()
        };
        for name in refs.config_maps {
            let key = (ns.clone(), name.clone());
            if !self.config_maps.contains_key(&key) {
                let d = self.api.config_map(&ns, &name).await?;
                self.config_maps.insert(key.clone(), d);
            }
            out.config_maps.insert(name, self.config_maps[&key].clone());
        }
        for name in refs.secrets {
            let key = (ns.clone(), name.clone());
            if !self.secrets.contains_key(&key) {
                let d = self.api.secret(&ns, &name).await?;
                self.secrets.insert(key.clone(), d);
            }
            out.secrets.insert(name, self.secrets[&key].clone());
        }
        // The `kubernetes` Service of `default` always gives variables; the namespace's Services
        // only with `enableServiceLinks`.
        let mut namespaces = vec!["default".to_owned()];
        if refs.service_links && ns != "default" {
            namespaces.push(ns.clone());
        }
        for n in namespaces {
            if !self.services.contains_key(&n) {
                let list = self.api.services(&n).await?;
                self.services.insert(n.clone(), list);
            }
            out.services.extend(self.services[&n].iter().cloned());
        }
        if let Some(shared) = self.namespace_labels {
            out.namespace_labels = Some(shared.get(&ns, self.api.namespace_labels(&ns)).await?);
        }
        for spec in refs.tokens {
            let token = self.tokens.get(self.api, pod, &spec).await?;
            out.tokens.insert(spec, token);
        }
        Ok(out)
    }
}

#[derive(Clone)]
struct Token {
    value: String,
    issued: Timestamp,
    expires: Timestamp,
}

/// Never shows the token itself.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("issued", &self.issued)
            .field("expires", &self.expires)
            .finish()
    }
}

/// Service-account tokens by pod UID and token spec.
#[derive(Debug, Default)]
pub struct Tokens {
    tokens: Mutex<HashMap<(String, TokenSpec), Token>>,
}

/// The kubelet's longest token age before renewal.
const MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 3600);

impl Tokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, TokenSpec), Token>> {
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The token for `pod` and `spec`, requested when absent or due for renewal.
    ///
    /// # Errors
    /// The TokenRequest's error.
    pub async fn get<K: InputsApi>(
        &self,
        api: &K,
        pod: &Pod,
        spec: &TokenSpec,
    ) -> Result<String, ClusterError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = (uid, spec.clone());
        let now = Timestamp::now();
        if let Some(t) = self.lock().get(&key).filter(|t| !needs_renewal(t, now)) {
            return Ok(t.value.clone());
        }
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let (value, expires) =
            api.request_token(pod, &sa, &spec.audience, spec.expiration_seconds).await?;
        self.lock().insert(key, Token { value: value.clone(), issued: now, expires });
        Ok(value)
    }

    /// Forgets the tokens of pods not in `live` (UIDs).
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        self.lock().retain(|(uid, _), _| live.contains(uid));
    }
}

fn needs_renewal(t: &Token, now: Timestamp) -> bool {
    let ttl = t.expires.duration_since(t.issued);
    let age = now.duration_since(t.issued);
    let Ok(ttl) = Duration::try_from(ttl) else { return true };
    let Ok(age) = Duration::try_from(age) else { return true };
    age >= ttl.mul_f64(0.8) || age >= MAX_TOKEN_AGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_at_eighty_percent_of_their_life() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        let t = Token { value: "x".into(), issued: t0, expires: at(3600) };
        assert!(!needs_renewal(&t, at(0)));
        assert!(!needs_renewal(&t, at(2879)));
        assert!(needs_renewal(&t, at(2880)));
        let long = Token { value: "x".into(), issued: t0, expires: at(7 * 24 * 3600) };
        assert!(!needs_renewal(&long, at(23 * 3600)));
        assert!(needs_renewal(&long, at(24 * 3600)), "never older than a day");
    }

    #[test]
    fn debug_never_shows_a_token() {
        let tokens = Tokens::default();
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let spec = TokenSpec { audience: String::new(), expiration_seconds: 3600 };
        let token = Token { value: "eyJ-bound-token".into(), issued: t0, expires: t0 };
        tokens.lock().insert(("uid".into(), spec), token);
        let shown = format!("{tokens:?}");
        assert!(shown.contains("<redacted>") && !shown.contains("eyJ-bound-token"), "{shown}");
    }
}
