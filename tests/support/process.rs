//! Runs the `bridge` binary as a child process, as users do.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_bridge")
}

/// `bridge` with its HTTP port on a free loopback port, so parallel tests never collide
/// on the default 9464, as replica 1 (`BRIDGE_REPLICA`, which the test connections of
/// MQTT and Redis put in their session and consumer names).
pub fn bridge() -> Command {
    let mut command = Command::new(binary());
    command
        .env("BRIDGE_HTTP_LISTEN", "127.0.0.1:0")
        .env("BRIDGE_REPLICA", "1");
    command
}

/// Runs `bridge ARGS` to completion with `stdin` as input.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = bridge()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bridge starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().expect("bridge finishes")
}

/// A `bridge run FILE` in the background.
pub struct Running {
    child: Child,
    pub log: PathBuf,
}

impl Running {
    pub fn start(routes: &Path, log: &Path) -> Running {
        Running::start_replica(routes, log, "1")
    }

    /// A `bridge run FILE` as replica `replica` (`BRIDGE_REPLICA`, which the MQTT test
    /// connections put in their client ids).
    pub fn start_replica(routes: &Path, log: &Path, replica: &str) -> Running {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = bridge()
            .args(["run", routes.to_str().unwrap()])
            .env("BRIDGE_LOG", "info")
            .env("BRIDGE_REPLICA", replica)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("bridge starts");
        Running {
            child,
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for exit, at most `timeout`; returns the exit code.
    pub fn wait(mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "bridge did not exit within {timeout:?}; log: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
