//! The HTTP API's JSON bodies: deploy events and the deploy/step/unblock requests, as
//! axum's `Json` extractor hands them to serde_json.
#![no_main]

use immune::api::deploys::{DeployStep, StartDeploy, Unblock};
use immune::model::DeployEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = serde_json::from_slice::<DeployEvent>(data) {
        let _ = serde_json::to_vec(&ev);
    }
    let _ = serde_json::from_slice::<StartDeploy>(data);
    let _ = serde_json::from_slice::<DeployStep>(data);
    let _ = serde_json::from_slice::<Unblock>(data);
});
