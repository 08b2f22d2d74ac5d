//! The `grpc` probe as the kubelet runs it (`pkg/probe/grpc`): one unary call of
//! `grpc.health.v1.Health/Check` with the probe's `service`, in plain text (HTTP/2 without TLS,
//! h2c) on a connection to the pod's port the backend makes ([`super::network::Endpoint`]), user
//! agent `kube-probe/<minor>`; healthy when the answer's status is `SERVING`. The two messages
//! are small enough to be written and read here (protocol buffers field 1 of each: the service, a
//! string; the status, an enum) rather than through a gRPC library.

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::Request;
use hyper::header::{CONTENT_TYPE, TE, USER_AGENT};
use hyper_util::rt::{TokioExecutor, TokioIo};
use vk_ports::Duplex;

use super::network::USER_AGENT_VALUE;

/// The path of the call.
const CHECK: &str = "/grpc.health.v1.Health/Check";

/// The most of an answer read (a health answer is a few bytes).
const MAX_ANSWER: usize = 4 << 10;

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
pub(super) const SERVING: i32 = 1;

/// What the call got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// A status (`ServingStatus`'s number).
    Status(i32),
    /// The call failed with gRPC status `code` (`grpc-status`) and `message` (`grpc-message`).
    Failed {
        /// The gRPC status code: 12 `UNIMPLEMENTED` for a server without the health service.
        code: u32,
        /// Its message.
        message: String,
    },
}

/// The name of serving status `n`, as the kubelet's message shows it.
pub(super) fn status_name(n: i32) -> String {
    match n {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => other.to_string(),
    }
}

/// The request body: one uncompressed gRPC message holding `HealthCheckRequest { service }`.
pub(super) fn request_body(service: Option<&str>) -> Vec<u8> {
    let mut msg = Vec::new();
    if let Some(s) = service.filter(|s| !s.is_empty()) {
        msg.push(0x0a); // field 1, length-delimited
        varint(s.len() as u64, &mut msg);
        msg.extend_from_slice(s.as_bytes());
    }
    let mut out = Vec::with_capacity(5 + msg.len());
    out.push(0); // not compressed
    out.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&msg);
    out
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut n = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((n, i + 1));
        }
    }
    None
}

/// The status in a response body (one gRPC message holding `HealthCheckResponse`); `0`
/// (`UNKNOWN`, protocol buffers' default) when the message leaves field 1 out.
///
/// # Errors
/// A body that is not one uncompressed message of that shape.
pub(super) fn response_status(body: &[u8]) -> Result<i32, String> {
    let [flag, l0, l1, l2, l3, msg @ ..] = body else {
        return Err("the answer holds no gRPC message".into());
    };
    if *flag != 0 {
        return Err("the answer is compressed".into());
    }
    let len = u32::from_be_bytes([*l0, *l1, *l2, *l3]) as usize;
    let msg = msg.get(..len).ok_or("the answer's message is cut short")?;
    let mut at = 0;
    let mut status = 0;
    while at < msg.len() {
        let (key, n) = read_varint(&msg[at..]).ok_or("a malformed answer")?;
        at += n;
        match (key >> 3, key & 7) {
            (field, 0) => {
                let (v, n) = read_varint(&msg[at..]).ok_or("a malformed answer")?;
                at += n;
                if field == 1 {
                    status = i32::try_from(v).unwrap_or(-1);
                }
            }
            (_, 2) => {
                let (l, n) = read_varint(&msg[at..]).ok_or("a malformed answer")?;
                at += n + usize::try_from(l).map_err(|_| "a malformed answer")?;
            }
            (_, 1) => at += 8,
            (_, 5) => at += 4,
            _ => return Err("a malformed answer".into()),
        }
    }
    Ok(status)
}

/// Calls `Health/Check` for `service` on `conn` (to `authority`, `host:port`).
///
/// # Errors
/// The connection or the HTTP/2 exchange failed (the text says how).
pub(super) async fn check(
    conn: Duplex,
    authority: &str,
    service: Option<&str>,
) -> Result<Answer, String> {
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(conn))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let req = Request::post(format!("http://{authority}{CHECK}"))
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        .header(USER_AGENT, USER_AGENT_VALUE)
        .body(http_body_util::Full::new(Bytes::from(request_body(service))))
        .map_err(|e| e.to_string())?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("the server answered HTTP {}", resp.status().as_u16()));
        }
        // A trailers-only answer carries the gRPC status in its headers.
        let mut grpc = grpc_status(resp.headers());
        let mut body = resp.into_body();
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Some(d) = frame.data_ref() {
                if data.len() + d.len() > MAX_ANSWER {
                    return Err("the answer is too large".to_owned());
                }
                data.extend_from_slice(d);
            } else if let Some(t) = frame.trailers_ref() {
                grpc = grpc_status(t).or(grpc);
            }
        }
        match grpc {
            Some((0, _)) | None if !data.is_empty() => response_status(&data).map(Answer::Status),
            Some((code, message)) if code != 0 => Ok(Answer::Failed { code, message }),
            _ => Err("the answer holds no gRPC message".to_owned()),
        }
    }
    .await;
    driver.abort();
    result
}

/// `grpc-status` and `grpc-message` of `headers` (headers or trailers), if they hold a status.
fn grpc_status(headers: &hyper::HeaderMap) -> Option<(u32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((code, message))
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_written_and_read_as_protocol_buffers() {
        assert_eq!(request_body(None), [0, 0, 0, 0, 0]);
        assert_eq!(request_body(Some("")), [0, 0, 0, 0, 0]);
        assert_eq!(request_body(Some("db")), [0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']);
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 1]), Ok(SERVING));
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 2]), Ok(2));
        assert_eq!(response_status(&[0, 0, 0, 0, 0]), Ok(0), "the default, UNKNOWN");
        // An unknown field before the status is skipped.
        assert_eq!(response_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]), Ok(SERVING));
        assert!(response_status(&[1, 0, 0, 0, 2, 0x08, 1]).is_err(), "compressed");
        assert!(response_status(&[0, 0, 0, 0, 9, 0x08, 1]).is_err(), "cut short");
        assert!(response_status(&[0, 0]).is_err());
        assert_eq!(status_name(2), "NOT_SERVING");
        assert_eq!(percent_decode("unknown%20service"), "unknown service");
    }

    /// A health server on the other end of an in-memory connection, as grpc-go answers: the
    /// status of `db` (SERVING), `down` (NOT_SERVING), a trailers-only `NOT_FOUND` for another
    /// service, `UNIMPLEMENTED` for another method.
    fn serve(io: tokio::io::DuplexStream) {
        use http_body_util::{Full, StreamBody};
        use hyper::body::Frame;
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_owned();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let mut trailers = hyper::HeaderMap::new();
                    let answer = |status: i32, trailers: hyper::HeaderMap| {
                        let msg = vec![0, 0, 0, 0, 2, 0x08, u8::try_from(status).unwrap()];
                        let frames = vec![
                            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(msg))),
                            Ok(Frame::trailers(trailers)),
                        ];
                        hyper::Response::builder()
                            .header(CONTENT_TYPE, "application/grpc")
                            .body(http_body_util::Either::Left(StreamBody::new(
                                futures::stream::iter(frames),
                            )))
                            .unwrap()
                    };
                    let only = |code: &str, msg: &str| {
                        hyper::Response::builder()
                            .header(CONTENT_TYPE, "application/grpc")
                            .header("grpc-status", code)
                            .header("grpc-message", msg)
                            .body(http_body_util::Either::Right(Full::new(Bytes::new())))
                            .unwrap()
                    };
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let resp = match (path.as_str(), &body[..]) {
                        (CHECK, [0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']) => answer(1, trailers),
                        (CHECK, [0, 0, 0, 0, 6, 0x0a, 4, b'd', b'o', b'w', b'n']) => {
                            answer(2, trailers)
                        }
                        (CHECK, _) => only("5", "unknown%20service"),
                        _ => only("12", "unknown method"),
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(io), service)
                .await;
        });
    }

    #[tokio::test]
    async fn the_health_check_is_called_over_plain_http2() {
        let call = |service: &'static str| async move {
            let (client, server) = tokio::io::duplex(64 << 10);
            serve(server);
            check(Box::new(client), "10.0.0.1:9000", Some(service)).await
        };
        assert_eq!(call("db").await, Ok(Answer::Status(SERVING)));
        assert_eq!(call("down").await, Ok(Answer::Status(2)));
        assert_eq!(
            call("other").await,
            Ok(Answer::Failed { code: 5, message: "unknown service".into() })
        );
    }
}
