//! `immune check`: loads rule files exactly as the engine does and reports, promtool
//! style, either one `OK` line per file or every problem with `file:line:column`.

use super::load::load_report;
use std::io::Write;
use std::path::PathBuf;

/// Checks rule files and directories. Prints `FILE: N rules OK` to `out` for each good
/// file and every diagnostic to `err`; returns false when any file has a problem (the
/// CLI exits 1). Write failures on `out`/`err` are ignored: the verdict is the return.
pub fn check(paths: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> bool {
    if paths.is_empty() {
        let _ = writeln!(err, "no rule files given");
        return false;
    }
    let mut errors = 0;
    let mut bad_files = 0;
    for outcome in load_report(paths) {
        if outcome.diagnostics.is_empty() {
            let n = outcome.rules.len();
            let noun = if n == 1 { "rule" } else { "rules" };
            let _ = writeln!(out, "{}: {n} {noun} OK", outcome.file);
        } else {
            bad_files += 1;
            for d in &outcome.diagnostics {
                errors += 1;
                let _ = writeln!(err, "{d}");
            }
        }
    }
    if errors > 0 {
        let e = if errors == 1 { "error" } else { "errors" };
        let f = if bad_files == 1 { "file" } else { "files" };
        let _ = writeln!(err, "{errors} {e} in {bad_files} {f}");
    }
    errors == 0
}
