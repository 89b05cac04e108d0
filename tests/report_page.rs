//! The deploy report page in a real browser: `immune replay --report DIR` on the bundled
//! example, then headless Chromium (`IMMUNE_TEST_CHROMIUM_BIN`, set by scripts/test.sh)
//! loads the rolled-back deploy's page from disk. The page must say the decision in words,
//! carry its charts, log nothing to the console (no script, no failed resource), and a
//! screenshot is kept in target/test-artifacts/ for people to look at.

mod agent_common;

use agent_common::{TempDir, env_or_skip};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn chromium(bin: &str, profile: &Path, args: &[String]) -> Output {
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium")
}

#[test]
fn the_rolled_back_deploy_page_renders_in_chromium() {
    let Some(bin) = env_or_skip("IMMUNE_TEST_CHROMIUM_BIN") else {
        return;
    };
    let dir = TempDir::new("report-page");
    let report = dir.path().join("report");
    let out = Command::new(env!("CARGO_BIN_EXE_immune"))
        .arg("replay")
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run immune replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = report.join("d2.html");
    let html = std::fs::read_to_string(&page).expect("d2.html written");
    assert!(html.contains("Rolled back: deploy d2 of web"), "{html}");
    let index = std::fs::read_to_string(report.join("index.html")).expect("index.html");
    assert!(index.contains("href=\"d2.html\"") && index.contains("href=\"d1.html\""));

    let url = format!("file://{}", page.display());
    let profile = dir.path().join("profile");
    let dom = chromium(&bin, &profile, &["--dump-dom".into(), url.clone()]);
    assert!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom_text.contains("<h1 id=\"decision\">Rolled back: deploy d2 of web</h1>"),
        "the browser's DOM: {dom_text}"
    );
    assert!(
        dom_text.contains("Rule php_error_ratio decided in canary"),
        "{dom_text}"
    );
    assert!(
        dom_text.matches("<svg").count() >= 2,
        "charts for the failing rule"
    );
    assert!(
        dom_text.contains("class=\"threshold\""),
        "the evidence chart has its threshold"
    );
    let log = String::from_utf8_lossy(&dom.stderr);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let shot = artifacts.join("report-d2.png");
    let _ = std::fs::remove_file(&shot);
    let taken = chromium(
        &bin,
        &profile,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1100,1600".into(),
            "--hide-scrollbars".into(),
            url,
        ],
    );
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
}
