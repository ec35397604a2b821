//! Running `ferrite` commands as a script does: the built binary, judged by exit code,
//! standard output and standard error.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Broker, DEADLINE};

/// What a finished `ferrite` run left behind.
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `ferrite ARGS` with `stdin` as its input; a run longer than [`DEADLINE`] is a failure.
pub fn ferrite(args: &[&str], stdin: &[u8]) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // A command that fails early stops reading: the write then fails, which is fine.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let read_all = |mut stream: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).unwrap();
            String::from_utf8(bytes).unwrap()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`ferrite {}` still running after {DEADLINE:?}; stderr: {}",
                args.join(" "),
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    writer.join().unwrap();
    Outcome {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Runs an admin command against `broker`.
pub fn admin(broker: &Broker, args: &[&str], stdin: &[u8]) -> Outcome {
    let bootstrap = broker.bootstrap();
    let mut all = args.to_vec();
    all.extend(["--bootstrap", &bootstrap]);
    ferrite(&all, stdin)
}

/// Runs an admin command that must succeed.
pub fn admin_ok(broker: &Broker, args: &[&str], stdin: &[u8]) -> String {
    let outcome = admin(broker, args, stdin);
    assert_eq!(
        outcome.code,
        Some(0),
        "`ferrite {}`: {outcome:?}",
        args.join(" ")
    );
    assert_eq!(outcome.stderr, "", "`ferrite {}`", args.join(" "));
    outcome.stdout
}

/// Runs an admin command that must fail with `code` and say `wanted` on stderr.
pub fn admin_fails(
    broker: &Broker,
    args: &[&str],
    stdin: &[u8],
    code: i32,
    wanted: &str,
) -> Outcome {
    let outcome = admin(broker, args, stdin);
    assert_eq!(
        outcome.code,
        Some(code),
        "`ferrite {}`: {outcome:?}",
        args.join(" ")
    );
    assert!(
        outcome.stderr.contains(wanted),
        "`ferrite {}` should say {wanted:?}: {outcome:?}",
        args.join(" ")
    );
    outcome
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
