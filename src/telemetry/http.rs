//! The HTTP port: Prometheus `/metrics`, `/healthz` (the process is alive) and `/readyz`
//! (200 once every route's endpoints are connected, 503 before that and again from the
//! moment a drain starts, so a load balancer or Kubernetes stops routing to it).
//!
//! Its clients are not trusted to behave: at most [`MAX_CONNECTIONS`] are served at once
//! (more wait in the kernel's backlog), a connection that sends and receives nothing for
//! [`IDLE_TIMEOUT`] is closed, and none is kept longer than [`MAX_CONNECTION_LIFE`], so a
//! client that trickles bytes cannot hold the port.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::metrics::{PROCESSING, PROCESSING_BUCKETS};

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// Where the process is in its life, as `/readyz` reports it.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicU8>);

impl Readiness {
    /// Ready, unless a drain has started already.
    pub fn ready(&self) {
        let _ = self
            .0
            .compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn draining(&self) {
        self.0.store(DRAINING, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) == READY
    }

    fn describe(&self) -> &'static str {
        match self.0.load(Ordering::SeqCst) {
            STARTING => "starting: connecting to brokers\n",
            READY => "ready\n",
            _ => "draining\n",
        }
    }
}

/// Installs the Prometheus recorder for the whole process.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(PROCESSING.into()),
            &PROCESSING_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(5));
        loop {
            ticks.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

#[derive(Clone)]
struct Shared {
    metrics: PrometheusHandle,
    readiness: Readiness,
}

async fn metrics(State(shared): State<Shared>) -> String {
    shared.metrics.render()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Shared>) -> (StatusCode, &'static str) {
    let status = if shared.readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, shared.readiness.describe())
}

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection silent in both directions this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection is kept longer (a scraper's keep-alive connection is then reopened).
pub const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(60);

/// Accepts connections while fewer than [`MAX_CONNECTIONS`] are open.
struct LimitedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
}

impl axum::serve::Listener for LimitedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GuardedStream, SocketAddr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((stream, address)) => return (GuardedStream::new(stream, permit), address),
                // Out of file descriptors and the like: wait rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection that fails once idle too long or open too long, and frees its place when
/// dropped.
struct GuardedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Pin<Box<Sleep>>,
    end: Pin<Box<Sleep>>,
}

impl GuardedStream {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit) -> GuardedStream {
        GuardedStream {
            stream,
            _permit: permit,
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            end: Box::pin(tokio::time::sleep(MAX_CONNECTION_LIFE)),
        }
    }

    /// An error once a timer has run out; also registers for its wake-up.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let idle = self.idle.as_mut().poll(cx).is_ready();
        let old = self.end.as_mut().poll(cx).is_ready();
        (idle || old).then(|| io::Error::new(io::ErrorKind::TimedOut, "HTTP connection timed out"))
    }

    fn progressed(&mut self) {
        self.idle.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.expired(cx) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, data) {
            Poll::Ready(Ok(written)) => {
                self.progressed();
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match self.expired(cx) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves the three endpoints on `listen`; returns the address actually bound.
pub async fn serve(
    listen: &str,
    metrics: PrometheusHandle,
    readiness: Readiness,
) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let listener = LimitedListener {
        listener,
        permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    };
    let app = Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Shared { metrics, readiness });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the HTTP server stopped");
        }
    });
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn serving() -> SocketAddr {
        let recorder = PrometheusBuilder::new().build_recorder();
        serve("127.0.0.1:0", recorder.handle(), Readiness::default())
            .await
            .unwrap()
    }

    async fn get_healthz(address: SocketAddr) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_and_its_place_freed() {
        let address = serving().await;
        let mut idle: Vec<TcpStream> = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(address).await.unwrap());
        }
        // Every place is taken: the next client waits, then is served once the idle
        // connections time out.
        let waiting = tokio::spawn(get_healthz(address));
        tokio::time::sleep(IDLE_TIMEOUT / 2).await;
        assert!(!waiting.is_finished());
        tokio::time::sleep(IDLE_TIMEOUT).await;
        let answer = waiting.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut buffer = [0u8; 1];
        assert_eq!(
            idle[0].read(&mut buffer).await.unwrap(),
            0,
            "closed by the server"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_client_is_cut_off_at_the_connection_life() {
        let address = serving().await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        let started = Instant::now();
        let mut closed = false;
        while started.elapsed() < MAX_CONNECTION_LIFE * 2 {
            tokio::time::sleep(IDLE_TIMEOUT / 2).await;
            if stream.write_all(b"G").await.is_err() {
                closed = true;
                break;
            }
            let mut buffer = [0u8; 64];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer)).await
            {
                closed = true;
                break;
            }
        }
        assert!(closed, "still open after {:?}", started.elapsed());
        assert!(started.elapsed() >= MAX_CONNECTION_LIFE);
    }
}
