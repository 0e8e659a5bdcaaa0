//! Fuzz target: `codec::decode` and `codec::inspect` on arbitrary bytes with default limits must
//! return (Ok or a typed error) without panicking, hanging or allocating past the limits; whatever
//! decodes must be finite. Run with `cargo +nightly fuzz run decode` from `shared/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ruvdllm::codec::{self, Limits};

fuzz_target!(|data: &[u8]| {
    if let Ok(delta) = codec::decode(data, &Limits::default()) {
        assert!(delta.all_finite());
    }
    let _ = codec::inspect(data);
});
