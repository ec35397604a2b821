//! `ferrite-bench` as a user runs it: against a real `ferrite serve` on a free loopback port,
//! reading the JSON result it writes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const START_DEADLINE: Duration = Duration::from_secs(30);

/// The `ferrite` binary of this build (same target directory and profile as this test), built
/// first if missing: `cargo test -p ferrite-bench` alone does not build other packages' binaries.
fn ferrite_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in <target>/<profile>/deps");
    let binary = profile_dir.join("ferrite");
    if !binary.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "ferrite-tools", "--bin", "ferrite"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building ferrite failed");
    }
    assert!(binary.exists(), "no ferrite binary at {}", binary.display());
    binary
}

/// A running `ferrite serve`, killed when dropped.
struct Broker {
    child: Child,
    address: String,
    _data: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(ferrite_binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(["--cores", "1", "--data-dir"])
            .arg(data.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let line = received
            .recv_timeout(START_DEADLINE)
            .expect("ferrite serve prints where it listens");
        let address = line
            .split_whitespace()
            .nth(3)
            .filter(|_| line.starts_with("ferrite: listening on "))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Broker {
            child,
            address,
            _data: data,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bench(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite-bench"))
        .args(arguments)
        .output()
        .expect("ferrite-bench runs")
}

#[test]
fn a_paced_run_against_ferrite_accounts_for_every_message() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("ferrite.json");
    let json = json_path.to_str().unwrap();
    // The workload from a file, as users keep them; the command line overrides its rate.
    let workload = dir.path().join("workload.toml");
    std::fs::write(
        &workload,
        "topic = \"bench-test\"\npartitions = 2\nmessage-bytes = 200\nrate = 50\n\
         duration-s = 3\nwarmup-s = 0.5\nacks = \"all\"\nsetup-timeout-s = 10\n\
         drain-timeout-s = 5\n",
    )
    .unwrap();
    let output = bench(&[
        "--workload",
        workload.to_str().unwrap(),
        "--bootstrap",
        &broker.address,
        "--rate",
        "500",
        "--json",
        json,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ferrite-bench failed:\n{stderr}");
    let result: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();

    // 500 msg/s for 3.5 s, each acknowledged and consumed exactly once.
    assert_eq!(result["produced"], 1750, "{stderr}");
    assert_eq!(result["consumed"], result["produced"]);
    assert_eq!(result["consume_duplicates"], 0);
    assert_eq!(result["problems"], serde_json::json!([]));
    let msgs_per_s = result["produce_msgs_per_s"].as_f64().unwrap();
    assert!((250.0..=750.0).contains(&msgs_per_s), "{msgs_per_s} msg/s");
    assert!(result["produce_mb_per_s"].is_f64());
    // The per-second series add up to the totals of the 3 s window.
    for (series, total) in [
        ("produce_per_second", "produce_msgs_per_s"),
        ("consume_per_second", "consume_msgs_per_s"),
    ] {
        let counts: Vec<u64> = result[series]
            .as_array()
            .unwrap_or_else(|| panic!("no {series}"))
            .iter()
            .map(|count| count.as_u64().unwrap())
            .collect();
        assert_eq!(counts.len(), 3, "{series}: {counts:?}");
        let per_s = counts.iter().sum::<u64>() as f64 / 3.0;
        assert_eq!(result[total].as_f64(), Some(per_s), "{series}: {counts:?}");
    }
    for latency in ["ack_latency_ms", "e2e_latency_ms"] {
        assert_eq!(
            result[latency]["count"], 1500,
            "{latency}: warm-up excluded"
        );
        for quantile in ["p50", "p90", "p99", "p99.9", "p99.99", "max"] {
            let value = result[latency][quantile].as_f64().unwrap();
            assert!(
                value > 0.0 && value < 10_000.0,
                "{latency}.{quantile} = {value}"
            );
        }
    }
    assert_eq!(result["flags"]["bootstrap"], broker.address.as_str());
    assert_eq!(result["flags"]["acks"], "all");
    assert_eq!(result["flags"]["partitions"], 2, "from the workload file");
    assert!(result["group_settle_ms"].is_null(), "no consumer group");
    assert!(result["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(stderr.contains("produced 1750 of 1750 sent"), "{stderr}");
    // One progress line per second of the run, while it runs.
    for second in 1..=3 {
        let line = format!("ferrite-bench: {second:>4} s  produced ");
        assert!(stderr.contains(&line), "no line {line:?} in\n{stderr}");
    }
    assert!(!stderr.contains("could not delete the topic"), "{stderr}");

    let compared = bench(&["compare", json, json]);
    assert!(compared.status.success());
    let table = String::from_utf8(compared.stdout).unwrap();
    let row = table
        .lines()
        .find(|line| line.starts_with("produced "))
        .unwrap_or_else(|| panic!("no produced row in\n{table}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["produced", "1750", "1750", "(1.00x)"]
    );
}

/// The arguments of a paced run on a fresh topic of `partitions`, writing its JSON to `json`.
fn paced_run<'a>(
    broker: &'a Broker,
    topic: &'a str,
    partitions: &'a str,
    rate: &'a str,
    duration_s: &'a str,
    json: &'a Path,
) -> Vec<&'a str> {
    vec![
        "--bootstrap",
        &broker.address,
        "--topic",
        topic,
        "--partitions",
        partitions,
        "--message-bytes",
        "200",
        "--rate",
        rate,
        "--duration-s",
        duration_s,
        "--warmup-s",
        "0.5",
        "--setup-timeout-s",
        "30",
        "--drain-timeout-s",
        "5",
        "--json",
        json.to_str().expect("a UTF-8 temporary path"),
    ]
}

fn run_to_json(arguments: &[&str], json: &Path) -> (Value, String) {
    let output = bench(arguments);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "ferrite-bench failed:\n{stderr}");
    let result = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    (result, stderr)
}

#[test]
fn producers_share_the_rate_and_consumers_share_the_partitions_with_keys() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("many.json");
    let mut arguments = paced_run(&broker, "bench-many", "3", "400", "1", &json);
    arguments.extend([
        "--producers",
        "2",
        "--consumers",
        "2",
        "--key-distribution",
        "uniform:50",
    ]);
    let (result, stderr) = run_to_json(&arguments, &json);
    // 400 msg/s for 1.5 s between the two producers: 600 distinct sequence numbers, each
    // consumed exactly once by whichever consumer owns the partition its key was placed in.
    assert_eq!(result["sent"], 600, "{stderr}");
    assert_eq!(result["produced"], 600, "{stderr}");
    assert_eq!(result["consumed"], 600, "{stderr}");
    assert_eq!(result["consume_duplicates"], 0);
    assert_eq!(result["problems"], serde_json::json!([]));
    assert_eq!(result["flags"]["producers"], 2);
    assert_eq!(result["flags"]["consumers"], 2);
    assert_eq!(result["flags"]["key_distribution"], "uniform:50");
}

#[test]
fn a_consumer_group_of_two_members_on_four_partitions_gets_every_message_once() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("group.json");
    let mut arguments = paced_run(&broker, "bench-group", "4", "500", "3", &json);
    arguments.extend(["--consumers", "2", "--consumer-group", "bench-members"]);
    let (result, stderr) = run_to_json(&arguments, &json);

    // 500 msg/s for 3.5 s, each consumed exactly once by the member its partition went to.
    assert_eq!(result["produced"], 1750, "{stderr}");
    assert_eq!(result["consumed"], result["produced"], "{stderr}");
    assert_eq!(result["consumed_per_group"], serde_json::json!([1750]));
    assert_eq!(result["consume_duplicates"], 0);
    assert_eq!(result["problems"], serde_json::json!([]));
    assert_eq!(
        result["e2e_latency_ms"]["count"], 1500,
        "the measured window starts after the group settled"
    );
    let settle_ms = result["group_settle_ms"].as_f64().expect("group_settle_ms");
    assert!((0.0..30_000.0).contains(&settle_ms), "{settle_ms} ms");
    assert_eq!(result["flags"]["consumer_group"], "bench-members");
    assert_eq!(result["flags"]["assignment_strategy"], "range");
    assert!(
        stderr.contains(
            "ferrite-bench: consumer group \"bench-members\": 4 partitions assigned to 2 members \
             after "
        ),
        "{stderr}"
    );
}

#[test]
fn each_of_two_cooperative_consumer_groups_gets_every_message() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("fan-out.json");
    let mut arguments = paced_run(&broker, "bench-fan-out", "4", "400", "1", &json);
    arguments.extend([
        "--consumers",
        "2",
        "--consumer-group",
        "fan",
        "--consumer-groups",
        "2",
        "--assignment-strategy",
        "cooperative-sticky",
    ]);
    let (result, stderr) = run_to_json(&arguments, &json);

    // 400 msg/s for 1.5 s; each group reads all 600, so the window's 400 are received twice.
    assert_eq!(result["produced"], 600, "{stderr}");
    assert_eq!(result["consumed"], 600, "{stderr}");
    assert_eq!(result["consumed_per_group"], serde_json::json!([600, 600]));
    assert_eq!(result["consume_duplicates"], 0);
    assert_eq!(result["problems"], serde_json::json!([]));
    assert_eq!(result["e2e_latency_ms"]["count"], 800);
    assert!(result["group_settle_ms"].is_f64());
    for group in ["fan-0", "fan-1"] {
        assert!(
            stderr.contains(&format!(
                "consumer group \"{group}\": 4 partitions assigned"
            )),
            "{stderr}"
        );
    }
}

#[test]
fn an_unreachable_broker_is_reported_with_exit_status_2() {
    // Bound, never listening (connections are refused), and held so nobody else listens there.
    let free =
        engine::shard::listen::ListenReservation::new("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = free.address().to_string();
    let output = bench(&[
        "--bootstrap",
        &address,
        "--setup-timeout-s",
        "2",
        "--duration-s",
        "1",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ferrite-bench: CreateTopics failed"),
        "{stderr}"
    );
}

#[test]
fn transactional_producers_commit_every_n_messages_and_read_committed_consumers_get_them_all() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("transactions.json");
    let mut arguments = paced_run(&broker, "bench-transactions", "2", "400", "1", &json);
    arguments.extend([
        "--producers",
        "2",
        "--transactional-id",
        "bench-tx",
        "--transaction-messages",
        "50",
        "--isolation-level",
        "read_committed",
    ]);
    let (result, stderr) = run_to_json(&arguments, &json);
    // 600 messages, 300 per producer: 6 transactions of 50 each, all committed, and the
    // read_committed consumer sees every message once.
    assert_eq!(result["produced"], 600, "{stderr}");
    assert_eq!(result["consumed"], 600, "{stderr}");
    assert_eq!(result["problems"], serde_json::json!([]), "{stderr}");
    let transactions = &result["transactions"];
    assert_eq!(transactions["committed"], 12, "{stderr}");
    assert_eq!(transactions["failed"], 0);
    assert!(transactions["commit_latency_ms"]["count"].as_u64().unwrap() > 0);
    assert!(transactions["commit_latency_ms"]["p99.9"].as_f64().unwrap() > 0.0);
    // Each commit follows a send at once, so a message is in flight: rust-rdkafka's own
    // commit_transaction would poll 100 ms before committing, every time (see src/commit.rs).
    let commit_p50_ms = transactions["commit_latency_ms"]["p50"].as_f64().unwrap();
    assert!(
        commit_p50_ms < 100.0,
        "commit p50 {commit_p50_ms} ms: the client's 100 ms flush is back\n{stderr}"
    );
    assert_eq!(result["flags"]["isolation_level"], "read_committed");
}
