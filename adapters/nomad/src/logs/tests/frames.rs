//! The codec of the framed stream.

use super::*;

/// Found by the fuzzer: a number cut after its `.` (or `e`, `+`, `-`) is the frame's
/// beginning, not garbage; read whole or byte by byte, the same heartbeat.
#[test]
fn a_number_cut_short_waits_for_the_rest() {
    assert_eq!(decode(b"{\"A\": 1."), None);
    assert_eq!(decode(b"{\"A\": 1e"), None);
    assert_eq!(decode(b"{\"A\": -"), None);
    assert_eq!(decode(b"{\"A\": 1.5}"), Some((Item::Heartbeat, 10)));
    assert_eq!(decode(b"{\"A\": 1.x}").map(|(i, _)| i), Some(Item::Garbage));
    let crash = b"\r\x8c||\0\0y{ \"Dat*a\"\t \n\r:\r   88888888888.88}}}7642.9\0y{ \"Dat*a\" : 8.87.9400\r%\r\n";
    fuzz_decode(crash);
}

fn all(buf: &[u8]) -> Vec<Item> {
    let mut d = FrameDecoder::default();
    d.push(buf);
    std::iter::from_fn(|| d.next_item()).collect()
}

fn f(data: &str, file: &str, offset: u64) -> Item {
    Item::Frame(Frame {
        data: data.as_bytes().to_vec(),
        file: file.into(),
        offset,
        file_event: String::new(),
    })
}

#[test]
fn frames_heartbeats_and_file_events_are_decoded() {
    let body = format!(
        "{}{{}}{}\n{{\"File\":\"alloc/logs/c.stdout.0\",\"Offset\":0,\"FileEvent\":\"file truncated\"}}",
        frame("out 1\n", "alloc/logs/c.stdout.0", 6),
        frame("out 2\n", "alloc/logs/c.stdout.0", 12),
    );
    assert_eq!(
        all(body.as_bytes()),
        vec![
            f("out 1\n", "alloc/logs/c.stdout.0", 6),
            Item::Heartbeat,
            f("out 2\n", "alloc/logs/c.stdout.0", 12),
            Item::Frame(Frame {
                data: vec![],
                file: "alloc/logs/c.stdout.0".into(),
                offset: 0,
                file_event: "file truncated".into()
            }),
        ]
    );
}

#[test]
fn split_frames_wait_for_their_rest() {
    let body = format!("{}{{}}", frame("hello\n", "alloc/logs/c.stderr.3", 99));
    for at in 0..body.len() {
        let mut d = FrameDecoder::default();
        d.push(&body.as_bytes()[..at]);
        let mut got: Vec<Item> = std::iter::from_fn(|| d.next_item()).collect();
        d.push(&body.as_bytes()[at..]);
        got.extend(std::iter::from_fn(|| d.next_item()));
        assert_eq!(got, vec![f("hello\n", "alloc/logs/c.stderr.3", 99), Item::Heartbeat]);
        assert_eq!(d.pending(), 0);
    }
    assert_eq!(decode(b"  "), None);
    assert_eq!(decode(b"{\"Data\":\"aGk"), None);
}

#[test]
fn garbage_is_skipped_up_to_the_next_frame() {
    let good = frame("ok\n", "alloc/logs/c.stdout.0", 3);
    let body = format!(
        "Unexpected EOF{good}{{\"Data\":\"!!notbase64\"}}{{\"Offset\":\"x\",\"a\":{{}}}}{{]{good}[1,2]"
    );
    let frames: Vec<Item> =
        all(body.as_bytes()).into_iter().filter(|i| *i != Item::Garbage).collect();
    assert_eq!(frames, vec![f("ok\n", "alloc/logs/c.stdout.0", 3); 2]);
    // An unterminated object longer than any frame is given up.
    let mut big = b"{\"Data\":\"".to_vec();
    big.resize(MAX_FRAME + 10, b'A');
    assert_eq!(decode(&big), Some((Item::Garbage, 1)));
    for input in [
        &b"{"[..],
        b"}",
        b"{}}",
        b"\xff\xfe{",
        b"{\"Data\":null}",
        b"{\"Offset\":-5,\"File\":\"x\"}",
        // A `}` that completes nothing, then a byte that makes the JSON invalid and so shows
        // the `{}` inside it (found by the fuzzer against a first version of the decoder's
        // shortcut that waited for a `}`).
        b"\x84\xf6{\"\":{}\xff\xff\xfe",
        // A key completed, then a byte of the alphabet that makes the JSON invalid: the `{}`
        // inside the key shows only at the end of the stream (`flush`).
        b"{\"Da{}t\\/\"1",
    ] {
        fuzz_decode(input);
    }
}

#[test]
fn fuzz_oracle_holds_on_samples() {
    let good = frame("a\nb", "alloc/logs/c.stdout.1", 7);
    for s in [
        format!("{good}{good}"),
        format!("x{{{good}"),
        format!("{{\"Data\":\"YQ==\"{good}"),
        format!("{good}{{\"File\":"),
        "{\"a\":[1,{\"b\":2}]}{}".to_owned(),
    ] {
        fuzz_decode(s.as_bytes());
    }
}
