//! Unit tests of the block reader: the lines it cuts, on the caller's thread and on its
//! own, against `read_until`; the fields it reads ahead; read errors in order.

use super::*;
use std::io::BufRead;

/// A reader handing out at most a few bytes per call, to put line ends everywhere
/// relative to the reads.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.step = self.step % 7 + 1;
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Its data, then an error (once), then the end.
struct FailsAfter<'a> {
    data: &'a [u8],
    failed: bool,
}

impl Read for FailsAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.data.is_empty() {
            if self.failed {
                return Ok(0);
            }
            self.failed = true;
            return Err(std::io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Every line (with its `\n`) and what was read ahead of it, through [`Blocks`] (so on
/// the reader thread when the input is longer than a block), then the error if any.
fn read_all(
    input: impl Read + Send,
    block_size: usize,
) -> (Vec<(Vec<u8>, LineInfo)>, Option<String>) {
    let reader = BlockReader::new(input, TimestampUnit::Seconds, block_size);
    std::thread::scope(|scope| {
        let (mut next, mut blocks) = Blocks::start(reader, scope);
        let mut got = Vec::new();
        loop {
            match next {
                Ok(Some(block)) => {
                    assert!(!block.lines.is_empty(), "a block without lines");
                    got.extend(block.lines().map(|(b, i)| (b.to_vec(), *i)));
                    blocks.recycle(block);
                }
                Ok(None) => return (got, None),
                Err(e) => return (got, Some(e.to_string())),
            }
            next = blocks.next();
        }
    })
}

fn split_as_read_until(data: &[u8]) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut input = data;
    loop {
        let mut line = Vec::new();
        if input.read_until(b'\n', &mut line).unwrap() == 0 {
            return lines;
        }
        lines.push(line);
    }
}

#[test]
fn blocks_are_cut_into_the_lines_read_until_gives() {
    let long = "x".repeat(3 * 64 + 5);
    let texts = [
        String::new(),
        "a\n".to_string(),
        "a\nb".to_string(),
        "\n\n a \r\n".to_string(),
        // A line longer than several blocks, with lines before and after it, and one
        // at the very end without its newline.
        format!("first\n{long}\nlast"),
        format!("{long}\n"),
        long.clone(),
        // Lines straddling every block boundary.
        "m{a=\"1\"} 1 2\n".repeat(200),
    ];
    for text in &texts {
        let data = text.as_bytes();
        let expected = split_as_read_until(data);
        for block_size in [1, 7, 64, 4096, BLOCK] {
            let (got, error) = read_all(data, block_size);
            assert_eq!(error, None);
            let lines: Vec<Vec<u8>> = got.iter().map(|(l, _)| l.clone()).collect();
            assert_eq!(lines, expected, "{text:?} in blocks of {block_size}");
            let (got, _) = read_all(Trickle { data, step: 0 }, block_size);
            let lines: Vec<Vec<u8>> = got.into_iter().map(|(l, _)| l).collect();
            assert_eq!(lines, expected, "{text:?} trickled, blocks of {block_size}");
        }
    }
}

#[test]
fn sample_lines_are_read_ahead_and_others_left_to_the_engine() {
    let text = "# TYPE m gauge\nm{a=\"x y\"} 1.5 1700000000.25\r\nm 2\nm 3 17x\n\n# EOF";
    let (got, error) = read_all(text.as_bytes(), 8);
    assert_eq!(error, None);
    let read: Vec<(usize, u64, i64)> = got
        .iter()
        .map(|(_, i)| (i.series, i.value.to_bits(), i.at.0))
        .collect();
    assert_eq!(
        read,
        vec![
            (0, 0f64.to_bits(), 0),
            (10, 1.5f64.to_bits(), 1_700_000_000_250),
            // No timestamp, a bad one, blank, the end marker: the engine's thread parses.
            (0, 0f64.to_bits(), 0),
            (0, 0f64.to_bits(), 0),
            (0, 0f64.to_bits(), 0),
            (0, 0f64.to_bits(), 0),
        ]
    );
}

#[test]
fn a_read_error_comes_after_the_lines_read_before_it() {
    // Whole lines, then a partial one the error cuts off: the whole lines arrive, then
    // the error (never completed, the partial line is not handed out as a line).
    let data = "m 1 1\n".repeat(50) + "m 2";
    for block_size in [16, 4096] {
        let input = FailsAfter {
            data: data.as_bytes(),
            failed: false,
        };
        let (got, error) = read_all(input, block_size);
        assert_eq!(got.len(), 50, "blocks of {block_size}");
        assert_eq!(error.as_deref(), Some("disk on fire"));
    }
    // An error before any whole line.
    let input = FailsAfter {
        data: b"m 1",
        failed: false,
    };
    let (got, error) = read_all(input, 64);
    assert!(got.is_empty());
    assert_eq!(error.as_deref(), Some("disk on fire"));
}

#[test]
fn blocks_are_reused_not_made_per_block() {
    // Many blocks through the thread: at most IN_FLIGHT buffers ever exist, so the
    // addresses of the blocks handed out repeat.
    let data = "m{a=\"1\"} 1 2\n".repeat(2000);
    let reader = BlockReader::new(data.as_bytes(), TimestampUnit::Seconds, 256);
    let mut seen = std::collections::HashSet::new();
    let mut count = 0;
    std::thread::scope(|scope| {
        let (mut next, mut blocks) = Blocks::start(reader, scope);
        assert!(matches!(blocks, Blocks::Threaded { .. }));
        while let Ok(Some(block)) = next {
            seen.insert(block.buf.as_ptr() as usize);
            count += 1;
            blocks.recycle(block);
            next = blocks.next();
        }
    });
    assert!(count > 50, "{count} blocks");
    assert!(seen.len() <= IN_FLIGHT, "{} buffers", seen.len());
}
