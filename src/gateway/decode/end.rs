//! Where a chat stream ends: the `data: [DONE]` line, found in place in chunks of any size.

/// Finds the `data: [DONE]` line in a stream that arrives in arbitrary pieces, without
/// copying: each chunk is searched in place, and the few bytes that straddle two chunks
/// are checked in a small stack window.
pub struct DoneScanner {
    /// The last bytes seen (a newline at the start of the stream).
    tail: [u8; DONE_LINE.len()],
    tail_len: usize,
    seen: bool,
}

/// `data: [DONE]` at the start of a line (JSON text cannot contain a raw newline, so
/// this never matches inside an event's data).
const DONE_LINE: &[u8] = b"\ndata: [DONE]";
const DONE_LINE_TIGHT: &[u8] = b"\ndata:[DONE]";
const DONE: &[u8] = b"[DONE]";

impl DoneScanner {
    /// The `[DONE]` line was seen.
    pub fn seen(&self) -> bool {
        self.seen
    }

    pub fn new() -> Self {
        let mut tail = [0u8; DONE_LINE.len()];
        tail[0] = b'\n';
        DoneScanner {
            tail,
            tail_len: 1,
            seen: false,
        }
    }

    /// Where in `chunk` the `[DONE]` line starts (0 if it began in an earlier chunk), the
    /// first time it is complete.
    pub fn push(&mut self, chunk: &[u8]) -> Option<usize> {
        if self.seen {
            return None;
        }
        let found = Self::find(chunk).map(|at| at + 1).or_else(|| {
            let mut window = [0u8; 2 * DONE_LINE.len()];
            let head = chunk.len().min(DONE_LINE.len());
            window[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            window[self.tail_len..self.tail_len + head].copy_from_slice(&chunk[..head]);
            Self::find(&window[..self.tail_len + head]).map(|_| 0)
        });
        let keep = chunk.len().min(DONE_LINE.len());
        if keep == DONE_LINE.len() {
            self.tail.copy_from_slice(&chunk[chunk.len() - keep..]);
            self.tail_len = keep;
        } else {
            let total = self.tail_len + keep;
            let drop = total.saturating_sub(DONE_LINE.len());
            self.tail.copy_within(drop..self.tail_len, 0);
            self.tail_len -= drop;
            self.tail[self.tail_len..self.tail_len + keep].copy_from_slice(chunk);
            self.tail_len += keep;
        }
        self.seen = found.is_some();
        found
    }

    /// Where `\ndata: [DONE]` (or `\ndata:[DONE]`) starts: one pass for `[DONE]`, which
    /// is rare, then a look at the few bytes before it.
    fn find(haystack: &[u8]) -> Option<usize> {
        memchr::memmem::find_iter(haystack, DONE).find_map(|at| {
            let before = &haystack[..at];
            [DONE_LINE, DONE_LINE_TIGHT]
                .iter()
                .map(|line| &line[..line.len() - DONE.len()])
                .find(|prefix| before.ends_with(prefix))
                .map(|prefix| at - prefix.len())
        })
    }
}

impl Default for DoneScanner {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::DoneScanner;

    fn scan(pieces: &[&[u8]]) -> Vec<Option<usize>> {
        let mut scanner = DoneScanner::new();
        pieces.iter().map(|p| scanner.push(p)).collect()
    }

    #[test]
    fn done_is_found_whole_split_or_at_the_start() {
        assert_eq!(scan(&[b"data: {}\n\ndata: [DONE]\n\n"]), [Some(10)]);
        assert_eq!(scan(&[b"data: [DONE]\n\n"]), [Some(0)]);
        assert_eq!(scan(&[b"data:[DONE]\n\n"]), [Some(0)]);
        assert_eq!(
            scan(&[b"data: {}\n\nda", b"ta: [DO", b"NE]\n\n"]),
            [None, None, Some(0)]
        );
        assert_eq!(
            scan(&[b"data: {}\n\n", b"d", b"a", b"ta: [DONE]"]),
            [None, None, None, Some(0)]
        );
        // Seen once only.
        assert_eq!(
            scan(&[b"data: [DONE]\n\n", b"\ndata: [DONE]"]),
            [Some(0), None]
        );
    }

    #[test]
    fn done_inside_event_data_is_not_the_end() {
        let event = br#"data: {"content":"data: [DONE]"}"#;
        assert_eq!(scan(&[event, b"\n\n"]), [None, None]);
        assert_eq!(scan(&[b"data: {}\n\n", b"xdata: [DONE]"]), [None, None]);
    }
}
