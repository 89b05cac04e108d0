//! A series' window of recent points, stored compressed the way Gorilla stores its
//! blocks (Pelkonen et al., "Gorilla: A Fast, Scalable, In-Memory Time Series Database",
//! VLDB 2015, section 4.1): timestamps as delta-of-deltas, values XOR-ed with the previous
//! value and written as their meaningful bits only, in chunks of [`CHUNK`] points of which
//! the newest is open (still being appended to).
//!
//! Why: a window held as `VecDeque<(Timestamp, f64)>` costs 16 bytes a point; the default
//! windows keep about 195 points at 10 s (3.1 KB a series), three times issue 13's 1 KiB
//! per series. A counter scraped regularly costs about 1 byte a point here, headers
//! included.
//!
//! Integer values (counters, most gauges of counts) are coded as delta-of-deltas of `i64`
//! instead of XORs, the way the timestamps are: a steady counter costs 1 bit a value
//! instead of about 18, an irregular one (requests, errors) about a quarter less than its
//! XORs. A chunk whose first value is an integer that converts back bit for bit (so not
//! -0.0, a NaN, the staleness marker or an infinity) is flagged in its header and codes
//! its values so; the first value that is not one is written after an escape code, XOR-ed
//! with the previous value's bits, and the rest of the chunk is XOR-coded. Values read
//! back bit for bit either way. Value codes: `0` (the delta did not change), `10` and 3
//! bits, `110` and 7, `1110` and 12, `11110` and 32, `111110` and 64, `111111` the escape.
//!
//! Exactly the points of the old window: the store trimmed a window after each push,
//! dropping its front while the second point was older than the retention horizon. That
//! front is a function of the largest horizon seen (the newest point older than it), so
//! the window keeps that horizon and every read starts at the same front the old window
//! had; whole chunks are dropped once a newer chunk starts before the horizon. So a window
//! holds at most one chunk more than the retention, never less, and every read sees the
//! same points, values bit for bit, in the same order.
//!
//! Layout: one `Vec<u64>`; each chunk is a header of three words (first time, first
//! value's bits, and the chunk's point count, bit length and integer flag) followed by its
//! bit stream, most significant bit first, starting on a word boundary so a chunk decodes
//! on its own. The decoder is in `window/cursor.rs`.

use crate::model::Timestamp;
use cursor::Cursor;

/// Points per closed chunk. A read decodes from a chunk's start; 32 keeps that short (16
/// points on average) while the three-word header costs under a byte a point.
pub const CHUNK: u32 = 32;

/// Words of a chunk's header: first time, first value, meta ([`INT`] | count << 32 | stream
/// bits).
const HEAD: usize = 3;

/// "No meaningful-bit window yet" (no XOR since the chunk started).
const NO_WINDOW: u8 = u8::MAX;

/// Flag in a chunk's meta word: the chunk starts coding values as integers (its first
/// value is one), delta-of-deltas of `i64` instead of XORs, until an escape code.
const INT: u64 = 1 << 63;

/// The value code that leaves integer coding for the rest of the chunk (six ones).
const ESCAPE: u64 = 0b11_1111;

/// The value as an integer when it is one that converts back bit for bit: every
/// integer-valued f64 from -2^63 to 2^63 (so every one under 2^53, and the exact ones
/// above), not -0.0, NaNs (stale markers among them) or infinities, which keep the XOR
/// path and so their bits.
#[inline(always)]
fn as_int(bits: u64) -> Option<i64> {
    let i = f64::from_bits(bits) as i64;
    ((i as f64).to_bits() == bits).then_some(i)
}

/// The integer delta-of-delta's code, most significant bit first, and its length: `0`;
/// `10` and 3 bits; `110` and 7; `1110` and 12; `11110` and 32; `111110` and 64 (length
/// 0 here: the caller writes the prefix and the raw word). `111111` is [`ESCAPE`].
#[inline(always)]
fn int_code(dod: i64) -> (u64, u32) {
    match dod {
        0 => (0, 1),
        -3..=4 => ((0b10 << 3) | (dod + 3) as u64, 5),
        -63..=64 => ((0b110 << 7) | (dod + 63) as u64, 10),
        -2047..=2048 => ((0b1110 << 12) | (dod + 2047) as u64, 16),
        -2_147_483_647..=2_147_483_648 => ((0b11110 << 32) | (dod + 2_147_483_647) as u64, 37),
        _ => (0, 0),
    }
}

/// A window of points in strictly increasing time, compressed (see the module docs).
///
/// The open chunk's count and bit length live here, not in its header (written when it
/// closes), and so do the two newest points: an append touches only the word it writes,
/// and a read of the newest interval (every tick's) decodes nothing.
#[derive(Clone, Debug)]
pub struct Window {
    /// The chunks, the open one last and ending where the words end (so where it starts
    /// follows from its length: see [`Window::open`]).
    words: Vec<u64>,
    /// Bits of the open chunk's stream.
    open_bits: u16,
    /// Points in the open chunk.
    open_count: u8,
    /// The open chunk codes values as integers (see [`INT`]); false once a value that is
    /// not one arrives, for the rest of the chunk.
    open_int: bool,
    /// Leading and trailing zeros of the newest XOR's meaningful bits.
    lead: u8,
    trail: u8,
    /// The newest point (the open chunk's encoder state, with the point before it).
    last_t: i64,
    last_v: u64,
    /// The point before the newest (when there are two).
    prev_t: i64,
    prev_v: u64,
    /// The open chunk's last stream word as written: an append stores the word whole
    /// instead of or-ing into it, so it never waits to read it from memory.
    tail: u64,
    /// The largest trim horizon seen: the window starts at its newest point older than
    /// this (or at its first point when none is).
    horizon: i64,
}

impl Default for Window {
    fn default() -> Window {
        Window::new()
    }
}

impl Window {
    /// An empty window.
    pub const fn new() -> Window {
        Window {
            words: Vec::new(),
            open_bits: 0,
            open_count: 0,
            open_int: false,
            lead: NO_WINDOW,
            trail: 0,
            last_t: 0,
            last_v: 0,
            prev_t: 0,
            prev_v: 0,
            tail: 0,
            horizon: i64::MIN,
        }
    }

    /// A window holding `points` (strictly increasing in time).
    pub fn from_points(points: impl IntoIterator<Item = (Timestamp, f64)>) -> Window {
        let mut w = Window::new();
        for (t, v) in points {
            w.push(t, v);
        }
        w.fit();
        w
    }

    /// True when the window holds no point.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Bytes asked of the allocator.
    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * std::mem::size_of::<u64>()
    }

    /// Appends a point; `t` must be after the newest point (the store checks).
    pub fn push(&mut self, t: Timestamp, v: f64) {
        let (t, bits) = (t.0, v.to_bits());
        // The delta before: between the two newest points when both are in this chunk.
        let last_delta = if self.open_count > 1 {
            self.last_t.wrapping_sub(self.prev_t)
        } else {
            0
        };
        let before = self.prev_v;
        (self.prev_t, self.prev_v) = (self.last_t, self.last_v);
        if self.words.is_empty() || u32::from(self.open_count) >= CHUNK {
            self.start_chunk(t, bits);
            return;
        }
        let delta = t.wrapping_sub(self.last_t);
        let dod = delta.wrapping_sub(last_delta);
        if self.open_int {
            // The chunk's points so far are all integers (it still codes them so).
            let last = f64::from_bits(self.last_v) as i64;
            let last_vdelta = if self.open_count > 1 {
                last.wrapping_sub(f64::from_bits(before) as i64)
            } else {
                0
            };
            if let Some(i) = as_int(bits) {
                let vdod = i.wrapping_sub(last).wrapping_sub(last_vdelta);
                self.push_int(t, bits, dod, vdod);
                return;
            }
            self.open_int = false;
            self.push_code(t, bits, dod, true);
            return;
        }
        self.push_code(t, bits, dod, false);
    }

    /// Appends a point whose value is coded as an integer delta-of-delta `vdod`.
    #[inline(always)]
    fn push_int(&mut self, t: i64, bits: u64, dod: i64, vdod: i64) {
        let (dcode, dn) = time_code(dod);
        let (vcode, vn) = int_code(vdod);
        let total = if dn == 0 { 69 } else { dn } + if vn == 0 { 70 } else { vn };
        let used = u32::from(self.open_bits);
        let base = self.open() + HEAD;
        let need = base + (used as usize + total as usize).div_ceil(64);
        if need > self.words.len() {
            self.grow(need);
        }
        if dn != 0 && vn != 0 && dn + vn <= 64 {
            // Regular times and steady counters: one store.
            self.emit64(base, used, (dcode << vn) | vcode, dn + vn);
        } else {
            let mut at = used;
            if dn == 0 {
                self.emit64(base, at, 0b11111, 5);
                self.emit64(base, at + 5, dod as u64, 64);
                at += 69;
            } else {
                self.emit64(base, at, dcode, dn);
                at += dn;
            }
            if vn == 0 {
                self.emit64(base, at, 0b111110, 6);
                self.emit64(base, at + 6, vdod as u64, 64);
            } else {
                self.emit64(base, at, vcode, vn);
            }
        }
        self.open_bits += total as u16;
        self.open_count += 1;
        self.last_t = t;
        self.last_v = bits;
    }

    /// Appends a point whose value is XOR-coded; after [`ESCAPE`] when `escape` (the
    /// chunk leaves integer coding here).
    #[inline(always)]
    fn push_code(&mut self, t: i64, bits: u64, dod: i64, escape: bool) {
        // The point's code, most significant bit first: the delta-of-delta, the XOR's
        // header, the XOR's meaningful bits. `dn` 0: a delta-of-delta past 32 bits.
        let (dcode, dn) = time_code(dod);
        // The escape goes with the time's code (at most 37 + 6 bits) or, after a time
        // past 32 bits, is written on its own.
        let (dcode, dn, esc) = match (escape, dn) {
            (false, _) => (dcode, dn, 0),
            (true, 0) => (0, 0, 6),
            (true, _) => ((dcode << 6) | ESCAPE, dn + 6, 0),
        };
        let x = bits ^ self.last_v;
        let (vcode, vn, body, len) = if x == 0 {
            (0, 1, 0, 0)
        } else {
            let lead = x.leading_zeros().min(31) as u8;
            let trail = x.trailing_zeros() as u8;
            if self.lead != NO_WINDOW && lead >= self.lead && trail >= self.trail {
                let len = 64 - u32::from(self.lead) - u32::from(self.trail);
                (0b10, 2, x >> self.trail, len)
            } else {
                let len = 64 - u32::from(lead) - u32::from(trail);
                self.lead = lead;
                self.trail = trail;
                let head = (0b11 << 11) | (u64::from(lead) << 6) | u64::from(len - 1);
                (head, 13, x >> trail, len)
            }
        };
        let used = u32::from(self.open_bits);
        let total = if dn == 0 { 69 } else { dn } + esc + vn + len;
        let base = self.open() + HEAD;
        let need = base + (used as usize + total as usize).div_ceil(64);
        if need > self.words.len() {
            self.grow(need);
        }
        let mut at = used;
        let (mut head, mut n) = if dn == 0 {
            self.emit64(base, at, 0b11111, 5);
            self.emit64(base, at + 5, dod as u64, 64);
            at += 69;
            if esc != 0 {
                self.emit64(base, at, ESCAPE, esc);
                at += esc;
            }
            (vcode, vn)
        } else {
            ((dcode << vn) | vcode, dn + vn)
        };
        // `head` holds at most 56 bits and at least one.
        if len > 0 && n + len <= 64 {
            head = (head << len) | body;
            n += len;
            self.emit64(base, at, head, n);
        } else {
            self.emit64(base, at, head, n);
            if len > 0 {
                self.emit64(base, at + n, body, len);
            }
        }
        self.open_bits += total as u16;
        self.open_count += 1;
        self.last_t = t;
        self.last_v = bits;
    }

    /// Writes `v`, of `n` bits (1 to 64, none above), at bit `at` of the open chunk's
    /// stream at `base`, the stream's end; the words are there. The word being filled is
    /// `tail`, so words are stored, never read.
    #[inline(always)]
    fn emit64(&mut self, base: usize, at: u32, v: u64, n: u32) {
        let w = base + (at / 64) as usize;
        let free = 64 - at % 64;
        let cur = if free == 64 { 0 } else { self.tail };
        if n <= free {
            let word = cur | (v << (free - n));
            self.words[w] = word;
            self.tail = word;
        } else {
            self.words[w] = cur | (v >> (n - free));
            let next = v << (64 - (n - free));
            self.words[w + 1] = next;
            self.tail = next;
        }
    }

    /// Moves the window's start on: from now on it starts at its newest point older than
    /// `horizon` (as a window trimmed "while the second point is older than the horizon"
    /// does). Never moves the start back.
    pub fn trim(&mut self, horizon: Timestamp) {
        self.horizon = self.horizon.max(horizon.0);
    }

    /// Gives back spare capacity (after building a window at once).
    fn fit(&mut self) {
        self.words.shrink_to_fit();
    }

    fn start_chunk(&mut self, t: i64, bits: u64) {
        if !self.words.is_empty() {
            // Close the open chunk: its header gets its count and length.
            // Its header's meta word holds the flag it started with.
            let m = self.open() + 2;
            self.words[m] |= (u64::from(self.open_count) << 32) | u64::from(self.open_bits);
        }
        self.drop_stale_chunks();
        self.reserve(HEAD);
        self.open_int = as_int(bits).is_some();
        let flag = if self.open_int { INT } else { 0 };
        self.words.extend_from_slice(&[t as u64, bits, flag]);
        self.open_bits = 0;
        self.open_count = 1;
        self.tail = 0;
        self.last_t = t;
        self.last_v = bits;
        self.lead = NO_WINDOW;
        self.trail = 0;
    }

    /// Drops leading chunks that hold only points before the window's start (the chunk
    /// after them starts before the horizon, so the start lies there or later).
    fn drop_stale_chunks(&mut self) {
        let mut cut = 0;
        loop {
            let next = next_chunk(&self.words, cut);
            if next > self.open() || next >= self.words.len() {
                break;
            }
            if (self.words[next] as i64) < self.horizon {
                cut = next;
            } else {
                break;
            }
        }
        if cut > 0 {
            self.words.drain(..cut);
        }
    }

    /// Room for `more` words.
    fn reserve(&mut self, more: usize) {
        let need = self.words.len() + more;
        if self.words.capacity() < need {
            self.grow_capacity(need);
        }
    }

    /// Lengthens the words to `need` (zeros), growing the room as [`Window::grow_capacity`].
    fn grow(&mut self, need: usize) {
        if self.words.capacity() < need {
            self.grow_capacity(need);
        }
        self.words.resize(need, 0);
    }

    /// Room for at least `need` words: by half while small (a window filling up), then
    /// by an eighth, so a full window's capacity stays near its length.
    fn grow_capacity(&mut self, need: usize) {
        let len = self.words.len();
        let target = if len < 32 {
            (len + len / 2).max(12)
        } else {
            len + len / 8
        };
        self.words.reserve_exact(target.max(need) - len);
    }

    /// The newest point.
    pub fn back(&self) -> Option<(Timestamp, f64)> {
        (!self.is_empty()).then(|| (Timestamp(self.last_t), f64::from_bits(self.last_v)))
    }

    /// The oldest point of the window.
    pub fn front(&self) -> Option<(Timestamp, f64)> {
        self.iter().next()
    }

    /// The window's points, oldest first.
    pub fn iter(&self) -> Iter<'_> {
        self.read_from_chunk(0)
    }

    /// How many points the window holds (decodes up to the start: not for hot paths).
    pub fn len(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut chunks = 0usize;
        let mut c = 0;
        while c < self.open() {
            chunks += 1;
            c = next_chunk(&self.words, c);
        }
        let physical = chunks * CHUNK as usize + usize::from(self.open_count);
        let mut raw = self.cursor(0);
        let mut stale = 0;
        // Points before the start: each whose successor is still older than the horizon.
        let mut prev = raw.next();
        while let (Some(_), Some(p)) = (prev, raw.next()) {
            if p.0 >= self.horizon {
                break;
            }
            stale += 1;
            prev = Some(p);
        }
        physical - stale
    }

    /// The newest point at or before `t` (`None` when the window's first point is after
    /// `t`), and the points after `t`, oldest first.
    pub fn seek(&self, t: Timestamp) -> (Option<(Timestamp, f64)>, Iter<'_>) {
        // The newest interval, read at every tick, from the two points kept aside.
        if !self.is_empty() && t.0 >= self.prev_t && (self.open_count > 1 || self.open() > 0) {
            let end = Iter {
                cursor: self.cursor(self.words.len()),
                head: None,
            };
            return if t.0 >= self.last_t {
                (
                    Some((Timestamp(self.last_t), f64::from_bits(self.last_v))),
                    end,
                )
            } else {
                let prev = (Timestamp(self.prev_t), f64::from_bits(self.prev_v));
                (
                    Some(prev),
                    Iter {
                        head: Some((self.last_t, self.last_v)),
                        ..end
                    },
                )
            };
        }
        let mut it = self.read_from_chunk(self.chunk_at(t.0));
        let mut prev = None;
        while let Some(p) = it.head
            && p.0 <= t.0
        {
            prev = Some(p);
            it.advance();
        }
        (prev.map(point), it)
    }

    /// The points from the start of a chunk leaving at least `n` points to the end (all
    /// points when fewer), oldest first: the newest `n` are its last `n`.
    pub fn tail(&self, n: usize) -> Iter<'_> {
        if self.is_empty() {
            return self.read_from_chunk(0);
        }
        let open = self.open();
        let in_open = usize::from(self.open_count);
        if n <= in_open {
            return self.read_from_chunk(open);
        }
        let mut starts = Vec::new();
        let mut c = 0;
        while c < open {
            starts.push(c);
            c = next_chunk(&self.words, c);
        }
        let back = (n - in_open).div_ceil(CHUNK as usize);
        let at = starts.len().saturating_sub(back);
        self.read_from_chunk(starts.get(at).copied().unwrap_or(open))
    }

    /// The last chunk starting at or before `t` (the first when none does).
    fn chunk_at(&self, t: i64) -> usize {
        let open = self.open();
        match self.words.get(open) {
            None => return 0,
            Some(&t0) if t0 as i64 <= t => return open,
            _ => {}
        }
        let mut c = 0;
        loop {
            let next = next_chunk(&self.words, c);
            if next < open && (self.words[next] as i64) <= t {
                c = next;
            } else {
                return c;
            }
        }
    }

    /// Points from chunk `c` on, starting no earlier than the window's start.
    fn read_from_chunk(&self, c: usize) -> Iter<'_> {
        let mut cursor = self.cursor(c);
        let mut head = cursor.next();
        // Skip points before the start: a point older than the horizon whose successor is
        // also older than it.
        while let Some(p) = head
            && p.0 < self.horizon
        {
            let mut ahead = cursor.clone();
            match ahead.next() {
                Some(q) if q.0 < self.horizon => {
                    head = Some(q);
                    cursor = ahead;
                }
                _ => break,
            }
        }
        Iter { cursor, head }
    }
}

impl Window {
    /// Word where the open (newest) chunk's header starts: it ends where the words end.
    fn open(&self) -> usize {
        let len = HEAD + usize::from(self.open_bits).div_ceil(64);
        self.words.len().saturating_sub(len)
    }

    /// A cursor whose first point is the first of the chunk at word `c`.
    fn cursor(&self, c: usize) -> Cursor<'_> {
        Cursor::new(&self.words, self.open(), u32::from(self.open_count), c)
    }
}

fn point((t, v): (i64, u64)) -> (Timestamp, f64) {
    (Timestamp(t), f64::from_bits(v))
}

#[inline]
fn meta(words: &[u64], chunk: usize) -> u64 {
    words.get(chunk + 2).copied().unwrap_or(0)
}

#[inline]
fn count(meta: u64) -> u32 {
    ((meta >> 32) & 0xff) as u32
}

/// The timestamp delta-of-delta's code, most significant bit first, and its length: `0`;
/// `10` and 7 bits; `110` and 9; `1110` and 12; `11110` and 32; `11111` and 64 (length 0
/// here: the caller writes the prefix and the raw word).
#[inline(always)]
fn time_code(dod: i64) -> (u64, u32) {
    match dod {
        0 => (0, 1),
        -63..=64 => ((0b10 << 7) | (dod + 63) as u64, 9),
        -255..=256 => ((0b110 << 9) | (dod + 255) as u64, 12),
        -2047..=2048 => ((0b1110 << 12) | (dod + 2047) as u64, 16),
        -2_147_483_647..=2_147_483_648 => ((0b11110 << 32) | (dod + 2_147_483_647) as u64, 37),
        _ => (0, 0),
    }
}

/// Where the chunk after the closed one at `chunk` starts.
#[inline]
fn next_chunk(words: &[u64], chunk: usize) -> usize {
    let bits = meta(words, chunk) as u32 as usize;
    chunk + HEAD + bits.div_ceil(64)
}

/// A window's points in time order, decoded as they are read.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    cursor: Cursor<'a>,
    head: Option<(i64, u64)>,
}

impl Iter<'_> {
    fn advance(&mut self) {
        self.head = self.cursor.next();
    }
}

impl Iterator for Iter<'_> {
    type Item = (Timestamp, f64);

    fn next(&mut self) -> Option<(Timestamp, f64)> {
        let p = self.head?;
        self.advance();
        Some(point(p))
    }
}

mod cursor;
#[cfg(test)]
mod tests;
