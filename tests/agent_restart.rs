//! The real `immune serve` process killed with SIGKILL after it stored a rollback but
//! before its webhook receiver was up: after a restart the line is still blocked, the
//! receiver gets the signal (once, with its id), and `immune gate` follows the line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(config: &Path, port: u16) -> Agent {
    let child = Command::new(env!("CARGO_BIN_EXE_immune"))
        .args(["serve", "--config", &config.display().to_string()])
        .env("IMMUNE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent(child);
    wait_for(|| {
        http("GET", port, "/-/healthy", "")
            .map(|r| r.0 == 200)
            .unwrap_or(false)
    });
    agent
}

fn wait_for(mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "condition not met within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A minimal HTTP/1.1 client: (status, body).
fn http(method: &str, port: u16, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// A webhook receiver: records (signal id, body) of every request and answers 200.
fn receiver(listener: TcpListener, got: Arc<Mutex<Vec<(String, String)>>>) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let (mut len, mut id) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("x-immune-signal-id:") {
                    id = line["x-immune-signal-id:".len()..].trim().to_string();
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            got.lock()
                .unwrap()
                .push((id, String::from_utf8_lossy(&body).into_owned()));
            let mut s = reader.into_inner();
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
}

fn gate(port: u16) -> Output {
    Command::new(env!("CARGO_BIN_EXE_immune"))
        .args([
            "gate",
            "--service",
            "web",
            "--url",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap()
}

#[test]
fn a_rollback_survives_sigkill_and_is_delivered_after_restart() {
    let dir = std::env::temp_dir().join(format!("immune-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (port, hook_port) = (free_port(), free_port());
    let rules: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/restart/heartbeat.yaml");
    let config = dir.join("immune.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata_dir: {data}\nrules: [{rules}]\nengine: {{eval_interval: 1s}}\n\
             signals:\n  webhooks:\n    - name: deploybot\n      url: http://127.0.0.1:{hook_port}/hook\n      \
             decisions: [rollback]\n      backoff_base: 200ms\n      backoff_cap: 1s\n",
            data = dir.join("data").display(),
            rules = rules.display(),
        ),
    )
    .unwrap();

    // 1. A heartbeat from the canary host, a deploy, then silence: the agent rolls back.
    let agent = start_agent(&config, port);
    for _ in 0..4 {
        let (status, body) = http(
            "POST",
            port,
            "/api/v1/push",
            "app_heartbeat{instance=\"web-01:80\",job=\"web\"} 1\n",
        )
        .unwrap();
        assert!(status < 300, "{status} {body}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let start = r#"{"deploy": "d1", "service": "web", "version": "r1", "canary": {"instance": ["web-01:80"]}}"#;
    let (status, body) = http("POST", port, "/api/v1/deploys", start).unwrap();
    assert!(status < 300, "{status} {body}");
    wait_for(|| {
        http("GET", port, "/api/v1/lines/web", "")
            .map(|(_, b)| b.contains("heartbeat_silent"))
            .unwrap_or(false)
    });
    assert_eq!(gate(port).status.code(), Some(1));

    // 2. The receiver is down, so the signal waits in the outbox; kill -9 the agent.
    let mut agent = agent;
    let pid = agent.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    let _ = agent.0.wait();

    // 3. Receiver up, agent restarted on the same data: the line is still blocked and the
    //    rollback arrives, once.
    let got = Arc::new(Mutex::new(Vec::new()));
    receiver(
        TcpListener::bind(("127.0.0.1", hook_port)).unwrap(),
        got.clone(),
    );
    let _agent = start_agent(&config, port);
    let (_, line) = http("GET", port, "/api/v1/lines/web", "").unwrap();
    assert!(
        line.contains("heartbeat_silent"),
        "line open after restart: {line}"
    );
    let gated = gate(port);
    assert_eq!(
        gated.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&gated.stdout)
    );
    wait_for(|| !got.lock().unwrap().is_empty());
    std::thread::sleep(Duration::from_secs(3));
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let body: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(body["decision"], "rollback");
    assert_eq!(body["deploy"], "d1");
    assert_eq!(body["signal_id"], got[0].0.as_str());

    // 4. A person unblocks: the gate opens.
    let (status, body) = http(
        "POST",
        port,
        "/api/v1/lines/web/unblock",
        r#"{"by": "alice", "reason": "heartbeat fixed"}"#,
    )
    .unwrap();
    assert!(status < 300, "{status} {body}");
    assert_eq!(gate(port).status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
