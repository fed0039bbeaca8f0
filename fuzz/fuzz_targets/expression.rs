#![no_main]
//! `twinflow_fuzz_entry::expression`: never a panic, and every rejection clean.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(r) = twinflow_fuzz_entry::expression(data) {
        assert!(r.clean, "unclean rejection: {}", r.message);
    }
});
