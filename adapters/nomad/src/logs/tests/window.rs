//! Times, tails, since and limit.

use super::*;

fn listing() -> Vec<FileInfo> {
    serde_json::from_str(
        r#"[{"Name":".c.stdout.fifo","IsDir":false,"Size":0,"ModTime":"2026-11-21T10:00:00Z"},
                {"Name":"c.stdout.1","IsDir":false,"Size":20,"ModTime":"2026-11-21T10:02:00Z"},
                {"Name":"c.stdout.0","IsDir":false,"Size":100,"ModTime":"2026-11-21T10:01:00Z"},
                {"Name":"c.stderr.0","IsDir":false,"Size":5,"ModTime":"2026-11-21T10:03:00Z"}]"#,
    )
    .unwrap()
}

#[test]
fn bytes_get_their_files_time_or_the_read_time() {
    let times = Times::new(&listing());
    let now = ts("2026-11-21T11:00:00Z");
    let fr = Frame {
        data: b"0123456789".to_vec(),
        file: "alloc/logs/c.stdout.1".into(),
        offset: 25,
        file_event: String::new(),
    };
    // Bytes 15..20 were in the file at the listing, 20..25 came since.
    assert_eq!(
        times.stamp(&fr, now),
        vec![(&b"01234"[..], ts("2026-11-21T10:02:00Z")), (&b"56789"[..], now)]
    );
    let unknown = Frame { file: "alloc/logs/c.stdout.2".into(), ..fr.clone() };
    assert_eq!(times.stamp(&unknown, now), vec![(&b"0123456789"[..], now)]);
    let files = log_files(&listing(), "c", "stdout");
    assert_eq!(files.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(), vec![(0, 100), (1, 20)]);
    assert_eq!(since_offset(&files, ts("2026-11-21T10:00:30Z")), Some(0));
    assert_eq!(since_offset(&files, ts("2026-11-21T10:01:30Z")), Some(100));
    assert_eq!(since_offset(&files, ts("2026-11-21T10:05:00Z")), None);
    assert_eq!(absolute(&files, "alloc/logs/c.stdout.1", 7), 107);
    assert_eq!(absolute(&files, "alloc/logs/c.stdout.0", 7), 7);
}

#[test]
fn lines_get_timestamps_and_merged_streams_whole_lines() {
    let t1 = ts("2026-11-21T10:00:00Z");
    let t2 = ts("2026-11-21T10:00:01.5Z");
    let mut l = Lines::new(true, false);
    l.push(b"a\nb", t1);
    l.push(b"c\nd\n", t2);
    assert_eq!(
        String::from_utf8(l.take(false)).unwrap(),
        "2026-11-21T10:00:00.000000000Z a\n2026-11-21T10:00:00.000000000Z bc\n\
             2026-11-21T10:00:01.500000000Z d\n"
    );
    let mut m = Lines::new(false, true);
    m.push(b"one\ntw", t1);
    assert_eq!(m.take(false), b"one\n");
    assert_eq!(m.take(false), b"");
    m.push(b"o\n", t1);
    assert_eq!(m.take(false), b"two\n");
    m.push(b"partial", t1);
    assert_eq!(m.take(true), b"partial");
    m.push(&vec![b'x'; MAX_PARTIAL_LINE + 1], t1);
    assert_eq!(m.take(false).len(), MAX_PARTIAL_LINE + 1);
    assert_eq!(count_lines(b"a\nb"), 2);
    assert_eq!(count_lines(b"a\nb\n"), 2);
    assert_eq!(count_lines(b""), 0);
    let mut lim = Limit(Some(5));
    assert_eq!(lim.cut(b"abc".to_vec()), (b"abc".to_vec(), false));
    assert_eq!(lim.cut(b"defg".to_vec()), (b"de".to_vec(), true));
}

/// `tail_lines` reads the last 1024 bytes of the newest file, then the 2048 before them
/// (here the rest), counting newlines, then streams from where the last window began with the
/// lines before the cut dropped; stderr (no file) is not read.
#[tokio::test]
async fn tails_read_backwards_in_doubling_windows() {
    let log: String = (0..10).map(|i| format!("{i}{}\n", "x".repeat(298))).collect();
    assert_eq!(log.len(), 3000);
    let (addr, mut reqs) = fake::fake_nomad(move |line| {
            if line.contains("/fs/ls/a1") {
                return Reply::Json(
                    r#"[{"Name":"c.stdout.0","IsDir":false,"Size":3000,"ModTime":"2026-11-21T10:00:00Z"}]"#
                        .into(),
                );
            }
            let offset: usize = fake::param(line, "offset").unwrap().parse().unwrap();
            if line.contains("/fs/readat/a1") {
                let limit: usize = fake::param(line, "limit").unwrap().parse().unwrap();
                assert_eq!(fake::param(line, "path").as_deref(), Some("alloc/logs/c.stdout.0"));
                return Reply::Json(log[offset..offset + limit].to_owned());
            }
            match fake::param(line, "type").as_deref() {
                Some("stdout") => Reply::Json(frame(&log[offset..], "alloc/logs/c.stdout.0", 3000)),
                _ => Reply::Json("{}".into()),
            }
        })
        .await;
    let opts = LogOptions { tail_lines: Some(5), ..Default::default() };
    let out = collect(logs(target(&addr), &opts).await.unwrap()).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    let firsts: String = out.lines().map(|l| &l[..1]).collect();
    assert_eq!(firsts, "56789");
    let asked: Vec<String> = fake::drain(&mut reqs)
        .iter()
        .filter(|r| r.contains("/fs/logs/") || r.contains("/fs/readat/"))
        .map(|r| {
            let p = |k| fake::param(r, k).unwrap_or_default();
            match p("type").as_str() {
                "" => format!("readat {} {}", p("offset"), p("limit")),
                t => format!("logs {t} {} {}", p("origin"), p("offset")),
            }
        })
        .collect();
    assert_eq!(asked, ["readat 1976 1024", "readat 0 1976", "logs stdout start 0"]);
}

/// `since` skips the files last written before it (the read starts after them), and
/// `limit_bytes` cuts the output.
#[tokio::test]
async fn since_skips_old_files_and_limit_cuts() {
    let (addr, mut reqs) = fake::fake_nomad(|line| {
        if line.contains("/fs/ls/a1") {
            return Reply::Json(
                r#"[{"Name":"c.stdout.0","Size":10,"ModTime":"2026-11-21T10:00:00Z"},
                        {"Name":"c.stdout.1","Size":6,"ModTime":"2026-11-21T10:05:00Z"}]"#
                    .into(),
            );
        }
        Reply::Json(frame("later\n", "alloc/logs/c.stdout.1", 6))
    })
    .await;
    let opts = LogOptions {
        since: Some(ts("2026-11-21T10:03:00Z")),
        limit_bytes: Some(3),
        stream: LogStream::Stdout,
        ..Default::default()
    };
    let out = collect(logs(target(&addr), &opts).await.unwrap()).await.unwrap();
    assert_eq!(out, b"lat");
    let read = fake::drain(&mut reqs).into_iter().find(|r| r.contains("/fs/logs/")).unwrap();
    assert_eq!(fake::param(&read, "origin").as_deref(), Some("start"));
    assert_eq!(fake::param(&read, "offset").as_deref(), Some("10"));
    assert_eq!(fake::param(&read, "type").as_deref(), Some("stdout"));
}
