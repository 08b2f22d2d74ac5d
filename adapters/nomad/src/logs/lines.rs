//! Output of one stream, line by line: timestamps at line starts, and whole lines only when the
//! streams of a follow are merged.

use vk_domain::jiff::Timestamp;
use vk_domain::logs::timestamp_prefix;

/// A partial line of a merged follow is sent without its newline once this long.
pub(super) const MAX_PARTIAL_LINE: usize = 16 << 10;

/// Turns bytes of one stream into output: timestamps at line starts and, for a merged follow,
/// whole lines only.
#[derive(Debug)]
pub struct Lines {
    timestamps: bool,
    whole_lines: bool,
    at_line_start: bool,
    buf: Vec<u8>,
}

impl Lines {
    /// With `timestamps`, each line starts with its time; with `whole_lines`, [`Lines::take`]
    /// keeps a partial line back.
    pub fn new(timestamps: bool, whole_lines: bool) -> Self {
        Self { timestamps, whole_lines, at_line_start: true, buf: Vec::new() }
    }

    /// Adds bytes written at `at`.
    pub fn push(&mut self, data: &[u8], at: Timestamp) {
        if !self.timestamps {
            self.buf.extend_from_slice(data);
            if let Some(last) = data.last() {
                self.at_line_start = *last == b'\n';
            }
            return;
        }
        for piece in data.split_inclusive(|b| *b == b'\n') {
            if self.at_line_start && self.timestamps {
                self.buf.extend_from_slice(timestamp_prefix(at).as_bytes());
            }
            self.buf.extend_from_slice(piece);
            self.at_line_start = piece.ends_with(b"\n");
        }
    }

    /// What may be sent now: everything, or (with `whole_lines`, unless `all`) up to the last
    /// newline, or everything once the partial line is longer than 16 KiB.
    pub fn take(&mut self, all: bool) -> Vec<u8> {
        if all || !self.whole_lines || self.buf.len() > MAX_PARTIAL_LINE {
            return std::mem::take(&mut self.buf);
        }
        match self.buf.iter().rposition(|b| *b == b'\n') {
            Some(i) => {
                let rest = self.buf.split_off(i + 1);
                std::mem::replace(&mut self.buf, rest)
            }
            None => Vec::new(),
        }
    }
}
