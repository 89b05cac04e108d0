//! The experiment endpoints on a live agent (port 0): listing and assignment agreeing with
//! the CLI and the shipped test vectors; events (token, idempotency, named bad fields), the
//! judged state, `immune experiment status` and the experiments' own metrics.

mod agent_common;

use serde_json::Value;

#[tokio::test]
async fn assign_endpoint_agrees_with_the_vectors() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/experiments/signup_button.yaml"
    );
    let agent = agent_common::start(&format!("experiments: [{file:?}]\n")).await;
    let u = &agent.url;
    let list: Value = reqwest::get(format!("{u}/api/v1/experiments"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["experiments"][0]["name"], "GDCEurope2011");
    assert_eq!(list["experiments"][0]["branches"][1]["name"], "Enhanced");
    for (uid, want) in [("u5", "Enhanced"), ("u1", "none")] {
        let r: Value = reqwest::get(format!(
            "{u}/api/v1/experiments/GDCEurope2011/assign?uid={uid}"
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(r["experiment"], "GDCEurope2011");
        assert_eq!(r["uid"], uid);
        assert_eq!(r["branch"], want, "{r}");
    }
    let r = reqwest::get(format!("{u}/api/v1/experiments/Nope/assign?uid=u1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::get(format!("{u}/api/v1/experiments/GDCEurope2011/assign"))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("uid"));
    agent.stop().await.unwrap();
}

async fn post_events(url: &str, name: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/api/v1/experiments/{name}/events"))
        .json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Exposures and outcomes through the events endpoint: token-guarded, idempotent by event
/// id, a bad field named; the experiment's state, the status CLI and /metrics show them.
#[tokio::test]
async fn events_feed_the_judge_and_the_state_is_shown() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/experiments/signup_button.yaml"
    );
    let agent = agent_common::start(&format!(
        "experiments: [{file:?}]\napi: {{tokens: [s3cret]}}\n"
    ))
    .await;
    let u = &agent.url;
    let name = "GDCEurope2011";
    let ev = serde_json::json!({"events": [{"id": "a", "uid": "u5", "type": "exposure"}]});
    assert_eq!(post_events(u, name, &ev, None).await.0, 401);

    // Users in the experiment (u1 is outside initial_rollout 0.2).
    let exp = immune::experiment::load_file(std::path::Path::new(file)).unwrap();
    let exp = &exp[0];
    let uids: Vec<String> = (0..4000)
        .map(|i| format!("user{i}"))
        .filter(|u| immune::experiment::assign::branch_for(exp, u).is_some())
        .collect();
    assert!(uids.len() > 500, "{}", uids.len());
    let mut events = Vec::new();
    for (i, uid) in uids.iter().enumerate() {
        events.push(serde_json::json!({"id": format!("x{i}"), "uid": uid, "type": "exposure"}));
        if i % 10 == 0 {
            events.push(serde_json::json!({
                "id": format!("s{i}"), "uid": uid, "type": "outcome",
                "metric": "signups_total", "value": 1,
            }));
        }
    }
    events.push(serde_json::json!({"id": "out", "uid": "u1", "type": "exposure"}));
    let body = serde_json::json!({ "events": events });
    let (status, applied) = post_events(u, name, &body, Some("s3cret")).await;
    assert_eq!(status, 200, "{applied}");
    let signups = uids.len().div_ceil(10) as u64;
    assert_eq!(applied["accepted"], uids.len() as u64 + signups);
    assert_eq!(applied["outside"], 1);
    // The same batch again counts nothing.
    let (status, again) = post_events(u, name, &body, Some("s3cret")).await;
    assert_eq!(status, 200);
    assert_eq!(again["accepted"], 0);
    assert_eq!(again["duplicate"], uids.len() as u64 + signups + 1);

    // Bad input: a 400 naming the field, nothing counted.
    for (bad, field) in [
        (
            serde_json::json!({"events": [{"id": "b", "uid": "u5", "type": "outcome", "metric": "nope"}]}),
            "events[0].metric",
        ),
        (
            serde_json::json!({"events": [{"id": "b", "uid": "u5", "type": "outcome", "metric": "signups_total", "value": 0.5}]}),
            "events[0].value",
        ),
        (
            serde_json::json!({"events": [{"id": "", "uid": "u5", "type": "exposure"}]}),
            "events[0].id",
        ),
        (serde_json::json!({"events": []}), "events"),
        (
            serde_json::json!({"events": [{"id": "b", "uid": "u5", "type": "exposure", "colour": 1}]}),
            "colour",
        ),
    ] {
        let (status, e) = post_events(u, name, &bad, Some("s3cret")).await;
        assert_eq!(status, 400, "{e}");
        assert_eq!(e["field"], field, "{e}");
    }
    let (status, _) = post_events(u, "Nope", &ev, Some("s3cret")).await;
    assert_eq!(status, 404);

    let s: Value = reqwest::get(format!("{u}/api/v1/experiments/{name}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["experiment"], name);
    let total: u64 = s["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["participants"].as_u64().unwrap())
        .sum();
    assert_eq!(total, uids.len() as u64);
    assert_eq!(s["srm"]["flagged"], false, "{s}");
    assert_eq!(s["state"], "running");
    assert_eq!(s["comparisons"].as_array().unwrap().len(), 2);
    assert_eq!(s["comparisons"][0]["metric"], "signups_total");
    assert_eq!(
        s["closing"].as_array().unwrap().len(),
        1,
        "guardrails do not close"
    );
    assert_eq!(s["closing"][0]["outcome"], "not_significant");
    let r = reqwest::get(format!("{u}/api/v1/experiments/Nope"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let metrics = reqwest::get(format!("{u}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let control = s["branches"][0]["participants"].as_u64().unwrap();
    assert!(
        metrics.contains(&format!(
            "immune_experiment_participants{{experiment=\"{name}\",branch=\"control\"}} {control}"
        )),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("immune_experiment_state{experiment=\"GDCEurope2011\",state=\"running\"} 1")
    );

    let html = reqwest::get(format!("{u}/experiments/{name}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<h1>Experiment GDCEurope2011</h1>"), "{html}");
    assert!(html.contains("<td>signups_total</td>"), "{html}");
    let r = reqwest::get(format!("{u}/experiments/Nope")).await.unwrap();
    assert_eq!(r.status(), 404);

    // The CLI shows the same state.
    let url = u.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_immune"))
            .args(["experiment", "status", "GDCEurope2011", "--url", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("state running"), "{text}");
    assert!(text.contains("signups_total\tgoal"), "{text}");
    assert!(text.contains("errors_total\tguardrail"), "{text}");
    agent.stop().await.unwrap();
}
