//! The deploy JSON Lines reader of `immune replay`: a small fixed metrics input and the
//! fuzzed deploys text through `immune::replay::run` with the bundled rules.
#![no_main]

use immune::engine::{Engine, EngineConfig};
use immune::replay::{Input, Options, run};
use immune::textformat::TimestampUnit;
use libfuzzer_sys::fuzz_target;

const METRICS: &str = include_str!("../../tests/fixtures/replay/small.om");

fuzz_target!(|data: &[u8]| {
    let Ok(rules) = immune::defaults::load_rules(&[]) else {
        return;
    };
    let mut engine = Engine::new(rules, EngineConfig::default());
    let mut out = Vec::new();
    let _ = run(
        &mut engine,
        Input::new("metrics.om", METRICS.as_bytes()),
        Input::new("deploys.jsonl", data),
        Options {
            unit: TimestampUnit::Auto,
            eval_interval_ms: 10_000,
        },
        &mut out,
    );
});
