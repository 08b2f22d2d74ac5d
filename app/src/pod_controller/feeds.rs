//! What feeds the work queue, and the workers that drain it: the watch of the pods bound to the
//! node, the poll of the backend's workloads (every few seconds while the backend does not
//! answer), the changes the backend pushes, and the workers that sync one pod at a time.

use super::*;

/// How often the backend's workloads are listed while it does not answer (instead of every
/// [`Settings::status_interval`]).
pub const RETRY_WHILE_UNREACHABLE: Duration = Duration::from_secs(3);

impl<P: PodProvider + ProbeTarget + PodNetwork, K: PodApi + InputsApi> PodController<P, K> {
    pub(super) async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        let stream = self.api.watch(&self.settings.node_name);
        futures::pin_mut!(stream);
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                ev = stream.next() => match ev { Some(ev) => ev, None => return },
            };
            let keys: Vec<PodKey> = {
                let mut st = self.state();
                match ev {
                    PodWatchEvent::Applied(p) => match PodKey::of(&p) {
                        Ok(k) => {
                            st.hold(k.clone(), HeldPod::new(p));
                            vec![k]
                        }
                        Err(_) => vec![],
                    },
                    PodWatchEvent::Deleted(p) => match PodKey::of(&p) {
                        Ok(k) => {
                            st.release(&k);
                            vec![k]
                        }
                        Err(_) => vec![],
                    },
                    PodWatchEvent::Relisted(list) => {
                        let mut keys: HashSet<PodKey> = st.pods.keys().cloned().collect();
                        st.hold_all(
                            list.into_iter()
                                .filter_map(|p| Some((PodKey::of(&p).ok()?, HeldPod::new(p))))
                                .collect(),
                        );
                        keys.extend(st.pods.keys().cloned());
                        keys.extend(st.runtime.keys().cloned());
                        if !st.pods_synced {
                            info!(pods = st.pods.len(), "pods bound to the node listed");
                        }
                        st.pods_synced = true;
                        keys.into_iter().collect()
                    }
                }
            };
            self.record_phases();
            for k in keys {
                self.queue.add(k);
            }
        }
    }

    pub(super) async fn poll(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.status_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            // While the backend does not answer, it is asked again every few seconds: when it
            // answers, every pod is queued at once (those waiting out a long backoff included),
            // rather than at the next full resync.
            let retry = async {
                if failing {
                    tokio::time::sleep(RETRY_WHILE_UNREACHABLE.min(self.settings.status_interval))
                        .await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.poll_now.notified() => {}
                () = retry => {}
            }
            match self.provider.list_pods().await {
                Ok(list) => {
                    if failing {
                        info!("backend reachable again");
                        failing = false;
                    }
                    let keys: Vec<PodKey> = {
                        let mut st = self.state();
                        if !st.runtime_synced {
                            info!(workloads = list.len(), "workloads owned by this node listed");
                        }
                        st.runtime =
                            list.into_iter().map(|r| (r.owner.key.clone(), Box::new(r))).collect();
                        st.runtime_synced = true;
                        st.pods.keys().chain(st.runtime.keys()).cloned().collect()
                    };
                    self.record_phases();
                    for k in keys {
                        self.queue.add(k);
                    }
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "listing the backend's workloads failed; nothing is deleted while it is unreachable");
                    }
                    failing = true;
                }
            }
        }
    }

    /// Follows what the backend pushes: a changed workload is read again and its pod queued at
    /// once; a restarted feed triggers a full list.
    pub(super) async fn follow(self: Arc<Self>, cancel: CancellationToken) {
        let changes = self.provider.changes();
        futures::pin_mut!(changes);
        loop {
            let change = tokio::select! {
                _ = cancel.cancelled() => return,
                c = changes.next() => match c { Some(c) => c, None => return },
            };
            match change {
                Change::Pod { key, at } => {
                    // The workers read it again (once for a burst of changes: the queue holds a
                    // key once), so a busy feed never waits on the backend here.
                    let mut st = self.state();
                    if let Some(at) = at {
                        // Keep the earliest change not yet written.
                        st.changed_at.entry(key.clone()).or_insert(at);
                    }
                    st.dirty.insert(key.clone());
                    drop(st);
                    // Ahead of new pods: a status is waiting to be written.
                    self.queue.add_urgent(key);
                }
                Change::Resync => {
                    self.poll_now.notify_one();
                    self.settings.node_changed.notify_one();
                }
                Change::Node => self.settings.node_changed.notify_one(),
            }
        }
    }

    pub(super) async fn work(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let key = tokio::select! {
                _ = cancel.cancelled() => return,
                k = self.queue.next() => match k { Some(k) => k, None => return },
            };
            let span = pod_span!("sync_pod", &key);
            let outcome = self.sync(&key).instrument(span.clone()).await;
            self.state().span_job.remove(&key);
            match outcome {
                Outcome::Done => {
                    self.state().backoff.remove(&key);
                }
                Outcome::Retry(why) => {
                    let delay = {
                        let mut st = self.state();
                        let b = st.backoff.entry(key.clone()).or_insert_with(|| {
                            ExponentialBuilder::default()
                                .with_min_delay(Duration::from_millis(500))
                                .with_max_delay(Duration::from_secs(60))
                                .without_max_times()
                                .build()
                        });
                        b.next().unwrap_or(Duration::from_secs(60))
                    };
                    span.in_scope(|| debug!(retry_in = ?delay, %why, "sync failed; retrying"));
                    self.queue.add_after(key.clone(), delay);
                }
            }
            self.queue.done(&key);
        }
    }
}
