//! A fake Nomad for unit tests: a raw TCP server answering each request from a route function.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::client::{ClientConfig, NomadClient};

/// How the fake answers one request.
pub(crate) enum Reply {
    /// A JSON body, then the connection closes.
    Json(String),
    /// An HTTP status with a text body.
    Status(u16, String),
    /// A 200 body sent in pieces, each after its delay; then the connection closes, or with
    /// `hold` stays open (silent) until the client goes.
    Stream(Vec<(Duration, String)>, bool),
    /// A WebSocket upgrade handed to the function.
    Ws(Box<dyn FnOnce(tokio::net::TcpStream, String) + Send>),
}

/// A fake Nomad: `route` gets the request line (`GET /v1/... HTTP/1.1`) of each request. The
/// request lines are sent on the channel returned, with the fake's address.
pub(crate) async fn fake_nomad(
    route: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let (req_tx, req_rx) = mpsc::unbounded_channel::<String>();
    let route = std::sync::Arc::new(route);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let route = route.clone();
            let req_tx = req_tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let line = text.lines().next().unwrap_or_default().to_owned();
                let _ = req_tx.send(line.clone());
                match route(&line) {
                    Reply::Json(body) => {
                        let _ = sock
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Nomad-Index: 7\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await;
                        let _ = sock.shutdown().await;
                    }
                    Reply::Status(code, body) => {
                        let _ = sock
                            .write_all(
                                format!(
                                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await;
                        let _ = sock.shutdown().await;
                    }
                    Reply::Stream(pieces, hold) => {
                        let _ = sock
                            .write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
                            )
                            .await;
                        for (delay, piece) in pieces {
                            tokio::time::sleep(delay).await;
                            if sock.write_all(piece.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        if hold {
                            // Until the client closes.
                            let mut buf = [0u8; 64];
                            while sock.read(&mut buf).await.unwrap_or(0) > 0 {}
                        } else {
                            let _ = sock.shutdown().await;
                        }
                    }
                    Reply::Ws(f) => f(sock, text),
                }
            });
        }
    });
    (addr, req_rx)
}

/// A client of the fake at `addr`.
pub(crate) fn client(addr: &str) -> NomadClient {
    NomadClient::new(&ClientConfig { address: addr.to_owned(), ..Default::default() }).unwrap()
}

/// The value of query parameter `name` in a request line.
pub(crate) fn param(line: &str, name: &str) -> Option<String> {
    let path = line.split(' ').nth(1)?;
    let url = reqwest::Url::parse(&format!("http://x{path}")).ok()?;
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Collects every request line received so far.
pub(crate) fn drain(rx: &mut mpsc::UnboundedReceiver<String>) -> Vec<String> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// Answers the WebSocket upgrade request `head` on `sock` as a server and returns the stream.
///
/// # Panics
/// On a request without `Sec-WebSocket-Key` or a failed write (a test failure).
pub(super) async fn accept_ws(
    mut sock: tokio::net::TcpStream,
    head: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let key = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("Sec-WebSocket-Key: ").or(l.strip_prefix("sec-websocket-key: "))
        })
        .unwrap()
        .trim()
        .to_owned();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    sock.write_all(
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    tokio_tungstenite::WebSocketStream::from_raw_socket(
        sock,
        tokio_tungstenite::tungstenite::protocol::Role::Server,
        None,
    )
    .await
}
