//! Writes the damaged exchange file an `exchange` fuzz input describes, to hand it to
//! `twin-kernel` (or `ncdump`, `h5dump`) as a file:
//!
//! ```sh
//! cargo run -p twinflow-fuzz-entry --example corrupt -- fuzz/known-crashes/exchange/c-library-signal /tmp/damaged
//! # writes /tmp/damaged.nc or /tmp/damaged.h5
//! ```

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, out] = args.as_slice() else {
        return std::process::ExitCode::from(2);
    };
    let Ok(data) = std::fs::read(input) else { return std::process::ExitCode::from(3) };
    let (ext, bytes) = twinflow_fuzz_entry::exchange_file(&data);
    match std::fs::write(format!("{out}.{ext}"), bytes) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::from(1),
    }
}
