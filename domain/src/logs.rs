//! `kubectl logs` options as the kubelet reads them: `GET /containerLogs/{ns}/{pod}/{container}`
//! carries a v1 `PodLogOptions` in its query (built by `LogLocation` in
//! `pkg/registry/core/pod/strategy.go`), which the kubelet decodes and validates
//! (`pkg/apis/core/validation.ValidatePodLogOptions`) before it reads a byte.
//!
//! Also the pure parts of serving them over a runtime that stores no timestamps: the tail of a
//! buffer by lines ([`tail_start`]) and the RFC 3339 prefix ([`timestamp_prefix`]).

use jiff::Timestamp;
use k8s_openapi::jiff;

/// Which of a container's output streams to read (`PodLogOptions.stream`, alpha
/// `PodLogsQuerySplitStreams`; `All` when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogStream {
    /// stdout and stderr.
    #[default]
    All,
    /// stdout only.
    Stdout,
    /// stderr only.
    Stderr,
}

/// Checked `PodLogOptions`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogOptions {
    /// `follow=true`: stream until the container stops or the client goes away.
    pub follow: bool,
    /// `previous=true`: the logs of the previous terminated instance of the container.
    pub previous: bool,
    /// `sinceSeconds`/`sinceTime`, as an instant: only lines written at or after it.
    pub since: Option<Timestamp>,
    /// `timestamps=true`: each line starts with an RFC 3339 time (nanoseconds) and a space.
    pub timestamps: bool,
    /// `tailLines` (or the legacy `tail`): only the last N lines (`None`: all).
    pub tail_lines: Option<u64>,
    /// `limitBytes`: stop after N bytes (may cut a line).
    pub limit_bytes: Option<u64>,
    /// `stream`.
    pub stream: LogStream,
}

/// Why a query is refused, with the field named as the API server would (the kubelet answers 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct LogOptionsError {
    /// The query parameter (`sinceSeconds`, `tailLines`, ...).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(field: &'static str, reason: impl Into<String>) -> LogOptionsError {
    LogOptionsError { field, reason: reason.into() }
}

fn boolean(field: &'static str, v: &str) -> Result<bool, LogOptionsError> {
    // Go's strconv.ParseBool, which the query decoder uses.
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
        _ => Err(bad(field, format!("invalid boolean {v:?}"))),
    }
}

fn integer(field: &'static str, v: &str) -> Result<i64, LogOptionsError> {
    v.parse::<i64>().map_err(|_| bad(field, format!("invalid integer {v:?}")))
}

impl LogOptions {
    /// Reads the decoded query pairs of a `/containerLogs` request, with `now` the time the request
    /// arrived (for `sinceSeconds`). Unknown parameters are ignored, as the kubelet's decoder does
    /// (`insecureSkipTLSVerifyBackend` only matters to the API server).
    ///
    /// # Errors
    /// The first invalid value, naming its parameter: booleans and integers that do not parse,
    /// `sinceSeconds` < 1, `sinceTime` not RFC 3339, both `sinceSeconds` and `sinceTime`,
    /// `tailLines` < 0, `limitBytes` < 1, an unknown `stream`, and `tailLines` with a `stream`
    /// other than `All` (the API server's rule for `PodLogsQuerySplitStreams`).
    pub fn from_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: Timestamp,
    ) -> Result<Self, LogOptionsError> {
        let mut o = Self::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (k, v) in pairs {
            match k {
                "follow" => o.follow = boolean("follow", v)?,
                "previous" => o.previous = boolean("previous", v)?,
                "timestamps" => o.timestamps = boolean("timestamps", v)?,
                "sinceSeconds" => {
                    let n = integer("sinceSeconds", v)?;
                    if n < 1 {
                        return Err(bad("sinceSeconds", "must be greater than 0"));
                    }
                    since_seconds = Some(n);
                }
                "sinceTime" => {
                    let t = v.parse::<Timestamp>().map_err(|e| {
                        bad("sinceTime", format!("{v:?} is not an RFC 3339 time: {e}"))
                    })?;
                    since_time = Some(t);
                }
                "tailLines" => {
                    let n = integer("tailLines", v)?;
                    if n < 0 {
                        return Err(bad("tailLines", "must be greater than or equal to 0"));
                    }
                    o.tail_lines = Some(n.unsigned_abs());
                }
                // The legacy parameter: a number or "all" (ignored, as is empty).
                "tail" if v != "all" && !v.is_empty() => {
                    let n = integer("tail", v)?;
                    if n >= 0 {
                        o.tail_lines = Some(n.unsigned_abs());
                    }
                }
                "limitBytes" => {
                    let n = integer("limitBytes", v)?;
                    if n < 1 {
                        return Err(bad("limitBytes", "must be greater than 0"));
                    }
                    o.limit_bytes = Some(n.unsigned_abs());
                }
                "stream" => {
                    o.stream = match v {
                        "All" | "" => LogStream::All,
                        "Stdout" => LogStream::Stdout,
                        "Stderr" => LogStream::Stderr,
                        _ => {
                            return Err(bad(
                                "stream",
                                format!("{v:?}: supported values are All, Stdout, Stderr"),
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err(bad("sinceSeconds", "at most one of sinceTime or sinceSeconds"));
            }
            (Some(s), None) => {
                o.since = Some(now - jiff::SignedDuration::from_secs(s));
            }
            (None, t) => o.since = t,
        }
        if o.tail_lines.is_some() && o.stream != LogStream::All {
            return Err(bad("tailLines", "tailLines cannot be set when stream is not All"));
        }
        Ok(o)
    }
}

/// Where the last `lines` lines of `buf` start: the byte after the `lines`-th newline from the end,
/// a final unterminated line counting as a line (CRI's `tail`). `complete` says `buf` is the whole
/// log; when it is not and fewer lines were found, `None` asks for more bytes.
pub fn tail_start(buf: &[u8], lines: u64, complete: bool) -> Option<usize> {
    if lines == 0 {
        return Some(buf.len());
    }
    let mut end = buf.len();
    if buf.last() == Some(&b'\n') {
        end -= 1;
    }
    let mut seen = 0;
    for (i, b) in buf[..end].iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == lines {
                return Some(i + 1);
            }
        }
    }
    complete.then_some(0)
}

/// The prefix `timestamps=true` puts before a line: RFC 3339 with nanoseconds, UTC, and a space
/// (the kubelet's `timeFormatOut`, `2006-01-02T15:04:05.000000000Z07:00`, in
/// `pkg/kubelet/kuberuntime/logs/logs.go`: always nine digits).
pub fn timestamp_prefix(at: Timestamp) -> String {
    format!("{} ", at.strftime("%Y-%m-%dT%H:%M:%S%.9fZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-21T10:00:00Z".parse().unwrap_or_else(|_| unreachable!())
    }

    fn parse(q: &[(&str, &str)]) -> Result<LogOptions, LogOptionsError> {
        LogOptions::from_query(q.iter().copied(), now())
    }

    #[test]
    fn options_are_read() {
        let o = parse(&[
            ("follow", "true"),
            ("tailLines", "3"),
            ("limitBytes", "10"),
            ("timestamps", "1"),
            ("sinceSeconds", "60"),
            ("container", "c"),
        ])
        .unwrap_or_default();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(3));
        assert_eq!(o.limit_bytes, Some(10));
        assert_eq!(o.since, Some("2026-11-21T09:59:00Z".parse().unwrap_or(now())));
        assert_eq!(parse(&[]), Ok(LogOptions::default()));
        assert_eq!(parse(&[("tail", "all")]).map(|o| o.tail_lines), Ok(None));
        assert_eq!(parse(&[("tail", "5")]).map(|o| o.tail_lines), Ok(Some(5)));
        assert_eq!(
            parse(&[("sinceTime", "2026-01-02T03:04:05Z")]).map(|o| o.since),
            Ok(Some("2026-01-02T03:04:05Z".parse().unwrap_or(now())))
        );
        assert_eq!(parse(&[("stream", "Stderr")]).map(|o| o.stream), Ok(LogStream::Stderr));
    }

    #[test]
    fn invalid_options_name_their_field() {
        let field = |q: &[(&str, &str)]| parse(q).err().map(|e| e.field);
        assert_eq!(field(&[("follow", "yes")]), Some("follow"));
        assert_eq!(field(&[("sinceSeconds", "0")]), Some("sinceSeconds"));
        assert_eq!(field(&[("sinceSeconds", "x")]), Some("sinceSeconds"));
        assert_eq!(field(&[("sinceTime", "yesterday")]), Some("sinceTime"));
        assert_eq!(
            field(&[("sinceSeconds", "5"), ("sinceTime", "2026-01-02T03:04:05Z")]),
            Some("sinceSeconds")
        );
        assert_eq!(field(&[("tailLines", "-1")]), Some("tailLines"));
        assert_eq!(field(&[("limitBytes", "0")]), Some("limitBytes"));
        assert_eq!(field(&[("stream", "Both")]), Some("stream"));
        assert_eq!(field(&[("stream", "Stdout"), ("tailLines", "1")]), Some("tailLines"));
    }

    #[test]
    fn tails_count_lines_from_the_end() {
        let log = b"a\nb\nc\nd\n";
        assert_eq!(tail_start(log, 2, false), Some(4));
        assert_eq!(&log[4..], b"c\nd\n");
        assert_eq!(tail_start(log, 4, false), None, "the whole buffer may not be the whole log");
        assert_eq!(tail_start(log, 4, true), Some(0));
        assert_eq!(tail_start(log, 9, true), Some(0));
        assert_eq!(tail_start(log, 0, false), Some(8));
        assert_eq!(tail_start(b"a\nb", 1, false), Some(2), "an unterminated last line counts");
        assert_eq!(tail_start(b"", 3, true), Some(0));
    }

    #[test]
    fn timestamps_have_nanoseconds() {
        let t: Timestamp = "2026-11-21T10:00:00.5Z".parse().unwrap_or(now());
        assert_eq!(timestamp_prefix(t), "2026-11-21T10:00:00.500000000Z ");
    }
}
