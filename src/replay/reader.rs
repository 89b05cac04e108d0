//! Replay's metrics reader: the file read in large blocks, cut into whole lines and each
//! sample line read ahead (series length, value, timestamp), on a thread of its own.
//!
//! Why a thread: replay's engine thread was the only busy core while promtool uses both
//! (issue 13: 10.6x promtool per CPU-second, 9.2x in wall time). Reading the file (its
//! `read()` calls), finding the line ends and reading each line's fields were over a third
//! of replay's instructions and need nothing of the engine, so they run beside it: the
//! engine's thread compares each line's series text with the one its cache predicts and
//! stores the sample. Blocks travel over a bounded channel ([`IN_FLIGHT`] blocks in all,
//! so memory is bounded) and come back to be filled again (no allocation per block once
//! running). A read error arrives in order, after the lines read before it.
//!
//! Input that fits in one block is read on the caller's thread, with no thread started
//! (rule unit tests, the example replay, small files).

use crate::model::Timestamp;
use crate::textformat::{Parser, TimestampUnit};
use std::io::Read;
use std::sync::mpsc;

/// Bytes read per block: large enough that the per-read and per-handover costs vanish,
/// small enough that a block is still in the shared cache when the engine reads it.
pub(super) const BLOCK: usize = 1 << 20;

/// Blocks in existence per reader: one being filled, one being replayed, the rest
/// waiting in the channel.
const IN_FLIGHT: usize = 4;

/// One line of a block: where it ends and, for a sample line the reader could read, its
/// fields (see [`Parser::split_sample_from_end`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct LineInfo {
    /// End of the line in the block's bytes (past its `\n`; the last line of the input
    /// may lack one).
    pub end: usize,
    /// Length of the series text at the line's start if the line is a sample (a guess,
    /// confirmed by the engine's thread when the text is the one its cache predicts), or
    /// 0 when the line was not read ahead (comments, blank lines, errors, samples without
    /// a timestamp). A line not confirmed is parsed whole on the engine's thread, which
    /// gives the errors with their columns.
    pub series: usize,
    /// The sample's value (when `series` is not 0).
    pub value: f64,
    /// The sample's timestamp (when `series` is not 0).
    pub at: Timestamp,
}

/// Whole lines of the input, in order.
#[derive(Debug, Default)]
pub(super) struct Block {
    /// The bytes read (the lines end at or before the last line's `end`).
    buf: Vec<u8>,
    lines: Vec<LineInfo>,
}

impl Block {
    /// The block's lines with their bytes (each with its `\n`, if it had one).
    pub fn lines(&self) -> impl Iterator<Item = (&[u8], &LineInfo)> {
        let mut start = 0;
        self.lines.iter().map(move |info| {
            let bytes = &self.buf[start..info.end];
            start = info.end;
            (bytes, info)
        })
    }
}

/// Fills blocks from the input: reads until the block is full, cuts it after its last
/// `\n` (the rest goes to the front of the next block) and reads each line ahead.
pub(super) struct BlockReader<R> {
    input: R,
    parser: Parser,
    block_size: usize,
    /// The partial line after the last block's last `\n`.
    carry: Vec<u8>,
    eof: bool,
    /// A read error met after the lines of the block returned with it; returned next.
    error: Option<std::io::Error>,
}

impl<R: Read> BlockReader<R> {
    /// A reader of `input` in blocks of `block_size` bytes (lines longer than that grow
    /// the block), reading timestamps in `unit`.
    pub fn new(input: R, unit: TimestampUnit, block_size: usize) -> BlockReader<R> {
        BlockReader {
            input,
            parser: Parser::new(unit),
            block_size: block_size.max(1),
            carry: Vec::new(),
            eof: false,
            error: None,
        }
    }

    /// Whether the next [`BlockReader::fill`] will read nothing more.
    fn finished(&self) -> bool {
        self.error.is_some() || (self.eof && self.carry.is_empty())
    }

    /// Fills `block` with the next whole lines: `Ok(false)` at the end of the input.
    pub fn fill(&mut self, block: &mut Block) -> std::io::Result<bool> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        block.lines.clear();
        if block.buf.len() < self.block_size.max(2 * self.carry.len()) {
            block
                .buf
                .resize(self.block_size.max(2 * self.carry.len()), 0);
        }
        let mut filled = self.carry.len();
        block.buf[..filled].copy_from_slice(&self.carry);
        self.carry.clear();
        // The carried part holds no `\n`.
        let mut scanned = filled;
        let cut = loop {
            while !self.eof && filled < block.buf.len() {
                match self.input.read(&mut block.buf[filled..]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // Returned after the lines read before it (the partial line
                        // after the last `\n` is never completed).
                        self.error = Some(e);
                        break;
                    }
                }
            }
            if self.eof {
                // All whole lines (the last may lack its `\n`).
                break filled;
            }
            if let Some(n) = memchr::memrchr(b'\n', &block.buf[scanned..filled]) {
                let cut = scanned + n + 1;
                self.carry.extend_from_slice(&block.buf[cut..filled]);
                break cut;
            }
            if let Some(e) = self.error.take() {
                // No whole line before the error.
                return Err(e);
            }
            // A line longer than the block: grow it and read on.
            scanned = filled;
            let size = block.buf.len() * 2;
            block.buf.resize(size, 0);
        };
        if cut == 0 {
            return Ok(false);
        }
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &block.buf[..cut])
            .map(|i| i + 1)
            .chain((block.buf[cut - 1] != b'\n').then_some(cut))
        {
            let line = &block.buf[start..end];
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let (series, value, at) =
                self.parser
                    .split_sample_from_end(line)
                    .unwrap_or((0, 0.0, Timestamp(0)));
            block.lines.push(LineInfo {
                end,
                series,
                value,
                at,
            });
            start = end;
        }
        Ok(true)
    }
}

/// What the reader thread hands over: a block of lines, a read error, or the end.
type Filled = std::io::Result<Option<Block>>;

/// The metrics input as blocks of whole lines, read on a thread of its own unless the
/// input ended within the first block.
pub(super) enum Blocks<R> {
    /// Read on the caller's thread.
    Inline {
        reader: BlockReader<R>,
        spare: Option<Block>,
    },
    /// Read by the thread at the other end of the channels.
    Threaded {
        full: mpsc::Receiver<Filled>,
        empty: mpsc::Sender<Block>,
    },
}

impl<'scope, R: Read + Send + 'scope> Blocks<R> {
    /// Reads the first block on this thread; when there is more, starts the reader
    /// thread in `scope` (which joins it: the thread stops when the receiving end is
    /// dropped, at the end of the replay or at its first error).
    pub fn start<'env>(
        mut reader: BlockReader<R>,
        scope: &'scope std::thread::Scope<'scope, 'env>,
    ) -> (Filled, Blocks<R>) {
        let mut block = Block::default();
        let first = match reader.fill(&mut block) {
            Ok(true) => Ok(Some(block)),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        };
        if reader.finished() || !matches!(first, Ok(Some(_))) {
            return (
                first,
                Blocks::Inline {
                    reader,
                    spare: None,
                },
            );
        }
        let (full_tx, full) = mpsc::sync_channel::<Filled>(IN_FLIGHT - 2);
        let (empty, empty_rx) = mpsc::channel::<Block>();
        scope.spawn(move || {
            // The first block is the caller's; up to IN_FLIGHT - 1 more are made here.
            let mut made = 1;
            loop {
                let mut block = match empty_rx.try_recv() {
                    Ok(b) => b,
                    Err(_) if made < IN_FLIGHT => {
                        made += 1;
                        Block::default()
                    }
                    Err(_) => match empty_rx.recv() {
                        Ok(b) => b,
                        // The replay stopped.
                        Err(_) => return,
                    },
                };
                let (item, last) = match reader.fill(&mut block) {
                    Ok(true) => (Ok(Some(block)), false),
                    Ok(false) => (Ok(None), true),
                    Err(e) => (Err(e), true),
                };
                if full_tx.send(item).is_err() || last {
                    return;
                }
            }
        });
        (first, Blocks::Threaded { full, empty })
    }

    /// The next block of lines, `None` at the end of the input.
    pub fn next(&mut self) -> Filled {
        match self {
            Blocks::Inline { reader, spare } => {
                let mut block = spare.take().unwrap_or_default();
                if reader.fill(&mut block)? {
                    Ok(Some(block))
                } else {
                    Ok(None)
                }
            }
            Blocks::Threaded { full, .. } => full.recv().unwrap_or_else(|_| {
                // Only a panic on the reader thread ends it without a last item (the
                // scope then propagates the panic).
                Err(std::io::Error::other("the metrics reader thread stopped"))
            }),
        }
    }

    /// Gives a replayed block back to be filled again.
    pub fn recycle(&mut self, block: Block) {
        match self {
            Blocks::Inline { spare, .. } => *spare = Some(block),
            // The thread may have ended (end of input): the block is then dropped.
            Blocks::Threaded { empty, .. } => {
                let _ = empty.send(block);
            }
        }
    }
}

#[cfg(test)]
mod tests;
