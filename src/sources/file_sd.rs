//! Scrape targets from files, in Prometheus's `file_sd_configs` format, so a fleet of
//! hundreds of hosts is one `scrape` entry fed by whatever already writes Prometheus's
//! target files (Ansible, Consul templates, a cron job).
//!
//! A file is a JSON (`.json`) or YAML (`.yml`, `.yaml`) list of target groups:
//! `[{"targets": ["web-01:9100"], "labels": {"env": "prod", "instance": "web-01"}}]`.
//! Each target is scraped as a [`super::scrape::ScrapePoller`] would be; its series carry
//! the group's labels, then `job` (the entry's, unless the group sets one) and `instance`
//! (the target's `host:port`, unless the group sets one: no relabelling is needed to name
//! hosts). `__scheme__` and `__metrics_path__` set the URL; other `__`-labels are dropped,
//! as Prometheus drops them after relabelling.
//!
//! Files are re-read when they change: every scrape round looks at each file's mtime and
//! size (a `stat`, and a directory listing for `*` patterns), so an edit is seen within one
//! interval without a new dependency or a notify thread. A file that does not parse keeps
//! the targets of the last good read (logged, and retried at the next round), as
//! Prometheus does; a file that disappears takes its targets with it.

use super::scrape::scrape_target;
use super::{Poller, SourceError, sorted};
use crate::config::ScrapeConfig;
use crate::model::{Labels, Sample, Timestamp};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Targets scraped at once per round.
pub const MAX_CONCURRENT: usize = 64;

/// One target group as the files write it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    /// `host:port` of each target.
    pub targets: Vec<String>,
    /// Labels set on every series of these targets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A target ready to scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The URL scraped.
    pub url: String,
    /// Labels set on its series (sorted; `job` and `instance` included).
    pub labels: Labels,
}

/// Parses a target file's text; `name` picks the format by extension and names errors.
pub fn parse_groups(name: &str, text: &str) -> Result<Vec<TargetGroup>, String> {
    if name.ends_with(".json") {
        serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))
    } else {
        crate::rules::load::from_yaml_str(name, text).map_err(|d| d.to_string())
    }
}

/// The targets of `groups` for the scrape entry `cfg`.
pub fn targets(cfg: &ScrapeConfig, groups: &[TargetGroup]) -> Vec<Target> {
    let mut out = Vec::new();
    for g in groups {
        for addr in &g.targets {
            let mut labels: BTreeMap<String, String> = g
                .labels
                .iter()
                .filter(|(k, _)| !k.starts_with("__"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels
                .entry("job".into())
                .or_insert_with(|| cfg.job.clone());
            labels
                .entry("instance".into())
                .or_insert_with(|| addr.clone());
            let scheme = g.labels.get("__scheme__").unwrap_or(&cfg.scheme);
            let path = g
                .labels
                .get("__metrics_path__")
                .unwrap_or(&cfg.metrics_path);
            let sep = if path.starts_with('/') { "" } else { "/" };
            out.push(Target {
                url: format!("{scheme}://{addr}{sep}{path}"),
                labels: sorted(labels.into_iter().collect()),
            });
        }
    }
    out
}

/// The files a pattern names now: itself, or for a `*` in the file name, the matching
/// files of its directory, sorted.
fn expand(pattern: &Path) -> Vec<PathBuf> {
    let Some(name) = pattern.file_name().and_then(|n| n.to_str()) else {
        return vec![pattern.to_path_buf()];
    };
    if !name.contains('*') {
        return vec![pattern.to_path_buf()];
    }
    let dir = pattern
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| wildcard(name, n)))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// `*` matches any run of characters; everything else matches itself.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == text;
    }
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// What a file looked like when last read: its path, mtime and size.
type Stamp = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// Scrapes every target of a scrape entry's `file_sd_configs`.
pub struct FileSdPoller {
    cfg: ScrapeConfig,
    client: reqwest::Client,
    limits: Option<crate::limits::Limits>,
    patterns: Vec<PathBuf>,
    stamp: Option<Stamp>,
    /// The last good targets of each file.
    by_file: BTreeMap<PathBuf, Vec<Target>>,
    targets: Arc<Vec<Target>>,
}

impl FileSdPoller {
    /// Prepares a poller for `cfg` (which has `file_sd_configs`).
    pub fn new(cfg: &ScrapeConfig) -> Result<FileSdPoller, SourceError> {
        if cfg.url.is_some() {
            return Err(SourceError::Config(
                "give either `url` or `file_sd_configs`, not both".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout.std())
            .build()
            .map_err(|e| SourceError::Io(e.to_string()))?;
        Ok(FileSdPoller {
            patterns: cfg
                .file_sd_configs
                .iter()
                .flat_map(|f| f.files.iter().cloned())
                .collect(),
            cfg: cfg.clone(),
            client,
            limits: None,
            stamp: None,
            by_file: BTreeMap::new(),
            targets: Arc::new(Vec::new()),
        })
    }

    /// Applies the label limits to every scrape.
    pub fn with_limits(mut self, limits: crate::limits::Limits) -> FileSdPoller {
        self.limits = Some(limits);
        self
    }

    /// The targets in force.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Re-reads the files if any changed since the last read (or appeared or went away).
    pub fn refresh(&mut self) {
        let files: Vec<PathBuf> = self.patterns.iter().flat_map(|p| expand(p)).collect();
        let stamp: Stamp = files
            .iter()
            .map(|f| {
                let meta = std::fs::metadata(f).ok();
                (
                    f.clone(),
                    meta.as_ref().and_then(|m| m.modified().ok()),
                    meta.map_or(0, |m| m.len()),
                )
            })
            .collect();
        if self.stamp.as_ref() == Some(&stamp) {
            return;
        }
        let mut all_good = true;
        let mut by_file = BTreeMap::new();
        for f in &files {
            let name = f.display().to_string();
            let read = std::fs::read_to_string(f)
                .map_err(|e| format!("{name}: cannot read: {e}"))
                .and_then(|text| parse_groups(&name, &text));
            match read {
                Ok(groups) => {
                    by_file.insert(f.clone(), targets(&self.cfg, &groups));
                }
                Err(e) => {
                    all_good = false;
                    tracing::warn!(job = %self.cfg.job, error = %e, "Target file unreadable; keeping its last good targets.");
                    if let Some(old) = self.by_file.get(f) {
                        by_file.insert(f.clone(), old.clone());
                    }
                }
            }
        }
        self.by_file = by_file;
        let mut list: Vec<Target> = self.by_file.values().flatten().cloned().collect();
        list.dedup_by(|a, b| a.url == b.url && a.labels == b.labels);
        tracing::info!(job = %self.cfg.job, files = files.len(), targets = list.len(), "Scrape targets read from files.");
        self.targets = Arc::new(list);
        // A bad read is retried next round; a good one is not repeated until a change.
        self.stamp = all_good.then_some(stamp);
    }
}

fn up(labels: &Labels, value: f64, now: Timestamp) -> Sample {
    Sample {
        name: "up".into(),
        labels: labels.clone(),
        value,
        at: now,
    }
}

impl Poller for FileSdPoller {
    async fn poll(&mut self, now: Timestamp) -> Result<Vec<Sample>, SourceError> {
        self.refresh();
        let sem = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
        let mut set = tokio::task::JoinSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let (client, sem, limits) = (self.client.clone(), sem.clone(), self.limits.clone());
            let t = t.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let r = scrape_target(&client, &t.url, &t.labels, limits.as_ref(), now).await;
                (i, r)
            });
        }
        // The round must end within the source's timeout even when targets queue behind
        // slow ones: what has not answered by then is down for this round.
        let deadline = tokio::time::Instant::now() + self.cfg.timeout.std().mul_f64(0.9);
        let mut answered = vec![false; self.targets.len()];
        let mut out = Vec::new();
        loop {
            let done = match tokio::time::timeout_at(deadline, set.join_next()).await {
                Ok(Some(done)) => done,
                Ok(None) => break,
                Err(_) => {
                    set.abort_all();
                    break;
                }
            };
            let Ok((i, result)) = done else { continue };
            answered[i] = true;
            let t = &self.targets[i];
            match result {
                Ok(samples) => {
                    out.extend(samples);
                    out.push(up(&t.labels, 1.0, now));
                }
                Err(e) => {
                    tracing::debug!(url = %crate::signals::redact_url(&t.url), error = %e, "Target scrape failed.");
                    out.push(up(&t.labels, 0.0, now));
                }
            }
        }
        for (t, _) in self.targets.iter().zip(&answered).filter(|(_, a)| !**a) {
            out.push(up(&t.labels, 0.0, now));
        }
        Ok(out)
    }

    fn reset(&mut self) {}

    fn down(&self, now: Timestamp) -> Vec<Sample> {
        self.targets
            .iter()
            .map(|t| up(&t.labels, 0.0, now))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ScrapeConfig {
        crate::config::Config::from_str(
            "t.yaml",
            "sources: {scrape: [{job: node, file_sd_configs: [{files: [t.json]}]}]}\n",
        )
        .unwrap()
        .sources
        .scrape
        .remove(0)
    }

    #[test]
    fn groups_become_targets_with_job_and_instance() {
        let g = parse_groups(
            "t.json",
            r#"[{"targets": ["10.0.0.1:9100", "10.0.0.2:9100"], "labels": {"env": "prod"}},
                {"targets": ["10.0.0.3:9100"], "labels": {"instance": "web-03", "__metrics_path__": "/m", "__scheme__": "https"}}]"#,
        )
        .unwrap();
        let t = targets(&cfg(), &g);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].url, "http://10.0.0.1:9100/metrics");
        let l = |v: &[(&str, &str)]| -> Labels {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            t[0].labels,
            l(&[
                ("env", "prod"),
                ("instance", "10.0.0.1:9100"),
                ("job", "node")
            ])
        );
        assert_eq!(t[2].url, "https://10.0.0.3:9100/m");
        assert_eq!(t[2].labels, l(&[("instance", "web-03"), ("job", "node")]));
    }

    #[test]
    fn yaml_groups_parse_and_errors_name_the_file() {
        let g = parse_groups(
            "t.yml",
            "- targets: ['a:1']\n  labels: {env: prod}\n- targets: ['b:2']\n",
        )
        .unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].labels, BTreeMap::new());
        let e = parse_groups("t.yml", "- targets: 3\n").unwrap_err();
        assert!(e.contains("t.yml:1"), "{e}");
        let e = parse_groups("t.json", "[{\"target\": []}]").unwrap_err();
        assert!(e.starts_with("t.json: "), "{e}");
    }

    #[test]
    fn wildcards_match_runs() {
        assert!(wildcard("*.json", "web.json"));
        assert!(wildcard("web-*.yml", "web-eu.yml"));
        assert!(!wildcard("web-*.yml", "web-eu.yaml"));
        assert!(wildcard("a*b*c", "aXbYc"));
        assert!(!wildcard("a*b*c", "ac"));
        assert!(wildcard("x", "x"));
    }
}
