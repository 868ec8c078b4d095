//! A TCP proxy that injects network faults between bridge and a broker (toxiproxy is not
//! installable here): added latency on every chunk in both directions, every connection
//! cut at once, and a stall in which connections stay open but nothing moves in either
//! direction (what a half-open connection looks like to the client).
//!
//! It runs on a thread and runtime of its own: a test's runtime can be held up by a
//! client library's blocking call (librdkafka commits in a rebalance), and a proxy that
//! waited for it would add a fault of its own.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
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

/// What the test asks of the proxy's thread.
enum Command {
    /// Close every open connection, then answer.
    Cut(oneshot::Sender<()>),
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
    commands: mpsc::UnboundedSender<Command>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("non-blocking proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (fault, watching) = watch::channel(Fault::None);
        let (commands, received) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime")
                    .block_on(serve(listener, upstream, watching, received));
            })
            .expect("proxy thread");
        FaultProxy {
            addr,
            fault,
            commands,
        }
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Closes every open connection (both sides see the connection end).
    pub async fn cut(&self) {
        let (done, cut) = oneshot::channel();
        if self.commands.send(Command::Cut(done)).is_ok() {
            let _ = cut.await;
        }
    }
}

/// Accepts and relays until every handle on the proxy is gone.
async fn serve(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let listener = TcpListener::from_std(listener).expect("proxy listener");
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    connections.spawn(relay(client, upstream, fault.clone()));
                }
            }
            command = commands.recv() => match command {
                Some(Command::Cut(done)) => {
                    connections.abort_all();
                    while connections.join_next().await.is_some() {}
                    let _ = done.send(());
                }
                None => return,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
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
