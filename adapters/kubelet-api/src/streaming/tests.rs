//! The streaming routes end to end on an in-memory connection, one test per route and transport:
//! the request checked, the protocol agreed in the 101 answer, then the one session body serving
//! exec, attach or port-forward over SPDY/3.1 and over WebSocket.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vk_domain::runtime::WorkloadId;
use vk_ports::{Duplex, ExecIo, PodNetwork, PodStreams, ProviderError, StatsProvider};

use crate::server::fixtures::{Index, Reviews, connection};
use crate::server::{Kubelet, ServingCert, Settings};
use crate::spdy::test_client::{Client, Collected};
use crate::ws::{self, Decoded, Kind};

/// How long a test waits for the server.
const WAIT: Duration = Duration::from_secs(10);

/// A backend whose exec writes `<workload>/<container>: <command>` on stdout and `err` on stderr
/// and exits 3, whose attach writes `attached` and ends, and whose every port echoes.
struct Pods;
impl StatsProvider for Pods {}

impl PodStreams for Pods {
    async fn exec_stream(
        &self,
        id: &WorkloadId,
        container: &str,
        command: &[String],
        mut io: ExecIo,
    ) -> Result<i32, ProviderError> {
        let out = format!("{id}/{container}: {}", command.join(" "));
        if let Some(stdout) = &mut io.stdout {
            let _ = stdout.send(Bytes::from(out)).await;
        }
        if let Some(stderr) = &mut io.stderr {
            let _ = stderr.send(Bytes::from_static(b"err")).await;
        }
        Ok(3)
    }

    async fn attach(&self, _: &WorkloadId, _: &str, mut io: ExecIo) -> Result<(), ProviderError> {
        if let Some(stdout) = &mut io.stdout {
            let _ = stdout.send(Bytes::from_static(b"attached")).await;
        }
        Ok(())
    }
}

impl PodNetwork for Pods {
    async fn dial(&self, _: &WorkloadId, _: u16) -> Result<Duplex, ProviderError> {
        let (ours, pod) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let (mut rd, mut wr) = tokio::io::split(pod);
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
            let _ = wr.shutdown().await;
        });
        Ok(Box::new(ours))
    }
}

fn kubelet() -> Arc<Kubelet<Pods, Reviews, Index>> {
    let cert = ServingCert { cert_pem: String::new(), key_pem: String::new() };
    let settings = Settings::new("vk", cert);
    Kubelet::new(Arc::new(Pods), Arc::new(Reviews::default()), Arc::new(Index), settings)
}

/// Sends a SPDY upgrade request (`POST`, as kube-apiserver does) for `path`, offering
/// `protocol` when given, and reads the answer's head: the client on the upgraded connection and
/// the head, lower-cased.
async fn spdy(path: &str, protocol: Option<&str>) -> anyhow::Result<(Client, String)> {
    let mut conn = connection(&kubelet());
    let offer = protocol.map(|p| format!("X-Stream-Protocol-Version: {p}\r\n")).unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: vk\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n{offer}\r\n"
    );
    conn.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(WAIT, conn.read_u8()).await??;
        head.push(byte);
    }
    let head = String::from_utf8(head)?.to_ascii_lowercase();
    ensure!(head.starts_with("http/1.1 101"), "not upgraded: {head}");
    ensure!(head.contains("upgrade: spdy/3.1"), "{head}");
    Ok((Client::over(conn), head))
}

/// Opens a WebSocket (`GET`) for `path` offering `protocol`; tungstenite checks the 101 answer
/// (accept key, and the protocol among those offered).
async fn websocket(path: &str, protocol: &str) -> anyhow::Result<WebSocketStream<DuplexStream>> {
    let conn = connection(&kubelet());
    let mut request = format!("ws://vk{path}").into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse()?);
    let (ws, answer) = tokio_tungstenite::client_async(request, conn).await?;
    let agreed = answer.headers().get("Sec-WebSocket-Protocol").context("no protocol")?;
    ensure!(agreed == protocol, "agreed on {agreed:?}");
    Ok(ws)
}

/// The next data message's channel and payload (pings and pongs skipped); `None` on Close.
async fn next(
    ws: &mut WebSocketStream<DuplexStream>,
    p: ws::Protocol,
) -> anyhow::Result<Option<(u8, Bytes)>> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await?.context("ended")??;
        let data = match msg {
            Message::Binary(b) => b,
            Message::Text(t) => Bytes::from(t),
            Message::Close(_) => return Ok(None),
            _ => continue,
        };
        match ws::decode(p, data)? {
            Decoded::Data { channel, payload } => return Ok(Some((channel, payload))),
            d => bail!("unexpected {d:?}"),
        }
    }
}

#[tokio::test]
async fn exec_over_spdy() -> anyhow::Result<()> {
    let path = "/exec/ns/web/main?command=echo&command=hi&output=1&error=1";
    let (mut client, head) = spdy(path, Some("v4.channel.k8s.io, v3.channel.k8s.io")).await?;
    ensure!(head.contains("x-stream-protocol-version: v4.channel.k8s.io"), "{head}");
    let error = client.open(&[("streamtype", "error")]).await?;
    client.data(error, b"", true).await?;
    let stdout = client.open(&[("streamtype", "stdout")]).await?;
    let stderr = client.open(&[("streamtype", "stderr")]).await?;
    let got = tokio::time::timeout(WAIT, client.collect_and_hang_up()).await??;
    assert_eq!(got.text(stdout), "job-web/main: echo hi");
    assert_eq!(got.text(stderr), "err");
    let status: serde_json::Value = serde_json::from_str(&got.text(error))?;
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    assert!(got.goaway);
    Ok(())
}

/// No `X-Stream-Protocol-Version` is version 1: none in the answer, and nothing on the error
/// stream for a success.
#[tokio::test]
async fn attach_over_spdy_v1() -> anyhow::Result<()> {
    let (mut client, head) = spdy("/attach/ns/web/any-uid/main?output=1", None).await?;
    ensure!(!head.contains("x-stream-protocol-version"), "{head}");
    let error = client.open(&[("streamtype", "error")]).await?;
    client.data(error, b"", true).await?;
    let stdout = client.open(&[("streamtype", "stdout")]).await?;
    let got = tokio::time::timeout(WAIT, client.collect_and_hang_up()).await??;
    assert_eq!(got.text(stdout), "attached");
    assert!(got.finished(error) && got.text(error).is_empty(), "{got:?}");
    Ok(())
}

#[tokio::test]
async fn exec_over_websocket() -> anyhow::Result<()> {
    let path = "/exec/ns/web/main?command=echo&command=hi&stdout=1&stderr=1";
    let mut ws = websocket(path, "v5.channel.k8s.io").await?;
    let p = ws::negotiate(&["v5.channel.k8s.io"], Kind::RemoteCommand).context("v5")?;
    // The empty message on stdout that says the session is up, the output, the Status.
    let mut got: Vec<(u8, Bytes)> = Vec::new();
    while let Some(m) = next(&mut ws, p).await? {
        got.push(m);
    }
    assert_eq!(got[0], (ws::STDOUT, Bytes::new()));
    assert!(got.contains(&(ws::STDOUT, Bytes::from_static(b"job-web/main: echo hi"))), "{got:?}");
    assert!(got.contains(&(ws::STDERR, Bytes::from_static(b"err"))), "{got:?}");
    let (channel, status) = got.last().context("no Status")?;
    assert_eq!(*channel, ws::ERROR);
    let status: serde_json::Value = serde_json::from_slice(status)?;
    assert_eq!(status["reason"], "NonZeroExitCode");
    Ok(())
}

#[tokio::test]
async fn port_forward_over_spdy() -> anyhow::Result<()> {
    let (mut client, head) = spdy("/portForward/ns/web", Some("portforward.k8s.io")).await?;
    ensure!(head.contains("x-stream-protocol-version: portforward.k8s.io"), "{head}");
    let error = client.open(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]).await?;
    client.data(error, b"", true).await?;
    let data = client.open(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]).await?;
    client.data(data, b"ping", true).await?;
    let mut got = Collected::default();
    while !got.finished(data) {
        got.absorb(client.next().await?.context("closed early")?)?;
    }
    assert_eq!(got.text(data), "ping");
    client.hang_up().await?;
    Ok(())
}

#[tokio::test]
async fn port_forward_over_websocket() -> anyhow::Result<()> {
    let mut ws = websocket("/portForward/ns/web?port=8080", "v4.channel.k8s.io").await?;
    let p = ws::negotiate(&["v4.channel.k8s.io"], Kind::PortForward).context("v4")?;
    let port = Bytes::copy_from_slice(&8080u16.to_le_bytes());
    assert_eq!(next(&mut ws, p).await?, Some((0, port.clone())));
    assert_eq!(next(&mut ws, p).await?, Some((1, port)));
    ws.send(ws::encode(p, 0, b"ping")).await?;
    assert_eq!(next(&mut ws, p).await?, Some((0, Bytes::from_static(b"ping"))));
    ws.close(None).await?;
    Ok(())
}
