//! Loading rule files: the one place in the crate that touches YAML.
//!
//! Rule files are parsed with `saphyr-parser`, whose events carry spans, into a small
//! tree that remembers where every key and value was written. A serde deserializer over
//! that tree fills the structs of [`super::file`], and the compiler below checks every
//! value and builds the [`RuleSet`] the engine runs. Why not straight into serde from a
//! YAML library: promtool-quality messages need the `file:line:column` of the offending
//! value for semantic errors too (a bad selector, a sign that contradicts the direction),
//! and every error in every file reported at once, not just the first. So:
//!
//! - unknown keys are collected at every level (with the nearest valid key suggested)
//!   and do not stop the rest of the rule from being checked;
//! - each rule is deserialized on its own, so a type error in one rule does not hide the
//!   problems of the others;
//! - semantic checks run on every rule that deserialized and report each problem.
//!
//! `immune check` and the engine both call [`load_paths`], so what `check` accepts is
//! exactly what runs.

use super::RuleSet;
use super::compile::{FileCx, Names, compile_file};
use super::de::{De, Sink};
pub use super::diagnostic::{Diagnostic, Diagnostics, FileOutcome};
use super::yaml::{Kind, Node, Pos, Problem, is_budget, parse_document};
pub use super::yaml::{MAX_ALIASES, MAX_DEPTH, MAX_EXPANDED_BYTES, MAX_NODES, MAX_TEXT_BYTES};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Loads rule files and directories file by file, keeping each file's outcome: what
/// `immune check` reports. Rule names must be unique across all of them; a duplicate is
/// reported in the file of its second definition.
pub fn load_report(paths: &[PathBuf]) -> Vec<FileOutcome> {
    let mut outcomes = Vec::new();
    let mut names = HashMap::new();
    for path in paths {
        match expand(path) {
            Ok(files) => {
                for file in files {
                    let name = file.display().to_string();
                    match read_capped(&file) {
                        Ok(text) => outcomes.push(load_text(&name, &text, &mut names)),
                        Err(message) => outcomes.push(whole_file_error(name, message)),
                    }
                }
            }
            Err(outcome) => outcomes.push(outcome),
        }
    }
    outcomes
}

/// Loads rule files; a path may be a directory, whose `*.yaml` and `*.yml` files are
/// loaded in name order. Either every rule of every file, or every problem found.
pub fn load_paths(paths: &[PathBuf]) -> Result<RuleSet, Diagnostics> {
    into_result(load_report(paths))
}

/// Loads one rule file's text; `file_name` is used in diagnostics and origins.
pub fn load_str(file_name: &str, text: &str) -> Result<RuleSet, Diagnostics> {
    into_result(vec![load_text(file_name, text, &mut HashMap::new())])
}

/// Loads rule files given as (name, text) pairs, as the embedded defaults are; rule names
/// must be unique across them.
pub fn load_sources(sources: &[(&str, &str)]) -> Result<RuleSet, Diagnostics> {
    let mut names = HashMap::new();
    into_result(
        sources
            .iter()
            .map(|(name, text)| load_text(name, text, &mut names))
            .collect(),
    )
}

/// Deserializes any YAML document (immune.yaml) with the same positioned diagnostics as
/// rule files: unknown keys with suggestions, type errors at their `line:column`. This
/// keeps every YAML file immune reads behind one parser.
pub fn from_yaml_str<T: serde::de::DeserializeOwned>(
    file_name: &str,
    text: &str,
) -> Result<T, Diagnostics> {
    let diag = |(pos, message): Problem| Diagnostic {
        file: file_name.to_string(),
        line: pos.line,
        column: pos.col,
        rule: None,
        message,
    };
    let (doc, problems) = parse_document(text).map_err(|p| Diagnostics(vec![diag(p)]))?;
    let empty = Node {
        pos: Pos { line: 1, col: 1 },
        kind: Kind::Map(Vec::new()),
    };
    let node = doc.unwrap_or(empty);
    let sink = Sink::default();
    let result = T::deserialize(De {
        node: &node,
        key: None,
        sink: &sink,
    });
    let mut all: Vec<Diagnostic> = problems.into_iter().map(diag).collect();
    all.extend(sink.into_inner().into_iter().map(diag));
    match result {
        Ok(v) if all.is_empty() => Ok(v),
        Ok(_) => Err(Diagnostics(all)),
        Err(e) => {
            all.push(diag((e.pos.unwrap_or(node.pos), e.message)));
            Err(Diagnostics(all))
        }
    }
}

fn into_result(outcomes: Vec<FileOutcome>) -> Result<RuleSet, Diagnostics> {
    let mut rules = Vec::new();
    let mut diags = Vec::new();
    for o in outcomes {
        rules.extend(o.rules);
        diags.extend(o.diagnostics);
    }
    if diags.is_empty() {
        Ok(RuleSet { rules })
    } else {
        Err(Diagnostics(diags))
    }
}

fn whole_file_error(file: String, message: String) -> FileOutcome {
    FileOutcome {
        diagnostics: vec![Diagnostic {
            file: file.clone(),
            line: 0,
            column: 0,
            rule: None,
            message,
        }],
        file,
        rules: Vec::new(),
    }
}

/// The most problems reported for one file; a hostile file (50,000 unknown keys) gets a
/// summary line instead of 50,000 log lines on every reload.
pub const MAX_DIAGNOSTICS: usize = 100;

/// A file's text, refused unread when it is over [`MAX_TEXT_BYTES`]: a rule directory
/// holding a huge file must not cost the agent its memory on reload.
fn read_capped(file: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(file).map_err(|e| format!("cannot read: {e}"))?;
    let mut text = String::new();
    // One byte more than the cap tells "at the cap" from "over it".
    let cap = MAX_TEXT_BYTES as u64 + 1;
    f.take(cap)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "file too large: over the limit of {MAX_TEXT_BYTES} bytes (budget max_file_bytes)"
        ));
    }
    Ok(text)
}

/// A path as the files it stands for: itself, or a directory's rule files by name.
fn expand(path: &Path) -> Result<Vec<PathBuf>, FileOutcome> {
    let name = path.display().to_string();
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| whole_file_error(name.clone(), format!("cannot read directory: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| whole_file_error(name.clone(), format!("cannot read directory: {e}")))?;
        let p = entry.path();
        let is_rule_file = matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        if is_rule_file && p.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(whole_file_error(
            name,
            "no rule files (*.yaml, *.yml) in directory".to_string(),
        ));
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

fn load_text(file: &str, text: &str, names: &mut Names) -> FileOutcome {
    let mut cx = FileCx {
        file,
        lines: text.lines().collect(),
        diags: Vec::new(),
    };
    let mut rules = Vec::new();
    match parse_document(text) {
        Err((pos, message)) if is_budget(&message) => cx.push(pos, None, message),
        Err((pos, message)) => cx.push(pos, None, format!("YAML syntax error: {message}")),
        Ok((doc, problems)) => {
            for (pos, message) in problems {
                cx.push(pos, None, message);
            }
            rules = compile_file(&mut cx, doc.as_ref(), names);
        }
    }
    cx.diags.sort_by_key(|d| (d.line, d.column));
    if cx.diags.len() > MAX_DIAGNOSTICS {
        let more = cx.diags.len() - MAX_DIAGNOSTICS;
        let next = &cx.diags[MAX_DIAGNOSTICS];
        let summary = Diagnostic {
            file: file.to_string(),
            line: next.line,
            column: next.column,
            rule: None,
            message: format!(
                "{more} more problems from here on not shown (at most {MAX_DIAGNOSTICS} per file)"
            ),
        };
        cx.diags.truncate(MAX_DIAGNOSTICS);
        cx.diags.push(summary);
    }
    FileOutcome {
        file: file.to_string(),
        rules,
        diagnostics: cx.diags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DurationMs, Phase};
    use crate::rules::compile::parse_effect;
    use crate::rules::diagnostic::{edit_distance, suggest};
    use crate::rules::*;

    fn errors(text: &str) -> Vec<String> {
        match load_str("t.yaml", text) {
            Ok(_) => Vec::new(),
            Err(d) => d.0.iter().map(ToString::to_string).collect(),
        }
    }

    const GOOD: &str = r#"rules:
  - name: php_error_ratio
    services: [web]
    metric:
      kind: ratio
      selector: 'php_errors_total{job="web"}'
      denominator: 'http_requests_total{job="web"}'
    baseline: control
    direction: increase
    min_effect: "+50%"
    action: rollback
"#;

    #[test]
    fn good_rule_compiles_with_defaults() {
        let set = load_str("t.yaml", GOOD).unwrap();
        assert_eq!(set.rules.len(), 1);
        let r = &set.rules[0];
        assert_eq!(
            r.origin,
            Origin {
                file: "t.yaml".into(),
                line: 2
            }
        );
        assert_eq!(r.selector.name, "php_errors_total");
        assert!(
            matches!(&r.kind, MetricKind::Ratio { denominator } if denominator.name == "http_requests_total")
        );
        assert_eq!(r.baseline, Baseline::Control);
        assert_eq!(r.min_effect, Effect::Relative(0.5));
        assert_eq!(r.alpha, 0.01);
        assert_eq!(r.phases, vec![Phase::Canary]);
        assert_eq!(r.min_data, MinData::default());
        assert_eq!(r.host_label, "instance");
        assert_eq!(r.on_missing, None);
        assert_eq!(r.test, TestKind::Auto);
        assert!(!r.shadow);
    }

    #[test]
    fn effects_parse() {
        let e = |t: &str| parse_effect(t).map(|e| (e.sign, e.magnitude, e.relative));
        assert_eq!(e("+50%"), Some((Some('+'), 0.5, true)));
        assert_eq!(e("-20%"), Some((Some('-'), 0.2, true)));
        assert_eq!(e("0.05"), Some((None, 0.05, false)));
        assert_eq!(e("+30"), Some((Some('+'), 30.0, false)));
        assert_eq!(e("abc"), None);
        assert_eq!(e("+-5"), None);
        assert_eq!(e("inf"), None);
        assert_eq!(e(".inf"), None);
    }

    #[test]
    fn unsigned_effect_takes_direction_sign() {
        let text = GOOD
            .replace("direction: increase", "direction: decrease")
            .replace("\"+50%\"", "20%");
        let set = load_str("t.yaml", &text).unwrap();
        assert_eq!(set.rules[0].min_effect, Effect::Relative(-0.2));
        let text = GOOD.replace("\"+50%\"", "0.05");
        let set = load_str("t.yaml", &text).unwrap();
        assert_eq!(set.rules[0].min_effect, Effect::Absolute(0.05));
    }

    #[test]
    fn suggestion_by_edit_distance() {
        assert_eq!(edit_distance("direcion", "direction"), 1);
        assert_eq!(
            suggest("direcion", &["name", "direction"]),
            Some("direction")
        );
        assert_eq!(suggest("zzzzzz", &["name", "direction"]), None);
    }

    #[test]
    fn syntax_error_has_position() {
        let errs = errors("rules:\n  - name: x\n   bad: [\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("t.yaml:3:"), "{errs:?}");
        assert!(errs[0].contains("YAML syntax error"), "{errs:?}");
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let text = GOOD.replace(
            "    action: rollback\n",
            "    action: rollback\n    action: warn\n",
        );
        let errs = errors(&text);
        assert_eq!(
            errs,
            vec!["t.yaml:12:5: duplicate key \"action\" (first at line 11)"]
        );
    }

    #[test]
    fn selector_error_column_points_inside_value() {
        let text = GOOD.replace(
            "'php_errors_total{job=\"web\"}'",
            "'php_errors_total{job=web}'",
        );
        let errs = errors(&text);
        // The quote is at column 17, the value starts at 18, and `web` is its 22nd character.
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("t.yaml:6:39: invalid selector"),
            "{errs:?}"
        );
        assert!(errs[0].ends_with("(rule \"php_error_ratio\")"), "{errs:?}");
    }

    #[test]
    fn anchors_and_aliases_resolve() {
        let text = "rules:\n  - name: a\n    metric: &m {kind: gauge, selector: node_load1}\n    baseline: pre_deploy\n    direction: increase\n    min_effect: 1\n    action: warn\n  - name: b\n    metric: *m\n    baseline: pre_deploy\n    direction: increase\n    min_effect: 2\n    action: warn\n";
        let set = load_str("t.yaml", text).unwrap();
        assert_eq!(set.rules.len(), 2);
        assert_eq!(set.rules[1].selector.name, "node_load1");
        assert_eq!(set.rules[1].min_effect, Effect::Absolute(2.0));
    }

    fn one_rule(body: &str) -> String {
        format!(
            "rules:\n  - name: r\n    metric: {{kind: gauge, selector: node_load1}}\n    baseline: pre_deploy\n    direction: increase\n    min_effect: \"+50%\"\n    action: warn\n{body}"
        )
    }

    #[test]
    fn base_names_for_mean_and_histogram() {
        let text = GOOD
            .replace("kind: ratio", "kind: mean")
            .replace(
                "      denominator: 'http_requests_total{job=\"web\"}'\n",
                "",
            )
            .replace("php_errors_total{", "latency_seconds_count{");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("kind mean names the base name; drop \"_count\""),
            "{errs:?}"
        );
        let text = GOOD
            .replace(
                "kind: ratio",
                "kind: histogram_quantile\n      quantile: 0.9",
            )
            .replace(
                "      denominator: 'http_requests_total{job=\"web\"}'\n",
                "",
            )
            .replace("php_errors_total{", "latency_seconds_bucket{");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("drop \"_bucket\""), "{errs:?}");
    }

    #[test]
    fn optional_fields_compile() {
        let text = one_rule(
            "    phases: [watch, full]\n    min_data: {events: 5, samples: 3, duration: 2m}\n    on_missing: {stale_after: 45s, action: ignore}\n    test: drift\n    shadow: true\n    alpha: 0.05\n    baseline_window: 30m\n",
        );
        let r = &load_str("t.yaml", &text).unwrap().rules[0];
        assert_eq!(r.phases, vec![Phase::Full, Phase::Watch]);
        assert_eq!(
            r.min_data,
            MinData {
                events: 5,
                samples: 3,
                duration: DurationMs::from_secs(120)
            }
        );
        assert_eq!(
            r.on_missing,
            Some(OnMissing {
                stale_after: DurationMs::from_secs(45),
                action: MissingAction::Ignore
            })
        );
        assert_eq!(r.test, TestKind::Drift);
        assert!(r.shadow);
        assert_eq!(r.alpha, 0.05);
        assert_eq!(
            r.baseline,
            Baseline::PreDeploy {
                window: DurationMs::from_secs(1800)
            }
        );
    }

    #[test]
    fn misplaced_and_repeated_options() {
        let errs = errors(&one_rule(
            "    seasonal_offset: 7d\n    phases: [full, full]\n    min_data: {samples: 1}\n",
        ));
        assert_eq!(
            errs,
            vec![
                "t.yaml:8:22: seasonal_offset is only for baseline seasonal, not pre_deploy (rule \"r\")",
                "t.yaml:9:20: phase \"full\" is listed twice (rule \"r\")",
                "t.yaml:10:25: min_data samples 1 is too few: a comparison needs at least 2 (rule \"r\")",
            ]
        );
    }

    #[test]
    fn either_takes_unsigned_effects() {
        let text = one_rule("").replace("direction: increase", "direction: either");
        assert!(errors(&text)[0].contains("has a sign but direction is either"));
        let text = text.replace("\"+50%\"", "50%");
        assert_eq!(
            load_str("t.yaml", &text).unwrap().rules[0].min_effect,
            Effect::Relative(0.5)
        );
    }

    #[test]
    fn file_shape_errors() {
        assert_eq!(
            errors("- a\n- b\n"),
            vec!["t.yaml:1:1: a rule file is a mapping with a \"rules\" list, found a list"]
        );
        assert_eq!(
            errors("rule: []\n")[0],
            "t.yaml:1:1: unknown field \"rule\", did you mean \"rules\"?"
        );
        let two_docs = format!("{GOOD}---\n{GOOD}");
        let errs = errors(&two_docs);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("one YAML document"), "{errs:?}");
    }
}
