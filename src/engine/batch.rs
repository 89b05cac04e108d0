//! A request's samples in one flat batch, as push and remote_write hand them to the
//! engine (issue 13: live ingestion at memory speed).
//!
//! Why: the label-pair path (`Vec<Sample>`, a `String` per name, label name and value of
//! every sample) spent most of its time in the allocator, on the API's threads that built
//! the strings and on the engine thread that freed them. A [`SampleBatch`] holds the
//! whole request in four buffers: each series' canonical text (`name{labels}`, labels
//! sorted, values escaped, exactly as the store writes it), its name and labels (for a
//! series the engine has not seen), and its points. The engine resolves a series by
//! comparing its text with the one its [`SeriesCache`] predicts (a sender repeats its
//! series order request after request), so a known series costs one comparison, no hash
//! and no allocation; anything else goes through [`Store::intern_labels`], the same
//! lookup the label-pair path makes, so the series found (or created, or refused by the
//! series limit) is always the one that path would give.
//!
//! [`Store::intern_labels`]: super::store::Store::intern_labels

use super::handle::IngestReport;
use super::store::{SeriesCache, StoreError};
use super::{Engine, EngineError, Index};
use crate::model::{Labels, Sample, Timestamp};
use std::ops::Range;

/// One series of a batch: where its text, name, labels and points are.
#[derive(Clone, Debug)]
struct BatchSeries {
    text: Range<usize>,
    name: Range<usize>,
    /// Into [`SampleBatch::labels`].
    labels: Range<usize>,
    /// Into [`SampleBatch::points`].
    points: Range<usize>,
    /// Refused by a label limit: kept for the count, not ingested.
    dropped: bool,
}

/// A label: its name and value as ranges of [`SampleBatch::parts`].
type LabelSpan = (Range<usize>, Range<usize>);

/// The samples of one request, series by series (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct SampleBatch {
    /// Canonical series texts, back to back.
    texts: String,
    /// Metric names, label names and label values (unescaped), back to back.
    parts: String,
    labels: Vec<LabelSpan>,
    series: Vec<BatchSeries>,
    points: Vec<(Timestamp, f64)>,
    /// The series being added: where its name starts in `parts` and its labels in `labels`.
    open: Option<(Range<usize>, usize)>,
}

impl SampleBatch {
    /// An empty batch.
    pub fn new() -> SampleBatch {
        SampleBatch::default()
    }

    /// Starts a series named `name`; its labels follow ([`SampleBatch::label`]), then its
    /// points ([`SampleBatch::finish_series`]). A series started and not finished is
    /// replaced by the next one started.
    pub fn start_series(&mut self, name: &str) {
        if let Some((name, labels)) = self.open.take() {
            self.parts.truncate(name.start);
            self.labels.truncate(labels);
        }
        let start = self.parts.len();
        self.parts.push_str(name);
        self.open = Some((start..self.parts.len(), self.labels.len()));
    }

    /// Adds a label to the series being added: `prefix` and `name`, then `value`
    /// (unescaped). The prefix is for the `exported_` renaming of clashing labels.
    pub fn label(&mut self, prefix: &str, name: &str, value: &str) {
        let k = self.parts.len();
        self.parts.push_str(prefix);
        self.parts.push_str(name);
        let v = self.parts.len();
        self.parts.push_str(value);
        self.labels.push((k..v, v..self.parts.len()));
    }

    /// Ends the series being added with `points`: sorts its labels (by name, then value,
    /// as the label-pair path does) and writes its canonical text. A series without points
    /// is dropped, as it would carry no sample.
    pub fn finish_series(&mut self, points: impl IntoIterator<Item = (Timestamp, f64)>) {
        let Some((name, first_label)) = self.open.take() else {
            return;
        };
        let start = self.points.len();
        self.points.extend(points);
        if self.points.len() == start {
            self.parts.truncate(name.start);
            self.labels.truncate(first_label);
            return;
        }
        let parts = &self.parts;
        let pair = |l: &LabelSpan| (&parts[l.0.clone()], &parts[l.1.clone()]);
        let labels = &mut self.labels[first_label..];
        if !labels.is_sorted_by(|a, b| pair(a) <= pair(b)) {
            labels.sort_by(|a, b| pair(a).cmp(&pair(b)));
        }
        let text = self.texts.len();
        crate::textformat::format_series_pairs(
            &parts[name.clone()],
            labels.iter().map(pair),
            &mut self.texts,
        );
        self.series.push(BatchSeries {
            text: text..self.texts.len(),
            name,
            labels: first_label..self.labels.len(),
            points: start..self.points.len(),
            dropped: false,
        });
    }

    /// Series in the batch, dropped ones included.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Samples of the series not dropped.
    pub fn samples(&self) -> usize {
        self.kept().map(|s| s.points.len()).sum()
    }

    /// How many distinct series the kept samples belong to (a series may appear twice).
    pub fn distinct_series(&self) -> usize {
        let mut texts: Vec<&str> = self.kept().map(|s| &self.texts[s.text.clone()]).collect();
        texts.sort_unstable();
        texts.dedup();
        texts.len()
    }

    fn kept(&self) -> impl Iterator<Item = &BatchSeries> {
        self.series.iter().filter(|s| !s.dropped)
    }

    /// Series `i`'s name and labels, in order (see [`SampleBatch::series_count`]).
    pub fn name_and_labels(
        &self,
        i: usize,
    ) -> Option<(&str, impl ExactSizeIterator<Item = (&str, &str)>)> {
        let s = self.series.get(i)?;
        let labels = self.labels[s.labels.clone()]
            .iter()
            .map(|(k, v)| (&self.parts[k.clone()], &self.parts[v.clone()]));
        Some((&self.parts[s.name.clone()], labels))
    }

    /// Drops series `i` (a label limit refused it); returns how many samples it had.
    pub fn drop_series(&mut self, i: usize) -> usize {
        match self.series.get_mut(i) {
            Some(s) if !s.dropped => {
                s.dropped = true;
                s.points.len()
            }
            _ => 0,
        }
    }

    fn owned_labels(&self, s: &BatchSeries) -> Labels {
        self.labels[s.labels.clone()]
            .iter()
            .map(|(k, v)| {
                (
                    self.parts[k.clone()].to_string(),
                    self.parts[v.clone()].to_string(),
                )
            })
            .collect()
    }

    /// The kept samples as [`Sample`]s (for callers that want the label-pair form).
    pub fn to_samples(&self) -> Vec<Sample> {
        let mut out = Vec::with_capacity(self.samples());
        for s in self.kept() {
            let name = &self.parts[s.name.clone()];
            let labels = self.owned_labels(s);
            for &(at, value) in &self.points[s.points.clone()] {
                out.push(Sample {
                    name: name.to_string(),
                    labels: labels.clone(),
                    value,
                    at,
                });
            }
        }
        out
    }
}

impl Engine {
    /// Stores a batch's kept samples, series by series, through the caller's `cache` of
    /// the order series arrive in: what [`Engine::ingest`] would store for each sample,
    /// with a known series found by one comparison of its text (see the module docs).
    pub fn ingest_batch(&mut self, cache: &mut SeriesCache, batch: &SampleBatch) -> IngestReport {
        let mut report = IngestReport::default();
        for s in batch.kept() {
            let text = &batch.texts[s.text.clone()];
            let points = &batch.points[s.points.clone()];
            let predicted = match cache.predicted(&self.store) {
                Some((t, _)) if t == text.as_bytes() => cache.take_predicted(&self.store),
                _ => None,
            };
            let found = match predicted {
                Some(id) => Ok(id),
                None => self.resolve_series(cache, batch, s, text),
            };
            match found {
                Ok(id) => {
                    for &(at, value) in points {
                        // Only what is stored counts (see [`Engine::ingest`]).
                        self.counters.samples += u64::from(self.store.push(id, at, value));
                    }
                    report.stored += points.len();
                }
                Err(EngineError::Store(StoreError::SeriesLimit { .. })) => {
                    // Counted once per sample, as the label-pair path counts.
                    self.store.refused_samples += (points.len() as u64).saturating_sub(1);
                    report.series_limit += points.len();
                }
                Err(e) => {
                    report.other += points.len();
                    tracing::debug!(error = %e, series = %text, "Samples refused.");
                }
            }
        }
        report
    }

    /// A series the cache did not predict: looked up (or created) by name and labels,
    /// then taught to the cache under its text.
    fn resolve_series(
        &mut self,
        cache: &mut SeriesCache,
        batch: &SampleBatch,
        s: &BatchSeries,
        text: &str,
    ) -> Result<super::store::SeriesId, EngineError> {
        let mut index = Index {
            rules: &self.rules,
            series: &mut self.rule_series,
            history: !self.season_tsdb,
        };
        let labels = batch.owned_labels(s);
        let id = self
            .store
            .intern_labels(&batch.parts[s.name.clone()], &labels, &mut index)?;
        // The text is the series' canonical text, in the store's map now: this finds
        // `id` again and teaches the cache what follows.
        let taught = self.store.intern_cached(cache, text, &mut index)?;
        debug_assert_eq!(taught, id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;

    fn batch_of(samples: &[Sample]) -> SampleBatch {
        let mut b = SampleBatch::new();
        for s in samples {
            b.start_series(&s.name);
            for (k, v) in &s.labels {
                b.label("", k, v);
            }
            b.finish_series([(s.at, s.value)]);
        }
        b
    }

    /// A sample of the series written as `series` (`name{labels}`).
    fn sample(series: &str, value: f64, at: i64) -> Sample {
        let (name, labels) = crate::textformat::parse_series(series).unwrap();
        Sample {
            name,
            labels,
            value,
            at: Timestamp(at),
        }
    }

    #[test]
    fn texts_are_the_stores_canonical_texts() {
        let mut b = SampleBatch::new();
        b.start_series("m");
        b.label("", "z", "q\"uo\\te\nd");
        b.label("exported_", "job", "x");
        b.label("", "a", "1");
        b.finish_series([(Timestamp(1), 1.0)]);
        let labels: Labels = vec![
            ("a".into(), "1".into()),
            ("exported_job".into(), "x".into()),
            ("z".into(), "q\"uo\\te\nd".into()),
        ];
        let mut want = String::new();
        crate::textformat::format_series("m", &labels, &mut want);
        assert_eq!(&b.texts[b.series[0].text.clone()], want);
        assert_eq!(b.to_samples()[0].labels, labels);
    }

    #[test]
    fn a_series_without_points_leaves_nothing() {
        let mut b = SampleBatch::new();
        b.start_series("m");
        b.label("", "a", "1");
        b.finish_series([]);
        b.start_series("unfinished");
        b.start_series("n");
        b.finish_series([(Timestamp(2), 2.0)]);
        assert_eq!(b.series_count(), 1);
        assert_eq!(b.to_samples(), vec![sample("n", 2.0, 2)]);
    }

    /// `immune_samples_ingested_total` ("samples stored by the engine") counts only what
    /// was stored: a repeated or older point, dropped as out of order, is counted there
    /// and not here, on the sample, batch and backfill paths alike.
    #[test]
    fn samples_dropped_as_out_of_order_are_not_counted_as_stored() {
        let rules = crate::defaults::load_rules(&[]).unwrap();
        let mut e = Engine::new(rules, EngineConfig::default());
        let stored_and_dropped =
            |e: &Engine| (e.counters().samples, e.store().out_of_order_samples);
        let a = "m_total{instance=\"a\"}";
        for (at, acked) in [(20, true), (20, true), (10, true), (30, true)] {
            let s = sample(a, 1.0, at);
            assert_eq!(e.ingest(&s.name, &s.labels, s.value, s.at).is_ok(), acked);
        }
        assert_eq!(stored_and_dropped(&e), (2, 2));
        let mut cache = SeriesCache::new();
        let report = e.ingest_batch(
            &mut cache,
            &batch_of(&[sample(a, 1.0, 30), sample(a, 1.0, 25), sample(a, 1.0, 40)]),
        );
        // All three taken (acknowledged), one stored.
        assert_eq!(report.stored, 3);
        assert_eq!(stored_and_dropped(&e), (3, 4));
        // A series the store does not hold takes a backfill as live samples: a repeated
        // time in it is dropped and not counted.
        let b = "m_total{instance=\"b\"}";
        let stored = e.backfill(vec![
            sample(b, 1.0, 5),
            sample(b, 1.0, 5),
            sample(b, 1.0, 6),
        ]);
        assert_eq!(stored, 2);
        assert_eq!(stored_and_dropped(&e), (5, 5));
        let points: u64 = e.store().iter().map(|(_, s)| s.points.len() as u64).sum();
        assert_eq!(
            points,
            e.counters().samples,
            "every counted sample is in the store"
        );
    }

    /// The batch path stores what the label-pair path stores, series ids included, over
    /// rounds in the same order, in another order, with repeated, dropped and new series.
    #[test]
    fn batches_store_what_sample_by_sample_ingestion_stores() {
        let rules = crate::defaults::load_rules(&[]).unwrap();
        let cfg = EngineConfig {
            max_series: 7,
            ..EngineConfig::default()
        };
        let mut by_batch = Engine::new(rules.clone(), cfg.clone());
        let mut by_sample = Engine::new(rules, cfg);
        let mut cache = SeriesCache::new();
        let round = |k: i64, order: &[usize], extra: usize| -> Vec<Sample> {
            let mut v: Vec<Sample> = order
                .iter()
                .map(|i| {
                    sample(
                        &format!("http_requests_total{{instance=\"h{i}\",job=\"web\"}}"),
                        k as f64,
                        1_700_000_000_000 + k * 10_000,
                    )
                })
                .collect();
            for e in 0..extra {
                v.push(sample(
                    &format!("new_total{{n=\"{e}\"}}"),
                    1.0,
                    1_700_000_000_000 + k * 10_000,
                ));
            }
            v
        };
        let rounds = [
            round(0, &[0, 1, 2, 3], 0),
            round(1, &[0, 1, 2, 3], 0),
            round(2, &[2, 3, 0, 1], 0),
            round(3, &[0, 1, 1, 2, 3], 5),
            round(4, &[3, 2, 1, 0], 2),
        ];
        for r in &rounds {
            let mut b = batch_of(r);
            if r.len() > 4 {
                // A dropped series is not stored.
                b.drop_series(1);
            }
            let got = by_batch.ingest_batch(&mut cache, &b);
            let mut want = IngestReport::default();
            for (i, s) in r.iter().enumerate() {
                if r.len() > 4 && i == 1 {
                    continue;
                }
                match by_sample.ingest(&s.name, &s.labels, s.value, s.at) {
                    Ok(()) => want.stored += 1,
                    Err(EngineError::Store(StoreError::SeriesLimit { .. })) => {
                        want.series_limit += 1
                    }
                    Err(_) => want.other += 1,
                }
            }
            assert_eq!(got, want);
        }
        let dump = |e: &Engine| {
            e.store()
                .iter()
                .map(|(id, s)| {
                    let points: Vec<_> = s.points.iter().map(|(t, v)| (t, v.to_bits())).collect();
                    (id, s.name.to_string(), s.labels.clone(), points)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(dump(&by_batch), dump(&by_sample));
        assert_eq!(
            by_batch.store().refused_samples,
            by_sample.store().refused_samples
        );
        assert_eq!(by_batch.counters().samples, by_sample.counters().samples);
        assert!(by_batch.store().refused_samples > 0);
    }
}
