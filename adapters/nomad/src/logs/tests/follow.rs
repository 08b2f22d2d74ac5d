//! Following until the instance ends; attach.

use super::*;

/// Following both streams: lines are merged as they come; once the allocation says the task
/// is dead, each stream ends at Nomad's next heartbeat, and so does the output.
#[tokio::test]
async fn follow_merges_lines_and_ends_with_the_instance() {
    let (addr, mut reqs) = fake::fake_nomad(|line| {
            if line.contains("/fs/ls/a1") {
                return Reply::Json("[]".into());
            }
            if line.contains("/v1/allocation/a1") {
                let state = if fake::param(line, "index").as_deref() == Some("0") {
                    "running"
                } else {
                    "dead"
                };
                return Reply::Json(format!(
                    r#"{{"ID":"a1","JobID":"j","ClientStatus":"running","TaskStates":{{"c":{{"State":"{state}","Events":[{{"Type":"Started","Time":5}}]}}}}}}"#
                ));
            }
            let ms = Duration::from_millis;
            match fake::param(line, "type").as_deref() {
                Some("stdout") => Reply::Stream(
                    vec![
                        (ms(0), frame("x1\npart", "alloc/logs/c.stdout.0", 8)),
                        (ms(150), frame("ial\n", "alloc/logs/c.stdout.0", 12)),
                        (ms(400), "{}".into()),
                    ],
                    true,
                ),
                _ => Reply::Stream(
                    vec![(ms(50), frame("e1\n", "alloc/logs/c.stderr.0", 3)), (ms(450), "{}".into())],
                    true,
                ),
            }
        })
        .await;
    let opts = LogOptions { follow: true, ..Default::default() };
    let out = collect(logs(target(&addr), &opts).await.unwrap()).await.unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "x1\ne1\npartial\n");
    let reqs = fake::drain(&mut reqs);
    assert!(reqs.iter().any(|r| r.contains("/v1/allocation/a1") && r.contains("index=7")));
    assert!(
        reqs.iter()
            .filter(|r| r.contains("/fs/logs/"))
            .all(|r| fake::param(r, "follow").as_deref() == Some("true"))
    );
}

/// Attach follows from the end into the channels until the instance ends.
#[tokio::test]
async fn attach_streams_new_output_until_the_task_ends() {
    let (addr, mut reqs) = fake::fake_nomad(|line| {
            if line.contains("/fs/ls/a1") {
                return Reply::Json(LS.into());
            }
            if line.contains("/v1/allocation/a1") {
                let state = if fake::param(line, "index").as_deref() == Some("0") { "running" } else { "dead" };
                return Reply::Json(format!(
                    r#"{{"ID":"a1","JobID":"j","ClientStatus":"running","TaskStates":{{"c":{{"State":"{state}"}}}}}}"#
                ));
            }
            let ms = Duration::from_millis;
            Reply::Stream(
                vec![(ms(0), frame("now\n", "alloc/logs/c.stdout.0", 4)), (ms(200), "{}".into())],
                true,
            )
        })
        .await;
    let (tx, mut rx) = futures::channel::mpsc::channel(4);
    let mut t = target(&addr);
    t.alloc.task_states = serde_json::from_str(r#"{"c":{"State":"running"}}"#).unwrap();
    tokio::time::timeout(Duration::from_secs(10), attach(t, Some(tx), None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rx.next().await.as_deref(), Some(&b"now\n"[..]));
    let read = fake::drain(&mut reqs).into_iter().find(|r| r.contains("/fs/logs/")).unwrap();
    // From the end of the files listed (4 bytes of stdout): Nomad's `origin=end&offset=0`
    // would be the start of the newest file.
    assert_eq!(fake::param(&read, "origin").as_deref(), Some("start"));
    assert_eq!(fake::param(&read, "offset").as_deref(), Some("4"));
    assert_eq!(fake::param(&read, "type").as_deref(), Some("stdout"));
}
