//! `--workload FILE`: a run's flags kept in a TOML file, so a workload is named, versioned and
//! shared (see `bench/workloads/`) rather than retyped. The file's keys are the flags' long names
//! (`partitions = 16`, `message-bytes = 1024`); flags on the command line override it.
//!
//! The file is turned into command-line arguments placed before the real ones, and clap parses
//! the lot (with `args_override_self`, so the later, command-line value wins). That way one
//! parser checks every value, and the file cannot mean anything the flags cannot.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::BenchError;

/// The flag that names the file.
const WORKLOAD_FLAG: &str = "--workload";

/// `arguments` (the program name first) with the workload file's flags inserted after the
/// program name, if `--workload FILE` is among them; unchanged otherwise. `command` is the
/// parser the arguments are meant for: a key that is not one of its long flags is an error.
pub fn expand(
    command: &clap::Command,
    arguments: Vec<OsString>,
) -> Result<Vec<OsString>, BenchError> {
    let Some(path) = workload_path(&arguments) else {
        return Ok(arguments);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        path: path.clone(),
        source,
    })?;
    let from_file = file_arguments(command, &path, &text)?;
    let mut expanded = arguments;
    let after_program = usize::from(!expanded.is_empty());
    expanded.splice(after_program..after_program, from_file);
    Ok(expanded)
}

/// The FILE of `--workload FILE` or `--workload=FILE`.
fn workload_path(arguments: &[OsString]) -> Option<PathBuf> {
    let mut rest = arguments.iter().skip(1);
    while let Some(argument) = rest.next() {
        let text = argument.to_string_lossy();
        if text == "--" {
            return None;
        }
        if text == WORKLOAD_FLAG {
            return rest.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--workload=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// The arguments a workload file stands for: `key = value` becomes `--key value`, `key = true`
/// a bare `--key` for a switch (`false` leaves it off), and an array repeats the flag.
fn file_arguments(
    command: &clap::Command,
    path: &Path,
    text: &str,
) -> Result<Vec<OsString>, BenchError> {
    let fail = |reason: String| BenchError::Flags(format!("{}: {reason}", path.display()));
    let table: toml::Table = toml::from_str(text).map_err(|error| fail(error.to_string()))?;
    let mut arguments = Vec::new();
    for (key, value) in &table {
        let argument = command
            .get_arguments()
            .find(|argument| argument.get_long() == Some(key.as_str()))
            .filter(|_| format!("--{key}") != WORKLOAD_FLAG)
            .ok_or_else(|| fail(format!("unknown key {key:?} (not a flag of ferrite-bench)")))?;
        let flag = OsString::from(format!("--{key}"));
        let values = match value {
            toml::Value::Array(values) => values.iter().collect(),
            single => vec![single],
        };
        for value in values {
            let text = match value {
                toml::Value::String(text) => text.clone(),
                toml::Value::Integer(number) => number.to_string(),
                toml::Value::Float(number) => number.to_string(),
                toml::Value::Boolean(switch) if !argument.get_action().takes_values() => {
                    if *switch {
                        arguments.push(flag.clone());
                    }
                    continue;
                }
                other => return Err(fail(format!("{key}: unexpected value {other}"))),
            };
            arguments.push(flag.clone());
            arguments.push(OsString::from(text));
        }
    }
    Ok(arguments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{Acks, RunFlags};
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    #[command(args_override_self = true)]
    struct Command {
        #[command(flatten)]
        flags: RunFlags,
    }

    fn parse(file: &str, arguments: &[&str]) -> Result<RunFlags, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workload.toml");
        std::fs::write(&path, file).unwrap();
        let mut all: Vec<OsString> = vec!["ferrite-bench".into(), "--workload".into()];
        all.push(path.into_os_string());
        all.extend(arguments.iter().map(OsString::from));
        let command = Command::command();
        let expanded = expand(&command, all).map_err(|error| error.to_string())?;
        let matches = command
            .try_get_matches_from(expanded)
            .map_err(|error| error.to_string())?;
        Command::from_arg_matches(&matches)
            .map(|command| command.flags)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn the_file_sets_flags_and_the_command_line_overrides_them() {
        let file = r#"
            partitions = 16
            message-bytes = 1024
            rate = 20480
            duration-s = 30
            warmup-s = 5.5
            acks = "1"
            delete-topic = true
            idempotence = false
            producer-config = ["compression.type=lz4", "queue.buffering.max.messages=200000"]
        "#;
        let flags = parse(file, &["--rate", "100", "--topic", "t"]).unwrap();
        assert_eq!(flags.partitions, 16);
        assert_eq!(flags.message_bytes, 1024);
        assert_eq!(flags.rate, 100, "the command line wins");
        assert_eq!(flags.topic, "t");
        assert_eq!(flags.duration_s, 30.0);
        assert_eq!(flags.warmup_s, 5.5);
        assert_eq!(flags.acks, Acks::Leader);
        assert!(flags.delete_topic);
        assert!(!flags.idempotence);
        assert_eq!(flags.producer_config.len(), 2);
        assert_eq!(
            flags.workload.as_deref().and_then(Path::file_name),
            Some(std::ffi::OsStr::new("workload.toml")),
            "the result records the file"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_them() {
        let error = parse("partitions = 2\nmessage_bytes = 10\n", &[]).unwrap_err();
        assert!(error.contains("unknown key \"message_bytes\""), "{error}");
        let error = parse("workload = \"other.toml\"\n", &[]).unwrap_err();
        assert!(error.contains("unknown key \"workload\""), "{error}");
        let error = parse("partitions = \"many\"\n", &[]).unwrap_err();
        assert!(error.contains("--partitions"), "{error}");
        let error = parse("partitions = [", &[]).unwrap_err();
        assert!(error.contains("workload.toml"), "{error}");
    }

    #[test]
    fn the_example_workloads_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut examples = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let flags = parse(&text, &[]).unwrap();
            flags.check().unwrap();
            examples += 1;
        }
        assert!(examples >= 1);
    }

    #[test]
    fn without_a_workload_the_arguments_are_unchanged() {
        let arguments: Vec<OsString> = ["ferrite-bench", "--rate", "5"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            expand(&Command::command(), arguments.clone()).unwrap(),
            arguments
        );
    }
}
