//! The fake Nomad of the adapter's unit tests, the one server they all talk to: a raw HTTP/1.1
//! server on `127.0.0.1:0` (plain, or TLS with [`fake_nomad_tls`]) answering each request from a
//! route function: JSON (with an `X-Nomad-Index`), a status, a stream in timed pieces, silence, or
//! the connection handed to the test (a WebSocket upgrade, an answer the test times itself).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::client::{ClientConfig, NomadClient};

/// How the fake answers one request.
pub(crate) enum Reply {
    /// A JSON body with `X-Nomad-Index: 7`, then the connection closes.
    Json(String),
    /// A JSON body with `X-Nomad-Index: <index>` (a blocking query's answer), then the connection
    /// closes.
    Indexed(u64, String),
    /// An HTTP status with a text body.
    Status(u16, String),
    /// A 200 body sent in pieces, each after its delay; then the connection closes, or with
    /// `hold` stays open (silent) until the client goes.
    Stream(Vec<(Duration, String)>, bool),
    /// No answer at all: the connection stays open, silent, until the client goes (a blocking
    /// query Nomad holds).
    Silent,
    /// A WebSocket upgrade handed to the function (with the request's head, for [`accept_ws`]).
    Ws(Box<dyn FnOnce(TcpStream, String) + Send>),
    /// The connection handed to the function with the request's head, for an answer the test
    /// writes itself (timed, counted).
    Socket(Box<dyn FnOnce(TcpStream, String) + Send>),
}

/// The route of a fake: the request line (`GET /v1/... HTTP/1.1`) to the answer.
type Route = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// A fake Nomad: `route` gets the request line (`GET /v1/... HTTP/1.1`) of each request. The
/// request lines are sent on the channel returned, with the fake's address (`http://...`).
/// Connections are served concurrently, each by `route` once its request's head is read.
pub(crate) async fn fake_nomad(
    route: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> (String, mpsc::UnboundedReceiver<String>) {
    serve(Arc::new(route), None).await
}

/// As [`fake_nomad`], over TLS with `acceptor`'s certificate (the address is `https://...`). A
/// connection whose handshake fails is dropped; [`Reply::Ws`] and [`Reply::Socket`] close the
/// connection instead of handing it over.
pub(crate) async fn fake_nomad_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    route: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> (String, mpsc::UnboundedReceiver<String>) {
    serve(Arc::new(route), Some(acceptor)).await
}

/// Listens on `127.0.0.1:0` and serves every connection with `route`, over TLS with `tls`.
async fn serve(
    route: Route,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let addr = format!("{scheme}://{}", listener.local_addr().unwrap());
    let (req_tx, req_rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { return };
            let (route, req_tx, tls) = (route.clone(), req_tx.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => plain(sock, &route, &req_tx).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(sock).await {
                            secure(stream, &route, &req_tx).await;
                        }
                    }
                }
            });
        }
    });
    (addr, req_rx)
}

/// Serves one plain connection: the connection itself goes to [`Reply::Ws`] and
/// [`Reply::Socket`].
async fn plain(mut sock: TcpStream, route: &Route, req_tx: &mpsc::UnboundedSender<String>) {
    let Some(head) = read_head(&mut sock).await else { return };
    match route(&request_line(&head, req_tx)) {
        Reply::Ws(f) | Reply::Socket(f) => f(sock, head),
        reply => answer(&mut sock, reply).await,
    }
}

/// Serves one TLS connection.
async fn secure<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    route: &Route,
    req_tx: &mpsc::UnboundedSender<String>,
) {
    let Some(head) = read_head(&mut sock).await else { return };
    let reply = route(&request_line(&head, req_tx));
    answer(&mut sock, reply).await;
}

/// A request's head, up to and with its blank line; `None` when the client goes first.
async fn read_head<S: AsyncRead + Unpin>(sock: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if sock.read(&mut byte).await.unwrap_or(0) == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// The request line of `head`, sent on `req_tx` too.
fn request_line(head: &str, req_tx: &mpsc::UnboundedSender<String>) -> String {
    let line = head.lines().next().unwrap_or_default().to_owned();
    let _ = req_tx.send(line.clone());
    line
}

/// Writes `reply` (any but the ones that take the connection, which end it here).
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(sock: &mut S, reply: Reply) {
    match reply {
        Reply::Json(body) => json(sock, 7, &body).await,
        Reply::Indexed(index, body) => json(sock, index, &body).await,
        Reply::Status(code, body) => whole(sock, &format!("{code} X"), "", &body).await,
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
                until_closed(sock).await;
            } else {
                let _ = sock.shutdown().await;
            }
        }
        Reply::Silent => until_closed(sock).await,
        Reply::Ws(_) | Reply::Socket(_) => {}
    }
}

/// A 200 answer of `body` with `X-Nomad-Index: <index>`; then the connection closes.
async fn json<S: AsyncWrite + Unpin>(sock: &mut S, index: u64, body: &str) {
    let headers = format!("Content-Type: application/json\r\nX-Nomad-Index: {index}\r\n");
    whole(sock, "200 OK", &headers, body).await;
}

/// A whole answer: `status` (`200 OK`), `headers` (each line ending in CRLF), then `body` with
/// its length; then the connection closes.
async fn whole<S: AsyncWrite + Unpin>(sock: &mut S, status: &str, headers: &str, body: &str) {
    let answer = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(answer.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// Holds the connection open, silent, until the client closes it.
async fn until_closed<S: AsyncRead + Unpin>(sock: &mut S) {
    let mut buf = [0u8; 64];
    while sock.read(&mut buf).await.unwrap_or(0) > 0 {}
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
    mut sock: TcpStream,
    head: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
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
