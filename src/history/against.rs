//! `immune check --against URL`: rules checked against the series that really exist.
//!
//! A typo in a selector (`php_error_total` for `php_errors_total`) is valid syntax, passes
//! `immune check`, and then judges nothing: no evidence, silently. Asked against a
//! Prometheus-compatible API (a TSDB, or a live immune agent, which serves the same two
//! endpoints), every selector a rule reads is looked up with `/api/v1/series?match[]=`; a
//! selector that matches no series is reported with the nearest metric names that do exist
//! (from `/api/v1/label/__name__/values`, by edit distance), so the fix is one glance away.

use super::{Client, HistoryError, rule_selectors};
use crate::rules::Rule;
use serde::Deserialize;

/// A selector of a rule that matches no series at the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmatched {
    /// The rule.
    pub rule: String,
    /// `file:line` of the rule.
    pub origin: String,
    /// The selector, as PromQL.
    pub selector: String,
    /// Existing metric names closest to the selector's, nearest first (at most 3).
    pub nearest: Vec<String>,
}

impl std::fmt::Display for Unmatched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: warning: rule {:?}: {} matches no series",
            self.origin, self.rule, self.selector
        )?;
        if !self.nearest.is_empty() {
            write!(f, "; nearest metric names: {}", self.nearest.join(", "))?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct ListAnswer<T> {
    status: String,
    #[serde(default = "Vec::new")]
    data: Vec<T>,
    #[serde(default)]
    error: Option<String>,
}

fn list<T: serde::de::DeserializeOwned>(
    client: &Client,
    path: &str,
    params: &[(&str, &str)],
) -> Result<Vec<T>, HistoryError> {
    let body = client.get(path, params)?;
    let a: ListAnswer<T> = serde_json::from_slice(&body)
        .map_err(|e| client.error(format!("{path}: unreadable answer: {e}")))?;
    if a.status != "success" {
        return Err(client.error(format!(
            "{path}: {}",
            a.error.unwrap_or_else(|| "request failed".into())
        )));
    }
    Ok(a.data)
}

/// The metric names closest to `name` by edit distance, at most 3, within a distance that
/// still looks like a typo (a third of the name, at least 3).
pub fn nearest(name: &str, names: &[String]) -> Vec<String> {
    let limit = (name.chars().count() / 3).max(3);
    let mut scored: Vec<(usize, &String)> = names
        .iter()
        .filter(|n| n.as_str() != name)
        .map(|n| (strsim::levenshtein(name, n), n))
        .filter(|(d, _)| *d <= limit)
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, n)| n.clone()).collect()
}

/// Every selector of `rules` that matches no series at the API behind `client`.
pub fn unmatched(client: &Client, rules: &[Rule]) -> Result<Vec<Unmatched>, HistoryError> {
    let mut names: Option<Vec<String>> = None;
    let mut out = Vec::new();
    for r in rules {
        for sel in rule_selectors(r) {
            let found: Vec<serde_json::Value> =
                list(client, "/api/v1/series", &[("match[]", &sel)])?;
            if !found.is_empty() {
                continue;
            }
            if names.is_none() {
                names = Some(list(client, "/api/v1/label/__name__/values", &[])?);
            }
            let metric = sel.split('{').next().unwrap_or(&sel);
            out.push(Unmatched {
                rule: r.name.clone(),
                origin: format!("{}:{}", r.origin.file, r.origin.line),
                selector: sel.clone(),
                nearest: nearest(metric, names.as_deref().unwrap_or(&[])),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_metric() {
        let names: Vec<String> = [
            "php_errors_total",
            "php_fatal_errors_total",
            "up",
            "http_requests_total",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            nearest("php_error_total", &names),
            vec!["php_errors_total".to_string()],
            "php_fatal_errors_total is 7 edits away, past the typo limit of 5"
        );
        assert!(nearest("memcached_hits_total", &names).is_empty());
    }
}
