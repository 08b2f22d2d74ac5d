//! What exec and attach share whatever the transport (SPDY or WebSocket): the streams a request
//! asks for and the Status that ends the session
//! (`staging/src/k8s.io/kubelet/pkg/cri/streaming/remotecommand/`, `httpstream.go`,
//! `websocket.go`).

/// The streams an exec or attach request asks for, from its query (`stdin=1&stdout=1&stderr=1&
/// tty=1`; the older `input`/`output`/`error` names too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expect {
    /// The client sends stdin.
    pub stdin: bool,
    /// The client wants stdout.
    pub stdout: bool,
    /// The client wants stderr (never with `tty`: a terminal merges it into stdout).
    pub stderr: bool,
    /// The command gets a terminal, sized by resize messages.
    pub tty: bool,
}

impl Expect {
    /// Reads the decoded query pairs of an exec or attach request. With `tty`, stderr is dropped
    /// as the kubelet does.
    pub fn from_query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut e = Self::default();
        for (k, v) in pairs {
            let on = matches!(v, "1" | "true" | "True" | "TRUE" | "t" | "T");
            match k {
                "stdin" | "input" => e.stdin = on,
                "stdout" | "output" => e.stdout = on,
                "stderr" | "error" => e.stderr = on,
                "tty" => e.tty = on,
                _ => {}
            }
        }
        if e.tty {
            e.stderr = false;
        }
        e
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited with this code.
    Exited(i32),
    /// The session could not run or broke, with the reason.
    Failed(String),
}

/// The remote-command protocol version negotiated (SPDY's `X-Stream-Protocol-Version` or the
/// WebSocket subprotocol without its `base64.` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `channel.k8s.io` (v1): the error stream carries plain text.
    V1,
    /// `v2.channel.k8s.io`.
    V2,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: the error stream carries a JSON `metav1.Status`.
    V4,
    /// `v5.channel.k8s.io`: v4 plus the WebSocket stream-close message.
    V5,
}

impl Version {
    /// The protocol name.
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "channel.k8s.io",
            Self::V2 => "v2.channel.k8s.io",
            Self::V3 => "v3.channel.k8s.io",
            Self::V4 => "v4.channel.k8s.io",
            Self::V5 => "v5.channel.k8s.io",
        }
    }

    /// The version a protocol name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "channel.k8s.io" => Self::V1,
            "v2.channel.k8s.io" => Self::V2,
            "v3.channel.k8s.io" => Self::V3,
            "v4.channel.k8s.io" => Self::V4,
            "v5.channel.k8s.io" => Self::V5,
            _ => return None,
        })
    }
}

/// What goes on the error stream when a session ends, or `None` for nothing (success before v4).
///
/// v4 and later: a `metav1.Status` in JSON, `{"metadata":{},"status":"Success"}` for exit code 0,
/// `NonZeroExitCode` with the code as an `ExitCode` cause otherwise (client-go parses it as an
/// unsigned 8-bit number, so the code is taken modulo 256 as a shell would), `InternalError` for a
/// failure. Before v4: the failure's text, or `command terminated with non-zero exit code: ...`.
pub fn status_message(version: Version, outcome: &Outcome) -> Option<Vec<u8>> {
    let code = match outcome {
        Outcome::Exited(c) => c.rem_euclid(256),
        Outcome::Failed(_) => -1,
    };
    if version < Version::V4 {
        return match outcome {
            Outcome::Exited(0) => None,
            Outcome::Exited(_) => Some(
                format!("command terminated with non-zero exit code: exit status {code}")
                    .into_bytes(),
            ),
            Outcome::Failed(m) => Some(m.clone().into_bytes()),
        };
    }
    let status = match outcome {
        Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(_) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(m) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": m,
            "reason": "InternalError",
            "code": 500,
        }),
    };
    Some(status.to_string().into_bytes())
}

/// Parses one resize message: `{"Width":80,"Height":24}` (`remotecommand.TerminalSize` has no
/// JSON tags, so the names are capitalised). `None` for anything else.
pub fn parse_resize(msg: &[u8]) -> Option<vk_ports::TerminalSize> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    let s: Size = serde_json::from_slice(msg).ok()?;
    Some(vk_ports::TerminalSize { width: s.width, height: s.height })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_from_the_query() {
        let e = Expect::from_query([
            ("command", "sh"),
            ("stdin", "1"),
            ("stdout", "1"),
            ("stderr", "1"),
        ]);
        assert_eq!(e, Expect { stdin: true, stdout: true, stderr: true, tty: false });
        let t = Expect::from_query([("output", "1"), ("error", "1"), ("tty", "true")]);
        assert_eq!(t, Expect { stdin: false, stdout: true, stderr: false, tty: true });
    }

    #[test]
    fn statuses_as_client_go_reads_them() {
        let s = |v, o| status_message(v, &o).map(|b| String::from_utf8_lossy(&b).into_owned());
        assert_eq!(
            s(Version::V4, Outcome::Exited(0)).as_deref(),
            Some(r#"{"metadata":{},"status":"Success"}"#)
        );
        let seven = s(Version::V4, Outcome::Exited(7)).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&seven).unwrap_or_default();
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(
            v["details"]["causes"][0],
            serde_json::json!({"reason": "ExitCode", "message": "7"})
        );
        let wrapped = s(Version::V5, Outcome::Exited(-1)).unwrap_or_default();
        assert!(wrapped.contains(r#""message":"255""#), "{wrapped}");
        assert_eq!(s(Version::V1, Outcome::Exited(0)), None);
        assert!(s(Version::V3, Outcome::Failed("boom".into())).is_some_and(|m| m == "boom"));
        let failed =
            s(Version::V4, Outcome::Failed("no such container".into())).unwrap_or_default();
        assert!(failed.contains("InternalError") && failed.contains("no such container"));
    }

    #[test]
    fn resize_messages() {
        assert_eq!(
            parse_resize(br#"{"Width":120,"Height":40}"#),
            Some(vk_ports::TerminalSize { width: 120, height: 40 })
        );
        assert_eq!(parse_resize(b"{}"), None);
    }
}
