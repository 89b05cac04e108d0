//! Logs for people and for machines: the `tracing` subscriber every command installs, and
//! the helper that keeps an error's cause chain in a log line.
//!
//! - **Filter**: `IMMUNE_LOG` when set (immune's own variable, kept for existing set-ups),
//!   else `RUST_LOG` (what every Rust tool honours), else `info`. Both take
//!   `tracing_subscriber::EnvFilter` directives (`warn`, `immune=debug,info`). A filter that
//!   does not parse is reported on standard error and `info` is used.
//! - **Colour**: ANSI colour codes only when standard error is a terminal and `NO_COLOR`
//!   is unset or empty (<https://no-color.org>); a log written to a file or a pipe is plain.
//! - **JSON**: `--log-json` writes one JSON object per line (fields as JSON values).
//!
//! Log call sites print fields as values (`deploy=d1`, not `deploy=Some("d1")`): text as
//! `%field`, an optional one as `field.as_deref().map(tracing::field::display)`, which
//! `tracing` records only when present.

use std::io::IsTerminal;

/// The environment variables read for the filter, first set wins.
pub const FILTER_VARS: [&str; 2] = ["IMMUNE_LOG", "RUST_LOG"];

/// Whether colour is wanted on a stream: it is a terminal and `NO_COLOR` is unset or empty.
/// Pass the stream's `is_terminal()`; the terminal view and the logs share this rule.
pub fn colour_wanted(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The filter directives from the environment (see the module doc) and where they came from.
fn directives() -> (String, Option<&'static str>) {
    for var in FILTER_VARS {
        if let Ok(v) = std::env::var(var)
            && !v.trim().is_empty()
        {
            return (v, Some(var));
        }
    }
    ("info".into(), None)
}

/// Installs the subscriber on standard error: JSON lines with `json`, else text, coloured
/// only per [`colour_wanted`]. Call once, first thing in `main`.
pub fn init(json: bool) {
    let (text, from) = directives();
    let filter = match tracing_subscriber::EnvFilter::try_new(&text) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "immune: warning: {}={text:?} is not a log filter ({e}); logging at info",
                from.unwrap_or("filter")
            );
            tracing_subscriber::EnvFilter::new("info")
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_ansi(false).init();
    } else {
        builder
            .with_ansi(colour_wanted(std::io::stderr().is_terminal()))
            .init();
    }
}

/// An error and every cause under it, joined by `: ` ("error sending request for url
/// (http://…): client error (Connect): tcp connect error: Connection refused"), so a log
/// line says why, not only what. Causes that repeat the text before them are skipped.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !t.is_empty() && !out.ends_with(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_keeps_every_cause() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(chain(&e), "outer: connection refused");
    }
}
