//! The experiment endpoints on a live agent (port 0): listing and assignment agreeing with
//! the CLI and the shipped test vectors.

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
