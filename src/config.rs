//! `immune.yaml`: the agent's configuration (listen address, state, rules, engine limits,
//! API auth and limits, HTTP server limits, ingestion limits, sources, signals).
//!
//! Parsed by [`crate::rules::load::from_yaml_str`], the crate's one YAML parser, so a typo
//! is an error with `file:line:column` and a suggested key, exactly like a rule file. Every
//! struct denies unknown keys and every field has a default, so an empty file (or none at
//! all) is a working configuration: rules from `./rules` (else the embedded ones), state in
//! `./data`, listening on `127.0.0.1:9977`.

use crate::engine::EngineConfig;
use crate::model::DurationMs;
use crate::rules::load::{Diagnostics, from_yaml_str};
use crate::signals::SignalsConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The address `immune serve` listens on when nothing says otherwise (loopback only: the
/// API changes deploy state, so exposing it is a deliberate choice).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9977";

/// Why a configuration could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid configuration (every problem, with positions).
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// A duration written like in rule files (`500ms`, `10s`, `5m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Duration(pub DurationMs);

impl TryFrom<String> for Duration {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        DurationMs::parse(&text)
            .map(Duration)
            .ok_or_else(|| format!("invalid duration {text:?} (expected e.g. \"10s\", \"500ms\")"))
    }
}

impl Duration {
    /// As a std duration (negative spans become zero).
    pub fn std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.0.max(0) as u64)
    }

    const fn secs(s: i64) -> Duration {
        Duration(DurationMs::from_secs(s))
    }
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on for the API and /metrics.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// immune's base URL as others reach it, for links in signals (default: `http://<listen>`).
    #[serde(default)]
    pub public_url: Option<String>,
    /// Where durable state (the outbox, deploy events) lives.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Rule files or directories; empty means `./rules` if it exists, else the embedded rules.
    #[serde(default)]
    pub rules: Vec<PathBuf>,
    /// Experiment files (see docs/EXPERIMENTS.md), loaded at start.
    #[serde(default)]
    pub experiments: Vec<PathBuf>,
    /// The engine's clock spacing and limits.
    #[serde(default)]
    pub engine: EngineSection,
    /// The HTTP API.
    #[serde(default)]
    pub api: ApiConfig,
    /// The HTTP server's connection limits and timeouts.
    #[serde(default)]
    pub http: HttpConfig,
    /// Limits on what pushed and scraped samples may carry.
    #[serde(default)]
    pub limits: crate::limits::LimitsConfig,
    /// Where metrics come from.
    #[serde(default)]
    pub sources: SourcesConfig,
    /// Where decisions go.
    #[serde(default)]
    pub signals: SignalsConfig,
    /// A Prometheus-compatible TSDB the agent fills its windows from at start-up.
    #[serde(default)]
    pub history: Option<HistoryConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            public_url: None,
            data_dir: default_data_dir(),
            rules: Vec::new(),
            experiments: Vec::new(),
            engine: EngineSection::default(),
            api: ApiConfig::default(),
            http: HttpConfig::default(),
            limits: crate::limits::LimitsConfig::default(),
            sources: SourcesConfig::default(),
            signals: SignalsConfig::default(),
            history: None,
        }
    }
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

impl Config {
    /// Parses a configuration's text; `file` names it in diagnostics.
    pub fn from_str(file: &str, text: &str) -> Result<Config, ConfigError> {
        from_yaml_str::<Config>(file, text).map_err(ConfigError::Invalid)
    }

    /// Reads and parses a configuration file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        Config::from_str(&name, &text)
    }

    /// The rule paths to load: the configured ones, else `./rules` when it exists; empty
    /// means "use the embedded rules".
    pub fn rule_paths(&self) -> Vec<PathBuf> {
        if !self.rules.is_empty() {
            return self.rules.clone();
        }
        let local = PathBuf::from("rules");
        if local.is_dir() {
            vec![local]
        } else {
            Vec::new()
        }
    }
}

/// Engine settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// How often rules are evaluated.
    #[serde(default = "d10s")]
    pub eval_interval: Duration,
    /// The block over which continuous metrics are averaged into one observation.
    #[serde(default = "d60s")]
    pub block: Duration,
    /// How long the `full` phase lasts before `watch` begins.
    #[serde(default = "d300s")]
    pub full_for: Duration,
    /// At most this many series; samples of new series beyond it are refused and counted.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// Inputs the engine channel holds; sample batches beyond it are refused and counted.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// Finished deploys kept for the API.
    #[serde(default = "default_recent")]
    pub recent_deploys: usize,
    /// After this long in canary, rules still gathering evidence that lean healthy no
    /// longer hold back a `promote`.
    #[serde(default = "d300s")]
    pub promote_after: Duration,
    /// A deploy none of whose stopping rules saw data ends `block` (default) or `pass`.
    #[serde(default)]
    pub no_evidence: crate::engine::NoEvidence,
    /// Per-service overrides of `no_evidence` (service name to `block` or `pass`).
    #[serde(default)]
    pub no_evidence_services: std::collections::BTreeMap<String, crate::engine::NoEvidence>,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            eval_interval: d10s(),
            block: d60s(),
            full_for: d300s(),
            max_series: default_max_series(),
            queue_capacity: default_queue(),
            recent_deploys: default_recent(),
            promote_after: d300s(),
            no_evidence: crate::engine::NoEvidence::Block,
            no_evidence_services: Default::default(),
        }
    }
}

impl EngineSection {
    /// The engine's own configuration.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            eval_interval: self.eval_interval.0,
            block: self.block.0,
            full_for: self.full_for.0,
            max_series: self.max_series,
            recent_deploys: self.recent_deploys,
            promote_after: self.promote_after.0,
            no_evidence: self.no_evidence,
            no_evidence_services: self.no_evidence_services.clone(),
        }
    }
}

fn d10s() -> Duration {
    Duration::secs(10)
}
fn d60s() -> Duration {
    Duration::secs(60)
}
fn d300s() -> Duration {
    Duration::secs(300)
}
fn d5s() -> Duration {
    Duration::secs(5)
}
fn d30s() -> Duration {
    Duration::secs(30)
}
fn default_max_series() -> usize {
    1_000_000
}
fn default_queue() -> usize {
    1024
}
fn default_recent() -> usize {
    200
}

/// The HTTP API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer tokens accepted on state-changing endpoints; none (and no `token_file`)
    /// means no authentication, which suits a loopback listener only.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// A file with one token per line (blank lines and `#` comments ignored), added to `tokens`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Largest request body, in bytes, except remote_write.
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
    /// Largest remote_write or push body, in bytes (compressed, as sent).
    #[serde(default = "default_write_limit")]
    pub write_body_limit: usize,
    /// Longest time one request may take.
    #[serde(default = "d30s")]
    pub request_timeout: Duration,
    /// Deploy events whose `at` is further in the past than this are refused (400 naming
    /// `at`): a negative or garbled time would make the judge walk an absurd span.
    #[serde(default = "d1h")]
    pub max_event_age: Duration,
    /// Deploy events whose `at` is further ahead of the agent's clock than this are refused
    /// (clock skew between hosts; catches milliseconds sent as seconds).
    #[serde(default = "d300s")]
    pub max_event_lead: Duration,
    /// `/-/healthy` fails once the engine has been busy with one input for longer than this.
    #[serde(default = "d30s")]
    pub liveness_timeout: Duration,
    /// How the verdict, Flagger and gate endpoints answer for a service immune has never
    /// seen a deploy of: `closed` (default: not healthy / blocked, reason "unknown
    /// service", so a typo never passes a gate) or `open`.
    #[serde(default)]
    pub unknown_service: UnknownService,
}

/// `api.unknown_service`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownService {
    /// Not healthy / blocked.
    #[default]
    Closed,
    /// Healthy / open while its line is.
    Open,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            tokens: Vec::new(),
            token_file: None,
            body_limit: default_body_limit(),
            write_body_limit: default_write_limit(),
            request_timeout: d30s(),
            max_event_age: d1h(),
            max_event_lead: d300s(),
            liveness_timeout: d30s(),
            unknown_service: UnknownService::default(),
        }
    }
}

impl ApiConfig {
    /// The accepted span of event times around the agent's clock.
    pub fn event_window(&self) -> crate::model::EventWindow {
        crate::model::EventWindow {
            past: self.max_event_age.0,
            future: self.max_event_lead.0,
        }
    }
}

/// `http:`: what one client may hold of the server. axum's own server has no header-read
/// timeout, so a client that sends its headers a byte at a time would keep its connection
/// (and its memory) for ever; these bound that.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// A connection that has not sent a whole request head this long after it opened (or
    /// after its previous response) is closed.
    #[serde(default = "d10s")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes moving for this long is closed.
    #[serde(default = "d60s")]
    pub idle_timeout: Duration,
    /// Most connections open at once; further clients wait in the listen backlog until one
    /// closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout: d10s(),
            idle_timeout: d60s(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_max_connections() -> usize {
    1024
}
fn d1h() -> Duration {
    Duration::secs(3600)
}

fn default_body_limit() -> usize {
    1 << 20
}
fn default_write_limit() -> usize {
    10 << 20
}

impl ApiConfig {
    /// Every accepted token (configured plus the token file's).
    pub fn all_tokens(&self) -> Result<Vec<String>, ConfigError> {
        let mut tokens = self.tokens.clone();
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
        Ok(tokens)
    }
}

/// Every source, by kind; each entry is its own task.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    /// MySQL / MariaDB servers read with `SHOW GLOBAL STATUS` and business queries.
    #[serde(default)]
    pub mysql: Vec<MysqlConfig>,
    /// memcached servers read with `stats`.
    #[serde(default)]
    pub memcached: Vec<MemcachedConfig>,
    /// Exporters whose /metrics is scraped.
    #[serde(default)]
    pub scrape: Vec<ScrapeConfig>,
    /// Prometheus-compatible query APIs polled with instant queries.
    #[serde(default)]
    pub promql: Vec<PromqlConfig>,
}

/// One MySQL server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// The source's name in immune's own metrics (default `mysql`).
    #[serde(default)]
    pub name: Option<String>,
    /// `mysql://user:password@host:port/db`.
    pub url: String,
    /// The `job` label of its series (rules select on it).
    #[serde(default = "job_mysql")]
    pub job: String,
    /// The `instance` label (default: host:port of the URL).
    #[serde(default)]
    pub instance: Option<String>,
    /// Time between reads.
    #[serde(default = "d10s")]
    pub interval: Duration,
    /// Longest a read (connect included) may take.
    #[serde(default = "d5s")]
    pub timeout: Duration,
    /// Queries whose one number becomes a series (signups, orders...).
    #[serde(default)]
    pub queries: Vec<BusinessQuery>,
}

fn job_mysql() -> String {
    "mysql".into()
}

/// A business query: one row, one numeric column.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessQuery {
    /// The series' metric name (e.g. `shop_signups_total`).
    pub name: String,
    /// The SQL; its first column of its first row is the value.
    pub query: String,
    /// Extra labels on the series.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `counter` or `gauge`: documents how rules should read it (counters must only grow).
    #[serde(default)]
    pub kind: QueryKind,
}

/// How a business query's number behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryKind {
    /// A level (rows pending, open carts).
    #[default]
    Gauge,
    /// A running total (signups ever).
    Counter,
}

/// One memcached server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemcachedConfig {
    /// The source's name in immune's own metrics (default `memcached`).
    #[serde(default)]
    pub name: Option<String>,
    /// `host:port`.
    pub addr: String,
    /// The `job` label of its series.
    #[serde(default = "job_memcached")]
    pub job: String,
    /// The `instance` label (default: `addr`).
    #[serde(default)]
    pub instance: Option<String>,
    /// Time between reads.
    #[serde(default = "d10s")]
    pub interval: Duration,
    /// Longest a read (connect included) may take.
    #[serde(default = "d5s")]
    pub timeout: Duration,
}

fn job_memcached() -> String {
    "memcached".into()
}

/// One exporter scraped over HTTP.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// The source's name in immune's own metrics (default: `scrape:<job>`).
    #[serde(default)]
    pub name: Option<String>,
    /// The full URL, e.g. `http://web-01:9100/metrics` (or targets from `file_sd_configs`).
    #[serde(default)]
    pub url: Option<String>,
    /// The `job` label added to every series.
    pub job: String,
    /// The `instance` label (default: the URL's host:port).
    #[serde(default)]
    pub instance: Option<String>,
    /// Targets from files, in Prometheus's `file_sd_configs` format, re-read when they
    /// change: a fleet of hundreds of hosts is one entry, not one per URL.
    #[serde(default)]
    pub file_sd_configs: Vec<FileSdConfig>,
    /// Scheme of file-discovered targets (a target group label `__scheme__` overrides it).
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// Path of file-discovered targets (a target group label `__metrics_path__` overrides it).
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    /// Time between scrapes.
    #[serde(default = "d10s")]
    pub interval: Duration,
    /// Longest a scrape may take.
    #[serde(default = "d5s")]
    pub timeout: Duration,
}

/// Files of target groups, as Prometheus's `file_sd_configs`: JSON (`.json`) or YAML
/// (`.yml`, `.yaml`) lists of `{targets: [host:port, ...], labels: {name: value}}`. A `*`
/// in a file name matches any run of characters (`targets/*.json`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    /// The files (or patterns).
    pub files: Vec<PathBuf>,
}

fn default_scheme() -> String {
    "http".into()
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

/// One Prometheus-compatible query API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromqlConfig {
    /// The source's name in immune's own metrics (default: `promql:<name or query>`).
    #[serde(default)]
    pub name: Option<String>,
    /// Base URL of the API, e.g. `http://prometheus:9090`.
    pub url: String,
    /// The instant query.
    pub query: String,
    /// The metric name given to the results (default: each result's `__name__`, else `promql_result`).
    #[serde(default)]
    pub metric: Option<String>,
    /// Time between queries.
    #[serde(default = "d10s")]
    pub interval: Duration,
    /// Longest a query may take.
    #[serde(default = "d5s")]
    pub timeout: Duration,
}

/// The TSDB the agent reads history from (Prometheus, Thanos, Mimir, VictoriaMetrics: any
/// server of `/api/v1/query` and `/api/v1/query_range`). With it, a restarted agent fills
/// every rule's windows at start-up instead of waiting for them to fill live, a reload
/// fills the rules it adds, and seasonal rules read their season from it at each deploy's
/// start instead of the agent keeping a week of it in memory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Base URL of the query API (`http://prometheus:9090`, Mimir's `.../prometheus`).
    pub url: String,
    /// Extra request headers, e.g. `{X-Scope-OrgID: team-a}` for Mimir.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A file holding a bearer token.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Basic auth.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Longest one request may take.
    #[serde(default = "d30s")]
    pub timeout: Duration,
    /// Attempts per request beyond the first (on connection errors and 5xx).
    #[serde(default = "three")]
    pub retries: u32,
    /// Longest span of raw samples fetched in one request per selector.
    #[serde(default = "d1h")]
    pub chunk: Duration,
    /// Longest the whole start-up fill (or a reload's fill) may take; past it the agent
    /// goes on with what it has (rules whose windows are short stay inconclusive and say
    /// why).
    #[serde(default = "d300s")]
    pub prefill_timeout: Duration,
}

/// A user name and a file holding the password.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user.
    pub username: String,
    /// A file holding the password (trailing whitespace is trimmed).
    pub password_file: PathBuf,
}

fn three() -> u32 {
    3
}

impl HistoryConfig {
    /// The client settings, with the secrets read from their files.
    pub fn tsdb(&self) -> Result<crate::history::Tsdb, ConfigError> {
        let secret = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })
        };
        let basic_auth = match &self.basic_auth {
            Some(b) => Some((b.username.clone(), secret(&b.password_file)?)),
            None => None,
        };
        Ok(crate::history::Tsdb {
            url: self.url.clone(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            bearer_token: self.bearer_token_file.as_ref().map(secret).transpose()?,
            basic_auth,
            timeout: self.timeout.std(),
            retries: self.retries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::from_str("immune.yaml", "").unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.engine.eval_interval, Duration::secs(10));
        assert_eq!(c.api.write_body_limit, 10 << 20);
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
listen: 0.0.0.0:9977
engine: {eval_interval: 5s, max_series: 1000}
api: {tokens: [abc], request_timeout: 2s}
sources:
  mysql:
    - url: mysql://u:p@127.0.0.1:3306/shop
      interval: 1s
      queries:
        - {name: shop_signups_total, query: "SELECT COUNT(*) FROM signups", kind: counter}
  memcached: [{addr: "127.0.0.1:11211"}]
  scrape: [{url: "http://127.0.0.1:9100/metrics", job: node}]
  promql: [{url: "http://127.0.0.1:9090", query: up}]
"#;
        let c = Config::from_str("immune.yaml", text).unwrap();
        assert_eq!(c.engine.eval_interval, Duration::secs(5));
        assert_eq!(c.sources.mysql[0].queries[0].kind, QueryKind::Counter);
        assert_eq!(c.sources.memcached[0].job, "memcached");
        assert_eq!(c.api.tokens, vec!["abc".to_string()]);
    }

    #[test]
    fn history_and_file_sd_parse() {
        let text = r#"
history:
  url: http://mimir:8080/prometheus
  headers: {X-Scope-OrgID: team-a}
  timeout: 5s
sources:
  scrape: [{job: web, file_sd_configs: [{files: [t/*.json]}]}]
"#;
        let c = Config::from_str("immune.yaml", text).unwrap();
        let h = c.history.as_ref().unwrap();
        let t = h.tsdb().unwrap();
        assert_eq!(t.url, "http://mimir:8080/prometheus");
        assert_eq!(t.headers, vec![("X-Scope-OrgID".into(), "team-a".into())]);
        assert_eq!(t.timeout, std::time::Duration::from_secs(5));
        assert_eq!(t.retries, 3);
        assert_eq!(h.prefill_timeout, Duration::secs(300));
        let s = &c.sources.scrape[0];
        assert_eq!(s.url, None);
        assert_eq!(s.file_sd_configs[0].files, vec![PathBuf::from("t/*.json")]);
        assert_eq!(
            (s.scheme.as_str(), s.metrics_path.as_str()),
            ("http", "/metrics")
        );
        let err = Config::from_str(
            "immune.yaml",
            "history: {url: x, bearer_token_file: /nonexistent/t}
",
        )
        .unwrap()
        .history
        .unwrap()
        .tsdb()
        .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/t: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn typo_is_positioned() {
        let err = Config::from_str("immune.yaml", "engine:\n  eval_intervl: 5s\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("immune.yaml:2:3"), "{text}");
        assert!(text.contains("eval_intervl"), "{text}");
    }

    #[test]
    fn bad_duration_is_an_error() {
        let err = Config::from_str("immune.yaml", "engine: {eval_interval: soon}\n").unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }
}
