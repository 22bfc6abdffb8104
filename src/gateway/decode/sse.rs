//! Splits a server-sent-events byte stream, arriving in arbitrary chunks, into its `event:` and `data:` lines.

/// Longest line read; a longer one is skipped (e.g. a runaway upstream cannot make a
/// stream hold unbounded memory), and `missed` says so.
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// A line buffer grown past this by one long line is freed rather than kept for the
/// rest of a long-lived stream.
const KEEP_CAPACITY: usize = 64 * 1024;

/// One line that matters to a reader; comments (`: keep-alive`), `id:` and `retry:` are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// An `event:` name (trimmed): it names the data lines up to the next `End`.
    Event(&'a str),
    /// A `data:` payload without the field name and its one optional space. Not
    /// validated: JSON parsing checks the UTF-8 anyway.
    Data(&'a [u8]),
    /// A blank line: the current event ends.
    End,
}

/// Feed it chunks as they arrive; lines within a chunk are read in place, and only an
/// unfinished last line is copied to wait for the next chunk.
pub struct SseLines {
    line: Vec<u8>,
    max_line: usize,
    /// The current line passed `max_line`: skip to its end.
    skipping: bool,
    missed: bool,
}

impl Default for SseLines {
    fn default() -> Self {
        SseLines::with_max_line(MAX_LINE)
    }
}

impl SseLines {
    /// A reader with another line cap (tests; callers with tighter memory budgets).
    pub fn with_max_line(max_line: usize) -> Self {
        SseLines {
            line: Vec::new(),
            max_line,
            skipping: false,
            missed: false,
        }
    }

    /// Reads one chunk, handing `on` each line it completes, in order.
    pub fn push(&mut self, mut bytes: &[u8], mut on: impl FnMut(Line<'_>)) {
        while let Some(end) = memchr::memchr(b'\n', bytes) {
            let head = &bytes[..end];
            if self.line.is_empty() && !self.skipping {
                if head.len() > self.max_line {
                    self.missed = true;
                } else if let Some(line) = parse(head) {
                    on(line);
                }
            } else {
                self.extend(head);
                if !std::mem::take(&mut self.skipping) {
                    if let Some(line) = parse(&self.line) {
                        on(line);
                    }
                }
                if self.line.capacity() > KEEP_CAPACITY {
                    self.line = Vec::new();
                } else {
                    self.line.clear();
                }
            }
            bytes = &bytes[end + 1..];
        }
        self.extend(bytes);
    }

    /// The unfinished last line read as if it had ended: a stream may stop right after
    /// `data: [DONE]` with no newline, and that still ends it.
    pub fn partial(&self) -> Option<Line<'_>> {
        if self.line.is_empty() {
            return None;
        }
        parse(&self.line)
    }

    /// Some line was too long and skipped, so an event the reader waits for may have
    /// gone by unseen.
    pub fn missed(&self) -> bool {
        self.missed
    }

    fn extend(&mut self, bytes: &[u8]) {
        if self.skipping || bytes.is_empty() {
            return;
        }
        if self.line.len() + bytes.len() > self.max_line {
            self.skipping = true;
            self.missed = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(bytes);
    }
}

fn parse(line: &[u8]) -> Option<Line<'_>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Some(Line::End);
    }
    if let Some(data) = line.strip_prefix(b"data:") {
        return Some(Line::Data(data.strip_prefix(b" ").unwrap_or(data)));
    }
    let name = line.strip_prefix(b"event:")?;
    std::str::from_utf8(name)
        .ok()
        .map(|n| Line::Event(n.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each line as text, fed in pieces of `size`.
    fn lines(reader: &mut SseLines, stream: &[u8], size: usize) -> Vec<String> {
        let mut seen = Vec::new();
        for piece in stream.chunks(size) {
            reader.push(piece, |line| {
                seen.push(match line {
                    Line::Event(name) => format!("event {name}"),
                    Line::Data(data) => format!("data {}", String::from_utf8_lossy(data)),
                    Line::End => "end".into(),
                })
            });
        }
        seen
    }

    #[test]
    fn yields_event_names_and_data_across_any_split() {
        let stream = b"event: response.created\r\ndata: {\"type\":\"response.created\"}\r\n\r\n: keep-alive\n\nid: 7\nevent:error\ndata:{}\n\n";
        for size in [1, 2, 7, 64, stream.len()] {
            assert_eq!(
                lines(&mut SseLines::default(), stream, size),
                [
                    "event response.created",
                    "data {\"type\":\"response.created\"}",
                    "end",
                    "end",
                    "event error",
                    "data {}",
                    "end"
                ],
                "split {size}"
            );
        }
    }

    #[test]
    fn an_overlong_line_is_skipped_and_marked_missed() {
        let stream = b"data: 0123456789abcdef\ndata: short\n\n";
        for size in [1, 5, stream.len()] {
            let mut reader = SseLines::with_max_line(12);
            assert_eq!(
                lines(&mut reader, stream, size),
                ["data short", "end"],
                "split {size}"
            );
            assert!(reader.missed());
        }
        let mut reader = SseLines::with_max_line(12);
        assert_eq!(lines(&mut reader, b"data: short\n\n", 3).len(), 2);
        assert!(!reader.missed());
    }

    #[test]
    fn the_unfinished_line_can_be_read_early() {
        let mut reader = SseLines::default();
        assert_eq!(lines(&mut reader, b"data: {}\n\ndata: [DONE]", 64).len(), 2);
        assert_eq!(reader.partial(), Some(Line::Data(b"[DONE]")));
        reader.push(b"\n", |_| {});
        assert_eq!(reader.partial(), None);
    }
}
