//! `immune experiment status NAME`: asks a running agent for an experiment's state
//! (`GET /api/v1/experiments/{name}`) and prints it as a table for people, or as the JSON
//! the agent answered (`--json`) for scripts.

use serde_json::Value;
use std::fmt::Write;

/// Why the status could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    /// The agent could not be reached or answered garbage.
    #[error("{0}")]
    Http(String),
    /// The agent answered with an error.
    #[error("{status}: {error}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The agent's message.
        error: String,
    },
}

/// Fetches an experiment's state from the agent at `url`.
pub async fn fetch(url: &str, name: &str) -> Result<Value, ShowError> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| ShowError::Http(e.to_string()))?;
    let mut target = reqwest::Url::parse(url.trim_end_matches('/'))
        .map_err(|e| ShowError::Http(format!("{url}: {e}")))?;
    target
        .path_segments_mut()
        .map_err(|()| ShowError::Http(format!("{url}: not a base URL")))?
        .extend(["api", "v1", "experiments", name]);
    let resp = http
        .get(target)
        .send()
        .await
        .map_err(|e| ShowError::Http(format!("{url}: {e}")))?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .map_err(|e| ShowError::Http(format!("bad answer: {e}")))?;
    if !status.is_success() {
        return Err(ShowError::Refused {
            status: status.as_u16(),
            error: body["error"].as_str().unwrap_or("").to_string(),
        });
    }
    Ok(body)
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("-".into(), |x| format!("{:+.1}%", x * 100.0))
}

fn ci(v: &Value) -> String {
    match (v[0].as_f64(), v[1].as_f64()) {
        (Some(a), Some(b)) => format!("[{:+.1}%, {:+.1}%]", a * 100.0, b * 100.0),
        _ => "-".into(),
    }
}

/// The table for people: state, branches with participants, SRM, and one line per
/// comparison with its closing outcome.
pub fn table(s: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "experiment {}  phase {}  state {}  looks {}",
        s["experiment"].as_str().unwrap_or("?"),
        s["lifecycle"]["phase"].as_str().unwrap_or("?"),
        s["state"].as_str().unwrap_or("?"),
        s["looks"]
    );
    let _ = writeln!(out, "\nBRANCH\tWEIGHT\tPARTICIPANTS");
    for b in s["branches"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{}\t{}\t{}",
            b["name"].as_str().unwrap_or("?"),
            b["weight"],
            b["participants"]
        );
    }
    let srm = &s["srm"];
    let _ = writeln!(
        out,
        "\nsample ratio: p = {:.3e}{}",
        srm["p_value"].as_f64().unwrap_or(1.0),
        if srm["flagged"].as_bool() == Some(true) {
            "  MISMATCH: the assignment is broken, results withheld"
        } else {
            "  ok"
        }
    );
    let _ = writeln!(
        out,
        "\nBRANCH\tMETRIC\tROLE\tEFFECT\tCI\tP\tVERDICT\tCLOSING\tMORE PARTICIPANTS"
    );
    let closing = s["closing"].as_array().cloned().unwrap_or_default();
    for c in s["comparisons"].as_array().into_iter().flatten() {
        let close = closing
            .iter()
            .find(|x| x["branch"] == c["branch"] && x["metric"] == c["metric"]);
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{:.3e}\t{}\t{}\t{}",
            c["branch"].as_str().unwrap_or("?"),
            c["metric"].as_str().unwrap_or("?"),
            if c["guardrail"].as_bool() == Some(true) {
                "guardrail"
            } else {
                "goal"
            },
            pct(&c["effect"]),
            ci(&c["ci"]),
            c["p_value"].as_f64().unwrap_or(1.0),
            c["verdict"].as_str().unwrap_or("?"),
            close.and_then(|x| x["outcome"].as_str()).unwrap_or("-"),
            close
                .and_then(|x| x["more_participants"].as_u64())
                .map_or("-".into(), |n| n.to_string()),
        );
    }
    out
}

/// The experiment page (`GET /experiments/{name}`), drawn from the same JSON as
/// `GET /api/v1/experiments/{name}`: the state in words first, then the branches and every
/// comparison.
pub fn page(s: &Value) -> String {
    use crate::report::words::esc;
    let name = esc(s["experiment"].as_str().unwrap_or("?"));
    let state = s["state"].as_str().unwrap_or("?");
    let total: u64 = s["branches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["participants"].as_u64())
        .sum();
    let phase = s["lifecycle"]["phase"].as_str().unwrap_or("");
    let headline = match (phase, state) {
        ("closed", _) => format!(
            "Closed ({}): the result below is final.",
            match s["lifecycle"]["close_reason"].as_str() {
                Some("end") => "at its end",
                _ => "as asked",
            }
        ),
        ("scheduled", _) => format!(
            "Scheduled: not judged before its start ({}).",
            s["lifecycle"]["start"].as_str().unwrap_or("?")
        ),
        (_, state) => match state {
        "stop" => "Stop this experiment: a guardrail shows harm.".to_string(),
        "mismatch" => {
            "The assignment is broken (sample ratio mismatch): results are withheld until it is fixed."
                .to_string()
        }
        _ => "Running: collecting evidence; every look is safe.".to_string(),
        },
    };
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Experiment {name}</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:.2em .6em;text-align:left}}\
         .stop,.harm,.undesired,.withheld{{color:#b00}}.desired{{color:#070}}</style></head><body>\
         <h1>Experiment {name}</h1><p class=\"{state}\"><strong>{}</strong> {total} participants; \
         sample ratio p = {:.3e}.</p>",
        esc(&headline),
        s["srm"]["p_value"].as_f64().unwrap_or(1.0)
    );
    out.push_str(
        "<h2>Branches</h2><table><tr><th>branch</th><th>weight</th><th>participants</th></tr>",
    );
    for b in s["branches"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(b["name"].as_str().unwrap_or("?")),
            b["weight"],
            b["participants"]
        );
    }
    out.push_str("</table><h2>Branch against control</h2><table><tr><th>branch</th><th>metric</th><th>role</th><th>effect</th><th>confidence interval</th><th>p</th><th>verdict</th><th>if closed now</th><th>more participants</th></tr>");
    let closing = s["closing"].as_array().cloned().unwrap_or_default();
    for c in s["comparisons"].as_array().into_iter().flatten() {
        let close = closing
            .iter()
            .find(|x| x["branch"] == c["branch"] && x["metric"] == c["metric"]);
        let verdict = esc(c["verdict"].as_str().unwrap_or("?"));
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3e}</td><td class=\"{verdict}\">{verdict}</td><td>{}</td><td>{}</td></tr>",
            esc(c["branch"].as_str().unwrap_or("?")),
            esc(c["metric"].as_str().unwrap_or("?")),
            if c["guardrail"].as_bool() == Some(true) {
                "guardrail"
            } else {
                "goal"
            },
            pct(&c["effect"]),
            ci(&c["ci"]),
            c["p_value"].as_f64().unwrap_or(1.0),
            esc(close.and_then(|x| x["outcome"].as_str()).unwrap_or("-")),
            close
                .and_then(|x| x["more_participants"].as_u64())
                .map_or("-".into(), |n| n.to_string()),
        );
    }
    out.push_str(
        "</table><p>Effects are relative to control; intervals are anytime-valid confidence \
         sequences, simultaneous over all comparisons. See docs/EXPERIMENTS.md.</p>\
         <p><a href=\"/\">Deploys</a></p></body></html>",
    );
    out
}
