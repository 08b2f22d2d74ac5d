//! Settling reads of instances that just ended or started.

use super::*;

/// A task that just ended: the read waits until its log files exist and stop growing (Nomad's
/// log shipper writes after the task state says dead); a running task or one that ended long
/// ago is read at once.
#[tokio::test]
async fn a_just_ended_task_is_read_once_its_log_stops_growing() {
    let listings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = std::sync::Arc::clone(&listings);
    let (addr, _reqs) = fake::fake_nomad(move |line| {
        assert!(line.contains("/fs/ls/a1"), "{line}");
        let size = match n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => return Reply::Json("[]".into()),
            1 => 3,
            _ => 5,
        };
        Reply::Json(format!(
            r#"[{{"Name":"c.stdout.0","Size":{size},"ModTime":"2026-11-21T10:00:00Z"}}]"#
        ))
    })
    .await;
    let ended = |finished: Timestamp| {
        let mut t = target(&addr);
        let st = t.alloc.task_states.as_mut().unwrap().get_mut("c").unwrap();
        st.state = "dead".into();
        st.finished_at = Some(finished.to_string());
        t
    };
    let every = Duration::from_millis(10);
    settle(&ended(Timestamp::now()), every, Duration::from_secs(5)).await;
    assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 4, "none, 3, 5, 5");
    settle(&target(&addr), every, Duration::from_secs(5)).await;
    let long_ago = Timestamp::now() - std::time::Duration::from_secs(600);
    settle(&ended(long_ago), every, Duration::from_secs(5)).await;
    assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 4, "no wait for those");
    // Running, started just now: the read waits for its first output (here at once: 5 bytes).
    let mut fresh = target(&addr);
    let st = fresh.alloc.task_states.as_mut().unwrap().get_mut("c").unwrap();
    st.events.as_mut().unwrap()[0].time = i64::try_from(Timestamp::now().as_nanosecond()).unwrap();
    settle(&fresh, every, Duration::from_secs(5)).await;
    assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 5, "one listing");
    // Still pending in the allocation read (the pod's status may be ahead of it): the same.
    let mut pending = target(&addr);
    pending.alloc.task_states.as_mut().unwrap().get_mut("c").unwrap().state = "pending".into();
    settle(&pending, every, Duration::from_secs(5)).await;
    assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 6, "one listing");
}

/// A failed task whose log is its termination message: empty log files that stay empty are
/// waited on until the output arrives (Nomad's docker log collector copies it after the task
/// state says dead); plain [`settle`] takes the stable empty files as the end.
#[tokio::test]
async fn a_termination_read_waits_for_the_output_of_a_just_ended_task() {
    let listings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = std::sync::Arc::clone(&listings);
    let (addr, _reqs) = fake::fake_nomad(move |_| {
        let size = if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 4 { 0 } else { 5 };
        Reply::Json(format!(
            r#"[{{"Name":"c.stdout.0","Size":{size},"ModTime":"2026-11-21T10:00:00Z"}}]"#
        ))
    })
    .await;
    let mut t = target(&addr);
    let st = t.alloc.task_states.as_mut().unwrap().get_mut("c").unwrap();
    st.state = "dead".into();
    st.finished_at = Some(Timestamp::now().to_string());
    let every = Duration::from_millis(10);
    settle(&t, every, Duration::from_secs(5)).await;
    assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 2, "0, 0: stable");
    settle_output(&t, every, Duration::from_secs(5)).await;
    assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 6, "0, 0, 5, 5");
}
