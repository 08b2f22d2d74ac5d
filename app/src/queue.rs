//! A work queue of keys, as client-go's workqueue: a key is queued at most once, is processed by
//! one worker at a time, and a key added while it is processed is processed again afterwards.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

/// The queue; clone the `Arc` to share it between producers and workers.
#[derive(Debug)]
pub struct WorkQueue<K> {
    tx: mpsc::UnboundedSender<K>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<K>>,
    sets: Mutex<Sets<K>>,
}

#[derive(Debug)]
struct Sets<K> {
    queued: HashSet<K>,
    active: HashSet<K>,
    dirty: HashSet<K>,
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            tx,
            rx: tokio::sync::Mutex::new(rx),
            sets: Mutex::new(Sets {
                queued: HashSet::new(),
                active: HashSet::new(),
                dirty: HashSet::new(),
            }),
        })
    }

    /// Queues `key` unless it is queued already; a key being processed is queued again when done.
    pub fn add(&self, key: K) {
        let Ok(mut s) = self.sets.lock() else { return };
        if s.queued.contains(&key) {
            return;
        }
        if s.active.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        s.queued.insert(key.clone());
        drop(s);
        let _ = self.tx.send(key);
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        let q = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// Waits for the next key and marks it active. Call [`WorkQueue::done`] when finished with it.
    pub async fn next(&self) -> Option<K> {
        let key = self.rx.lock().await.recv().await?;
        if let Ok(mut s) = self.sets.lock() {
            s.queued.remove(&key);
            s.active.insert(key.clone());
        }
        Some(key)
    }

    /// Marks `key` finished; it is queued again if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let again = match self.sets.lock() {
            Ok(mut s) => {
                s.active.remove(key);
                s.dirty.remove(key)
            }
            Err(_) => false,
        };
        if again {
            self.add(key.clone());
        }
    }

    /// Keys waiting (not counting active ones).
    pub fn len(&self) -> usize {
        self.sets.lock().map(|s| s.queued.len()).unwrap_or(0)
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

    #[tokio::test(start_paused = true)]
    async fn delayed_adds_arrive_later() {
        let q = WorkQueue::new();
        q.add_after("x", Duration::from_secs(5));
        tokio::task::yield_now().await;
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(q.next().await.unwrap(), "x");
    }
}
