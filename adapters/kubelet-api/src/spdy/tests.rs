//! Tests of the codec, the session and the exec and port-forward servers, against the test client.

use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::dictionary::HEADER_DICTIONARY;
use super::frame::*;
use super::test_client::Client;
use super::*;
use crate::remotecommand::{Expect, Outcome, Version};

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().fold(Headers::new(), |h, (n, v)| h.with(n, v))
}

fn every_frame() -> Vec<Frame> {
    let h = headers(&[("streamtype", "stdout"), ("port", "8080"), ("requestid", "0")]);
    vec![
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 7,
            slot: 0,
            flags: FLAG_FIN,
            headers: h.clone(),
        },
        Frame::SynStream {
            stream_id: 3,
            associated_to: 1,
            priority: 0,
            slot: 2,
            flags: FLAG_UNIDIRECTIONAL,
            headers: Headers::new(),
        },
        Frame::SynReply { stream_id: 1, flags: 0, headers: Headers::new() },
        Frame::SynReply { stream_id: 3, flags: FLAG_FIN, headers: h.clone() },
        Frame::RstStream { stream_id: 5, status: RST_CANCEL },
        Frame::Settings {
            flags: 1,
            entries: vec![
                Setting { flags: 1, id: 7, value: 65536 },
                Setting { flags: 0, id: 4, value: 100 },
            ],
        },
        Frame::Settings { flags: 0, entries: vec![] },
        Frame::Ping { id: 1 },
        Frame::Ping { id: u32::MAX },
        Frame::GoAway { last_good_stream_id: 9, status: GOAWAY_PROTOCOL_ERROR },
        Frame::Headers { stream_id: 7, flags: FLAG_FIN, headers: h.with("multi", "a\0b") },
        Frame::WindowUpdate { stream_id: 0, delta: MAX_STREAM_ID },
        Frame::Data { stream_id: MAX_STREAM_ID, flags: FLAG_FIN, data: Bytes::new() },
        Frame::Data { stream_id: 1, flags: 0, data: Bytes::from(vec![7u8; 100_000]) },
    ]
}

fn encode_all(codec: &mut FrameCodec, frames: &[Frame]) -> anyhow::Result<BytesMut> {
    let mut buf = BytesMut::new();
    for f in frames {
        codec.encode(f, &mut buf)?;
    }
    Ok(buf)
}

fn decode_all(codec: &mut FrameCodec, buf: &mut BytesMut) -> anyhow::Result<Vec<Frame>> {
    let mut out = Vec::new();
    while let Some(f) = codec.decode(buf)? {
        out.push(f);
    }
    Ok(out)
}

#[test]
fn the_dictionary_is_spdy3s() -> anyhow::Result<()> {
    assert_eq!(HEADER_DICTIONARY.len(), 1423);
    // Its Adler-32 is the dictionary ID every SPDY/3 header stream announces (0xe3c6a7c2).
    let mut c = flate2::Compress::new(flate2::Compression::default(), true);
    assert_eq!(c.set_dictionary(HEADER_DICTIONARY)?, 0xe3c6_a7c2);
    assert!(HEADER_DICTIONARY.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
    assert!(HEADER_DICTIONARY.ends_with(b",enq=0."));
    Ok(())
}

#[test]
fn every_frame_type_round_trips_through_one_zlib_context() -> anyhow::Result<()> {
    let frames = every_frame();
    let (mut enc, mut dec) = (FrameCodec::new(), FrameCodec::new());
    let mut buf = encode_all(&mut enc, &frames)?;
    assert_eq!(decode_all(&mut dec, &mut buf)?, frames);
    assert!(buf.is_empty());
    // Again on the same codecs: the zlib streams carry on.
    let mut buf = encode_all(&mut enc, &frames)?;
    assert_eq!(decode_all(&mut dec, &mut buf)?, frames);
    Ok(())
}

#[test]
fn header_blocks_share_the_connections_zlib_stream() -> anyhow::Result<()> {
    let h = headers(&[("streamtype", "portforward-data"), ("port", "8080"), ("requestid", "12")]);
    let syn = |id| Frame::SynStream {
        stream_id: id,
        associated_to: 0,
        priority: 0,
        slot: 0,
        flags: 0,
        headers: h.clone(),
    };
    let mut enc = FrameCodec::new();
    let first = encode_all(&mut enc, &[syn(1)])?;
    let mut second = encode_all(&mut enc, &[syn(3)])?;
    // The second block refers back to the first, so it is smaller ...
    assert!(second.len() < first.len(), "{} !< {}", second.len(), first.len());
    // ... and a decompressor that has not seen the first cannot read it.
    assert!(FrameCodec::new().decode(&mut second.clone()).is_err());
    let mut dec = FrameCodec::new();
    let mut both = first;
    both.extend_from_slice(&second);
    assert_eq!(decode_all(&mut dec, &mut both)?, vec![syn(1), syn(3)]);
    second.clear();
    Ok(())
}

#[test]
fn reads_what_go_spdystream_writes() -> anyhow::Result<()> {
    // Three SYN_STREAMs (streamtype error, stdin, stdout) and DATA "hi"+FIN on stream 3, written by
    // moby/spdystream v0.5.1's Framer (Go compress/zlib, best compression).
    let hex = "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a\
               6800000000ffff800300010000001700000003000000000000c22e555c92929907000000ffff80030001\
               0000001900000005000000000000c22ac5565c92925f5a02000000ffff00000003010000026869";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()?;
    let frames = decode_all(&mut FrameCodec::new(), &mut BytesMut::from(&bytes[..]))?;
    let types: Vec<_> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::SynStream { stream_id, headers, .. } => {
                Some((*stream_id, headers.get("streamtype")))
            }
            _ => None,
        })
        .collect();
    assert_eq!(types, vec![(1, Some("error")), (3, Some("stdin")), (5, Some("stdout"))]);
    assert_eq!(
        frames.last(),
        Some(&Frame::Data { stream_id: 3, flags: FLAG_FIN, data: Bytes::from_static(b"hi") })
    );
    Ok(())
}

#[test]
fn a_truncated_frame_waits_for_more_and_leaves_the_buffer() -> anyhow::Result<()> {
    let frames = every_frame();
    let whole = encode_all(&mut FrameCodec::new(), &frames)?;
    // Every prefix decodes to the frames it holds in full, fed at any split.
    for cut in [0, 1, 7, 8, 9, 20, whole.len() / 2, whole.len() - 1] {
        let mut dec = FrameCodec::new();
        let mut buf = BytesMut::from(&whole[..cut]);
        let mut got = decode_all(&mut dec, &mut buf)?;
        let left = buf.len();
        buf.extend_from_slice(&whole[cut..]);
        ensure!(left <= cut, "cut {cut}");
        got.extend(decode_all(&mut dec, &mut buf)?);
        assert_eq!(got, frames, "cut at {cut}");
    }
    Ok(())
}

#[test]
fn bad_input_is_an_error_not_a_panic() -> anyhow::Result<()> {
    let decode = |bytes: &[u8]| FrameCodec::new().decode(&mut BytesMut::from(bytes));
    // SPDY/2 control frame.
    assert!(matches!(
        decode(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]),
        Err(SpdyError::Protocol(_))
    ));
    // A control frame announcing 16 MiB.
    assert!(matches!(decode(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff]), Err(SpdyError::TooLarge(_))));
    // PING of the wrong length, DATA on stream 0, RST_STREAM on stream 0.
    assert!(matches!(
        decode(&[0x80, 3, 0, 6, 0, 0, 0, 5, 0, 0, 0, 1, 0]),
        Err(SpdyError::Protocol(_))
    ));
    assert!(matches!(decode(&[0, 0, 0, 0, 0, 0, 0, 0]), Err(SpdyError::Protocol(_))));
    assert!(matches!(
        decode(&[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]),
        Err(SpdyError::Protocol(_))
    ));
    // SYN_STREAM whose header block is not zlib.
    let garbage =
        [0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
    assert!(matches!(decode(&garbage), Err(SpdyError::Compression(_))));
    // SETTINGS whose count does not match its length.
    assert!(matches!(
        decode(&[0x80, 3, 0, 4, 0, 0, 0, 4, 0, 0, 0, 9]),
        Err(SpdyError::Protocol(_))
    ));
    // Unknown control types (NOOP) are skipped.
    let mut noop_then_ping =
        BytesMut::from(&[0x80, 3, 0, 5, 0, 0, 0, 0, 0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 9][..]);
    assert_eq!(FrameCodec::new().decode(&mut noop_then_ping)?, Some(Frame::Ping { id: 9 }));
    // Arbitrary bytes.
    for seed in 0u32..200 {
        let bytes: Vec<u8> = (0..64u32)
            .map(|i| (seed.wrapping_mul(2_654_435_761) ^ i.wrapping_mul(40_503)) as u8)
            .collect();
        fuzz_decode(&bytes).map_err(anyhow::Error::msg)?;
        let mut framed = vec![0x80, 3, 0, (seed % 10) as u8, 0, 0, 0, 56];
        framed.extend_from_slice(&bytes[..56]);
        fuzz_decode(&framed).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

#[test]
fn a_header_zip_bomb_is_refused() -> anyhow::Result<()> {
    let huge = "a".repeat(MAX_HEADER_BLOCK + 1);
    let bomb = Frame::Headers { stream_id: 1, flags: 0, headers: headers(&[("x", &huge)]) };
    let mut buf = encode_all(&mut FrameCodec::new(), &[bomb])?;
    assert!(buf.len() < 64 * 1024, "{} compressed bytes", buf.len());
    assert!(matches!(FrameCodec::new().decode(&mut buf), Err(SpdyError::TooLarge(_))));
    Ok(())
}

#[test]
fn encoding_refuses_what_does_not_fit() {
    let mut c = FrameCodec::new();
    let mut buf = BytesMut::new();
    let data =
        |stream_id, len| Frame::Data { stream_id, flags: 0, data: Bytes::from(vec![0; len]) };
    assert!(matches!(c.encode(&data(1 << 31, 1), &mut buf), Err(SpdyError::Protocol(_))));
    assert!(matches!(c.encode(&data(0, 1), &mut buf), Err(SpdyError::Protocol(_))));
    assert!(matches!(c.encode(&data(1, MAX_PAYLOAD + 1), &mut buf), Err(SpdyError::TooLarge(_))));
    assert!(buf.is_empty());
}

#[test]
fn resize_messages_split_and_joined() {
    let mut pending = BytesMut::from(&br#"{"Width":80,"Height":24}{"Width":1"#[..]);
    let sizes = exec::take_resizes(&mut pending);
    assert_eq!(sizes, vec![vk_ports::TerminalSize { width: 80, height: 24 }]);
    pending.extend_from_slice(br#"00,"Height":50} {"Other":1}"#);
    assert_eq!(
        exec::take_resizes(&mut pending),
        vec![vk_ports::TerminalSize { width: 100, height: 50 }]
    );
    assert!(pending.is_empty());
    pending.extend_from_slice(b"not json{");
    assert!(exec::take_resizes(&mut pending).is_empty());
    assert!(pending.is_empty());
}

#[tokio::test]
async fn client_pings_are_echoed_and_streams_answered() -> anyhow::Result<()> {
    let (mut client, server) = Client::pair();
    let (session, mut incoming) = Session::new(server);
    client.send(Frame::Ping { id: 1 }).await?;
    assert_eq!(client.next().await?, Some(Frame::Ping { id: 1 }));
    // An even ID is a reply to a ping of ours: not echoed. SETTINGS and WINDOW_UPDATE are ignored.
    client.send(Frame::Ping { id: 2 }).await?;
    client
        .send(Frame::Settings { flags: 0, entries: vec![Setting { flags: 0, id: 7, value: 1 }] })
        .await?;
    client.send(Frame::WindowUpdate { stream_id: 0, delta: 1 }).await?;
    let id = client.open(&[("streamtype", "x")]).await?;
    assert_eq!(
        client.next().await?,
        Some(Frame::SynReply { stream_id: id, flags: 0, headers: Headers::new() })
    );
    let mut stream = incoming.recv().await.context("no stream")?;
    assert_eq!(stream.headers().get("streamtype"), Some("x"));
    // No window: far more than 64 KiB gets through without WINDOW_UPDATE.
    let big = vec![1u8; 200_000];
    client.data(id, &big, true).await?;
    let mut got = Vec::new();
    while let Some(b) = stream.recv().await {
        got.extend_from_slice(&b);
    }
    assert_eq!(got.len(), big.len());
    // A stream ID that goes backwards is refused.
    client
        .send(Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: Headers::new(),
        })
        .await?;
    assert_eq!(
        client.next().await?,
        Some(Frame::RstStream { stream_id: 1, status: RST_PROTOCOL_ERROR })
    );
    stream.writer().write(Bytes::from_static(b"back")).await?;
    stream.writer().finish().await?;
    assert!(matches!(
        stream.writer().write(Bytes::from_static(b"late")).await,
        Err(SpdyError::StreamClosed(_))
    ));
    assert_eq!(
        client.next().await?,
        Some(Frame::Data { stream_id: id, flags: 0, data: Bytes::from_static(b"back") })
    );
    assert_eq!(
        client.next().await?,
        Some(Frame::Data { stream_id: id, flags: FLAG_FIN, data: Bytes::new() })
    );
    client.hang_up().await?;
    session.close(Duration::from_secs(5)).await;
    assert_eq!(
        client.next().await?,
        Some(Frame::GoAway { last_good_stream_id: id, status: GOAWAY_OK })
    );
    assert_eq!(client.next().await?, None);
    Ok(())
}

#[tokio::test]
async fn a_reset_stream_refuses_writes() -> anyhow::Result<()> {
    let (mut client, server) = Client::pair();
    let (_session, mut incoming) = Session::new(server);
    let id = client.open(&[]).await?;
    let mut stream = incoming.recv().await.context("no stream")?;
    client.send(Frame::RstStream { stream_id: id, status: RST_CANCEL }).await?;
    assert_eq!(stream.recv().await, None);
    let (_, reader, writer) = stream.into_parts();
    assert!(reader.was_reset());
    assert!(matches!(writer.write(Bytes::from_static(b"x")).await, Err(SpdyError::Reset(_))));
    Ok(())
}

#[tokio::test]
async fn garbage_ends_the_session_with_goaway() -> anyhow::Result<()> {
    let (mut client, server) = Client::pair();
    let (session, mut incoming) = Session::new(server);
    client.send(Frame::Ping { id: 3 }).await?;
    client.hang_up_with(&[0x80, 2, 0, 1, 0, 0, 0, 0]).await?;
    assert_eq!(client.next().await?, Some(Frame::Ping { id: 3 }));
    assert_eq!(
        client.next().await?,
        Some(Frame::GoAway { last_good_stream_id: 0, status: GOAWAY_PROTOCOL_ERROR })
    );
    assert!(incoming.recv().await.is_none());
    assert!(session.is_closed());
    Ok(())
}

/// The streams client-go opens for `kubectl exec -i` (v4): error (half-closed at once), stdin,
/// stdout, stderr.
async fn open_exec(client: &mut Client, tty: bool) -> anyhow::Result<(u32, u32, u32, u32)> {
    let error = client.open(&[("streamtype", "error")]).await?;
    client.data(error, b"", true).await?;
    let stdin = client.open(&[("streamtype", "stdin")]).await?;
    let stdout = client.open(&[("streamtype", "stdout")]).await?;
    let other = if tty { "resize" } else { "stderr" };
    let last = client.open(&[("streamtype", other)]).await?;
    Ok((error, stdin, stdout, last))
}

#[tokio::test]
async fn exec_streams_stdin_stdout_stderr_and_the_status() -> anyhow::Result<()> {
    let (mut client, server) = Client::pair();
    let expect = Expect { stdin: true, stdout: true, stderr: true, tty: false };
    let served =
        tokio::spawn(serve_remotecommand(server, Version::V4, expect, Duration::from_secs(5)));
    let (error, stdin, stdout, stderr) = open_exec(&mut client, false).await?;
    let (io, finisher) = served.await??;
    client.data(stdin, b"hello ", false).await?;
    client.data(stdin, b"world", true).await?;

    // The "command": upper-cases stdin to stdout, says bye on stderr, exits 3.
    let mut stdin_rx = io.stdin.context("stdin")?;
    let mut stdout_tx = io.stdout.context("stdout")?;
    let mut stderr_tx = io.stderr.context("stderr")?;
    assert!(io.resize.is_none() && !io.tty);
    while let Some(chunk) = stdin_rx.next().await {
        stdout_tx.send(Bytes::from(chunk.to_ascii_uppercase())).await?;
    }
    stderr_tx.send(Bytes::from_static(b"bye")).await?;
    drop((stdout_tx, stderr_tx));
    let finished = tokio::spawn(async move { finisher.finish(&Outcome::Exited(3)).await });

    let got = client.collect_and_hang_up().await?;
    finished.await??;
    assert_eq!(got.text(stdout), "HELLO WORLD");
    assert_eq!(got.text(stderr), "bye");
    let status: serde_json::Value = serde_json::from_str(&got.text(error))?;
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    for id in [error, stdin, stdout, stderr] {
        assert!(got.finished(id), "stream {id} not finished: {got:?}");
    }
    assert!(got.goaway);
    Ok(())
}

#[tokio::test]
async fn exec_with_a_tty_reads_resizes() -> anyhow::Result<()> {
    let (mut client, server) = Client::pair();
    let expect = Expect { stdin: true, stdout: true, stderr: false, tty: true };
    let served =
        tokio::spawn(serve_remotecommand(server, Version::V4, expect, Duration::from_secs(5)));
    let (error, _stdin, stdout, resize) = open_exec(&mut client, true).await?;
    let (io, finisher) = served.await??;
    assert!(io.tty && io.stderr.is_none());
    client.data(resize, br#"{"Width":80,"Height":24}{"Wid"#, false).await?;
    client.data(resize, br#"th":132,"Height":43}"#, false).await?;
    let mut sizes = io.resize.context("resize")?;
    assert_eq!(sizes.next().await, Some(vk_ports::TerminalSize { width: 80, height: 24 }));
    assert_eq!(sizes.next().await, Some(vk_ports::TerminalSize { width: 132, height: 43 }));
    drop((io.stdin, io.stdout));
    let finished = tokio::spawn(async move { finisher.finish(&Outcome::Exited(0)).await });
    let got = client.collect_and_hang_up().await?;
    finished.await??;
    assert_eq!(got.text(error), r#"{"metadata":{},"status":"Success"}"#);
    assert!(got.finished(stdout) && got.text(stdout).is_empty());
    Ok(())
}

#[tokio::test]
async fn exec_gives_up_when_streams_are_missing() -> anyhow::Result<()> {
    let (mut client, server) = Client::pair();
    let expect = Expect { stdin: false, stdout: true, stderr: true, tty: false };
    let served =
        tokio::spawn(serve_remotecommand(server, Version::V4, expect, Duration::from_millis(200)));
    client.open(&[("streamtype", "error")]).await?;
    let bogus = client.open(&[("streamtype", "stdin")]).await?; // not asked for
    let result = served.await?;
    assert!(matches!(result, Err(SpdyError::Timeout(_))), "{result:?}");
    let got = client.collect().await?;
    assert!(got.streams.get(&bogus).is_some_and(|s| s.reset));
    Ok(())
}

async fn echo_server() -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = conn.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
            });
        }
    });
    Ok(port)
}

fn dialer(
    port: u16,
) -> impl Fn(
    u16,
) -> std::pin::Pin<
    Box<dyn Future<Output = Result<vk_ports::Duplex, vk_ports::ProviderError>> + Send>,
> + Send
+ Sync
+ 'static {
    move |asked: u16| {
        Box::pin(async move {
            if asked != 80 {
                return Err(vk_ports::ProviderError::NotFound(format!(
                    "nothing listens on {asked}"
                )));
            }
            let conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| {
                vk_ports::ProviderError::Unavailable { message: e.to_string(), source: None }
            })?;
            Ok(Box::new(conn) as vk_ports::Duplex)
        })
    }
}

#[tokio::test]
async fn port_forward_copies_both_ways_and_reports_dial_errors() -> anyhow::Result<()> {
    let port = echo_server().await?;
    let (mut client, server) = Client::pair();
    let served = tokio::spawn(serve_portforward(server, dialer(port), 256));

    // Pair 1, by requestid, to the echo server.
    let err1 = client.open(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]).await?;
    client.data(err1, b"", true).await?;
    let data1 = client.open(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]).await?;
    client.data(data1, b"ping ", false).await?;
    client.data(data1, b"pong", true).await?;
    // Pair 2, without requestid (error n pairs with data n+2), to a port nobody listens on.
    let err2 = client.open(&[("streamtype", "error"), ("port", "81")]).await?;
    client.data(err2, b"", true).await?;
    let data2 = client.open(&[("streamtype", "data"), ("port", "81")]).await?;
    // A stream without a port is refused.
    let bad = client.open(&[("streamtype", "data")]).await?;

    let mut got = test_client::Collected::default();
    let done = |got: &test_client::Collected| {
        [data1, err1, err2, data2].iter().all(|id| got.finished(*id))
            && got.streams.get(&bad).is_some_and(|s| s.reset)
    };
    while !done(&got) {
        let frame = client.next().await?.context("connection closed early")?;
        got.absorb(frame)?;
    }
    assert_eq!(got.text(data1), "ping pong");
    assert_eq!(got.text(err1), "");
    assert!(
        got.text(err2).contains("error forwarding port 81")
            && got.text(err2).contains("nothing listens"),
        "{got:?}"
    );

    client.send(Frame::GoAway { last_good_stream_id: 0, status: GOAWAY_OK }).await?;
    client.hang_up().await?;
    tokio::time::timeout(Duration::from_secs(5), served).await???;
    Ok(())
}

#[tokio::test]
async fn port_forward_resets_when_the_client_resets() -> anyhow::Result<()> {
    // A pod that never answers and never closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let held = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await?;
        let mut sink = Vec::new();
        conn.read_to_end(&mut sink).await?;
        anyhow::Ok(sink)
    });
    let (mut client, server) = Client::pair();
    let served = tokio::spawn(serve_portforward(server, dialer(port), 256));
    let err = client.open(&[("streamtype", "error"), ("port", "80"), ("requestid", "1")]).await?;
    let data = client.open(&[("streamtype", "data"), ("port", "80"), ("requestid", "1")]).await?;
    client.data(data, b"abc", false).await?;
    client.send(Frame::RstStream { stream_id: data, status: RST_CANCEL }).await?;
    let mut got = test_client::Collected::default();
    while !got.streams.get(&err).is_some_and(|s| s.reset) {
        got.absorb(client.next().await?.context("closed")?)?;
    }
    // The pod connection was closed after what came before the reset.
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), held).await???, b"abc");
    client.hang_up().await?;
    tokio::time::timeout(Duration::from_secs(5), served).await???;
    Ok(())
}
