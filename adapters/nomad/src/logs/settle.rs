//! Settling a read of an instance that just ended (until its log files stop growing) or just
//! started (until its first output is there): Nomad's log shippers copy after the fact.

use vk_domain::jiff::Timestamp;

use super::window::{FileInfo, log_files};
use super::{KINDS, Target};

/// How long after a task ended its log may still be landing on disk: Nomad's log shipper
/// (logmon) copies the task's output into `alloc/logs` after the task state says `dead`.
pub const SETTLE_AFTER_END: std::time::Duration = std::time::Duration::from_secs(30);

/// How long after a task started a read of its log may find nothing yet that it already wrote:
/// Nomad's docker log collector starts copying only once the container runs.
pub const SETTLE_AFTER_START: std::time::Duration = std::time::Duration::from_secs(5);

/// The most a read of a task that started less than [`SETTLE_AFTER_START`] ago (or that the
/// allocation read still shows pending) waits for its first output: Nomad starts the docker log
/// collector, a process of its own, only after the container, which takes more than a second on
/// a loaded node.
const FIRST_OUTPUT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits, at most `limit`, until the log files of `t.task` exist and their sizes stay the same
/// over two listings `every` apart, so that a read right after the task ended gets all of its
/// output (a kubelet's container log is complete once the container is reported terminated).
/// Only for an instance that ended less than [`SETTLE_AFTER_END`] ago. For one that started
/// less than [`SETTLE_AFTER_START`] ago and runs, or that the allocation read still shows
/// pending (the pod's status, pushed by Nomad's event stream, may say Running before an
/// allocation read does), it waits (at most [`FIRST_OUTPUT_WAIT`], two seconds) until its log
/// holds anything, so that what it wrote before it was reported running is there (a kubelet's
/// log file has it at once); a silent new container costs a read those seconds. Errors of the
/// listing end the wait (the read then reports them).
pub async fn settle(t: &Target, every: std::time::Duration, limit: std::time::Duration) {
    settle_until(t, every, limit, false).await;
}

/// As [`settle`], but an instance that just ended is waited for (at most `limit`) until its log
/// holds something as well: for a failed container whose termination message is the end of its
/// log (`FallbackToLogsOnError`), whose output Nomad's docker log collector may copy a moment
/// after the task state says dead. A container that wrote nothing costs the whole `limit`, once.
pub async fn settle_output(t: &Target, every: std::time::Duration, limit: std::time::Duration) {
    settle_until(t, every, limit, true).await;
}

async fn settle_until(
    t: &Target,
    every: std::time::Duration,
    limit: std::time::Duration,
    need_output: bool,
) {
    let Some(ts) = t.alloc.task_states.as_ref().and_then(|s| s.get(&t.task)) else { return };
    let since = |at: Option<Timestamp>, within: std::time::Duration| {
        at.is_some_and(|at| {
            Timestamp::now().duration_since(at).as_secs_f64() < within.as_secs_f64()
        })
    };
    let ended = ts.finished_at.as_deref().and_then(|f| f.parse::<Timestamp>().ok());
    let recent_end = ts.state == "dead" && since(ended, SETTLE_AFTER_END);
    let started =
        ts.last_event("Started").and_then(|e| Timestamp::from_nanosecond(i128::from(e.time)).ok());
    let just_started =
        (ts.state == "running" && since(started, SETTLE_AFTER_START)) || ts.state == "pending";
    if !recent_end && !just_started {
        return;
    }
    let limit = if recent_end { limit } else { limit.min(FIRST_OUTPUT_WAIT) };
    let sizes = || async {
        let listing: Vec<FileInfo> = t
            .client
            .get(&["v1", "client", "fs", "ls", &t.alloc.id], &[("path", "alloc/logs")])
            .await
            .ok()?;
        let files: Vec<(u64, u64)> = KINDS
            .iter()
            .flat_map(|k| log_files(&listing, &t.task, k))
            .map(|(i, size, _)| (i, size))
            .collect();
        (!files.is_empty()).then_some(files)
    };
    let start = tokio::time::Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        let now = sizes().await;
        let written = now.as_ref().is_some_and(|f| f.iter().any(|(_, size)| *size > 0));
        let stable = now.is_some() && now == last && (written || !need_output);
        if (recent_end && stable) || (!recent_end && written) {
            return;
        }
        last = now;
        tokio::time::sleep(every).await;
    }
}
