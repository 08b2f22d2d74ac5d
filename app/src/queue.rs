//! A work queue of keys, as client-go's workqueue: a key is queued at most once, is processed by
//! one worker at a time, and a key added while it is processed is processed again afterwards.
//!
//! Keys come in two lanes: [`WorkQueue::add_urgent`] (a change the backend reported, whose status
//! is waiting to be written) is served before [`WorkQueue::add`] (a new pod to create, a periodic
//! resync), so that under a burst of new pods the status of those already placed is not written
//! behind every create (the benchmarks' P3, `bench/`).

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

/// The queue; clone the `Arc` to share it between producers and workers.
#[derive(Debug)]
pub struct WorkQueue<K> {
    normal: mpsc::UnboundedSender<K>,
    urgent: mpsc::UnboundedSender<K>,
    rx: tokio::sync::Mutex<Lanes<K>>,
    sets: Mutex<Sets<K>>,
    /// Cancelled by [`WorkQueue::shut_down`]: delayed adds waiting are dropped.
    closed: tokio_util::sync::CancellationToken,
}

#[derive(Debug)]
struct Lanes<K> {
    normal: mpsc::UnboundedReceiver<K>,
    urgent: mpsc::UnboundedReceiver<K>,
}

/// A key may sit in both lanes (queued, then made urgent); `queued` says whether it still waits,
/// so whichever copy comes out second is skipped.
#[derive(Debug)]
struct Sets<K> {
    queued: HashSet<K>,
    /// Queued keys that are in the urgent lane.
    urgent: HashSet<K>,
    active: HashSet<K>,
    /// Active keys added again, to queue when done; `true` when one of those adds was urgent.
    dirty: std::collections::HashMap<K, bool>,
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        let (normal, normal_rx) = mpsc::unbounded_channel();
        let (urgent, urgent_rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            normal,
            urgent,
            rx: tokio::sync::Mutex::new(Lanes { normal: normal_rx, urgent: urgent_rx }),
            sets: Mutex::new(Sets {
                queued: HashSet::new(),
                urgent: HashSet::new(),
                active: HashSet::new(),
                dirty: std::collections::HashMap::new(),
            }),
            closed: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Drops the delayed adds still waiting ([`WorkQueue::add_after`]) and any made later; keys
    /// already queued stay (on shutdown: no sleeping task outlives the controller).
    pub fn shut_down(&self) {
        self.closed.cancel();
    }

    /// The queue's sets, taken even if a panic poisoned the lock (the one lock policy,
    /// ARCHITECTURE.md): a key is never dropped for it.
    fn sets(&self) -> std::sync::MutexGuard<'_, Sets<K>> {
        self.sets.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `key` unless it is queued already; a key being processed is queued again when done.
    pub fn add(&self, key: K) {
        self.push(key, false);
    }

    /// As [`WorkQueue::add`], in the lane served first; a key already waiting in the other lane
    /// moves up (it is still processed once).
    pub fn add_urgent(&self, key: K) {
        self.push(key, true);
    }

    fn push(&self, key: K, urgent: bool) {
        let mut s = self.sets();
        if s.active.contains(&key) {
            *s.dirty.entry(key).or_insert(false) |= urgent;
            return;
        }
        let waiting = s.queued.contains(&key);
        if waiting && (!urgent || s.urgent.contains(&key)) {
            return;
        }
        s.queued.insert(key.clone());
        if urgent {
            s.urgent.insert(key.clone());
        }
        drop(s);
        let lane = if urgent { &self.urgent } else { &self.normal };
        let _ = lane.send(key);
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        if self.closed.is_cancelled() {
            return;
        }
        let q = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => q.add(key),
                () = q.closed.cancelled() => {}
            }
        });
    }

    /// Waits for the next key, urgent ones first, and marks it active. Call [`WorkQueue::done`]
    /// when finished with it.
    pub async fn next(&self) -> Option<K> {
        let mut lanes = self.rx.lock().await;
        let Lanes { normal, urgent } = &mut *lanes;
        loop {
            let key = tokio::select! {
                biased;
                Some(k) = urgent.recv() => k,
                k = normal.recv() => k?,
            };
            let mut s = self.sets();
            // The second copy of a key that was in both lanes: already handed out.
            if !s.queued.remove(&key) {
                continue;
            }
            s.urgent.remove(&key);
            s.active.insert(key.clone());
            return Some(key);
        }
    }

    /// Marks `key` finished; it is queued again (in the lane it was last added to with the
    /// higher priority) if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let again = {
            let mut s = self.sets();
            s.active.remove(key);
            s.dirty.remove(key)
        };
        if let Some(urgent) = again {
            self.push(key.clone(), urgent);
        }
    }

    /// Keys waiting (not counting active ones).
    pub fn len(&self) -> usize {
        self.sets().queued.len()
    }

    /// Whether no key waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_serialised() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.next().await.unwrap();
        assert_eq!(k, "a");
        // Added while active: not handed to another worker now, but queued again when done.
        q.add("a");
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await.unwrap(), "b");
        q.done(&"b");
        q.done(&"a");
        assert_eq!(q.next().await.unwrap(), "a");
        q.done(&"a");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn urgent_keys_go_first_and_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("c");
        q.add_urgent("c");
        q.add_urgent("d");
        q.add_urgent("d");
        assert_eq!(q.len(), 4);
        let mut order = Vec::new();
        while !q.is_empty() {
            let k = q.next().await.unwrap();
            q.done(&k);
            order.push(k);
        }
        // "c" moved up and is not handed out a second time from the normal lane.
        assert_eq!(order, ["c", "d", "a", "b"]);
        // An urgent add while active comes back urgent, ahead of what was queued meanwhile.
        q.add("x");
        let x = q.next().await.unwrap();
        q.add("y");
        q.add_urgent("x");
        q.add("x");
        q.done(&x);
        assert_eq!(q.next().await.unwrap(), "x");
        q.done(&"x");
        assert_eq!(q.next().await.unwrap(), "y");
        q.done(&"y");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_adds_arrive_later() {
        let q = WorkQueue::new();
        q.add_after("x", Duration::from_secs(5));
        tokio::task::yield_now().await;
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(q.next().await.unwrap(), "x");
    }

    /// A delayed add lands after its delay; once the queue is shut down, those waiting and any
    /// made later are dropped (their sleeping tasks end).
    #[tokio::test(start_paused = true)]
    async fn delayed_adds_land_unless_shut_down() {
        let q = WorkQueue::new();
        q.add_after("a", Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await.unwrap(), "a");
        q.done(&"a");
        q.add_after("b", Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(1)).await;
        q.shut_down();
        q.add_after("c", Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(q.is_empty());
        // Only the queue itself holds it: no sleeping task kept a reference.
        assert_eq!(Arc::strong_count(&q), 1);
    }
}
