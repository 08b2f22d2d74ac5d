//! Running a command in a task through Nomad's allocation exec WebSocket
//! (`GET /v1/client/allocation/<alloc>/exec`), for exec probes.
//!
//! The WebSocket handshake goes through the provider's own HTTP client (an HTTP/1.1 upgrade), so
//! the address, TLS settings and token are those of every other Nomad request; the frames are then
//! read with `tokio-tungstenite`. Frames are JSON (`command/agent/alloc_endpoint.go`): the client
//! sends `{"stdin":{"close":true}}` at once (a probe gets no input); the server sends
//! `{"stdout":{...}}`, `{"stderr":{...}}` and finally `{"exited":true,"result":{"exit_code":N}}`,
//! where a missing `exit_code` means 0 (`omitempty`).

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use vk_ports::ProviderError;

use super::client::NomadClient;

#[derive(Debug, Deserialize)]
struct Frame {
    #[serde(default)]
    exited: bool,
    #[serde(default)]
    result: Option<ExitResult>,
}

#[derive(Debug, Deserialize)]
struct ExitResult {
    #[serde(default)]
    exit_code: i32,
}

/// The exit code of a finished exec session, from the frames of one connection. `None` when the
/// connection ended without the `exited` frame.
pub fn exit_code(frame: &str) -> Option<i32> {
    let f: Frame = serde_json::from_str(frame).ok()?;
    f.exited.then(|| f.result.map_or(0, |r| r.exit_code))
}

/// Runs `command` in task `task` of allocation `alloc` and returns its exit code. Output is
/// discarded.
///
/// # Errors
/// `NotFound` for an unknown allocation or task, `Unavailable` when Nomad cannot be reached or
/// the session ends without an exit code.
pub async fn run(
    client: &NomadClient,
    alloc: &str,
    task: &str,
    command: &[String],
) -> Result<i32, ProviderError> {
    let unavailable = |message: String| ProviderError::Unavailable { message, source: None };
    let command = serde_json::to_string(command).map_err(|e| unavailable(e.to_string()))?;
    let key = generate_key();
    let req = client
        .request(Method::GET, &["v1", "client", "allocation", alloc, "exec"])
        .query(&[("task", task), ("tty", "false"), ("command", &command)])
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", &key);
    let resp = req.send().await.map_err(|e| unavailable(format!("Nomad exec failed: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(match status {
            StatusCode::NOT_FOUND => ProviderError::NotFound(body),
            s => unavailable(format!("Nomad exec: {s} {}", body.trim())),
        });
    }
    let accept =
        resp.headers().get("Sec-WebSocket-Accept").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if accept.as_deref() != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(unavailable("Nomad exec: bad Sec-WebSocket-Accept".into()));
    }
    let io = resp.upgrade().await.map_err(|e| unavailable(format!("Nomad exec upgrade: {e}")))?;
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Client, None).await;
    ws.send(Message::text(r#"{"stdin":{"close":true}}"#))
        .await
        .map_err(|e| unavailable(format!("Nomad exec: {e}")))?;
    while let Some(msg) = ws.next().await {
        let msg = msg.map_err(|e| unavailable(format!("Nomad exec: {e}")))?;
        match msg {
            Message::Text(t) => {
                if let Some(code) = exit_code(t.as_str()) {
                    let _ = ws.close(None).await;
                    return Ok(code);
                }
            }
            Message::Close(frame) => {
                let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(unavailable(format!("Nomad closed the exec session: {why}")));
            }
            _ => {}
        }
    }
    Err(unavailable("the exec session ended without an exit code".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_frames_are_read() {
        assert_eq!(exit_code(r#"{"exited":true,"result":{"exit_code":7}}"#), Some(7));
        assert_eq!(exit_code(r#"{"exited":true,"result":{}}"#), Some(0), "omitempty: 0");
        assert_eq!(exit_code(r#"{"exited":true}"#), Some(0));
        assert_eq!(exit_code(r#"{"stdout":{"data":"aGk="}}"#), None);
        assert_eq!(exit_code("not json"), None);
    }
}
