//! MySQL / MariaDB source: server health and business numbers, read over one connection.
//!
//! Names follow mysqld_exporter so rules written for it work unchanged:
//! `SHOW GLOBAL STATUS` gives `mysql_global_status_<lowercased name>` for the variables in
//! [`STATUS_VARIABLES`]; on a replica, `Seconds_Behind_Master` (or `_Source`) gives
//! `mysql_slave_status_seconds_behind_master`; `mysql_up` is 1 after a good read and 0 after
//! a failed one. Each configured business query (`SELECT COUNT(*) FROM signups`) returns
//! one number that becomes its own series. Every series carries `job` and `instance`.
//!
//! A business query the server rejects (bad SQL, missing table) is logged and counted but
//! does not fail the read: the server's own health is still worth having. Anything else
//! (connection lost, timeout) fails the read and drops the connection.

use super::{Poller, SourceError, SourceMetrics, sorted};
use crate::config::MysqlConfig;
use crate::model::{Labels, Sample, Timestamp};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row, Value};

/// `SHOW GLOBAL STATUS` variables turned into series (mysqld_exporter names them
/// `mysql_global_status_<lowercased>`).
pub const STATUS_VARIABLES: &[&str] = &[
    "Threads_running",
    "Threads_connected",
    "Slow_queries",
    "Aborted_connects",
    "Queries",
    "Innodb_row_lock_waits",
    "Innodb_row_lock_time",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum ReplicaCheck {
    /// Try `SHOW REPLICA STATUS` first (MySQL 8.0.22+, MariaDB 10.5.1+).
    Replica,
    /// Older servers.
    Slave,
    /// Neither works (no privilege): stop asking.
    Off,
}

/// Reads one MySQL server.
pub struct MysqlPoller {
    name: String,
    opts: Opts,
    labels: Labels,
    queries: Vec<(crate::config::BusinessQuery, Labels)>,
    conn: Option<Conn>,
    replica: ReplicaCheck,
    metrics: SourceMetrics,
}

impl MysqlPoller {
    /// Prepares a poller; the connection is made at the first read.
    pub fn new(
        name: &str,
        cfg: &MysqlConfig,
        metrics: SourceMetrics,
    ) -> Result<MysqlPoller, SourceError> {
        let opts = Opts::from_url(&cfg.url)
            .map_err(|e| SourceError::Protocol(format!("bad MySQL URL: {e}")))?;
        let instance = cfg
            .instance
            .clone()
            .unwrap_or_else(|| format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port()));
        let labels = vec![
            ("instance".to_string(), instance),
            ("job".to_string(), cfg.job.clone()),
        ];
        let queries = cfg
            .queries
            .iter()
            .map(|q| {
                let mut l = labels.clone();
                l.extend(q.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                (q.clone(), sorted(l))
            })
            .collect();
        Ok(MysqlPoller {
            name: name.to_string(),
            opts,
            labels: sorted(labels),
            queries,
            conn: None,
            replica: ReplicaCheck::Replica,
            metrics,
        })
    }

    fn sample(&self, name: String, value: f64, now: Timestamp) -> Sample {
        Sample {
            name,
            labels: self.labels.clone(),
            value,
            at: now,
        }
    }

    async fn read(&mut self, conn: &mut Conn, now: Timestamp) -> Result<Vec<Sample>, SourceError> {
        let mut out = Vec::with_capacity(STATUS_VARIABLES.len() + self.queries.len() + 2);
        let status: Vec<(String, String)> = conn.query("SHOW GLOBAL STATUS").await.map_err(io)?;
        for (name, value) in status {
            if STATUS_VARIABLES
                .iter()
                .any(|v| v.eq_ignore_ascii_case(&name))
                && let Ok(v) = value.trim().parse::<f64>()
            {
                out.push(self.sample(
                    format!("mysql_global_status_{}", name.to_ascii_lowercase()),
                    v,
                    now,
                ));
            }
        }
        if let Some(lag) = self.replica_lag(conn).await? {
            out.push(self.sample("mysql_slave_status_seconds_behind_master".into(), lag, now));
        }
        for i in 0..self.queries.len() {
            let (q, labels) = &self.queries[i];
            match conn.query_first::<Row, _>(q.query.as_str()).await {
                Ok(row) => match row.as_ref().and_then(|r| r.as_ref(0)).and_then(number) {
                    Some(value) => out.push(Sample {
                        name: q.name.clone(),
                        labels: labels.clone(),
                        value,
                        at: now,
                    }),
                    None => {
                        self.metrics.error(&self.name);
                        tracing::warn!(source = %self.name, query = %q.name, "Business query returned no number.");
                    }
                },
                Err(mysql_async::Error::Server(e)) => {
                    self.metrics.error(&self.name);
                    tracing::warn!(source = %self.name, query = %q.name, error = %e, "Business query failed.");
                }
                Err(e) => return Err(io(e)),
            }
        }
        out.push(self.sample("mysql_up".into(), 1.0, now));
        Ok(out)
    }

    async fn replica_lag(&mut self, conn: &mut Conn) -> Result<Option<f64>, SourceError> {
        loop {
            let sql = match self.replica {
                ReplicaCheck::Replica => "SHOW REPLICA STATUS",
                ReplicaCheck::Slave => "SHOW SLAVE STATUS",
                ReplicaCheck::Off => return Ok(None),
            };
            match conn.query_first::<Row, _>(sql).await {
                Ok(None) => return Ok(None),
                Ok(Some(row)) => {
                    let columns = row.columns_ref();
                    let lag = columns
                        .iter()
                        .position(|c| {
                            let n = c.name_str();
                            n == "Seconds_Behind_Master" || n == "Seconds_Behind_Source"
                        })
                        .and_then(|i| row.as_ref(i))
                        .and_then(number);
                    return Ok(lag);
                }
                Err(mysql_async::Error::Server(e)) => {
                    self.replica = match self.replica {
                        ReplicaCheck::Replica => ReplicaCheck::Slave,
                        _ => {
                            tracing::info!(source = %self.name, error = %e, "Replica status unavailable; not reading replication lag.");
                            ReplicaCheck::Off
                        }
                    };
                }
                Err(e) => return Err(io(e)),
            }
        }
    }
}

fn io(e: mysql_async::Error) -> SourceError {
    SourceError::Io(e.to_string())
}

/// A SQL value as a number (`NULL` and text that is not a number give `None`).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::UInt(u) => Some(*u as f64),
        Value::Float(f) => Some(f64::from(*f)),
        Value::Double(d) => Some(*d),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        _ => None,
    }
}

impl Poller for MysqlPoller {
    async fn poll(&mut self, now: Timestamp) -> Result<Vec<Sample>, SourceError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => Conn::new(self.opts.clone()).await.map_err(io)?,
        };
        let out = self.read(&mut conn, now).await?;
        self.conn = Some(conn);
        Ok(out)
    }

    fn reset(&mut self) {
        self.conn = None;
    }

    fn down(&self, now: Timestamp) -> Vec<Sample> {
        vec![self.sample("mysql_up".into(), 0.0, now)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_from_sql_values() {
        assert_eq!(number(&Value::Bytes(b"42".to_vec())), Some(42.0));
        assert_eq!(number(&Value::Int(-3)), Some(-3.0));
        assert_eq!(number(&Value::NULL), None);
        assert_eq!(number(&Value::Bytes(b"ON".to_vec())), None);
    }
}
