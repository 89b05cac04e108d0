//! Shipped rules match shipped sources (issue 11 item 5): every series a rule in rules/
//! reads is produced by a source examples/immune.yaml configures, with the `job` the rule
//! selects on. What each source produces is written down here and in README's "Which
//! source produces which names": immune's own MySQL and memcached readers, the
//! configured business queries and PromQL metrics, and, for scraped jobs, the exporters
//! a PHP + MySQL + memcached site already runs on each web host.

use immune::config::Config;
use immune::rules::Selector;
use immune::rules::load::load_paths;
use std::path::{Path, PathBuf};

/// What a scraped web host serves: the app's own metrics (PHP errors, requests and
/// their latency histogram, DB query time, business counters), the client library's
/// process collector, and node_exporter's load average (which needs a scrape entry of its
/// own with job `web`; examples/immune.yaml lists only the app's endpoint, see README).
const WEB_HOST: &[&str] = &[
    "php_errors_total",
    "php_fatal_errors_total",
    "http_requests_total",
    "http_request_duration_seconds",
    "db_query_duration_seconds",
    "app_signups_total",
    "app_revenue_cents_total",
    "process_cpu_seconds_total",
    "node_load1",
];

/// What immune's memcached reader produces (src/sources/memcached.rs).
const MEMCACHED: &[&str] = &[
    "memcached_commands_total",
    "memcached_items_evicted_total",
    "memcached_current_connections",
    "memcached_current_bytes",
    "memcached_current_items",
    "memcached_limit_bytes",
    "memcached_up",
];

/// The (job, metric name or prefix) pairs the example configuration produces.
fn produced(cfg: &Config) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for m in &cfg.sources.mysql {
        // SHOW GLOBAL STATUS, every variable, and the replica's lag.
        out.push((m.job.clone(), "mysql_global_status_".to_string(), true));
        out.push((
            m.job.clone(),
            "mysql_slave_status_seconds_behind_master".to_string(),
            false,
        ));
        for q in &m.queries {
            out.push((m.job.clone(), q.name.clone(), false));
        }
    }
    for m in &cfg.sources.memcached {
        for n in MEMCACHED {
            out.push((m.job.clone(), (*n).to_string(), false));
        }
    }
    for s in &cfg.sources.scrape {
        if s.job == "web" {
            for n in WEB_HOST {
                out.push((s.job.clone(), (*n).to_string(), false));
            }
        }
    }
    out
}

/// The metric names a selector may read: histograms and means read suffixed series.
fn names(sel: &Selector) -> Vec<String> {
    let base = sel.name.clone();
    let stripped = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| base.strip_suffix(s).map(str::to_string));
    vec![stripped.unwrap_or(base)]
}

fn job_of(sel: &Selector) -> Option<&str> {
    sel.matchers
        .iter()
        .find(|m| m.label == "job")
        .map(|m| m.value.as_str())
}

#[test]
fn every_shipped_rule_reads_series_the_example_configuration_produces() {
    let cfg = Config::from_file(Path::new("examples/immune.yaml")).unwrap();
    let rules = load_paths(&[PathBuf::from("rules")]).unwrap();
    let produced = produced(&cfg);
    let mut missing = Vec::new();
    for rule in &rules.rules {
        let mut selectors = vec![&rule.selector];
        if let immune::rules::MetricKind::Ratio { denominator } = &rule.kind {
            selectors.push(denominator);
        }
        for sel in selectors {
            for name in names(sel) {
                let found = produced.iter().any(|(job, n, prefix)| {
                    let name_ok = if *prefix {
                        name.starts_with(n.as_str())
                    } else {
                        name == *n
                    };
                    name_ok && job_of(sel).is_none_or(|j| j == job)
                });
                if !found {
                    missing.push(format!("{}: {name} (job {:?})", rule.name, job_of(sel)));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "no configured source produces: {missing:#?}"
    );
}
