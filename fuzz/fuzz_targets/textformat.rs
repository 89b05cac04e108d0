//! The Prometheus text / OpenMetrics line parser (scrapes, pushed text, replay input):
//! every line of the input in every timestamp unit, and the series parser.
#![no_main]

use immune::textformat::{TimestampUnit, parse_line, parse_series};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        for unit in [
            TimestampUnit::Auto,
            TimestampUnit::Seconds,
            TimestampUnit::Milliseconds,
        ] {
            let _ = parse_line(line, unit);
        }
        let _ = parse_series(line);
    }
});
