//! The benchmark's agent: an `immune serve` child process on a free loopback port, and
//! what the live and fleet parts read from it (`/metrics`, CPU seconds and memory from
//! `/proc`). Split from `perf.rs`, which the fleet part (`fleet.rs`) shares it with.

use super::BenchError;
use super::perf::PerfArgs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound and released; the agent binds it right after).
pub(super) fn free_port() -> Result<u16, BenchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The value of an unlabelled counter in Prometheus text.
pub(super) fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l[name.len()..].trim().parse().ok())
}

/// Peak and current resident memory of process `pid` (`self` for this one), in KiB.
pub(super) fn rss_kib_of(pid: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A running `immune serve` child on a free loopback port, killed when dropped.
pub(super) struct Agent {
    child: std::process::Child,
    /// Its process id.
    pub pid: u32,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Agent {
    /// Starts the agent (`args.agent`, or this binary) with its state under `dir`, which
    /// is emptied first.
    pub fn start(args: &PerfArgs, dir: &Path) -> Result<Agent, BenchError> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let config = dir.join("immune.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\ndata_dir: {}\n",
                dir.join("data").display()
            ),
        )?;
        let exe = match &args.agent {
            Some(a) => a.clone(),
            None => std::env::current_exe()?,
        };
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let child = Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Agent {
            pid: child.id(),
            child,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Waits up to 20 s for `/-/healthy`.
    pub async fn healthy(&self, client: &reqwest::Client) -> Result<(), BenchError> {
        let up = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/-/healthy", self.base)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if up.elapsed() > Duration::from_secs(20) {
                return Err(BenchError::Agent("not healthy after 20 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU seconds of process `pid` so far, all threads (from
/// `/proc/<pid>/stat`, in clock ticks of 1/100 s, Linux's `USER_HZ`); 0 when unreadable.
pub(super) fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15, so 11 and 12 after `state`.
    (ticks(11) + ticks(12)) / 100.0
}

/// The agent's `/metrics` text.
pub(super) async fn metrics_text(
    client: &reqwest::Client,
    base: &str,
) -> Result<String, BenchError> {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .map_err(|e| BenchError::Agent(e.to_string()))?
        .text()
        .await
        .map_err(|e| BenchError::Agent(e.to_string()))
}

/// The agent's `immune_samples_ingested_total`.
pub(super) async fn ingested(client: &reqwest::Client, base: &str) -> Result<u64, BenchError> {
    let text = metrics_text(client, base).await?;
    metric_value(&text, "immune_samples_ingested_total")
        .map(|v| v as u64)
        .ok_or_else(|| BenchError::Agent("no immune_samples_ingested_total".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_are_read_by_exact_name() {
        let text =
            "# HELP x\nimmune_samples_ingested_total_x 3\nimmune_samples_ingested_total 42\n";
        assert_eq!(
            metric_value(text, "immune_samples_ingested_total"),
            Some(42.0)
        );
        assert_eq!(metric_value(text, "nope"), None);
    }
}
