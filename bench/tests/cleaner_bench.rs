//! `cleaner-bench` as a user runs it, at a size that finishes in a few seconds: the JSON
//! result has every figure the README describes, and the cleaning really compacted the log.

use std::process::Command;

use serde_json::Value;

#[test]
fn a_small_run_reports_the_cleaning_and_the_latencies_with_and_without_the_cleaner() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("result.json");
    let output = Command::new(env!("CARGO_BIN_EXE_cleaner-bench"))
        .args([
            "--updates",
            "20000",
            "--keys",
            "500",
            "--value-bytes",
            "100",
        ])
        .args(["--segment-bytes", "262144", "--rate", "200"])
        .args([
            "--seconds",
            "0.5",
            "--warmup-seconds",
            "0.1",
            "--also-default-queue",
        ])
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("cleaner-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "cleaner-bench failed: {stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line: Value = serde_json::from_str(stdout.trim()).expect("one JSON line on stdout");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(line, file, "--json writes the line printed");

    let baseline = &line["baseline"];
    assert_eq!(baseline["appends"], 100, "200/s for 0.5 s");
    assert_eq!(baseline["ack_latency_ms"]["count"], 100);
    for quantile in ["p50", "p99", "p99.9", "p99.99", "max"] {
        assert!(baseline["ack_latency_ms"][quantile].as_f64().unwrap() > 0.0);
    }
    for run in ["low_priority", "default_queue"] {
        let run = &line[run];
        let clean = &run["clean"];
        let bytes_read = clean["bytes_read"].as_u64().unwrap();
        let bytes_written = clean["bytes_written"].as_u64().unwrap();
        assert!(bytes_read > 0 && bytes_written < bytes_read, "{clean}");
        assert!(clean["mib_per_s"].as_f64().unwrap() > 0.0, "{clean}");
        // 20 000 updates of 500 keys: nearly every record is superseded.
        let removed = clean["records_removed"].as_u64().unwrap();
        assert!(removed > 15_000 && removed <= 19_500, "{clean}");
        assert!(
            clean["segments_after"].as_u64() < clean["segments_before"].as_u64(),
            "{clean}"
        );
        assert!(
            clean["log_bytes_after"].as_u64() < clean["log_bytes_before"].as_u64(),
            "{clean}"
        );
        assert_eq!(clean["dirty_ratio_after"], 0.0, "{clean}");
        assert!(clean["poll_max_ms"].as_f64().unwrap() > 0.0, "{clean}");
        let appender = &run["appender"];
        assert_eq!(appender["appends"], appender["ack_latency_ms"]["count"]);
        assert!(run["fill"]["bytes"].as_u64().unwrap() >= bytes_read);
    }
    assert!(stderr.contains("without the cleaner"), "{stderr}");
    assert!(stderr.contains("cleaner low-priority"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the result is left behind"
    );
}
