//! Loopback ports for the servers a test starts itself (a nats-server, a Mosquitto, a
//! redis-server or a tansu configured for that test), and waiting until one listens.

use std::time::{Duration, Instant};

/// A port nothing listens on now (the OS picks it; a server started next takes it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`, at most 20 s; `what` names the
/// server in the failure.
pub fn wait_until_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}
