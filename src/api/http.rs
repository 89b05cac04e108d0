//! The HTTP server under the API: hyper's HTTP/1 connection driver with the limits
//! `axum::serve` lacks.
//!
//! - **Header-read timeout** (`http.header_read_timeout`): a connection that has not sent
//!   a whole request head this long after it opened, or after its previous response, is
//!   closed (hyper's `header_read_timeout`). A client sending its headers a byte a second
//!   holds a connection for at most that long.
//! - **Idle timeout** (`http.idle_timeout`): a connection on which no byte has moved either
//!   way for this long is closed (gracefully first; dropped if that does not finish within
//!   another idle period).
//! - **Connection cap** (`http.max_connections`): a semaphore permit is taken before each
//!   `accept`, so beyond the cap new clients wait in the kernel's listen backlog instead of
//!   costing memory here; a permit is released when its connection ends.
//!
//! HTTP/1.1 only: every client of this API (deploy scripts, Prometheus remote_write, Argo,
//! Flagger, browsers) speaks it.

use crate::config::HttpConfig;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// A stream that remembers when a byte last moved, for the idle timeout.
struct Tracked {
    inner: TcpStream,
    origin: Instant,
    last: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        self.last
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` with the `http:` limits until `shutdown` resolves; then
/// stops accepting, lets connections finish their requests (at most 5 s) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cfg: &HttpConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let (close_tx, close_rx) = watch::channel(false);
    let header_timeout = cfg.header_read_timeout.std().max(Duration::from_millis(1));
    let idle = cfg.idle_timeout.std().max(Duration::from_millis(1));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while conns.try_join_next().is_some() {}
        let app = app.clone();
        let close = close_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            connection(stream, app, header_timeout, idle, close).await;
        });
    }
    drop(listener);
    let _ = close_tx.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
    Ok(())
}

async fn connection(
    stream: TcpStream,
    app: Router,
    header_timeout: Duration,
    idle: Duration,
    mut close: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let last = Arc::new(AtomicU64::new(0));
    let origin = Instant::now();
    let io = TokioIo::new(Tracked {
        inner: stream,
        origin,
        last: last.clone(),
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    let mut check =
        tokio::time::interval((idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing: Option<Instant> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP connection ended with an error.");
                }
                return;
            }
            r = close.changed(), if closing.is_none() => {
                let _ = r;
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            _ = check.tick() => {
                let quiet = origin.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                match closing {
                    None if quiet >= idle => {
                        tracing::debug!(idle_ms = quiet.as_millis() as u64, "Idle HTTP connection closed.");
                        conn.as_mut().graceful_shutdown();
                        closing = Some(Instant::now());
                    }
                    Some(since) if since.elapsed() >= idle => return,
                    _ => {}
                }
            }
        }
    }
}
