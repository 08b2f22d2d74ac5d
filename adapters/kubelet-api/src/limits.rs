//! What a client of the kubelet port may hold, before and after it authenticates.
//!
//! The kubelet port answers anyone who can reach it, so nothing a client sends before it is
//! authenticated may cost the node more than a bounded amount:
//! - **Connections** ([`Connections`]): a total cap, a cap per peer address, and a cap on
//!   connections that have not yet authenticated a request (the TLS handshake and the first
//!   request's headers under way). A new connection beyond a cap closes the oldest
//!   unauthenticated connection of the peer holding the most of them (so one flooding peer
//!   evicts its own connections, not another's) once that one has had
//!   [`Limits::evict_after`] to authenticate, or at once when the new one's peer holds few (under
//!   a sixteenth of the cap) and that peer at least two more; otherwise the new one is refused, closed
//!   before any TLS work. So a client that floods with connections costs the node an accept and
//!   a close each, and handshakes at most `max_unauthenticated / evict_after` a second, while a
//!   client that holds few (the API server) always finds room, even while the flood's
//!   connections are all young.
//! - **Reviews** ([`ReviewGate`]): TokenReviews and SubjectAccessReviews go to the API server
//!   through their own client; here at most `max_reviews_in_flight` run at once, a request waits
//!   at most `review_wait` for a turn (then 429), and each peer has a token bucket of reviews
//!   whose failures (401) cost [`FAILED_REVIEW_COST`] times a success: a peer that sends random
//!   tokens is answered 429 without a review long before it can slow anyone else's.
//! - **Sizes**: request headers, bearer tokens (and their shape), WebSocket messages and
//!   frames, SPDY streams per session.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Counter: connections to the kubelet port refused at a cap, by `reason` (`total`, `peer`,
/// `unauthenticated`).
pub const CONNECTIONS_REFUSED: &str = "vk_kubelet_connections_refused_total";
/// Counter: unauthenticated connections closed to admit a newer one.
pub const CONNECTIONS_EVICTED: &str = "vk_kubelet_connections_evicted_total";
/// Gauge: connections to the kubelet port open now, by `state` (`authenticated`,
/// `unauthenticated`).
pub const CONNECTIONS_OPEN: &str = "vk_kubelet_connections";
/// Counter: requests answered without a review, by `reason` (`token_size`, `token_shape`,
/// `peer_backoff`, `busy`).
pub const REVIEWS_REFUSED: &str = "vk_kubelet_reviews_refused_total";

/// What a failed TokenReview (401) costs its peer's bucket, in successful reviews.
pub const FAILED_REVIEW_COST: u32 = 5;

/// Bounds on the clients of the kubelet port. Each is a setting (README, "Configuration").
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once, all peers (`--kubelet-max-connections`, 4096). Also held
    /// below the process's open-file limit by the application.
    pub max_connections: usize,
    /// Connections open at once from one peer address (`--kubelet-max-connections-per-peer`,
    /// 1024). The API server is one peer for every `kubectl` user, hence the room.
    pub max_connections_per_peer: usize,
    /// Connections open at once that have not yet authenticated a request
    /// (`--kubelet-max-unauthenticated-connections`, 256).
    pub max_unauthenticated: usize,
    /// How long an unauthenticated connection is safe from eviction (2 s): time for a
    /// legitimate client's handshake and first request; an older one may be closed to admit a
    /// new connection.
    pub evict_after: Duration,
    /// Time for the TLS handshake (10 s).
    pub handshake_timeout: Duration,
    /// Time for a request's headers, counted from when the server starts reading them: also
    /// how long an idle keep-alive connection stays open (`--kubelet-header-read-timeout`, 15 s;
    /// hyper's `header_read_timeout`, which Go's `ReadHeaderTimeout` matches).
    pub header_read_timeout: Duration,
    /// Bytes of a request's line and headers (`--kubelet-max-header-bytes`, 64 KiB; more is
    /// answered 431 by hyper).
    pub max_header_bytes: usize,
    /// Bytes of a bearer token; a longer one is 401 without a review (8 KiB).
    pub max_token_bytes: usize,
    /// Only JWT-shaped bearer tokens (three base64url parts, ServiceAccount and OIDC tokens) are
    /// reviewed; any other is 401 without a review (`--authentication-token-jwt-only`, true).
    pub jwt_only: bool,
    /// TokenReviews and SubjectAccessReviews in flight at once (16).
    pub max_reviews_in_flight: usize,
    /// How long a request waits for a review turn before 429 (5 s).
    pub review_wait: Duration,
    /// Reviews per second a peer may cause (a token bucket, 5/s; a failure costs
    /// [`FAILED_REVIEW_COST`]).
    pub peer_reviews_per_second: u32,
    /// Reviews a peer may cause at once before `peer_reviews_per_second` applies (50).
    pub peer_review_burst: u32,
    /// Bytes of a WebSocket message (`--kubelet-max-websocket-message-bytes`, 1 MiB; the frame
    /// limit is the same).
    pub max_websocket_message_bytes: usize,
    /// Streams open at once in one SPDY session (`--kubelet-max-spdy-streams`, 256: exec uses
    /// up to 5, port-forward 2 per forwarded connection).
    pub max_spdy_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_connections_per_peer: 1024,
            max_unauthenticated: 256,
            evict_after: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(15),
            max_header_bytes: 64 * 1024,
            max_token_bytes: 8 * 1024,
            jwt_only: true,
            max_reviews_in_flight: 16,
            review_wait: Duration::from_secs(5),
            peer_reviews_per_second: 5,
            peer_review_burst: 50,
            max_websocket_message_bytes: 1 << 20,
            max_spdy_streams: 256,
        }
    }
}

/// Why a bearer token is refused without a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Longer than [`Limits::max_token_bytes`].
    Size,
    /// Not three base64url parts while [`Limits::jwt_only`].
    Shape,
}

impl TokenRefusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Size => "token_size",
            Self::Shape => "token_shape",
        }
    }
}

/// Whether `token` may be sent to a TokenReview under `limits`.
///
/// # Errors
/// [`TokenRefusal`] naming the rule it breaks.
pub fn check_token(token: &str, limits: &Limits) -> Result<(), TokenRefusal> {
    if token.len() > limits.max_token_bytes {
        return Err(TokenRefusal::Size);
    }
    if limits.jwt_only && !jwt_shaped(token) {
        return Err(TokenRefusal::Shape);
    }
    Ok(())
}

/// Three non-empty base64url parts (RFC 7519 compact serialization; the signature part of an
/// unsecured JWT may be empty, which Kubernetes never issues and is refused here too).
fn jwt_shaped(token: &str) -> bool {
    let b64url = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let mut parts = token.split('.');
    let ok = (0..3).all(|_| parts.next().is_some_and(b64url));
    ok && parts.next().is_none()
}

/// Why a request gets no review now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewRefusal {
    /// The peer spent its bucket (recent failures cost more).
    PeerBackoff,
    /// Every review turn stayed taken for [`Limits::review_wait`].
    Busy,
}

impl ReviewRefusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::PeerBackoff => "peer_backoff",
            Self::Busy => "busy",
        }
    }
}

/// Turns for reviews: a concurrency cap, and a token bucket per peer.
pub struct ReviewGate {
    turns: Semaphore,
    wait: Duration,
    peers: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl std::fmt::Debug for ReviewGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewGate").field("wait", &self.wait).finish_non_exhaustive()
    }
}

/// A review turn; the next waiter gets it when this is dropped.
pub type Turn<'a> = tokio::sync::SemaphorePermit<'a>;

impl ReviewGate {
    /// The gate for `limits`.
    pub fn new(limits: &Limits) -> Self {
        let peers = NonZeroU32::new(limits.peer_reviews_per_second).map(|rate| {
            let burst = NonZeroU32::new(limits.peer_review_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            turns: Semaphore::new(limits.max_reviews_in_flight.max(1)),
            wait: limits.review_wait,
            peers,
        }
    }

    /// A turn for a review caused by `peer`.
    ///
    /// # Errors
    /// [`ReviewRefusal::PeerBackoff`] at once when the peer's bucket is empty;
    /// [`ReviewRefusal::Busy`] when no turn frees within the wait.
    pub async fn turn(&self, peer: IpAddr) -> Result<Turn<'_>, ReviewRefusal> {
        if let Some(peers) = &self.peers
            && peers.check_key(&peer).is_err()
        {
            return Err(ReviewRefusal::PeerBackoff);
        }
        match tokio::time::timeout(self.wait, self.turns.acquire()).await {
            Ok(Ok(turn)) => Ok(turn),
            _ => Err(ReviewRefusal::Busy),
        }
    }

    /// Charges `peer` for a review that failed (a token the API server did not authenticate):
    /// [`FAILED_REVIEW_COST`] - 1 more cells of its bucket, as far as it has them.
    pub fn failed(&self, peer: IpAddr) {
        if let Some(peers) = &self.peers {
            for _ in 1..FAILED_REVIEW_COST {
                if peers.check_key(&peer).is_err() {
                    break;
                }
            }
        }
    }

    /// Forgets peers whose buckets are full again (call now and then: the keyed limiter keeps
    /// one entry per peer seen).
    pub fn prune(&self) {
        if let Some(peers) = &self.peers {
            peers.retain_recent();
            peers.shrink_to_fit();
        }
    }
}

#[derive(Debug)]
struct Entry {
    peer: IpAddr,
    unauthenticated: bool,
    close: CancellationToken,
    since: std::time::Instant,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    entries: BTreeMap<u64, Entry>,
    per_peer: HashMap<IpAddr, (usize, usize)>,
    unauthenticated: usize,
    /// What [`State::gauges`] last added to the gauges (unauthenticated, authenticated).
    published: (f64, f64),
}

impl State {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        if let Some((all, unauth)) = self.per_peer.get_mut(&e.peer) {
            *all -= 1;
            if e.unauthenticated {
                *unauth -= 1;
            }
            if *all == 0 {
                self.per_peer.remove(&e.peer);
            }
        }
        if e.unauthenticated {
            self.unauthenticated -= 1;
        }
        Some(e)
    }

    /// Closes the oldest unauthenticated connection of `peer`, or of the peer holding the most
    /// unauthenticated ones when `peer` is `None`, if it is older than `after`, or of any age
    /// when that peer holds at least two more than `newcomer`'s and the newcomer's peer holds
    /// fewer than [`Newcomer::few`] (a flood gives way at once to a peer with few; floods from
    /// several addresses do not churn each other's handshakes). False when there is none.
    fn evict(&mut self, peer: Option<IpAddr>, after: Duration, newcomer: Newcomer) -> bool {
        let (peer, after) = match peer {
            Some(p) => (p, after),
            None => match self.per_peer.iter().filter(|(_, c)| c.1 > 0).max_by_key(|(_, c)| c.1) {
                Some((p, c)) => {
                    let own = self.per_peer.get(&newcomer.peer).map_or(0, |c| c.1);
                    let gives_way = own < newcomer.few && c.1 > own + 1;
                    (*p, if gives_way { Duration::ZERO } else { after })
                }
                None => return false,
            },
        };
        let id = self.entries.iter().find(|(_, e)| e.unauthenticated && e.peer == peer);
        let Some(id) = id.filter(|(_, e)| e.since.elapsed() >= after).map(|(id, _)| *id) else {
            return false;
        };
        if let Some(e) = self.remove(id) {
            e.close.cancel();
            metrics::counter!(CONNECTIONS_EVICTED).increment(1);
        }
        true
    }

    /// Moves the gauges by what changed since the last call: the kubelet ports of all the
    /// process's nodes add up in them.
    fn gauges(&mut self) {
        let unauth = self.unauthenticated as f64;
        let auth = self.entries.len() as f64 - unauth;
        let (was_unauth, was_auth) = self.published;
        metrics::gauge!(CONNECTIONS_OPEN, "state" => "unauthenticated")
            .increment(unauth - was_unauth);
        metrics::gauge!(CONNECTIONS_OPEN, "state" => "authenticated").increment(auth - was_auth);
        self.published = (unauth, auth);
    }
}

/// Who asks for a slot: its peer, and below how many unauthenticated connections of its own it
/// counts as a peer with few (a sixteenth of [`Limits::max_unauthenticated`], at least 1).
#[derive(Debug, Clone, Copy)]
struct Newcomer {
    peer: IpAddr,
    few: usize,
}

/// The open connections of the kubelet port, as [`Limits`] bounds them.
#[derive(Debug)]
pub struct Connections {
    limits: Limits,
    state: Mutex<State>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// [`Limits::max_connections`], all authenticated or too young to evict.
    Total,
    /// [`Limits::max_connections_per_peer`], all authenticated or too young to evict.
    Peer,
    /// [`Limits::max_unauthenticated`], all too young to evict.
    Unauthenticated,
}

impl Connections {
    /// No connections yet.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self { limits, state: Mutex::new(State::default()) })
    }

    /// A slot for a new connection from `peer`, unauthenticated, after closing what the caps
    /// require.
    ///
    /// # Errors
    /// [`Refused`] when a cap is reached and no connection counted against it may be evicted
    /// (authenticated, or unauthenticated for less than [`Limits::evict_after`]).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refused> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let l = &self.limits;
        let newcomer = Newcomer { peer, few: (l.max_unauthenticated / 16).max(1) };
        if s.per_peer.get(&peer).is_some_and(|c| c.0 >= l.max_connections_per_peer)
            && !s.evict(Some(peer), l.evict_after, newcomer)
        {
            metrics::counter!(CONNECTIONS_REFUSED, "reason" => "peer").increment(1);
            return Err(Refused::Peer);
        }
        if s.entries.len() >= l.max_connections && !s.evict(None, l.evict_after, newcomer) {
            metrics::counter!(CONNECTIONS_REFUSED, "reason" => "total").increment(1);
            return Err(Refused::Total);
        }
        if s.unauthenticated >= l.max_unauthenticated.max(1)
            && !s.evict(None, l.evict_after, newcomer)
        {
            metrics::counter!(CONNECTIONS_REFUSED, "reason" => "unauthenticated").increment(1);
            return Err(Refused::Unauthenticated);
        }
        let id = s.next;
        s.next += 1;
        let close = CancellationToken::new();
        let since = std::time::Instant::now();
        s.entries.insert(id, Entry { peer, unauthenticated: true, close: close.clone(), since });
        let c = s.per_peer.entry(peer).or_default();
        c.0 += 1;
        c.1 += 1;
        s.unauthenticated += 1;
        s.gauges();
        Ok(Slot {
            inner: Arc::new(SlotInner {
                conns: Arc::clone(self),
                id,
                peer,
                close,
                authenticated: AtomicBool::new(false),
            }),
        })
    }

    /// Connections open now: (all, unauthenticated).
    pub fn open(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (s.entries.len(), s.unauthenticated)
    }
}

#[derive(Debug)]
struct SlotInner {
    conns: Arc<Connections>,
    id: u64,
    peer: IpAddr,
    close: CancellationToken,
    authenticated: AtomicBool,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        let mut s = self.conns.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.remove(self.id);
        s.gauges();
    }
}

/// One admitted connection: counted until dropped; closed early when evicted.
#[derive(Debug, Clone)]
pub struct Slot {
    inner: Arc<SlotInner>,
}

impl Slot {
    /// The peer's address.
    pub fn peer(&self) -> IpAddr {
        self.inner.peer
    }

    /// Marks the connection authenticated (a verified client certificate, or a request that
    /// passed authentication): it is no longer evicted.
    pub fn authenticated(&self) {
        if self.inner.authenticated.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut s =
            self.inner.conns.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let peer = self.inner.peer;
        if let Some(e) = s.entries.get_mut(&self.inner.id)
            && e.unauthenticated
        {
            e.unauthenticated = false;
            s.unauthenticated -= 1;
            if let Some(c) = s.per_peer.get_mut(&peer) {
                c.1 -= 1;
            }
        }
        s.gauges();
    }

    /// Resolves when the connection was evicted.
    pub async fn evicted(&self) {
        self.inner.close.cancelled().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    fn limits(total: usize, per_peer: usize, unauth: usize) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_peer: per_peer,
            max_unauthenticated: unauth,
            evict_after: Duration::ZERO,
            ..Limits::default()
        }
    }

    #[test]
    fn jwt_shapes() {
        let l = Limits::default();
        assert_eq!(check_token("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_", &l), Ok(()));
        for bad in ["abcdef.0123456789abcdef", "a.b", "a..c", "a.b.c.d", "a.b.c=", "a b.c.d", ""] {
            assert_eq!(check_token(bad, &l), Err(TokenRefusal::Shape), "{bad:?}");
        }
        let any = Limits { jwt_only: false, ..Limits::default() };
        assert_eq!(check_token("abcdef.0123456789abcdef", &any), Ok(()));
        let long = format!("a.{}.c", "b".repeat(8 * 1024));
        assert_eq!(check_token(&long, &any), Err(TokenRefusal::Size));
    }

    /// A flooding peer evicts its own unauthenticated connections first, never an
    /// authenticated one.
    #[test]
    fn a_flood_evicts_its_own_unauthenticated_connections() {
        let conns = Connections::new(limits(100, 100, 3));
        let api_server = conns.admit(ip(1)).unwrap();
        api_server.authenticated();
        let waiting = conns.admit(ip(3)).unwrap();
        let flood: Vec<Slot> = (0..10).map(|_| conns.admit(ip(2)).unwrap()).collect();
        assert_eq!(conns.open(), (4, 3), "the flood holds at most what the cap leaves");
        // The flood's own oldest went first; the other peer's waiting connection stays.
        assert!(!waiting.inner.close.is_cancelled());
        assert!(!api_server.inner.close.is_cancelled());
        assert!(flood[0].inner.close.is_cancelled());
        assert!(!flood[9].inner.close.is_cancelled());
        drop(flood);
        assert_eq!(conns.open(), (2, 1));
    }

    #[test]
    fn caps_refuse_when_all_are_authenticated() {
        let conns = Connections::new(limits(3, 2, 10));
        let a: Vec<Slot> = (0..2).map(|_| conns.admit(ip(1)).unwrap()).collect();
        a.iter().for_each(Slot::authenticated);
        assert_eq!(conns.admit(ip(1)).unwrap_err(), Refused::Peer);
        let b = conns.admit(ip(2)).unwrap();
        b.authenticated();
        assert_eq!(conns.admit(ip(3)).unwrap_err(), Refused::Total);
        drop(b);
        let c = conns.admit(ip(3)).unwrap();
        // At the total cap again, a new peer evicts the unauthenticated one.
        let d = conns.admit(ip(4)).unwrap();
        assert!(c.inner.close.is_cancelled());
        assert!(!d.inner.close.is_cancelled());
        assert_eq!(conns.open(), (3, 1));
    }

    /// A connection that just arrived is not evicted by its own peer or by one holding nearly
    /// as many: the newcomer is refused instead, before any TLS work, so a flood of connections
    /// cannot make the node handshake without end.
    #[test]
    fn young_connections_are_not_evicted_by_their_like() {
        let l = Limits { evict_after: Duration::from_secs(60), ..limits(100, 100, 2) };
        let conns = Connections::new(l);
        let held = [conns.admit(ip(2)).unwrap(), conns.admit(ip(3)).unwrap()];
        assert_eq!(conns.admit(ip(2)).unwrap_err(), Refused::Unauthenticated);
        assert_eq!(conns.admit(ip(3)).unwrap_err(), Refused::Unauthenticated);
        assert!(held.iter().all(|s| !s.inner.close.is_cancelled()));
        held[0].authenticated();
        assert!(conns.admit(ip(3)).is_ok(), "room again once one authenticated");
    }

    /// A peer holding few connections gets in at once while a flood holds every unauthenticated
    /// slot with young connections: the flood's oldest gives way.
    #[test]
    fn a_flood_of_young_connections_gives_way_to_a_peer_with_few() {
        // 64 slots: a peer with fewer than 4 counts as one with few.
        let l = Limits { evict_after: Duration::from_secs(60), ..limits(100, 100, 64) };
        let conns = Connections::new(l);
        let flood: Vec<Slot> = (0..64).map(|_| conns.admit(ip(2)).unwrap()).collect();
        assert_eq!(conns.admit(ip(2)).unwrap_err(), Refused::Unauthenticated);
        let api_server: Vec<Slot> = (0..4).map(|_| conns.admit(ip(1)).unwrap()).collect();
        assert!(flood[..4].iter().all(|s| s.inner.close.is_cancelled()));
        assert!(!flood[4].inner.close.is_cancelled());
        // Four is no longer few: the fifth waits for the flood's to age.
        assert_eq!(conns.admit(ip(1)).unwrap_err(), Refused::Unauthenticated);
        assert!(api_server.iter().all(|s| !s.inner.close.is_cancelled()));
        // A second flood from another address, once it holds four, takes none of the first's
        // young connections either.
        drop(api_server);
        let other: Vec<Slot> = (0..4).map(|_| conns.admit(ip(3)).unwrap()).collect();
        assert_eq!(conns.admit(ip(3)).unwrap_err(), Refused::Unauthenticated);
        assert_eq!(other.len(), 4);
    }

    #[tokio::test]
    async fn failed_reviews_empty_the_peers_bucket() {
        let gate = ReviewGate::new(&Limits {
            peer_reviews_per_second: 1,
            peer_review_burst: 10,
            ..Limits::default()
        });
        // Two failures cost 2 × FAILED_REVIEW_COST = 10: the bucket is empty.
        for _ in 0..2 {
            drop(gate.turn(ip(2)).await.unwrap());
            gate.failed(ip(2));
        }
        assert_eq!(gate.turn(ip(2)).await.unwrap_err(), ReviewRefusal::PeerBackoff);
        // Another peer is not charged.
        assert!(gate.turn(ip(1)).await.is_ok());
    }

    #[tokio::test]
    async fn no_turn_within_the_wait_is_busy() {
        let gate = ReviewGate::new(&Limits {
            max_reviews_in_flight: 1,
            review_wait: Duration::from_millis(50),
            ..Limits::default()
        });
        let held = gate.turn(ip(1)).await.unwrap();
        assert_eq!(gate.turn(ip(1)).await.unwrap_err(), ReviewRefusal::Busy);
        drop(held);
        assert!(gate.turn(ip(1)).await.is_ok());
    }
}
