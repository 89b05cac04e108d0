//! The rule-file loader and the config reader behind it (`immune check`, start-up,
//! `POST /-/reload`): any text, valid YAML or not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = immune::rules::load::load_str("fuzz.yaml", &text);
    let _ = immune::rules::load::from_yaml_str::<immune::config::Config>("immune.yaml", &text);
});
