//! A reader's series cache: the series texts in the order they arrive, so a line that
//! repeats last round's order finds its series by one comparison instead of a hash
//! lookup (issue 13: the hash probe and the key comparison were two cache misses per
//! sample on a large store). Split from `store.rs`, which uses it in
//! [`Store::intern_cached`](super::Store::intern_cached).

use super::{SeriesId, Store};

/// The reading side of a [`SeriesCache`]: what a series text resolved to, in the order the
/// texts arrived.
#[derive(Clone, Copy, Debug)]
struct CacheEntry {
    /// Where the text starts in [`SeriesCache::texts`].
    start: usize,
    /// Its length in bytes.
    len: u32,
    /// The series it named.
    id: SeriesId,
}

/// A reader's memory of the order its series texts arrive in, for [`Store::intern_cached`](super::Store::intern_cached).
///
/// A metrics file (or a scrape) lists the same series in the same order round after
/// round, so the series after the one just read is, almost always, the one that followed
/// it last time. The cache keeps the texts in that order in one buffer; a line that
/// matches the predicted text costs one comparison against memory read in sequence (no
/// hash, no probe of the store's map at a random place, no second cache miss on the
/// map's key). A miss falls back to [`Store::intern`](super::Store::intern) and resynchronises the prediction.
/// Ids go stale when a series expires: the store's generation tells, and the cache starts
/// over. Memory: one copy of each distinct text the reader has seen plus 16 bytes, bounded
/// by the store's series limit (the cache is cleared when it outgrows twice its live texts).
#[derive(Debug, Default)]
pub struct SeriesCache {
    /// The texts, back to back, in first-seen order.
    texts: Vec<u8>,
    entries: Vec<CacheEntry>,
    /// Index into `entries` per series id (`u32::MAX`: none).
    position: Vec<u32>,
    /// The entry predicted to come next.
    next: usize,
    /// The store generation the ids belong to.
    generation: u64,
    /// Bytes of `texts` still referenced by an entry.
    live: usize,
}

impl SeriesCache {
    /// An empty cache.
    pub fn new() -> SeriesCache {
        SeriesCache::default()
    }

    /// The series text the cache predicts comes next, and its series, if the prediction
    /// is still valid for `store` (no series expired since it was learned). A reader that
    /// finds its line starts with this text (and whitespace after it) knows the series
    /// without parsing it, and takes it with [`crate::engine::Engine::ingest_predicted`].
    pub fn predicted(&self, store: &Store) -> Option<(&[u8], SeriesId)> {
        if self.generation != store.generation {
            return None;
        }
        let e = self.entries.get(self.next)?;
        Some((self.text(e), e.id))
    }

    /// The predicted series if `text` is its text, taking the prediction; first forgets
    /// everything if the store's `generation` moved on (a series expired).
    pub(super) fn hit(&mut self, generation: u64, text: &str) -> Option<SeriesId> {
        if self.generation != generation {
            self.clear();
            self.generation = generation;
        }
        let e = *self.entries.get(self.next)?;
        if self.text(&e) != text.as_bytes() {
            return None;
        }
        self.predict(self.next + 1);
        Some(e.id)
    }

    /// Takes the prediction (see [`SeriesCache::predicted`]): its series if still valid.
    pub fn take_predicted(&mut self, store: &Store) -> Option<SeriesId> {
        let (_, id) = self.predicted(store)?;
        self.predict(self.next + 1);
        Some(id)
    }

    /// Predicts entry `i` next; past the last entry, the first (a file's next round, or
    /// the same series again when it is the only one).
    fn predict(&mut self, i: usize) {
        self.next = if i >= self.entries.len() { 0 } else { i };
    }

    fn clear(&mut self) {
        self.texts.clear();
        self.entries.clear();
        self.position.clear();
        self.next = 0;
        self.live = 0;
    }

    fn text(&self, e: &CacheEntry) -> &[u8] {
        &self.texts[e.start..e.start + e.len as usize]
    }

    /// Remembers that `text` named `id`, and predicts the entry after it next.
    pub(super) fn learn(&mut self, text: &str, id: SeriesId) {
        let slot = id.0 as usize;
        if self.position.len() <= slot {
            self.position.resize(slot + 1, u32::MAX);
        }
        let at = self.position[slot] as usize;
        if let Some(e) = self.entries.get(at).copied()
            && e.id == id
        {
            if self.text(&e) != text.as_bytes() {
                // The same series under another spelling: point the entry at it.
                self.live -= e.len as usize;
                self.push_text(at, text, id);
            }
            self.predict(at + 1);
            return;
        }
        if self.texts.len() > 2 * self.live + (1 << 20) {
            // Mostly respelled texts: start over rather than grow.
            let generation = self.generation;
            self.clear();
            self.generation = generation;
            self.position.resize(slot + 1, u32::MAX);
        }
        let at = self.entries.len();
        self.entries.push(CacheEntry {
            start: 0,
            len: 0,
            id,
        });
        self.push_text(at, text, id);
        self.position[slot] = at as u32;
        self.predict(at + 1);
    }

    fn push_text(&mut self, at: usize, text: &str, id: SeriesId) {
        let start = self.texts.len();
        self.texts.extend_from_slice(text.as_bytes());
        self.live += text.len();
        self.entries[at] = CacheEntry {
            start,
            len: text.len() as u32,
            id,
        };
    }
}
