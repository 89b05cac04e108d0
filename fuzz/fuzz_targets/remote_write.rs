//! remote_write bodies (snappy-compressed protobuf) as `POST /api/v1/write` decodes them,
//! plus the same bytes snappy-compressed, so the fuzzer reaches the protobuf decoder.
#![no_main]

use immune::sources::push::decode_write;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_write(data);
    if let Ok(framed) = snap::raw::Encoder::new().compress_vec(data) {
        let _ = decode_write(&framed);
    }
});
