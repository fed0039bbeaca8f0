#![no_main]
//! `twinflow_fuzz_entry::profile`: never a panic, and every rejection clean.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(r) = twinflow_fuzz_entry::profile(data) {
        assert!(r.clean, "unclean rejection: {}", r.message);
    }
});
