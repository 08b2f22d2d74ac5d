//! Running a command in a task through Nomad's allocation exec WebSocket
//! (`GET /v1/client/allocation/<alloc>/exec?task=&tty=&command=<JSON array>`): to completion for
//! exec probes ([`run`]) and interactively for `kubectl exec` ([`stream`]).
//!
//! The WebSocket handshake goes through the provider's own HTTP client (an HTTP/1.1 upgrade), so
//! the address, TLS settings and token are those of every other Nomad request; the frames are then
//! read with `tokio-tungstenite`. Frames are JSON text (`command/agent/alloc_endpoint.go`,
//! `plugins/drivers/proto` `ExecTaskStreaming*`):
//! - client to Nomad: `{"stdin":{"data":"<base64>"}}`, `{"stdin":{"close":true}}` (EOF),
//!   `{"tty_size":{"height":H,"width":W}}`, and a `{}` heartbeat every 10 s as Nomad's Go client
//!   sends;
//! - Nomad to client: `{"stdout":{"data":"<base64>"}}`, `{"stderr":{...}}`, `{"stdout":
//!   {"close":true}}` when a stream ends, finally `{"exited":true,"result":{"exit_code":N}}`, where
//!   a missing `exit_code` means 0 (`omitempty`). Errors close the WebSocket (1011 or 1008) with
//!   Nomad's message as the reason.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use vk_ports::{ExecIo, ProviderError, TerminalSize};

use super::client::NomadClient;

/// How often a heartbeat frame is sent while a session is open.
const HEARTBEAT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
struct Frame {
    #[serde(default)]
    stdout: Option<Chunk>,
    #[serde(default)]
    stderr: Option<Chunk>,
    #[serde(default)]
    exited: bool,
    #[serde(default)]
    result: Option<ExitResult>,
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    data: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ExitResult {
    #[serde(default)]
    exit_code: i32,
}

/// What a frame from Nomad says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes the command wrote to stdout (with a terminal: also its stderr).
    Stdout(Vec<u8>),
    /// Bytes the command wrote to stderr.
    Stderr(Vec<u8>),
    /// The command ended with this exit code.
    Exited(i32),
    /// Nothing to act on: a stream's `close`, a heartbeat, or a frame this adapter does not read.
    Other,
}

/// Reads one text frame from Nomad. Undecodable JSON or base64 is [`Output::Other`].
pub fn output(frame: &str) -> Output {
    let Ok(f) = serde_json::from_str::<Frame>(frame) else { return Output::Other };
    if f.exited {
        return Output::Exited(f.result.map_or(0, |r| r.exit_code));
    }
    let b64 = |c: Chunk| {
        c.data.and_then(|d| base64::engine::general_purpose::STANDARD.decode(d.as_bytes()).ok())
    };
    match (f.stdout.and_then(b64), f.stderr.and_then(b64)) {
        (Some(d), _) => Output::Stdout(d),
        (None, Some(d)) => Output::Stderr(d),
        (None, None) => Output::Other,
    }
}

/// The exit code of a finished exec session, from one frame; `None` for any other frame.
pub fn exit_code(frame: &str) -> Option<i32> {
    match output(frame) {
        Output::Exited(c) => Some(c),
        _ => None,
    }
}

/// `{"stdin":{"data":"<base64>"}}`.
pub fn stdin_frame(data: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    serde_json::json!({"stdin": {"data": b64}}).to_string()
}

/// `{"stdin":{"close":true}}`: the command's stdin reaches EOF.
pub const STDIN_CLOSE: &str = r#"{"stdin":{"close":true}}"#;

/// `{"tty_size":{"height":H,"width":W}}`, in character cells.
pub fn tty_size_frame(size: TerminalSize) -> String {
    serde_json::json!({"tty_size": {"height": size.height, "width": size.width}}).to_string()
}

fn unavailable(message: String) -> ProviderError {
    ProviderError::Unavailable { message, source: None }
}

/// What a close frame from Nomad means for the caller: the reason is Nomad's error text
/// (`command/agent/alloc_endpoint.go` closes with 1011 for errors, 1008 for policy ones).
fn closed(reason: &str) -> ProviderError {
    let r = reason.to_ascii_lowercase();
    let gone = ["unknown task", "task not found", "unknown alloc", "not running"];
    if gone.iter().any(|g| r.contains(g)) {
        ProviderError::NotFound(format!("Nomad: {reason}"))
    } else if r.contains("no such file")
        || r.contains("executable file not found")
        || r.contains("permission denied")
        || r.contains("failed to start")
    {
        ProviderError::InvalidInput(format!("the command cannot start: {reason}"))
    } else if r.is_empty() {
        unavailable("Nomad closed the exec session without an exit code".into())
    } else {
        unavailable(format!("Nomad closed the exec session: {reason}"))
    }
}

/// Opens an exec session of `command` in task `task` of allocation `alloc`.
///
/// # Errors
/// `NotFound` when Nomad answers 404 (unknown allocation), `Unavailable` when it cannot be reached
/// or refuses the upgrade.
async fn connect(
    client: &NomadClient,
    alloc: &str,
    task: &str,
    command: &[String],
    tty: bool,
) -> Result<WebSocketStream<reqwest::Upgraded>, ProviderError> {
    let command = serde_json::to_string(command).map_err(|e| unavailable(e.to_string()))?;
    let key = generate_key();
    let req = client
        .request(Method::GET, &["v1", "client", "allocation", alloc, "exec"])
        .query(&[
            ("task", task),
            ("tty", if tty { "true" } else { "false" }),
            ("command", &command),
        ])
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", &key)
        // The session lasts as long as the command; the upgrade itself is quick.
        .timeout(Duration::from_secs(365 * 24 * 3600));
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
    Ok(WebSocketStream::from_raw_socket(io, Role::Client, None).await)
}

/// Runs `command` in task `task` of allocation `alloc` and returns its exit code. Output is
/// discarded and stdin is closed at once (exec probes): [`stream`] with no streams.
///
/// # Errors
/// As [`stream`].
pub async fn run(
    client: &NomadClient,
    alloc: &str,
    task: &str,
    command: &[String],
) -> Result<i32, ProviderError> {
    let io = ExecIo { stdin: None, stdout: None, stderr: None, tty: false, resize: None };
    stream(client, alloc, task, command, io).await
}

/// Runs `command` in task `task` of allocation `alloc` with its standard streams wired to `io`
/// and returns its exit code.
///
/// `io.stdin` is forwarded as it comes and its end closes the command's stdin (no `io.stdin`:
/// closed at once, or with `io.tty` left open, as closing a terminal's input hangs up); `io.resize` becomes `tty_size` frames; output goes to `io.stdout` and
/// `io.stderr` (discarded for a stream the client did not ask for). Sending into a full channel
/// waits, and meanwhile no frame is read from Nomad: a slow client slows the command down. When a
/// receiver the client asked for is dropped the session is closed (Nomad then stops the command).
///
/// # Errors
/// `NotFound` for an unknown allocation, task or a task not running; `InvalidInput` when Nomad
/// says the command cannot start; `Unavailable` when Nomad cannot be reached, the session breaks
/// or ends without an exit code, or the client went away.
pub async fn stream(
    client: &NomadClient,
    alloc: &str,
    task: &str,
    command: &[String],
    io: ExecIo,
) -> Result<i32, ProviderError> {
    let ws = connect(client, alloc, task, command, io.tty).await?;
    session(ws, io).await
}

/// Sends the client's stdin and terminal sizes to Nomad, and heartbeats; returns only when
/// sending fails. Without a stdin the command's is closed at once, except with a terminal, where
/// closing it hangs the command up (SIGHUP): it then just never gets input.
async fn pump_in<K>(
    mut sink: K,
    mut stdin: Option<futures::channel::mpsc::Receiver<Bytes>>,
    mut resize: Option<futures::channel::mpsc::Receiver<TerminalSize>>,
    tty: bool,
) -> Result<std::convert::Infallible, tokio_tungstenite::tungstenite::Error>
where
    K: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    if stdin.is_none() && !tty {
        sink.send(Message::text(STDIN_CLOSE)).await?;
    }
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    loop {
        let next_in = async {
            match stdin.as_mut() {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        let next_size = async {
            match resize.as_mut() {
                Some(r) => r.next().await,
                None => std::future::pending().await,
            }
        };
        // A size first: the initial one should reach the terminal before any input.
        tokio::select! {
            biased;
            size = next_size => match size {
                Some(s) => sink.send(Message::text(tty_size_frame(s))).await?,
                None => resize = None,
            },
            data = next_in => match data {
                Some(d) => sink.send(Message::text(stdin_frame(&d))).await?,
                None => {
                    stdin = None;
                    sink.send(Message::text(STDIN_CLOSE)).await?;
                }
            },
            _ = beat.tick() => sink.send(Message::text("{}")).await?,
        }
    }
}

/// Pumps one open session (see [`stream`]).
async fn session<S>(ws: WebSocketStream<S>, io: ExecIo) -> Result<i32, ProviderError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let ExecIo { stdin, mut stdout, mut stderr, tty, resize } = io;
    let (sink, mut source) = ws.split();
    let writer = pump_in(sink, stdin, resize, tty);
    let reader = async {
        while let Some(msg) = source.next().await {
            let msg = msg.map_err(|e| unavailable(format!("Nomad exec: {e}")))?;
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(frame) => {
                    let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    return Err(closed(&why));
                }
                _ => continue,
            };
            let (out, data) = match output(text.as_str()) {
                Output::Exited(code) => return Ok(code),
                Output::Stdout(d) => (&mut stdout, d),
                Output::Stderr(d) => (&mut stderr, d),
                Output::Other => continue,
            };
            if let Some(tx) = out.as_mut()
                && tx.send(Bytes::from(data)).await.is_err()
            {
                return Err(unavailable("the exec client went away".into()));
            }
        }
        Err(unavailable("the exec session ended without an exit code".into()))
    };
    tokio::pin!(writer);
    tokio::pin!(reader);
    let mut writer_done = false;
    loop {
        tokio::select! {
            r = &mut reader => return r,
            w = &mut writer, if !writer_done => {
                // Sending failed: the connection broke; the reader sees how.
                match w {
                    Err(e) => tracing::debug!(error = %e, "writing to Nomad's exec session failed"),
                    Ok(never) => match never {},
                }
                writer_done = true;
            }
        }
    }
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
