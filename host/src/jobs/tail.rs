//! The last lines of a job's output: bounded however much the job writes,
//! whatever its lines look like (no newline for megabytes, binary, NUL).

use std::collections::VecDeque;

/// Longest line kept; the rest of a longer one is dropped and marked.
const MAX_LINE: usize = 1024;
/// Most bytes a snapshot holds.
pub const MAX_TAIL_BYTES: usize = 64 * 1024;

/// Which pipe output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

/// The unfinished line of one stream.
#[derive(Debug, Default)]
struct Partial {
    bytes: Vec<u8>,
    /// Whether it was cut at [`MAX_LINE`].
    cut: bool,
}

/// The last lines of one job's output, stdout and stderr together.
#[derive(Debug)]
pub struct Tail {
    lines: VecDeque<String>,
    keep: usize,
    out: Partial,
    err: Partial,
    /// Lines dropped off the front.
    dropped: u64,
}

impl Tail {
    /// Keeps the last `keep` lines.
    pub fn new(keep: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(keep.min(256)),
            keep: keep.max(1),
            out: Partial::default(),
            err: Partial::default(),
            dropped: 0,
        }
    }

    fn partial(&mut self, stream: Stream) -> &mut Partial {
        match stream {
            Stream::Out => &mut self.out,
            Stream::Err => &mut self.err,
        }
    }

    /// Adds what `stream` wrote.
    pub fn push(&mut self, stream: Stream, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            let (line, after) = rest.split_at(at);
            self.extend(stream, line);
            self.end_line(stream);
            rest = after.get(1..).unwrap_or_default();
        }
        self.extend(stream, rest);
    }

    /// Ends the streams: an unfinished last line is kept too.
    pub fn close(&mut self) {
        for stream in [Stream::Out, Stream::Err] {
            let p = self.partial(stream);
            if !p.bytes.is_empty() || p.cut {
                self.end_line(stream);
            }
        }
    }

    fn extend(&mut self, stream: Stream, bytes: &[u8]) {
        let p = self.partial(stream);
        let room = MAX_LINE.saturating_sub(p.bytes.len());
        if bytes.len() > room {
            p.cut = true;
        }
        let take = bytes.len().min(room);
        p.bytes
            .extend_from_slice(bytes.get(..take).unwrap_or_default());
    }

    fn end_line(&mut self, stream: Stream) {
        let p = std::mem::take(self.partial(stream));
        let mut line = String::from_utf8_lossy(&p.bytes)
            .trim_end_matches('\r')
            .to_owned();
        if p.cut {
            line.push_str(" …");
        }
        if self.lines.len() == self.keep {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }

    /// The lines so far (with the unfinished ones), at most
    /// [`MAX_TAIL_BYTES`], the newest kept; says how many were left out.
    pub fn snapshot(&self) -> String {
        let mut picked: Vec<String> = Vec::new();
        let mut size = 0;
        let unfinished = [&self.out, &self.err]
            .into_iter()
            .filter(|p| !p.bytes.is_empty())
            .map(|p| String::from_utf8_lossy(&p.bytes).into_owned());
        let all: Vec<String> = self.lines.iter().cloned().chain(unfinished).collect();
        let mut left_out = self.dropped;
        for line in all.iter().rev() {
            if size + line.len() + 1 > MAX_TAIL_BYTES {
                left_out += 1;
                continue;
            }
            size += line.len() + 1;
            picked.push(line.clone());
        }
        picked.reverse();
        let text = picked.join("\n");
        if left_out > 0 {
            format!("({left_out} earlier lines not kept)\n{text}")
        } else {
            text
        }
    }
}

/// The last `max` bytes of `text`, cut at a line (or character) boundary.
pub fn last_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let tail = text.get(start..).unwrap_or_default();
    match tail.find('\n') {
        Some(at) if at + 1 < tail.len() => tail.get(at + 1..).unwrap_or(tail),
        _ => tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_of_both_streams() {
        let mut t = Tail::new(3);
        t.push(Stream::Out, b"one\ntwo\nthr");
        t.push(Stream::Err, b"err\n");
        t.push(Stream::Out, b"ee\nfour\nfive");
        t.close();
        assert_eq!(
            t.snapshot(),
            "(3 earlier lines not kept)\nthree\nfour\nfive"
        );
    }

    #[test]
    fn long_lines_and_binary_stay_bounded() {
        let mut t = Tail::new(10);
        t.push(Stream::Out, &vec![b'x'; 5 << 20]);
        t.push(Stream::Out, b"\n\xff\x00bin\n");
        t.close();
        let s = t.snapshot();
        assert!(s.len() < 2 * MAX_LINE, "{}", s.len());
        assert!(s.contains(" …"));
        assert!(s.ends_with("\u{fffd}\0bin"));
    }

    #[test]
    fn snapshots_are_bounded_in_bytes() {
        let mut t = Tail::new(10_000);
        for _ in 0..10_000 {
            t.push(Stream::Out, &[b'y'; 500]);
            t.push(Stream::Out, b"\n");
        }
        assert!(t.snapshot().len() <= MAX_TAIL_BYTES + 64);
        assert!(t.snapshot().starts_with('('));
    }

    #[test]
    fn last_bytes_cuts_at_a_line() {
        assert_eq!(last_bytes("aaa\nbbb\nccc", 6), "ccc");
        assert_eq!(last_bytes("short", 10), "short");
        assert_eq!(last_bytes("ééé", 3), "é");
    }
}
