//! A small client for Nomad's HTTP API: addressing, auth, namespace and region on every request,
//! and the translation of HTTP failures into [`ProviderError`] at the seam.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use vk_ports::ProviderError;

/// How to reach Nomad, with the names of Nomad's own environment (`api.DefaultConfig`). Its
/// `Debug` shows whether a token is set, never the token.
#[derive(Clone, PartialEq)]
pub struct ClientConfig {
    /// `NOMAD_ADDR`: `http://host:port`, `https://host:port`, or `host:port` (taken as http);
    /// several separated by commas, tried in turn ([`parse_addresses`]).
    pub address: String,
    /// `NOMAD_TOKEN`, sent as `X-Nomad-Token`.
    pub token: Option<String>,
    /// `NOMAD_NAMESPACE`.
    pub namespace: Option<String>,
    /// `NOMAD_REGION`.
    pub region: Option<String>,
    /// `NOMAD_CACERT`: PEM file of the CA that signed Nomad's certificate.
    pub ca_cert: Option<PathBuf>,
    /// `NOMAD_CAPATH`: a directory whose every file holds PEM CA certificates (Nomad's
    /// `go-rootcerts`: a file without one is an error).
    pub ca_path: Option<PathBuf>,
    /// `NOMAD_HTTP_AUTH`: `user` or `user:password`, sent as HTTP basic authentication on every
    /// request (for a proxy in front of Nomad).
    pub http_auth: Option<String>,
    /// `NOMAD_CLIENT_CERT`: PEM client certificate for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// `NOMAD_CLIENT_KEY`: PEM key of the client certificate.
    pub client_key: Option<PathBuf>,
    /// `NOMAD_SKIP_VERIFY`: do not verify Nomad's certificate.
    pub skip_verify: bool,
    /// `NOMAD_TLS_SERVER_NAME`: the name Nomad's certificate is verified against and sent as SNI,
    /// when it differs from the address's host (Nomad's servers present `server.<region>.nomad`).
    /// Requests still go to the address's host: it is resolved once, when the client is built.
    pub tls_server_name: Option<String>,
    /// Timeout of each request.
    pub timeout: Duration,
    /// Requests in flight at most (the event stream and exec sessions not counted); 0: no limit.
    pub max_concurrent_requests: usize,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("address", &self.address)
            .field("token", &redacted(self.token.as_deref()))
            .field("namespace", &self.namespace)
            .field("region", &self.region)
            .field("ca_cert", &self.ca_cert)
            .field("ca_path", &self.ca_path)
            .field("http_auth", &redacted(self.http_auth.as_deref()))
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("skip_verify", &self.skip_verify)
            .field("tls_server_name", &self.tls_server_name)
            .field("timeout", &self.timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .finish()
    }
}

/// `Some("<redacted>")` for a set secret, so that `Debug` says whether it is set but not what it is.
fn redacted(secret: Option<&str>) -> Option<&'static str> {
    secret.map(|_| "<redacted>")
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            address: "http://127.0.0.1:4646".into(),
            token: None,
            namespace: None,
            region: None,
            ca_cert: None,
            ca_path: None,
            http_auth: None,
            client_cert: None,
            client_key: None,
            max_concurrent_requests: 32,
            skip_verify: false,
            tls_server_name: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Errors building the client from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `NOMAD_ADDR` is not an address.
    #[error("invalid Nomad address {address:?}: {reason}")]
    Address {
        /// The value given.
        address: String,
        /// Why it was refused.
        reason: String,
    },
    /// A TLS file could not be read or parsed.
    #[error("cannot use TLS file {path}: {reason}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Parses `NOMAD_ADDR` as Nomad's CLI does: `http://host:port`, `https://host:port`, or
/// `host:port` (taken as http).
///
/// # Errors
/// [`ConfigError::Address`] when it is not a URL or its scheme is neither http nor https.
pub fn parse_address(address: &str) -> Result<Url, ConfigError> {
    let raw = address.trim();
    let with_scheme = if raw.contains("://") { raw.to_owned() } else { format!("http://{raw}") };
    let base = Url::parse(&with_scheme)
        .map_err(|e| ConfigError::Address { address: address.to_owned(), reason: e.to_string() })?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(ConfigError::Address {
            address: address.to_owned(),
            reason: "the scheme must be http or https".into(),
        });
    }
    if base.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::Address { address: address.to_owned(), reason: "no host".into() });
    }
    Ok(base)
}

/// Parses `--nomad-addr`: one address as [`parse_address`], or several separated by commas (the
/// servers of one Nomad cluster, or client agents, tried in turn when one cannot be connected to).
///
/// # Errors
/// [`ConfigError::Address`] naming the first unusable address, or when none is given.
pub fn parse_addresses(list: &str) -> Result<Vec<Url>, ConfigError> {
    let parsed = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(parse_address)
        .collect::<Result<Vec<Url>, ConfigError>>()?;
    if parsed.is_empty() {
        return Err(ConfigError::Address { address: list.to_owned(), reason: "no address".into() });
    }
    Ok(parsed)
}

/// `url`, made for base `from`, made for base `to` instead (the same path below the base).
fn rebase(url: &Url, from: &Url, to: &Url) -> Option<Url> {
    let tail = url.as_str().strip_prefix(from.as_str().trim_end_matches('/'))?;
    Url::parse(&format!("{}{tail}", to.as_str().trim_end_matches('/'))).ok()
}

/// Points `base` at `name` and pins `name` to the addresses `base`'s host resolves to now, so
/// TLS verifies (and sends as SNI) `name` while the connection goes where the address says.
fn with_server_name(
    b: reqwest::ClientBuilder,
    base: &mut Url,
    name: &str,
) -> Result<reqwest::ClientBuilder, String> {
    use std::net::ToSocketAddrs as _;
    let host = base.host_str().unwrap_or_default().trim_matches(['[', ']']).to_owned();
    let port = base.port_or_known_default().unwrap_or(4646);
    let addrs: Vec<std::net::SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .collect();
    base.set_host(Some(name)).map_err(|e| format!("TLS server name {name:?}: {e}"))?;
    Ok(b.resolve_to_addrs(name, &addrs))
}

/// The CA certificates of every file in `dir` (`NOMAD_CAPATH`), in name order.
///
/// # Errors
/// [`ConfigError::Tls`] naming the directory when it cannot be read, or the file that holds no
/// PEM certificate.
fn ca_path_certificates(dir: &std::path::Path) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let tls =
        |path: &std::path::Path, reason: String| ConfigError::Tls { path: path.to_owned(), reason };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| tls(dir, e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let pem = std::fs::read(&f).map_err(|e| tls(&f, e.to_string()))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| tls(&f, e.to_string()))?;
        if certs.is_empty() {
            return Err(tls(&f, "no PEM certificate in it".into()));
        }
        out.extend(certs);
    }
    Ok(out)
}

/// An HTTP client bound to one Nomad address, namespace and region. Its `Debug` never shows the
/// token.
#[derive(Clone)]
pub struct NomadClient {
    http: reqwest::Client,
    /// The addresses of `--nomad-addr`, in order; requests go to `bases[current]`.
    bases: std::sync::Arc<Vec<Url>>,
    /// The address in use, shared by every copy of the client: moved on to the next when one
    /// cannot be connected to.
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    token: Option<String>,
    /// `NOMAD_HTTP_AUTH` split as Nomad's API client splits it: user, then password if any.
    http_auth: Option<(String, Option<String>)>,
    namespace: Option<String>,
    region: Option<String>,
    limit: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    timeout: Duration,
}

impl std::fmt::Debug for NomadClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NomadClient")
            .field("bases", &self.bases.iter().map(Url::as_str).collect::<Vec<_>>())
            .field("token", &redacted(self.token.as_deref()))
            .field("http_auth", &self.http_auth.as_ref().map(|_| "<redacted>"))
            .field("namespace", &self.namespace)
            .field("region", &self.region)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl NomadClient {
    /// Builds the client.
    ///
    /// # Errors
    /// [`ConfigError`] when the address or a TLS file is unusable.
    pub fn new(cfg: &ClientConfig) -> Result<Self, ConfigError> {
        let mut bases = parse_addresses(&cfg.address)?;
        let read = |p: &PathBuf| {
            std::fs::read(p)
                .map_err(|e| ConfigError::Tls { path: p.clone(), reason: e.to_string() })
        };
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(Duration::from_secs(5))
            .http1_only()
            .danger_accept_invalid_certs(cfg.skip_verify);
        if let Some(name) = cfg.tls_server_name.as_deref().filter(|n| !n.is_empty()) {
            let address =
                |reason: String| ConfigError::Address { address: cfg.address.clone(), reason };
            let [base] = bases.as_mut_slice() else {
                return Err(address("a TLS server name goes with one Nomad address".into()));
            };
            b = with_server_name(b, base, name).map_err(address)?;
        }
        if let Some(ca) = &cfg.ca_cert {
            let cert = reqwest::Certificate::from_pem(&read(ca)?)
                .map_err(|e| ConfigError::Tls { path: ca.clone(), reason: e.to_string() })?;
            b = b.add_root_certificate(cert);
        }
        if let Some(dir) = &cfg.ca_path {
            for cert in ca_path_certificates(dir)? {
                b = b.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&cfg.client_cert, &cfg.client_key) {
            let mut pem = read(cert)?;
            pem.extend(read(key)?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| ConfigError::Tls { path: cert.clone(), reason: e.to_string() })?;
            b = b.identity(id);
        }
        let http = b.build().map_err(|e| ConfigError::Address {
            address: cfg.address.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            http,
            bases: std::sync::Arc::new(bases),
            current: std::sync::Arc::default(),
            token: cfg.token.clone().filter(|t| !t.is_empty()),
            http_auth: cfg.http_auth.as_deref().filter(|a| !a.is_empty()).map(|a| {
                match a.split_once(':') {
                    Some((user, password)) => (user.to_owned(), Some(password.to_owned())),
                    None => (a.to_owned(), None),
                }
            }),
            namespace: cfg.namespace.clone().filter(|n| !n.is_empty()),
            region: cfg.region.clone().filter(|r| !r.is_empty()),
            limit: (cfg.max_concurrent_requests > 0).then(|| {
                std::sync::Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent_requests))
            }),
            timeout: cfg.timeout,
        })
    }

    /// The same client, its requests made in `namespace` and `region` instead (`None` keeps this
    /// client's; `*` as the namespace lists across namespaces).
    pub fn at(&self, namespace: Option<&str>, region: Option<&str>) -> Self {
        let mut c = self.clone();
        if let Some(n) = namespace {
            c.namespace = Some(n.to_owned());
        }
        if let Some(r) = region {
            c.region = Some(r.to_owned());
        }
        c
    }

    /// The address requests go to now.
    fn base(&self) -> &Url {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.bases[i % self.bases.len()]
    }

    /// After a request to `failed` (a URL of one of the addresses) could not connect: the next
    /// address, which every copy of the client uses from now on (unless another request moved
    /// on already), and the failed request's URL made for it. `None` with one address.
    fn fail_over(&self, failed: &Url) -> Option<Url> {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.bases.len();
        if n < 2 {
            return None;
        }
        let i = self.bases.iter().position(|b| b.origin() == failed.origin())?;
        let _ = self.current.compare_exchange(i, (i + 1) % n, Relaxed, Relaxed);
        let to = self.base();
        if to == &self.bases[i] {
            return None;
        }
        tracing::warn!(from = %self.bases[i], to = %to, "cannot connect to Nomad; trying the next address");
        rebase(failed, &self.bases[i], to)
    }

    /// The Nomad namespace requests are made in, if set.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The region requests are made in, if set.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// A request to `path` (segments are percent-encoded) with auth, namespace and region set.
    pub fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let mut url = self.base().clone();
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty().extend(segments);
        }
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.header("X-Nomad-Token", t);
        }
        if let Some((user, password)) = &self.http_auth {
            req = req.basic_auth(user, password.as_ref());
        }
        if let Some(ns) = &self.namespace {
            req = req.query(&[("namespace", ns)]);
        }
        if let Some(r) = &self.region {
            req = req.query(&[("region", r)]);
        }
        req
    }

    /// Sends `req` and maps failures: connection errors, timeouts, 429 and 5xx become
    /// `Unavailable`; 404 `NotFound`; 409 `Conflict`; other 4xx `InvalidInput`.
    ///
    /// # Errors
    /// As above, with Nomad's error text.
    pub async fn send(&self, req: RequestBuilder) -> Result<Response, ProviderError> {
        // At most `max_concurrent_requests` in flight: a burst of pods must not flood Nomad.
        let _permit = match &self.limit {
            Some(l) => Some(l.acquire().await.map_err(|e| ProviderError::Unavailable {
                message: format!("Nomad request limiter closed: {e}"),
                source: None,
            })?),
            None => None,
        };
        let (http, built) = req.build_split();
        let mut request =
            built.map_err(|e| ProviderError::InvalidInput(format!("a Nomad request: {e}")))?;
        let (endpoint, method) = (endpoint(request.url().path()), request.method().to_string());
        // An address that cannot be connected to was sent nothing: the request goes to the next
        // one, once per address.
        let mut left = self.bases.len();
        let sent = loop {
            left -= 1;
            let spare = if left > 0 { request.try_clone() } else { None };
            let url = request.url().clone();
            let started = std::time::Instant::now();
            let sent = http.execute(request).await;
            let code = sent
                .as_ref()
                .map_or_else(|_| "error".to_owned(), |r| r.status().as_u16().to_string());
            metrics::counter!(REQUESTS, "endpoint" => endpoint.clone(), "method" => method.clone(), "code" => code)
                .increment(1);
            metrics::histogram!(REQUEST_DURATION, "endpoint" => endpoint.clone(), "method" => method.clone())
                .record(started.elapsed().as_secs_f64());
            match (sent, spare) {
                (Err(e), Some(mut spare)) if e.is_connect() => match self.fail_over(&url) {
                    Some(next) => {
                        *spare.url_mut() = next;
                        request = spare;
                    }
                    None => break Err(e),
                },
                (sent, _) => break sent,
            }
        };
        let resp = sent.map_err(|e| ProviderError::Unavailable {
            message: format!("Nomad request failed: {e}"),
            source: Some(Box::new(e)),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(status_error(status, body.trim()))
    }

    /// Sends `method` to `segments` with `query` and no body, decoding the JSON answer.
    ///
    /// # Errors
    /// As [`NomadClient::send`]; an undecodable body is `Unavailable`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, ProviderError> {
        decode(self.send(self.request(method, segments).query(query)).await?).await
    }

    /// Sends `method` to `segments` with `query` and no body, for an answer whose body is not
    /// read: Nomad answers a variable's DELETE (`/v1/var/:path`) with an empty body, not JSON.
    ///
    /// # Errors
    /// As [`NomadClient::send`].
    pub async fn call_empty(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<(), ProviderError> {
        self.send(self.request(method, segments).query(query)).await.map(drop)
    }

    /// GET `segments` with `query`, decoding JSON.
    ///
    /// # Errors
    /// As [`NomadClient::call`].
    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, ProviderError> {
        self.call(Method::GET, segments, query).await
    }

    /// GET `segments` with `query` (a blocking query: `index` and `wait`), decoding JSON and
    /// returning the `X-Nomad-Index` header with it (0 when absent). The request's timeout leaves
    /// room for a `wait` of up to 30 s beyond the client's own.
    ///
    /// # Errors
    /// As [`NomadClient::call`].
    pub async fn get_indexed<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<(T, u64), ProviderError> {
        let req = self.request(Method::GET, segments).query(query);
        let timeout = self.timeout + Duration::from_secs(30);
        let resp = self.send(req.timeout(timeout)).await?;
        let index = resp
            .headers()
            .get("X-Nomad-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok((decode(resp).await?, index))
    }

    /// Sends `body` as JSON with `method`, decoding the JSON answer.
    ///
    /// # Errors
    /// As [`NomadClient::get`].
    pub async fn send_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: &B,
    ) -> Result<T, ProviderError> {
        let resp = self.send(self.request(method, segments).query(query).json(body)).await?;
        decode(resp).await
    }
}

/// Counter: Nomad API requests, labelled `endpoint` (see [`endpoint`]), `method` and `code` (the
/// HTTP status, or `error` when no answer came).
pub const REQUESTS: &str = "vk_nomad_requests_total";
/// Histogram: seconds until Nomad's answer headers, labelled `endpoint` and `method`.
pub const REQUEST_DURATION: &str = "vk_nomad_request_duration_seconds";

/// The route template of a Nomad API path, so that metric labels do not grow with job and
/// allocation IDs: `/v1/job/k8s-ns_web/allocations` -> `/v1/job/:id/allocations`,
/// `/v1/var/nomad/jobs/x` -> `/v1/var/:path`, `/v1/client/fs/logs/<alloc>` ->
/// `/v1/client/fs/logs/:id` (routes of Nomad's `command/agent/http.go`).
pub fn endpoint(path: &str) -> String {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let tail = |rest: &[&str]| rest.iter().map(|s| format!("/{s}")).collect::<String>();
    match segs.as_slice() {
        ["v1", "var", _, ..] => "/v1/var/:path".to_owned(),
        ["v1", "client", "fs", op, _, ..] => format!("/v1/client/fs/{op}/:id"),
        ["v1", "client", "allocation", _, rest @ ..] => {
            format!("/v1/client/allocation/:id{}", tail(rest))
        }
        ["v1", item, _, rest @ ..]
            if matches!(
                *item,
                "job" | "allocation" | "node" | "evaluation" | "deployment" | "namespace"
            ) =>
        {
            format!("/v1/{item}/:id{}", tail(rest))
        }
        _ => format!("/{}", segs.join("/")),
    }
}

async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T, ProviderError> {
    let bytes = resp.bytes().await.map_err(|e| ProviderError::Unavailable {
        message: format!("reading Nomad's answer: {e}"),
        source: Some(Box::new(e)),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ProviderError::Unavailable {
        message: format!("Nomad's answer is not the JSON expected: {e}"),
        source: Some(Box::new(e)),
    })
}

/// Nomad's answer `status` with its (plain text) `body` as the port's error, the one place
/// Nomad's failures are classified: 404 `NotFound`, 409 `Conflict`, 429 and 5xx `Unavailable`
/// (retried), other 4xx `InvalidInput`. Nomad answers 500 for two refusals that retrying cannot
/// help, told apart by the text Nomad gives them: a job its admission validators refuse
/// (`nomad/job_endpoint_hooks.go`, "... validation ...") is `InvalidInput`, and a task that is
/// not running (`client/allocrunner/taskrunner/errors.go`, `ErrTaskNotRunning`, "Task not
/// running", answered to restarts and signals) is `NotFound`.
pub fn status_error(status: StatusCode, body: &str) -> ProviderError {
    let unavailable = |s: StatusCode| ProviderError::Unavailable {
        message: format!("Nomad: {s} {body}"),
        source: None,
    };
    match status {
        StatusCode::NOT_FOUND => ProviderError::NotFound(body.to_owned()),
        StatusCode::CONFLICT => ProviderError::Conflict(body.to_owned()),
        StatusCode::TOO_MANY_REQUESTS => unavailable(status),
        s if s.is_server_error() && body.contains("validation") => {
            ProviderError::InvalidInput(format!("Nomad: {s} {body}"))
        }
        s if s.is_server_error() && body.contains("not running") => {
            ProviderError::NotFound(format!("Nomad: {s} {body}"))
        }
        s if s.is_server_error() => unavailable(s),
        s => ProviderError::InvalidInput(format!("Nomad: {s} {body}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_are_route_templates() {
        for (path, want) in [
            ("/v1/jobs", "/v1/jobs"),
            ("/v1/job/k8s-ns_web", "/v1/job/:id"),
            ("/v1/job/k8s-ns_web/allocations", "/v1/job/:id/allocations"),
            ("/v1/var/nomad/jobs/k8s-ns_web", "/v1/var/:path"),
            ("/v1/client/fs/logs/0b7c", "/v1/client/fs/logs/:id"),
            ("/v1/client/allocation/0b7c/exec", "/v1/client/allocation/:id/exec"),
            ("/v1/node/9f/allocations", "/v1/node/:id/allocations"),
            ("/v1/agent/self", "/v1/agent/self"),
        ] {
            assert_eq!(super::endpoint(path), want, "{path}");
        }
    }

    use super::*;
    use crate::fake::{self, Reply};

    #[test]
    fn addresses_with_or_without_scheme() {
        for (addr, want) in [
            ("127.0.0.1:4646", "http://127.0.0.1:4646/"),
            ("http://nomad:4646", "http://nomad:4646/"),
            ("https://nomad.example:4646/", "https://nomad.example:4646/"),
        ] {
            let c = NomadClient::new(&ClientConfig { address: addr.into(), ..Default::default() })
                .unwrap();
            assert_eq!(c.base().as_str(), want);
        }
        let err =
            NomadClient::new(&ClientConfig { address: "unix:///x".into(), ..Default::default() })
                .unwrap_err();
        assert!(matches!(err, ConfigError::Address { .. }), "{err}");
    }

    /// With several addresses, a request that cannot connect to the one in use goes to the next,
    /// and later requests (of every copy of the client) stay there; one address that is down is
    /// `Unavailable` as before.
    #[tokio::test]
    async fn requests_fail_over_to_the_next_address() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (addr, mut reqs) =
            crate::fake::fake_nomad(|_| crate::fake::Reply::Json("[]".into())).await;
        let c = NomadClient::new(&ClientConfig {
            address: format!("http://{dead}, {addr}"),
            ..Default::default()
        })
        .unwrap();
        let copy = c.at(Some("*"), None);
        let listed: Vec<serde_json::Value> =
            copy.get(&["v1", "jobs"], &[("prefix", "k8s-")]).await.unwrap();
        assert!(listed.is_empty());
        assert!(c.base().as_str().contains(addr.trim_start_matches("http://")), "{:?}", c);
        let _: Vec<serde_json::Value> = c.get(&["v1", "nodes"], &[]).await.unwrap();
        let sent = crate::fake::drain(&mut reqs);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(
            sent[0].starts_with("GET /v1/jobs?") && sent[0].contains("prefix=k8s-"),
            "{sent:?}"
        );
        let alone = NomadClient::new(&ClientConfig {
            address: format!("http://{dead}"),
            ..Default::default()
        })
        .unwrap();
        let err = alone.get::<serde_json::Value>(&["v1", "nodes"], &[]).await.unwrap_err();
        assert!(matches!(err, ProviderError::Unavailable { .. }), "{err:?}");
        assert!(parse_addresses(" , ").is_err());
        let tls = NomadClient::new(&ClientConfig {
            address: "https://a:4646,https://b:4646".into(),
            tls_server_name: Some("server.global.nomad".into()),
            ..Default::default()
        });
        assert!(tls.is_err(), "a TLS server name with two addresses");
    }

    /// `NOMAD_TLS_SERVER_NAME`: a certificate for `server.global.nomad` only is accepted on
    /// `https://127.0.0.1:<port>` with the name, refused without it.
    #[tokio::test]
    async fn tls_server_name_is_verified_instead_of_the_host() {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["server.global.nomad".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
        let (addr, _reqs) =
            fake::fake_nomad_tls(acceptor, |_| Reply::Json("\"127.0.0.1:4647\"".into())).await;
        let port = addr.rsplit(':').next().unwrap().to_owned();
        let dir = std::env::temp_dir().join(format!("vk-tls-name-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let config = |name: Option<&str>| ClientConfig {
            address: addr.clone(),
            ca_cert: Some(ca_file.clone()),
            tls_server_name: name.map(str::to_owned),
            ..Default::default()
        };
        let leader = |c: NomadClient| async move {
            c.request(Method::GET, &["v1", "status", "leader"]).send().await
        };
        let named = NomadClient::new(&config(Some("server.global.nomad"))).unwrap();
        let resp = leader(named).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "\"127.0.0.1:4647\"");
        let unnamed = NomadClient::new(&config(None)).unwrap();
        let err = leader(unnamed).await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn requests_carry_namespace_region_and_token() {
        let c = NomadClient::new(&ClientConfig {
            address: "127.0.0.1:4646".into(),
            token: Some("secret".into()),
            namespace: Some("apps".into()),
            region: Some("eu".into()),
            ..Default::default()
        })
        .unwrap();
        let req = c.request(Method::GET, &["v1", "job", "k8s-a.b c"]).build().unwrap();
        assert_eq!(
            req.url().as_str(),
            "http://127.0.0.1:4646/v1/job/k8s-a.b%20c?namespace=apps&region=eu"
        );
        assert_eq!(req.headers()["X-Nomad-Token"], "secret");
    }

    #[test]
    fn http_auth_is_basic_authentication_as_nomads_client_splits_it() {
        let with = |auth: &str| {
            let c = NomadClient::new(&ClientConfig {
                http_auth: Some(auth.into()),
                ..Default::default()
            })
            .unwrap();
            let req = c.request(Method::GET, &["v1", "nodes"]).build().unwrap();
            req.headers()["authorization"].to_str().unwrap().to_owned()
        };
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(with("ops:pa:ss"), format!("Basic {}", b64("ops:pa:ss")));
        assert_eq!(with("ops"), format!("Basic {}", b64("ops:")));
        let c = NomadClient::new(&ClientConfig {
            http_auth: Some("ops:pw".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(!format!("{c:?}").contains("pw"), "{c:?}");
    }

    #[test]
    fn a_ca_path_is_every_pem_file_of_the_directory() {
        let dir = std::env::temp_dir().join(format!("vk-capath-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["a.pem", "b.crt"] {
            let ca = rcgen::generate_simple_self_signed(vec![name.into()]).unwrap();
            std::fs::write(dir.join(name), ca.cert.pem()).unwrap();
        }
        assert_eq!(ca_path_certificates(&dir).unwrap().len(), 2);
        let cfg = ClientConfig { ca_path: Some(dir.clone()), ..Default::default() };
        assert!(NomadClient::new(&cfg).is_ok());
        std::fs::write(dir.join("c.txt"), "not a certificate").unwrap();
        let err = NomadClient::new(&cfg).unwrap_err().to_string();
        assert!(err.contains("c.txt"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let cfg = ClientConfig { token: Some("s3cr3t-acl-token".into()), ..Default::default() };
        let client = NomadClient::new(&cfg).unwrap();
        for shown in [format!("{cfg:?}"), format!("{client:?}"), format!("{client:#?}")] {
            assert!(!shown.contains("s3cr3t-acl-token"), "{shown}");
            assert!(shown.contains("<redacted>"), "that a token is set still shows: {shown}");
        }
        let none = format!("{:?}", ClientConfig::default());
        assert!(none.contains("token: None"), "{none}");
    }

    /// A fake Nomad counts connections open at once: with a limit of 2, five concurrent calls
    /// never have more than 2 in flight.
    #[tokio::test]
    async fn requests_in_flight_are_limited() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncWriteExt;
        let open = std::sync::Arc::new(AtomicUsize::new(0));
        let peak = std::sync::Arc::new(AtomicUsize::new(0));
        let (o, p) = (open.clone(), peak.clone());
        let (addr, _reqs) = fake::fake_nomad(move |_| {
            let (o, p) = (o.clone(), p.clone());
            Reply::Socket(Box::new(move |mut sock, _| {
                tokio::spawn(async move {
                    let now = o.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]",
                        )
                        .await;
                });
            }))
        })
        .await;
        let c = NomadClient::new(&ClientConfig {
            address: addr,
            max_concurrent_requests: 2,
            ..Default::default()
        })
        .unwrap();
        let calls = (0..5).map(|_| c.get::<Vec<serde_json::Value>>(&["v1", "jobs"], &[]));
        for r in futures::future::join_all(calls).await {
            assert!(r.unwrap().is_empty());
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    /// Nomad's failures are classified once, by status and, for its two refusals answered 500,
    /// by their text.
    #[test]
    fn nomad_answers_map_to_port_errors() {
        let kind =
            |code: u16, body: &str| status_error(StatusCode::from_u16(code).unwrap(), body).kind();
        assert_eq!(kind(404, "job not found"), "not_found");
        assert_eq!(kind(409, "index mismatch"), "conflict");
        assert_eq!(kind(429, "slow down"), "unavailable");
        assert_eq!(kind(500, "rpc error: No cluster leader"), "unavailable");
        assert_eq!(kind(502, ""), "unavailable");
        let refused = "1 error occurred:\n\t* Task group web validation failed: ...";
        assert_eq!(kind(500, refused), "invalid_input");
        assert_eq!(kind(500, "Task not running"), "not_found");
        assert_eq!(kind(400, "bad request"), "invalid_input");
        assert_eq!(kind(403, "Permission denied"), "invalid_input");
    }
}
