//! Shared by the tests that run the real `immune serve` binary as a child process (so it
//! can be killed with SIGKILL): a free port, starting and killing the agent, a minimal
//! HTTP client, and a webhook receiver that records every request and can go down and
//! come back up on the same port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The agent process; killed (SIGKILL) and reaped when dropped.
pub struct Agent(pub Child);

impl Agent {
    /// `kill -9`: no shutdown hook runs, as when the machine loses power.
    pub fn kill9(&mut self) {
        let pid = self.0.id().to_string();
        let killed = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        assert!(killed.success(), "kill -9 {pid} failed");
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `immune serve --config CONFIG` and waits until `/-/healthy` answers 200.
pub fn start_agent(config: &Path, port: u16) -> Agent {
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

/// Polls `ok` every 200 ms; fails the test after 60 s.
pub fn wait_for(mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "condition not met within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A minimal HTTP/1.1 client: (status, body).
pub fn http(method: &str, port: u16, path: &str, body: &str) -> std::io::Result<(u16, String)> {
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

/// A webhook receiver on a fixed port: records (`X-Immune-Signal-Id`, body) of every
/// request and answers 200. [`Receiver::down`] closes the port (connections are refused,
/// as from a crashed receiver) until [`Receiver::up`] listens on it again.
pub struct Receiver {
    pub port: u16,
    pub got: Arc<Mutex<Vec<(String, String)>>>,
    stop: Option<Arc<AtomicBool>>,
}

impl Receiver {
    /// A receiver listening on `port`.
    pub fn start(port: u16) -> Receiver {
        let mut r = Receiver {
            port,
            got: Arc::new(Mutex::new(Vec::new())),
            stop: None,
        };
        r.up();
        r
    }

    /// Whether it is listening.
    pub fn is_up(&self) -> bool {
        self.stop.is_some()
    }

    /// Listens again (no-op when up).
    pub fn up(&mut self) {
        if self.stop.is_some() {
            return;
        }
        // The old listener may take a moment to be released by its thread.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "rebind {}: {e}", self.port);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, got) = (stop.clone(), self.got.clone());
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => serve_one(stream, &got),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.stop = Some(stop);
    }

    /// Stops listening: new connections are refused.
    pub fn down(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.store(true, Ordering::SeqCst);
            // Give the accept loop time to drop the listener.
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<(String, String)> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

fn serve_one(stream: TcpStream, got: &Mutex<Vec<(String, String)>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
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
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    got.lock()
        .unwrap()
        .push((id, String::from_utf8_lossy(&body).into_owned()));
    let mut s = reader.into_inner();
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}
