//! What the integration tests of `ferrite` share: a real `ferrite serve` on a free loopback
//! port with a data directory of its own, stopped when the test ends.

#[allow(dead_code, reason = "only the admin-command tests run commands")]
pub mod cli;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any single step of a test may take before it counts as hung.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running `ferrite serve`, killed if the test fails before stopping it.
pub struct Broker {
    pub child: Child,
    pub address: SocketAddr,
    metrics_address: SocketAddr,
    stdout_lines: mpsc::Receiver<String>,
    /// Everything the broker wrote to stderr so far, line by line.
    stderr_lines: Arc<Mutex<Vec<String>>>,
    /// The line saying where it listens.
    pub listening_line: String,
    _data: tempfile::TempDir,
}

/// How a test starts a broker beyond the defaults.
#[derive(Debug, Default, Clone)]
pub struct Start<'a> {
    /// More `ferrite serve` flags.
    pub args: &'a [&'a str],
    /// The soft and hard descriptor limit the broker starts under.
    pub descriptor_limit: Option<u64>,
}

impl Broker {
    /// Starts a broker (one shard per core) on a port the kernel picks; returns once it listens.
    pub fn start() -> Broker {
        Broker::start_in(tempfile::tempdir().unwrap(), &Start::default())
    }

    /// Starts a broker as [`Broker::start`] does, with `start`'s flags and limits.
    #[allow(
        dead_code,
        reason = "not every test binary needs more than the defaults"
    )]
    pub fn start_with(start: &Start) -> Broker {
        Broker::start_in(tempfile::tempdir().unwrap(), start)
    }

    /// Stops the broker with SIGTERM (checking it stops cleanly) and starts a new one on the
    /// same data directory.
    #[allow(dead_code, reason = "not every test binary restarts the broker")]
    pub fn restart(mut self) -> Broker {
        // SAFETY: signalling our own child process.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to the broker");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "a clean stop, not {status}");
        let data = std::mem::replace(&mut self._data, tempfile::tempdir().unwrap());
        Broker::start_in(data, &Start::default())
    }

    /// Starts the broker in `data` with the default (relative) data directory, as the
    /// README's first command does.
    fn start_in(data: tempfile::TempDir, start: &Start) -> Broker {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferrite"));
        if let Some(limit) = start.descriptor_limit {
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: only an async-signal-safe system call between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .current_dir(data.path())
            // Port 0 for both listeners: tests run in parallel, and must not take the fixed
            // default metrics port from a broker someone runs on this machine.
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(start.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let collected = stderr_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Shown with the test's output, as when the broker wrote to the test's stderr.
                eprintln!("{line}");
                collected.lock().unwrap().push(line);
            }
        });
        let (line_sender, stdout_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = line_sender.send(line);
            }
        });
        let mut broker = Broker {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout_lines,
            stderr_lines,
            listening_line: String::new(),
            _data: data,
        };
        // "ferrite: listening on 127.0.0.1:PORT (Kafka, ...), data in DIR, N shard(s), metrics on
        // http://127.0.0.1:PORT/metrics"
        let line = broker.wait_for_line("listening on");
        let address_after = |marker: &str, end: char| {
            line.split(marker)
                .nth(1)
                .and_then(|rest| rest.split(end).next())
                .and_then(|address| address.parse().ok())
                .unwrap_or_else(|| panic!("no address after {marker:?} in {line:?}"))
        };
        broker.address = address_after("listening on ", ' ');
        broker.metrics_address = address_after("metrics on http://", '/');
        broker.listening_line = line;
        broker
    }

    /// The lines the broker wrote to stderr so far.
    #[allow(dead_code, reason = "not every test binary reads the broker's stderr")]
    pub fn stderr(&self) -> Vec<String> {
        self.stderr_lines.lock().unwrap().clone()
    }

    /// The `--bootstrap` value that reaches this broker.
    #[allow(dead_code, reason = "not every test binary runs admin commands")]
    pub fn bootstrap(&self) -> String {
        self.address.to_string()
    }

    pub fn wait_for_line(&self, wanted: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .stdout_lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line containing {wanted:?} in time"));
            if line.contains(wanted) {
                return line;
            }
        }
    }

    #[allow(
        dead_code,
        reason = "not every test binary speaks the protocol by hand"
    )]
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.address).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream
    }

    /// The metrics endpoint's answer to `GET /metrics` (status 200 checked): the exposition.
    #[allow(dead_code, reason = "not every test binary reads metrics")]
    pub fn metrics(&self) -> String {
        let mut stream = TcpStream::connect(self.metrics_address).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        // HTTP/1.0: the server closes the connection after its answer.
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: ferrite\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.to_owned()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
