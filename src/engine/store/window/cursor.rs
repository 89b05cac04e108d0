//! The window's decoder: points in order from a chunk's start, across chunks, as
//! [`super::Window::push`] coded them (the module docs of `window` give the codes). Kept
//! apart from the encoder so each file stays readable; replay's hot loop runs
//! [`Cursor::next`] (about 13 % of its instructions), so the prefixes are read from one
//! 64-bit look at the stream.

use super::{HEAD, INT, count, next_chunk};

/// Decodes points in order from a chunk's start, across chunks.
#[derive(Clone, Debug)]
pub(super) struct Cursor<'a> {
    words: &'a [u64],
    /// The open chunk (its header has no count yet) and its count.
    open: usize,
    open_count: u32,
    /// The current chunk's header word.
    chunk: usize,
    /// Points of the current chunk not yet decoded.
    left: u32,
    /// Next bit to read (absolute).
    pos: usize,
    t: i64,
    delta: i64,
    v: u64,
    lead: u32,
    trail: u32,
    /// The chunk codes values as integers here: `iv` is the value, `idelta` the delta
    /// before it.
    int: bool,
    iv: i64,
    idelta: i64,
}

impl<'a> Cursor<'a> {
    /// A cursor whose first point is the first of the chunk at word `chunk`, in a
    /// window whose open chunk is at word `open` and holds `open_count` points.
    pub(super) fn new(words: &'a [u64], open: usize, open_count: u32, chunk: usize) -> Self {
        Cursor {
            words,
            open,
            open_count,
            chunk,
            left: 0,
            pos: 0,
            t: 0,
            delta: 0,
            v: 0,
            lead: 0,
            trail: 0,
            int: false,
            iv: 0,
            idelta: 0,
        }
    }

    /// The next `n` bits (1 to 64); zeros past the end.
    #[inline]
    fn read(&mut self, n: u32) -> u64 {
        let x = self.peek();
        self.pos += n as usize;
        x.checked_shr(64 - n).unwrap_or(0)
    }

    /// The next 64 bits of the stream, without moving on; zeros past the end.
    #[inline]
    fn peek(&self) -> u64 {
        let w = self.pos >> 6;
        let off = (self.pos & 63) as u32;
        let a = self.words.get(w).copied().unwrap_or(0);
        if off == 0 {
            a
        } else {
            (a << off) | (self.words.get(w + 1).copied().unwrap_or(0) >> (64 - off))
        }
    }

    pub(super) fn next(&mut self) -> Option<(i64, u64)> {
        if self.left == 0 {
            // The next chunk: the first one, or the one after the current.
            if self.pos != 0 {
                if self.chunk >= self.open {
                    return None;
                }
                self.chunk = next_chunk(self.words, self.chunk);
            }
            if self.chunk > self.open {
                return None;
            }
            let h = self.words.get(self.chunk..self.chunk + HEAD)?;
            self.t = h[0] as i64;
            self.v = h[1];
            self.delta = 0;
            self.int = h[2] & INT != 0;
            self.iv = f64::from_bits(h[1]) as i64;
            self.idelta = 0;
            let count = if self.chunk == self.open {
                self.open_count
            } else {
                count(h[2])
            };
            self.left = count.saturating_sub(1);
            self.pos = (self.chunk + HEAD) * 64;
            return Some((self.t, self.v));
        }
        self.left -= 1;
        // Prefixes are read from one 64-bit look at the stream: the count of leading ones
        // says the delta-of-delta's size, the next bits the XOR's.
        let x = self.peek();
        let dod = match x.leading_ones() {
            0 => {
                self.pos += 1;
                0
            }
            1 => {
                self.pos += 9;
                ((x << 2) >> 57) as i64 - 63
            }
            2 => {
                self.pos += 12;
                ((x << 3) >> 55) as i64 - 255
            }
            3 => {
                self.pos += 16;
                ((x << 4) >> 52) as i64 - 2047
            }
            4 => {
                self.pos += 5;
                self.read(32) as i64 - 2_147_483_647
            }
            _ => {
                self.pos += 5;
                self.read(64) as i64
            }
        };
        self.delta = self.delta.wrapping_add(dod);
        self.t = self.t.wrapping_add(self.delta);
        if self.int {
            let y = self.peek();
            let dod = match y.leading_ones() {
                0 => {
                    self.pos += 1;
                    0
                }
                1 => {
                    self.pos += 5;
                    ((y << 2) >> 61) as i64 - 3
                }
                2 => {
                    self.pos += 10;
                    ((y << 3) >> 57) as i64 - 63
                }
                3 => {
                    self.pos += 16;
                    ((y << 4) >> 52) as i64 - 2047
                }
                4 => {
                    self.pos += 5;
                    self.read(32) as i64 - 2_147_483_647
                }
                5 => {
                    self.pos += 6;
                    self.read(64) as i64
                }
                _ => {
                    // The escape: the rest of the chunk is XOR-coded.
                    self.pos += 6;
                    self.int = false;
                    self.xor_value();
                    return Some((self.t, self.v));
                }
            };
            self.idelta = self.idelta.wrapping_add(dod);
            self.iv = self.iv.wrapping_add(self.idelta);
            self.v = (self.iv as f64).to_bits();
            return Some((self.t, self.v));
        }
        self.xor_value();
        Some((self.t, self.v))
    }

    /// Decodes an XOR-coded value.
    #[inline(always)]
    fn xor_value(&mut self) {
        let y = self.peek();
        if y >> 63 != 0 {
            if (y >> 62) & 1 == 0 {
                self.pos += 2;
            } else {
                let lead = ((y >> 57) & 31) as u32;
                let len = ((y >> 51) & 63) as u32 + 1;
                self.pos += 13;
                self.lead = lead;
                self.trail = 64u32.saturating_sub(lead + len);
            }
            let len = 64u32.saturating_sub(self.lead + self.trail).max(1);
            self.v ^= self.read(len).checked_shl(self.trail).unwrap_or(0);
        } else {
            self.pos += 1;
        }
    }
}
