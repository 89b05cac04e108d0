//! The store's index from a series' text to its id: every live series by its canonical
//! text (`name{labels}`, labels sorted), and the other spellings it arrived as.
//!
//! Why not a `HashMap<Box<str>, SeriesId>`: each of its buckets holds the key's pointer
//! and length beside the id, 24 bytes with padding, and a table is at most 7/8 full and
//! often under half full after it doubles (1 M series: 2^21 buckets, 53 bytes a series;
//! issue 13 asks for 1 KiB a series in all). Here a bucket is the 4-byte id alone; the
//! text it is compared with sits in `canonical`, indexed by the id (hashbrown's
//! `HashTable`, the raw table under `HashMap`, built for exactly this). Other spellings
//! (labels out of order) are rare and keep an ordinary map.

use super::{SeriesId, TextHasher};
use hashbrown::HashTable;
use std::collections::HashMap;
use std::hash::BuildHasher;

/// Series ids by text (see the module docs).
#[derive(Debug, Default)]
pub(super) struct TextIndex {
    /// Live series' ids, found by the hash of their canonical text.
    table: HashTable<SeriesId>,
    /// Each series slot's canonical text (`None` for a free slot).
    canonical: Vec<Option<Box<str>>>,
    /// Other spellings of live series.
    aliases: HashMap<Box<str>, SeriesId, TextHasher>,
    hasher: TextHasher,
}

/// What the index holds, for [`super::StoreMemory`].
pub(super) struct TextMemory {
    /// The texts themselves.
    pub texts: usize,
    /// Tables and the per-slot pointers.
    pub index: usize,
    /// Heap blocks.
    pub blocks: usize,
}

impl TextIndex {
    /// The series written as `text`, canonically or as a known other spelling.
    pub fn get(&self, text: &str) -> Option<SeriesId> {
        let hash = self.hasher.hash_one(text);
        let canonical = &self.canonical;
        self.table
            .find(hash, |id| text_of(canonical, *id) == Some(text))
            .copied()
            .or_else(|| self.aliases.get(text).copied())
    }

    /// Files series `id` under its canonical text (the text a reused slot had is
    /// forgotten first, so no stale entry stays behind).
    pub fn insert(&mut self, id: SeriesId, canonical: Box<str>) {
        self.remove(id);
        let slot = id.0 as usize;
        if self.canonical.len() <= slot {
            self.canonical.resize(slot + 1, None);
        }
        let hash = self.hasher.hash_one(&*canonical);
        self.canonical[slot] = Some(canonical);
        let (texts, hasher) = (&self.canonical, &self.hasher);
        self.table.insert_unique(hash, id, |id| {
            hasher.hash_one(text_of(texts, *id).unwrap_or_default())
        });
    }

    /// Files another spelling of series `id`.
    pub fn insert_alias(&mut self, text: Box<str>, id: SeriesId) {
        self.aliases.insert(text, id);
    }

    /// Forgets series `id`'s canonical text (its other spellings go by
    /// [`TextIndex::remove_alias`]).
    pub fn remove(&mut self, id: SeriesId) {
        let Some(text) = self.canonical.get_mut(id.0 as usize).and_then(Option::take) else {
            return;
        };
        let hash = self.hasher.hash_one(&*text);
        if let Ok(entry) = self.table.find_entry(hash, |x| *x == id) {
            entry.remove();
        }
    }

    /// Forgets another spelling.
    pub fn remove_alias(&mut self, text: &str) {
        self.aliases.remove(text);
    }

    /// The canonical texts, in slot order.
    pub fn canonical_texts(&self) -> impl Iterator<Item = &str> {
        self.canonical.iter().flatten().map(|t| &**t)
    }

    /// Bytes asked of the allocator: hashbrown keeps one control byte per bucket, and
    /// its buckets are the capacity over 7/8 rounded up to a power of two.
    pub fn memory(&self) -> TextMemory {
        use std::mem::size_of;
        let buckets = |capacity: usize| (capacity * 8 / 7).next_power_of_two();
        let mut m = TextMemory {
            texts: 0,
            index: buckets(self.table.capacity()) * (size_of::<SeriesId>() + 1)
                + self.canonical.capacity() * size_of::<Option<Box<str>>>()
                + buckets(self.aliases.capacity()) * (size_of::<(Box<str>, SeriesId)>() + 1),
            blocks: 3,
        };
        for text in self
            .canonical_texts()
            .chain(self.aliases.keys().map(|t| &**t))
        {
            m.texts += text.len();
            m.blocks += 1;
        }
        m
    }
}

fn text_of(canonical: &[Option<Box<str>>], id: SeriesId) -> Option<&str> {
    canonical.get(id.0 as usize)?.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_was_filed_and_forgets_what_was_removed() {
        let mut ix = TextIndex::default();
        for i in 0..1000u32 {
            ix.insert(SeriesId(i), format!("m{{i=\"{i}\"}}").into());
        }
        ix.insert_alias("m{b=\"1\",a=\"2\"}".into(), SeriesId(7));
        for i in 0..1000u32 {
            assert_eq!(ix.get(&format!("m{{i=\"{i}\"}}")), Some(SeriesId(i)));
        }
        assert_eq!(ix.get("m{b=\"1\",a=\"2\"}"), Some(SeriesId(7)));
        assert_eq!(ix.get("m{i=\"1000\"}"), None);
        for i in (0..1000u32).step_by(2) {
            ix.remove(SeriesId(i));
        }
        ix.remove_alias("m{b=\"1\",a=\"2\"}");
        for i in 0..1000u32 {
            let want = (i % 2 == 1).then_some(SeriesId(i));
            assert_eq!(ix.get(&format!("m{{i=\"{i}\"}}")), want, "{i}");
        }
        assert_eq!(ix.get("m{b=\"1\",a=\"2\"}"), None);
        // A freed slot takes a new series under a new text.
        ix.insert(SeriesId(4), "n".into());
        assert_eq!(ix.get("n"), Some(SeriesId(4)));
        assert_eq!(ix.get("m{i=\"4\"}"), None);
        assert_eq!(ix.canonical_texts().count(), 501);
        // Filing a live slot again replaces its text rather than leaving a stale entry.
        ix.insert(SeriesId(5), "o".into());
        assert_eq!(ix.get("o"), Some(SeriesId(5)));
        assert_eq!(ix.get("m{i=\"5\"}"), None);
        assert_eq!(ix.table.len(), 501);
    }
}
