//! Unit tests of `crate::signals`: configuration, secrets, and recording decisions.

use super::*;

#[test]
fn config_parses_with_the_crate_yaml_loader() {
    let yaml = r#"
webhooks:
  - name: bot
    url: http://127.0.0.1:1/hook
    secret_env: IMMUNE_TEST_NEVER_SET
    decisions: [rollback, block]
    services: [web]
    timeout: 5s
    max_age: 2h
    backoff_base: 500ms
    backoff_cap: 1m
alertmanagers:
  - name: am
    url: http://127.0.0.1:9093
exec:
  - name: script
    command: [/bin/true, x]
poll_interval: 250ms
"#;
    let cfg: SignalsConfig = crate::rules::load::from_yaml_str("immune.yaml", yaml).unwrap();
    assert_eq!(cfg.webhooks.len(), 1);
    assert_eq!(cfg.webhooks[0].decisions.as_ref().unwrap().len(), 2);
    assert_eq!(
        cfg.webhooks[0].backoff_base,
        Some(ConfigDuration(DurationMs(500)))
    );
    assert_eq!(cfg.exec[0].command, vec!["/bin/true", "x"]);
    assert_eq!(cfg.poll_interval, Some(ConfigDuration(DurationMs(250))));
}

#[test]
fn unknown_keys_and_bad_durations_are_errors() {
    let bad = "webhooks:\n  - name: a\n    url: http://x\n    secret: hunter2\n";
    let e = crate::rules::load::from_yaml_str::<SignalsConfig>("immune.yaml", bad).unwrap_err();
    assert!(format!("{e:?}").contains("secret"), "{e:?}");
    let bad = "exec:\n  - name: a\n    command: [x]\n    timeout: soon\n";
    assert!(crate::rules::load::from_yaml_str::<SignalsConfig>("immune.yaml", bad).is_err());
}

#[test]
fn secrets_never_show_in_debug() {
    let dir = std::env::temp_dir().join(format!("immune-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("s");
    std::fs::write(&f, "hunter2\n").unwrap();
    let s = Secret::load("a", Some(&f), None).unwrap().unwrap();
    assert_eq!(s.expose(), b"hunter2");
    assert!(!format!("{s:?}").contains("hunter2"));
    let cfg = SignalsConfig {
        webhooks: vec![webhook::WebhookConfig {
            name: "a".into(),
            url: "https://user:pw@example.com/h?token=abc".into(),
            secret_file: Some(f.clone()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let sig = Signals::open(cfg.clone(), &dir, "http://immune".into()).unwrap();
    let dbg = format!("{sig:?} {cfg:?}");
    assert!(!dbg.contains("hunter2") && !dbg.contains("pw@") && !dbg.contains("abc"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn filter_defaults_and_matching() {
    let d = Decision {
        at: 1.0,
        deploy: "d1".into(),
        service: "web".into(),
        version: None,
        decision: DecisionKind::Rollback,
        phase: crate::model::Phase::Canary,
        rule: "r".into(),
        r#final: true,
        shadow: false,
        evidence: serde_json::json!({}),
    };
    let f = Filter {
        decisions: vec![DecisionKind::Rollback],
        services: vec![],
        include_shadow: false,
    };
    assert!(f.matches(&d));
    let shadow = Decision {
        shadow: true,
        ..d.clone()
    };
    assert!(!f.matches(&shadow));
    let other = Decision {
        service: "api".into(),
        ..d.clone()
    };
    let web_only = Filter {
        services: vec!["web".into()],
        ..f.clone()
    };
    assert!(!web_only.matches(&other) && web_only.matches(&d));
}

#[test]
fn views_are_taken_after_the_decisions_are_durable_and_kept_as_history() {
    let dir = std::env::temp_dir().join(format!("immune-views-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = SignalsConfig {
        webhooks: vec![webhook::WebhookConfig {
            name: "bot".into(),
            url: "http://127.0.0.1:1/hook".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let sig = Signals::open(cfg, &dir, "http://immune".into()).unwrap();
    let d = Decision {
        at: 1_764_201_600.0,
        deploy: "d7".into(),
        service: "web".into(),
        version: None,
        decision: DecisionKind::Rollback,
        phase: crate::model::Phase::Canary,
        rule: "errors".into(),
        r#final: true,
        shadow: false,
        evidence: serde_json::json!({"summary": "errors x3"}),
    };
    let journal = outbox::journal_path(&dir.join(OUTBOX_FILE));
    let mut asked = 0;
    let mut views = || {
        asked += 1;
        // By now the decision is in the journal.
        let bytes = std::fs::read(&journal).unwrap();
        assert!(
            bytes.windows(6).any(|w| w == b"errors"),
            "views asked for before the decision was journaled"
        );
        vec![serde_json::json!({"deploy": "d7", "service": "web", "phases": []})]
    };
    sig.record_then_views(std::slice::from_ref(&d), &mut views)
        .unwrap();
    assert_eq!(asked, 1);
    let (history, pending) = sig
        .with_outbox(|ob| Ok((ob.history("d7")?, ob.pending_by_sink()?)))
        .unwrap();
    assert_eq!(history.unwrap()["phases"], serde_json::json!([]));
    assert_eq!(pending, vec![("bot".to_string(), 1)]);
    drop(sig);
    std::fs::remove_dir_all(&dir).unwrap();
}
