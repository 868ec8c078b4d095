//! A TCP proxy that injects network faults between bridge and a broker (toxiproxy is not
//! installable here): added latency on every chunk in both directions, every connection
//! cut at once, and a stall in which connections stay open but nothing moves in either
//! direction (what a half-open connection looks like to the client).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;

/// The fault applied to traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Each chunk waits this long before it is passed on.
    Latency(Duration),
    /// Nothing is passed on; connections are kept open (and new ones accepted).
    Stall,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
    connections: std::sync::Arc<Mutex<JoinSet<()>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (fault, watching) = watch::channel(Fault::None);
        let connections = std::sync::Arc::new(Mutex::new(JoinSet::new()));
        let accepting = {
            let connections = connections.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let watching = watching.clone();
                    connections
                        .lock()
                        .await
                        .spawn(relay(client, upstream, watching));
                }
            })
        };
        FaultProxy {
            addr,
            fault,
            connections,
            accepting,
        }
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Closes every open connection (both sides see the connection end).
    pub async fn cut(&self) {
        self.connections.lock().await.abort_all();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        if let Ok(mut connections) = self.connections.try_lock() {
            connections.abort_all();
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, fault: watch::Receiver<Fault>) {
    // A stalled proxy accepts but does not even reach the broker.
    if !wait_while_stalled(&mut fault.clone()).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = forward(client_read, server_write, fault.clone()) => {}
        _ = forward(server_read, client_write, fault) => {}
    }
}

/// Waits until the proxy is not stalled; false when the proxy is gone.
async fn wait_while_stalled(fault: &mut watch::Receiver<Fault>) -> bool {
    fault.wait_for(|fault| *fault != Fault::Stall).await.is_ok()
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if !wait_while_stalled(&mut fault).await {
            return;
        }
        let delay = *fault.borrow();
        if let Fault::Latency(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
