//! Logs for people and machines, through the real binary: a log written to a file carries
//! no ANSI colour codes, fields are printed as values (`deploy=d1`, never `Some("d1")`),
//! `RUST_LOG` is honoured (and `IMMUNE_LOG` over it), and `--log-json` writes JSON lines.

#[path = "agent_common/mod.rs"]
mod common;

use common::{Child, TempDir};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_immune"));
    c.env_remove("IMMUNE_LOG")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env_remove("IMMUNE_TOKEN");
    c
}

/// Waits until `path` holds a line containing `needle`; returns the whole text.
fn wait_for(path: &std::path::Path, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let t = std::fs::read_to_string(path).unwrap_or_default();
        if t.contains(needle) {
            return t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no {needle:?} in the log:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_log_file_is_plain_text_with_values() {
    let dir = TempDir::new("logs");
    let cfg = dir.path().join("immune.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: {}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let child = bin()
        .args(["serve", "--config", &cfg.display().to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _child = Child(child);
    let text = wait_for(&log, "Listening.");
    let addr = text
        .lines()
        .find(|l| l.contains("Listening."))
        .and_then(|l| l.split("listen=").nth(1))
        .map(|a| a.split_whitespace().next().unwrap_or_default().to_string())
        .expect("the listen address is logged");
    let url = format!("http://{addr}");
    let o = bin()
        .args([
            "deploy",
            "--url",
            &url,
            "start",
            "d1",
            "--service",
            "web",
            "--canary",
            "instance=web-01:80",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = wait_for(&log, "Deploy event.");
    assert!(!text.contains("\x1b["), "ANSI codes in a log file:\n{text}");
    let line = text.lines().find(|l| l.contains("Deploy event.")).unwrap();
    assert!(
        line.contains("deploy=d1") && line.contains("service=web") && line.contains("event=canary"),
        "{line}"
    );
    assert!(!text.contains("Some(") && !text.contains("None"), "{text}");
}

#[test]
fn rust_log_filters_immune_log_wins_and_json_is_json() {
    let run = |envs: &[(&str, &str)], json: bool| {
        let mut c = bin();
        c.args(["replay"]);
        if json {
            c.arg("--log-json");
        }
        for (k, v) in envs {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(run(&[], false).contains("Replay finished."));
    assert!(!run(&[("RUST_LOG", "warn")], false).contains("Replay finished."));
    assert!(
        run(&[("RUST_LOG", "warn"), ("IMMUNE_LOG", "info")], false).contains("Replay finished.")
    );
    let json = run(&[("NO_COLOR", "1")], true);
    let line = json
        .lines()
        .find(|l| l.contains("Replay finished."))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["fields"]["message"], "Replay finished.");
    assert!(v["fields"]["decisions"].is_u64(), "{v}");
    assert!(!json.contains("\x1b["));
}
