//! `ferrite-bench compare A.json B.json ...`: results side by side, each figure with its ratio
//! to the first file's, and the settings that must match for the comparison to be fair shown
//! above them (no ratio), so a mismatched pair is seen at once. Files are read as plain JSON,
//! so results of older versions compare as long as they have the fields.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::BenchError;

/// Settings shown for each file, without ratios.
const SETTINGS: &[&str] = &[
    "flags.bootstrap",
    "flags.message_bytes",
    "flags.rate",
    "flags.acks",
    "flags.partitions",
    "flags.consumers",
    "flags.consumer_group",
    "flags.consumer_groups",
    "flags.assignment_strategy",
    "flags.duration_s",
    "machine.cores",
    "machine.kernel",
    "librdkafka_version",
];

/// Figures shown with their ratio to the first file's, and the decimals they are shown with.
const FIGURES: &[(&str, usize)] = &[
    ("produced", 0),
    ("consumed", 0),
    ("produce_errors", 0),
    ("produce_msgs_per_s", 1),
    ("produce_mb_per_s", 2),
    ("consume_msgs_per_s", 1),
    ("group_settle_ms", 0),
    ("ack_latency_ms.p50", 3),
    ("ack_latency_ms.p90", 3),
    ("ack_latency_ms.p99", 3),
    ("ack_latency_ms.p99.9", 3),
    ("ack_latency_ms.p99.99", 3),
    ("ack_latency_ms.max", 3),
    ("e2e_latency_ms.p50", 3),
    ("e2e_latency_ms.p90", 3),
    ("e2e_latency_ms.p99", 3),
    ("e2e_latency_ms.p99.9", 3),
    ("e2e_latency_ms.p99.99", 3),
    ("e2e_latency_ms.max", 3),
];

/// Reads one result file.
pub fn load(path: &Path) -> Result<Value, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| BenchError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The table for `files` (read from disk), named by their file names.
pub fn compare_files(files: &[PathBuf]) -> Result<String, BenchError> {
    let mut results = Vec::new();
    for path in files {
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |stem| stem.to_string_lossy().into_owned(),
        );
        results.push((name, load(path)?));
    }
    Ok(table(&results))
}

/// The field at a dotted `path`. A key may itself hold dots ("p99.9"), so after the first
/// segment the rest of the path is tried whole before splitting further.
fn field<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(found) = value.get(path) {
        return Some(found);
    }
    let (head, rest) = path.split_once('.')?;
    field(value.get(head)?, rest)
}

fn setting_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// Rows of cells: a header, the settings, then the figures with ratios. Right-aligned columns.
pub fn table(results: &[(String, Value)]) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["".to_string()];
    header.extend(results.iter().map(|(name, _)| name.clone()));
    rows.push(header);
    for path in SETTINGS {
        let mut row = vec![path.to_string()];
        row.extend(
            results
                .iter()
                .map(|(_, value)| setting_text(field(value, path))),
        );
        rows.push(row);
    }
    for (path, decimals) in FIGURES {
        let numbers: Vec<Option<f64>> = results
            .iter()
            .map(|(_, value)| field(value, path).and_then(Value::as_f64))
            .collect();
        let base = numbers.first().copied().flatten();
        let mut row = vec![path.to_string()];
        for (index, number) in numbers.iter().enumerate() {
            row.push(match (number, base) {
                (None, _) => "-".to_string(),
                (Some(number), Some(base)) if index > 0 && base != 0.0 => {
                    format!("{number:.decimals$} ({:.2}x)", number / base)
                }
                (Some(number), _) => format!("{number:.decimals$}"),
            });
        }
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(column, (cell, width))| {
                if column == 0 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        text += cells.join("  ").trim_end();
        text += "\n";
    }
    text +=
        "ratios are to the first column; throughput: higher is better, latency: lower is better\n";
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(msgs_per_s: f64, p99: f64) -> Value {
        json!({
            "produced": 1000, "consumed": 1000, "produce_msgs_per_s": msgs_per_s,
            "produce_mb_per_s": msgs_per_s / 1024.0,
            "ack_latency_ms": {"p50": 1.0, "p99": p99, "p99.9": 9.5, "max": 12.0},
            "flags": {"acks": "all", "message_bytes": 1024, "bootstrap": "127.0.0.1:9092"},
        })
    }

    fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
        let line = table
            .lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name} in\n{table}"));
        line.split_whitespace().skip(1).collect()
    }

    #[test]
    fn figures_come_with_ratios_to_the_first_file() {
        let table = table(&[
            ("ferrite".into(), result(2000.0, 4.0)),
            ("kafka".into(), result(1000.0, 8.0)),
            ("redpanda".into(), result(3000.0, 2.0)),
        ]);
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, vec!["ferrite", "kafka", "redpanda"]);
        assert_eq!(
            row(&table, "produce_msgs_per_s"),
            vec!["2000.0", "1000.0", "(0.50x)", "3000.0", "(1.50x)"]
        );
        assert_eq!(
            row(&table, "ack_latency_ms.p99"),
            vec!["4.000", "8.000", "(2.00x)", "2.000", "(0.50x)"]
        );
        assert_eq!(row(&table, "ack_latency_ms.p99.9")[0], "9.500");
        assert_eq!(row(&table, "flags.acks"), vec!["all", "all", "all"]);
        assert_eq!(row(&table, "flags.bootstrap")[0], "127.0.0.1:9092");
    }

    #[test]
    fn missing_fields_and_zero_bases_show_no_ratio() {
        let table = table(&[
            ("a".into(), json!({"produced": 0})),
            ("b".into(), json!({"produced": 5, "consumed": 5})),
        ]);
        assert_eq!(row(&table, "produced"), vec!["0", "5"]);
        assert_eq!(row(&table, "consumed"), vec!["-", "5"]);
        assert_eq!(row(&table, "flags.rate"), vec!["-", "-"]);
        assert_eq!(row(&table, "group_settle_ms"), vec!["-", "-"]);
    }

    #[test]
    fn files_are_read_and_named_by_their_stem() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (
            dir.path().join("ferrite.json"),
            dir.path().join("kafka.json"),
        );
        std::fs::write(&first, result(2000.0, 4.0).to_string()).unwrap();
        std::fs::write(&second, result(1000.0, 8.0).to_string()).unwrap();
        let table = compare_files(&[first, second.clone()]).unwrap();
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, vec!["ferrite", "kafka"]);
        std::fs::write(&second, "not json").unwrap();
        let error = compare_files(&[second]).unwrap_err().to_string();
        assert!(error.contains("kafka.json: not a JSON result"), "{error}");
    }
}
