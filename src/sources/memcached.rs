//! memcached source: the `stats` command over one TCP connection.
//!
//! Names follow memcached_exporter so rules written for it work unchanged:
//! `memcached_commands_total{command, status}` (get hit/miss, set, delete, incr, decr,
//! touch), `memcached_items_evicted_total`, `memcached_current_connections`,
//! `memcached_current_bytes`, `memcached_current_items`, `memcached_limit_bytes` and
//! `memcached_up`. Every series carries `job` and `instance`.

use super::{Poller, SourceError, sorted};
use crate::config::MemcachedConfig;
use crate::model::{Labels, Sample, Timestamp};
use std::collections::HashMap;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// `stats` fields that become `memcached_commands_total{command, status}`.
const COMMANDS: &[(&str, &str, &str)] = &[
    ("get_hits", "get", "hit"),
    ("get_misses", "get", "miss"),
    ("cmd_set", "set", "hit"),
    ("delete_hits", "delete", "hit"),
    ("delete_misses", "delete", "miss"),
    ("incr_hits", "incr", "hit"),
    ("incr_misses", "incr", "miss"),
    ("decr_hits", "decr", "hit"),
    ("decr_misses", "decr", "miss"),
    ("touch_hits", "touch", "hit"),
    ("touch_misses", "touch", "miss"),
];

/// `stats` fields that become plain series.
const PLAIN: &[(&str, &str)] = &[
    ("evictions", "memcached_items_evicted_total"),
    ("curr_connections", "memcached_current_connections"),
    ("bytes", "memcached_current_bytes"),
    ("curr_items", "memcached_current_items"),
    ("limit_maxbytes", "memcached_limit_bytes"),
];

/// Reads one memcached server.
pub struct MemcachedPoller {
    addr: String,
    labels: Labels,
    conn: Option<BufReader<TcpStream>>,
}

impl MemcachedPoller {
    /// Prepares a poller; the connection is made at the first read.
    pub fn new(cfg: &MemcachedConfig) -> MemcachedPoller {
        let instance = cfg.instance.clone().unwrap_or_else(|| cfg.addr.clone());
        MemcachedPoller {
            addr: cfg.addr.clone(),
            labels: sorted(vec![
                ("instance".into(), instance),
                ("job".into(), cfg.job.clone()),
            ]),
            conn: None,
        }
    }

    fn sample(&self, name: &str, extra: &[(&str, &str)], value: f64, now: Timestamp) -> Sample {
        let mut labels = self.labels.clone();
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Sample {
            name: name.to_string(),
            labels: sorted(labels),
            value,
            at: now,
        }
    }
}

/// Reads one `stats` answer: `STAT name value` lines up to `END`.
async fn read_stats(conn: &mut BufReader<TcpStream>) -> Result<HashMap<String, f64>, SourceError> {
    conn.get_mut()
        .write_all(b"stats\r\n")
        .await
        .map_err(|e| SourceError::Io(e.to_string()))?;
    let mut stats = HashMap::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = conn
            .read_line(&mut line)
            .await
            .map_err(|e| SourceError::Io(e.to_string()))?;
        if n == 0 {
            return Err(SourceError::Io("connection closed".into()));
        }
        let l = line.trim_end();
        if l == "END" {
            return Ok(stats);
        }
        let mut parts = l.split_ascii_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some("STAT"), Some(name), Some(value)) => {
                if let Ok(v) = value.parse::<f64>() {
                    stats.insert(name.to_string(), v);
                }
            }
            _ => return Err(SourceError::Protocol(format!("unexpected line {l:?}"))),
        }
        if stats.len() > 10_000 {
            return Err(SourceError::Protocol("too many stats lines".into()));
        }
    }
}

impl Poller for MemcachedPoller {
    async fn poll(&mut self, now: Timestamp) -> Result<Vec<Sample>, SourceError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => BufReader::new(
                TcpStream::connect(&self.addr)
                    .await
                    .map_err(|e| SourceError::Io(format!("connect {}: {e}", self.addr)))?,
            ),
        };
        let stats = read_stats(&mut conn).await?;
        self.conn = Some(conn);
        let mut out = Vec::with_capacity(COMMANDS.len() + PLAIN.len() + 1);
        for (field, command, status) in COMMANDS {
            if let Some(v) = stats.get(*field) {
                out.push(self.sample(
                    "memcached_commands_total",
                    &[("command", command), ("status", status)],
                    *v,
                    now,
                ));
            }
        }
        for (field, name) in PLAIN {
            if let Some(v) = stats.get(*field) {
                out.push(self.sample(name, &[], *v, now));
            }
        }
        out.push(self.sample("memcached_up", &[], 1.0, now));
        Ok(out)
    }

    fn reset(&mut self) {
        self.conn = None;
    }

    fn down(&self, now: Timestamp) -> Vec<Sample> {
        vec![self.sample("memcached_up", &[], 0.0, now)]
    }
}
