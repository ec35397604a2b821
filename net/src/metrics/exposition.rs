//! Prometheus' text exposition format: how a family is declared and a label value escaped.
//! Every family of the broker is written through these, so the format is right in one place.

use std::borrow::Cow;
use std::fmt::Write;

/// A label value as the text format wants it: backslash, double quote and newline escaped.
pub(super) fn label_value(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

pub(super) fn write_family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}
