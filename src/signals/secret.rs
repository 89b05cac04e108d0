//! Secrets of the sinks (HMAC keys, tokens) and URLs made safe to log: a secret is read
//! once from a file or the environment and never shows in `Debug`, logs or errors.

use super::SignalsError;
use std::fmt;
use std::path::Path;

/// A secret loaded from a file or the environment. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Reads the secret named by `file` or `env` (exactly one of them may be set; neither
    /// means no secret). A trailing newline in the file is dropped.
    pub fn load(
        sink: &str,
        file: Option<&Path>,
        env: Option<&str>,
    ) -> Result<Option<Secret>, SignalsError> {
        let raw = match (file, env) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(SignalsError::Config(format!(
                    "sink {sink:?}: set secret_file or secret_env, not both"
                )));
            }
            (Some(p), None) => std::fs::read(p).map_err(|e| {
                SignalsError::Config(format!(
                    "sink {sink:?}: cannot read secret_file {}: {e}",
                    p.display()
                ))
            })?,
            (None, Some(var)) => std::env::var_os(var)
                .map(|v| v.into_encoded_bytes())
                .ok_or_else(|| {
                    SignalsError::Config(format!(
                        "sink {sink:?}: environment variable {var} (secret_env) is not set"
                    ))
                })?,
        };
        let mut raw = raw;
        while raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            raw.pop();
        }
        if raw.is_empty() {
            return Err(SignalsError::Config(format!(
                "sink {sink:?}: the secret is empty"
            )));
        }
        Ok(Some(Secret(raw)))
    }

    /// The secret's bytes, for signing.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A URL with any user:password and query removed, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if u.query().is_some() {
                u.set_query(Some("<redacted>"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable url>".into(),
    }
}
