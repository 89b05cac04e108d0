//! `immune demo` end to end (fast): the live agent on the simulator, deploys reported over
//! the HTTP deploy API; the healthy deploy passes and the error-rate ×3 one is rolled back.

use immune::demo::{DemoOptions, run};
use immune::model::DecisionKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_passes_the_healthy_deploy_and_rolls_back_the_bad_one() {
    let opts = DemoOptions {
        listen: "127.0.0.1:0".into(),
        speed: 240.0,
        keep: false,
    };
    let mut out = Vec::new();
    let decisions = run(opts, &mut out, std::future::pending()).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let last = |id: &str| {
        decisions
            .iter()
            .rev()
            .find(|d| d.deploy == id && d.r#final)
            .map(|d| d.decision)
    };
    assert_eq!(last("d1"), Some(DecisionKind::Pass), "{text}");
    assert_eq!(last("d2"), Some(DecisionKind::Rollback), "{text}");
    assert!(text.contains("ROLLBACK"), "{text}");
}
