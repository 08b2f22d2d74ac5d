//! The WebSocket channel protocols against a client on an in-memory pipe: negotiation, the
//! codecs, exec and attach sessions, port-forward.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use vk_ports::{Duplex, ExecIo, ProviderError, TerminalSize};

use super::channel::{NONE, payload};
use super::*;
use crate::remotecommand::{Expect, Outcome, Version};

fn rc(offered: &[&str]) -> Option<&'static str> {
    negotiate(offered, Kind::RemoteCommand).map(|p| p.name().unwrap_or("<none>"))
}

#[test]
fn negotiation_follows_the_client_order() {
    assert_eq!(rc(&["v5.channel.k8s.io", "v4.channel.k8s.io"]), Some("v5.channel.k8s.io"));
    assert_eq!(rc(&["v4.channel.k8s.io", "v5.channel.k8s.io"]), Some("v4.channel.k8s.io"));
    assert_eq!(
        rc(&["nope", "base64.channel.k8s.io", "channel.k8s.io"]),
        Some("base64.channel.k8s.io")
    );
    assert_eq!(rc(&["v4.base64.channel.k8s.io"]), Some("v4.base64.channel.k8s.io"));
    assert_eq!(rc(&["SPDY/3.1+portforward.k8s.io"]), None);
    assert_eq!(rc(&["v3.channel.k8s.io"]), None);
    let none = negotiate(&[], Kind::RemoteCommand);
    assert_eq!(
        none.map(|p| (p.name(), p.version(), p.is_base64())),
        Some((None, Version::V1, false))
    );

    let pf = |o: &[&str]| negotiate(o, Kind::PortForward).map(|p| p.name());
    assert_eq!(pf(&["v5.channel.k8s.io", "v4.channel.k8s.io"]), Some(Some("v4.channel.k8s.io")));
    assert_eq!(pf(&["v4.base64.channel.k8s.io"]), Some(Some("v4.base64.channel.k8s.io")));
    assert_eq!(pf(&["channel.k8s.io", "portforward.k8s.io"]), None);
    assert_eq!(pf(&[]), Some(None));

    let v4 = negotiate(&["v4.channel.k8s.io"], Kind::RemoteCommand);
    assert!(v4.is_some_and(|p| p.version() == Version::V4 && !p.has_stream_close()));
    let v5 = negotiate(&["v5.channel.k8s.io"], Kind::RemoteCommand);
    assert!(v5.is_some_and(Protocol::has_stream_close));
}

#[test]
fn header_values_are_split_and_trimmed() {
    let offered = offered_protocols(["v5.channel.k8s.io, v4.channel.k8s.io", " ,channel.k8s.io"]);
    assert_eq!(offered, ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"]);
    assert!(offered_protocols(["", " "]).is_empty());
}

fn by_name(name: &str) -> Protocol {
    negotiate(&[name], Kind::RemoteCommand).unwrap()
}

fn raw(msg: Message) -> Bytes {
    payload(msg).unwrap()
}

#[test]
fn binary_codec_round_trips() {
    let p = by_name("v4.channel.k8s.io");
    let msg = encode(p, 1, b"hello");
    assert_eq!(msg, Message::binary(b"\x01hello".to_vec()));
    assert_eq!(
        decode(p, raw(msg)),
        Ok(Decoded::Data { channel: 1, payload: Bytes::from_static(b"hello") })
    );
    assert_eq!(encode(p, 3, &[]), Message::binary(vec![3]));
    assert_eq!(decode(p, Bytes::new()), Ok(Decoded::Empty));
    // 0xFF is only a close before v5 channel numbers run out.
    assert_eq!(
        decode(p, Bytes::from_static(&[0xFF, 0])),
        Ok(Decoded::Data { channel: 0xFF, payload: Bytes::from_static(&[0]) })
    );
}

#[test]
fn base64_codec_round_trips() {
    let p = by_name("base64.channel.k8s.io");
    // conn.go's own example: "\n" on stdout is "1Cg==".
    assert_eq!(encode(p, 1, b"\n"), Message::text("1Cg=="));
    assert_eq!(encode(p, 3, &[]), Message::text("3"));
    assert_eq!(
        decode(p, Bytes::from_static(b"0Zm9vCg==")),
        Ok(Decoded::Data { channel: 0, payload: Bytes::from_static(b"foo\n") })
    );
    for ch in [0, 4, 79, 80, 200, 255] {
        let data: Vec<u8> = (0..=255).collect();
        let msg = encode(p, ch, &data);
        if ch < 80 {
            assert_eq!(
                decode(p, raw(msg)),
                Ok(Decoded::Data { channel: ch, payload: data.into() })
            );
        } else {
            // Like Go, channels from 80 up are not single characters and do not round-trip.
            assert!(matches!(msg, Message::Text(_)));
        }
    }
    assert_eq!(decode(p, Bytes::from_static(b"0!!")), Err(DecodeError::BadBase64));
    assert_eq!(decode(p, Bytes::from_static(b"/Zg==")), Err(DecodeError::BadChannel(b'/')));
}

#[test]
fn v5_close_messages() {
    let p = by_name("v5.channel.k8s.io");
    assert_eq!(decode(p, Bytes::from_static(&[0xFF, 0])), Ok(Decoded::Close { channel: 0 }));
    assert_eq!(decode(p, Bytes::from_static(&[0xFF])), Err(DecodeError::ShortClose));
    assert_eq!(
        decode(p, Bytes::from_static(&[0, b'x'])),
        Ok(Decoded::Data { channel: 0, payload: Bytes::from_static(b"x") })
    );
}

#[test]
fn fuzz_entry_takes_anything() {
    for data in
        [&b""[..], b"\xff", b"\xff\x00", b"0", b"\x00\xff\xfe", b"9====", "\u{80}x".as_bytes()]
    {
        fuzz_decode(data);
    }
}

#[test]
fn ports_from_the_query() {
    let q = |pairs: &[(&'static str, &'static str)]| ports_from_query(pairs.iter().copied());
    assert_eq!(q(&[("port", "80,1234")]), Ok(vec![80, 1234]));
    assert_eq!(q(&[("port", "80"), ("x", "1"), ("port", "443,80")]), Ok(vec![80, 443, 80]));
    assert!(q(&[]).is_err_and(|e| e.contains("required")));
    assert!(q(&[("port", "")]).is_err_and(|e| e.contains("empty")));
    assert!(q(&[("port", "0")]).is_err_and(|e| e.contains("> 0")));
    assert!(q(&[("port", "65536")]).is_err_and(|e| e.contains("unable to parse")));
    assert!(q(&[("port", "80, 81")]).is_err());
    let many = vec!["1"; MAX_PORTS + 1].join(",");
    assert!(ports_from_query([("port", many.as_str())]).is_err());
}

async fn pair() -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
    let (s, c) = tokio::io::duplex(64 * 1024);
    let server = WebSocketStream::from_raw_socket(s, Role::Server, None).await;
    let client = WebSocketStream::from_raw_socket(c, Role::Client, None).await;
    (server, client)
}

/// The next data or close message the client gets (pongs are skipped).
async fn next(client: &mut WebSocketStream<DuplexStream>) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), client.next()).await;
        match m.unwrap().unwrap().unwrap() {
            Message::Pong(_) => {}
            m => return m,
        }
    }
}

async fn expect_close(client: &mut WebSocketStream<DuplexStream>) {
    match next(client).await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
        m => panic!("expected Close 1000, got {m:?}"),
    }
    // The client's reply completes the handshake and the stream ends.
    assert!(client.next().await.is_none());
}

fn status_of(msg: Message, p: Protocol) -> serde_json::Value {
    match decode(p, raw(msg)).unwrap() {
        Decoded::Data { channel: ERROR, payload } => serde_json::from_slice(&payload).unwrap(),
        d => panic!("expected the error channel, got {d:?}"),
    }
}

/// A fake command: echoes one stdin chunk (or, with `until_eof`, all of stdin and then
/// "eof") to stdout and exits with `code`.
async fn echo(mut io: ExecIo, until_eof: bool) -> ExecIo {
    let mut stdin = io.stdin.take().unwrap();
    let stdout = io.stdout.as_mut().unwrap();
    while let Some(b) = stdin.next().await {
        stdout.send(b).await.unwrap();
        if !until_eof {
            return io;
        }
    }
    stdout.send(Bytes::from_static(b"eof")).await.unwrap();
    io
}

#[tokio::test]
async fn exec_over_v4_binary() {
    let (server, mut client) = pair().await;
    let p = by_name("v4.channel.k8s.io");
    let expect = Expect { stdin: true, stdout: true, stderr: true, tty: false };
    let (io, fin) = serve_remotecommand(server, p, expect).await.unwrap();
    assert!(io.resize.is_none() && io.stderr.is_some());
    let cmd = tokio::spawn(async move {
        drop(echo(io, false).await);
        fin.finish(&Outcome::Exited(3)).await;
    });
    assert_eq!(next(&mut client).await, Message::binary(vec![STDOUT]));
    client.send(Message::Ping(Bytes::from_static(b"hi"))).await.unwrap();
    client.send(encode(p, STDIN, b"hello")).await.unwrap();
    assert_eq!(next(&mut client).await, encode(p, STDOUT, b"hello"));
    let status = status_of(next(&mut client).await, p);
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    expect_close(&mut client).await;
    cmd.await.unwrap();
}

#[tokio::test]
async fn pings_are_answered() {
    let (server, mut client) = pair().await;
    let expect = Expect { stdout: true, ..Expect::default() };
    let (_io, _fin) = serve_remotecommand(server, NONE, expect).await.unwrap();
    assert_eq!(client.next().await.unwrap().unwrap(), Message::binary(vec![STDOUT]));
    client.send(Message::Ping(Bytes::from_static(b"x"))).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(10), client.next()).await;
    assert_eq!(pong.unwrap().unwrap().unwrap(), Message::Pong(Bytes::from_static(b"x")));
}

#[tokio::test]
async fn exec_over_base64() {
    let (server, mut client) = pair().await;
    let p = by_name("v4.base64.channel.k8s.io");
    let expect = Expect { stdin: true, stdout: true, ..Expect::default() };
    let (io, fin) = serve_remotecommand(server, p, expect).await.unwrap();
    let cmd = tokio::spawn(async move {
        drop(echo(io, false).await);
        fin.finish(&Outcome::Exited(0)).await;
    });
    assert_eq!(next(&mut client).await, Message::text("1"));
    client.send(Message::text("0aGk=")).await.unwrap();
    assert_eq!(next(&mut client).await, Message::text("1aGk="));
    assert_eq!(
        status_of(next(&mut client).await, p),
        serde_json::json!({"metadata": {}, "status": "Success"})
    );
    expect_close(&mut client).await;
    cmd.await.unwrap();
}

#[tokio::test]
async fn v1_errors_are_text_and_the_first_message_falls_back_to_the_error_channel() {
    let (server, mut client) = pair().await;
    let (io, fin) = serve_remotecommand(server, NONE, Expect::default()).await.unwrap();
    assert_eq!(next(&mut client).await, Message::binary(vec![ERROR]));
    drop(io);
    let done =
        tokio::spawn(async move { fin.finish(&Outcome::Failed("no such container".into())).await });
    assert_eq!(next(&mut client).await, encode(NONE, ERROR, b"no such container"));
    expect_close(&mut client).await;
    done.await.unwrap();
}

#[tokio::test]
async fn v5_close_ends_stdin() {
    let (server, mut client) = pair().await;
    let p = by_name("v5.channel.k8s.io");
    let expect = Expect { stdin: true, stdout: true, ..Expect::default() };
    let (io, fin) = serve_remotecommand(server, p, expect).await.unwrap();
    let cmd = tokio::spawn(async move {
        drop(echo(io, true).await);
        fin.finish(&Outcome::Exited(0)).await;
    });
    assert_eq!(next(&mut client).await, Message::binary(vec![STDOUT]));
    client.send(encode(p, STDIN, b"a")).await.unwrap();
    client.send(encode(p, STDIN, b"b")).await.unwrap();
    client.send(Message::binary(vec![STREAM_CLOSE, STDIN])).await.unwrap();
    assert_eq!(next(&mut client).await, encode(p, STDOUT, b"a"));
    assert_eq!(next(&mut client).await, encode(p, STDOUT, b"b"));
    assert_eq!(next(&mut client).await, encode(p, STDOUT, b"eof"));
    assert_eq!(status_of(next(&mut client).await, p)["status"], "Success");
    expect_close(&mut client).await;
    cmd.await.unwrap();
}

#[tokio::test]
async fn websocket_close_ends_stdin_and_output() {
    let (server, mut client) = pair().await;
    let p = by_name("v4.channel.k8s.io");
    let expect = Expect { stdin: true, stdout: true, ..Expect::default() };
    let (mut io, fin) = serve_remotecommand(server, p, expect).await.unwrap();
    assert_eq!(next(&mut client).await, Message::binary(vec![STDOUT]));
    client.close(None).await.unwrap();
    let mut stdin = io.stdin.take().unwrap();
    let eof = tokio::time::timeout(Duration::from_secs(10), stdin.next()).await;
    assert_eq!(eof.unwrap(), None);
    let stdout = io.stdout.as_mut().unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if stdout.send(Bytes::from_static(b"x")).await.is_err() {
                return;
            }
        }
    });
    failed.await.unwrap();
    fin.finish(&Outcome::Exited(0)).await;
}

#[tokio::test]
async fn resize_messages_reach_the_command() {
    let (server, mut client) = pair().await;
    let p = by_name("v4.channel.k8s.io");
    let expect = Expect { stdin: true, stdout: true, tty: true, ..Expect::default() };
    let (mut io, fin) = serve_remotecommand(server, p, expect).await.unwrap();
    assert!(io.tty && io.stderr.is_none());
    assert_eq!(next(&mut client).await, Message::binary(vec![STDOUT]));
    client.send(encode(p, RESIZE, br#"{"Width":100,"Height":30}"#)).await.unwrap();
    client.send(encode(p, RESIZE, b"garbage")).await.unwrap();
    client.send(encode(p, RESIZE, br#"{"Width":80,"Height":24}"#)).await.unwrap();
    let resize = io.resize.as_mut().unwrap();
    assert_eq!(resize.next().await, Some(TerminalSize { width: 100, height: 30 }));
    assert_eq!(resize.next().await, Some(TerminalSize { width: 80, height: 24 }));
    drop(io);
    let done = tokio::spawn(async move { fin.finish(&Outcome::Exited(0)).await });
    assert_eq!(status_of(next(&mut client).await, p)["status"], "Success");
    expect_close(&mut client).await;
    done.await.unwrap();
}

#[tokio::test]
async fn port_forward_to_a_tcp_echo_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = listener.local_addr().unwrap().port();
    // Echoes one read, then closes.
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        s.write_all(&buf[..n]).await.unwrap();
    });
    let dial = move |port: u16| async move {
        if port != echo_port {
            return Err(ProviderError::NotFound(format!("nothing listens on {port}")));
        }
        let conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        conn.map(|c| Box::new(c) as Duplex)
            .map_err(|e| ProviderError::Unavailable { message: e.to_string(), source: None })
    };
    let (server, mut client) = pair().await;
    let p = negotiate(&["v4.channel.k8s.io"], Kind::PortForward).unwrap();
    let served = tokio::spawn(serve_portforward(server, p, vec![echo_port, 9], dial));

    let [lo, hi] = echo_port.to_le_bytes();
    for expected in [[0, lo, hi], [1, lo, hi], [2, 9, 0], [3, 9, 0]] {
        assert_eq!(next(&mut client).await, Message::binary(expected.to_vec()));
    }
    client.send(encode(p, 0, b"ping")).await.unwrap();
    let (mut echoed, mut error) = (None, None);
    while echoed.is_none() || error.is_none() {
        match decode(p, raw(next(&mut client).await)).unwrap() {
            Decoded::Data { channel: 0, payload } => echoed = Some(payload),
            Decoded::Data { channel: 3, payload } => error = Some(payload),
            d => panic!("unexpected {d:?}"),
        }
    }
    assert_eq!(echoed.as_deref(), Some(&b"ping"[..]));
    let error = String::from_utf8(error.unwrap().to_vec()).unwrap();
    assert!(error.starts_with("error forwarding port 9: not found"), "{error}");
    // Both ports are done: the server closes.
    expect_close(&mut client).await;
    tokio::time::timeout(Duration::from_secs(10), served).await.unwrap().unwrap();
}

#[tokio::test]
async fn port_forward_with_the_most_ports() {
    let (server, mut client) = pair().await;
    let p = negotiate(&[], Kind::PortForward).unwrap();
    let ports: Vec<u16> = (1..=200).collect();
    let dial = |port: u16| async move { Err(ProviderError::NotFound(port.to_string())) };
    let served = tokio::spawn(serve_portforward(server, p, ports, dial));
    let mut prefixes = 0;
    let mut errors = 0;
    loop {
        match next(&mut client).await {
            Message::Binary(b) if b.len() == 3 => {
                assert_eq!(u16::from_le_bytes([b[1], b[2]]), u16::from(b[0] / 2) + 1);
                prefixes += 1;
            }
            Message::Binary(b) => {
                assert!(b[0] % 2 == 1 && b[0] < 254, "{b:?}");
                errors += 1;
            }
            Message::Close(_) => break,
            m => panic!("unexpected {m:?}"),
        }
    }
    assert_eq!((prefixes, errors), (2 * MAX_PORTS, MAX_PORTS));
    assert!(client.next().await.is_none());
    served.await.unwrap();
}

#[tokio::test]
async fn port_forward_ends_when_the_client_goes() {
    let (server, mut client) = pair().await;
    let p = negotiate(&["v4.base64.channel.k8s.io"], Kind::PortForward).unwrap();
    // A pod side that stays open and silent.
    let pods = std::sync::Mutex::new(Vec::new());
    let dial = |_: u16| {
        let (a, b) = tokio::io::duplex(1024);
        pods.lock().unwrap().push(b);
        async { Ok::<_, ProviderError>(Box::new(a) as Duplex) }
    };
    let served = serve_portforward(server, p, vec![8080], dial);
    let client_side = async {
        let prefix = STANDARD.encode(8080u16.to_le_bytes());
        assert_eq!(next(&mut client).await, Message::text(format!("0{prefix}")));
        assert_eq!(next(&mut client).await, Message::text(format!("1{prefix}")));
        client.close(None).await.unwrap();
    };
    let both = futures::future::join(served, client_side);
    tokio::time::timeout(Duration::from_secs(10), both).await.unwrap();
}
