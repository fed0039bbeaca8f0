//! Containment of the file libraries on damaged files.
//!
//! The HDF5 C library and the `netcdf` crate read well-formed files; on damaged ones,
//! fuzzing found (`fuzz/known-crashes/`) that the crate panics (it `unwrap()`s the library's
//! errors) and that HDF5 1.10 can loop forever (a damaged global heap). Every read of this
//! crate runs inside [`guarded`]:
//! - a panic inside becomes [`ExchangeError::Library`], naming the file and what was being
//!   read, instead of a panic message that names neither;
//! - a watchdog thread ends the process when one guarded read has not returned within the
//!   I/O deadline ([`IO_TIMEOUT_ENV`], `600` or `10m`, default [`DEFAULT_IO_TIMEOUT`]; `0`
//!   turns it off), with a message naming the file on stderr. A library stuck in a loop cannot be
//!   unwound and may hold its own state inconsistent, so the process aborts (SIGABRT: no
//!   exit handlers run, HDF5's included); the engine reports the step failed, with the
//!   message. A kernel thus never hangs on a damaged input, even in a step without a
//!   `timeout:`.
//!
//! Guards nest: only the outermost one arms the watchdog and catches panics.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use crate::ExchangeError;

/// Environment variable: the longest a single read of an exchange file may take, seconds
/// (`0`: no limit).
pub const IO_TIMEOUT_ENV: &str = "TWIN_KERNEL_IO_TIMEOUT";

/// The I/O deadline when [`IO_TIMEOUT_ENV`] is unset: ten minutes for one read call (a
/// whole multi-gigabyte variable from a parallel file system takes well under that).
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(600);

thread_local! {
    /// Depth of guarded calls on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The message of a panic caught inside a guarded call.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `read` (a read of `path`; `action` says what, e.g. "reading the header"), turning a
/// panic of the file libraries into [`ExchangeError::Library`] and ending the process if it
/// does not return within the I/O deadline.
pub(crate) fn guarded<T>(
    path: &Path,
    action: &str,
    read: impl FnOnce() -> Result<T, ExchangeError>,
) -> Result<T, ExchangeError> {
    if DEPTH.get() > 0 {
        return read();
    }
    install_panic_hook();
    let _armed = watchdog(io_timeout()?).map(|w| w.arm(path, action));
    DEPTH.set(1);
    let result = panic::catch_unwind(AssertUnwindSafe(read));
    DEPTH.set(0);
    result.unwrap_or_else(|payload| {
        let mut message = PANIC.take().unwrap_or_else(|| payload_text(payload.as_ref()));
        if let Some(code) = netcdf_code(&message) {
            message.push_str(&format!("; {}", netcdf::Error::Netcdf(code)));
        }
        Err(ExchangeError::Library { path: path.to_path_buf(), action: action.to_string(), message })
    })
}

/// Like [`guarded`] for a query without an error channel: `fallback` when the libraries
/// panic (logged as a warning naming the file).
pub(crate) fn guarded_or<T>(path: &Path, action: &str, fallback: T, query: impl FnOnce() -> T) -> T {
    match guarded(path, action, || Ok(query())) {
        Ok(value) => value,
        Err(e) => {
            tracing::warn!("{e}");
            fallback
        }
    }
}

/// Inside a guarded call, a panic's message (with the crate's source location) is kept for
/// the error instead of being printed; elsewhere the previous hook runs as before.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if DEPTH.get() == 0 {
                return previous(info);
            }
            let location = info
                .location()
                .map(|l| {
                    let file: Vec<&str> = l.file().rsplit('/').take(3).collect();
                    let file: Vec<&str> = file.into_iter().rev().collect();
                    format!(" (at {}:{})", file.join("/"), l.line())
                })
                .unwrap_or_default();
            PANIC.set(Some(format!("{}{location}", payload_text(info.payload()))));
        }));
    });
}

/// The netCDF error code of an unwrapped `Netcdf(-101)` in a panic message.
fn netcdf_code(message: &str) -> Option<i32> {
    let rest = &message[message.find("Netcdf(")? + "Netcdf(".len()..];
    rest[..rest.find(')')?].parse().ok()
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// The I/O deadline from [`IO_TIMEOUT_ENV`]: seconds (`600`, `2.5`) or a duration with a
/// unit (`500ms`, `30s`, `10m`, `1h`); `None` when `0` turns it off. A value that is
/// neither is an error naming the variable (never silently the default).
pub fn io_timeout() -> Result<Option<Duration>, ExchangeError> {
    static TIMEOUT: OnceLock<Result<Option<Duration>, String>> = OnceLock::new();
    let parsed = TIMEOUT.get_or_init(|| match std::env::var(IO_TIMEOUT_ENV) {
        Err(_) => Ok(Some(DEFAULT_IO_TIMEOUT)),
        Ok(v) => parse_timeout(&v).ok_or(v),
    });
    parsed.clone().map_err(|value| ExchangeError::Environment {
        name: IO_TIMEOUT_ENV,
        value,
        reason: "not a duration; hint: seconds (`600`) or with a unit (`500ms`, `30s`, `10m`, `1h`), `0` for no limit"
            .into(),
    })
}

fn parse_timeout(text: &str) -> Option<Option<Duration>> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let seconds = n * scale;
    if !seconds.is_finite() {
        return None;
    }
    Some((seconds > 0.0).then(|| Duration::from_secs_f64(seconds.min(1e9))))
}

/// Guarded calls in progress (any thread) and the thread that watches their deadlines.
struct Watchdog {
    timeout: Duration,
    calls: Mutex<Calls>,
    changed: Condvar,
}

#[derive(Default)]
struct Calls {
    next: u64,
    open: BTreeMap<u64, (Instant, PathBuf, String)>,
}

/// Disarms its call when dropped.
struct Armed {
    watchdog: &'static Watchdog,
    id: u64,
}

impl Drop for Armed {
    fn drop(&mut self) {
        let mut calls = self.watchdog.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls.open.remove(&self.id);
    }
}

fn watchdog(timeout: Option<Duration>) -> Option<&'static Watchdog> {
    static WATCHDOG: OnceLock<Option<&'static Watchdog>> = OnceLock::new();
    *WATCHDOG.get_or_init(|| {
        let timeout = timeout?;
        let w: &'static Watchdog =
            Box::leak(Box::new(Watchdog { timeout, calls: Mutex::default(), changed: Condvar::new() }));
        std::thread::Builder::new().name("io-watchdog".into()).spawn(move || w.watch()).ok()?;
        Some(w)
    })
}

impl Watchdog {
    fn arm(&'static self, path: &Path, action: &str) -> Armed {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let id = calls.next;
        calls.next += 1;
        calls.open.insert(id, (Instant::now() + self.timeout, path.to_path_buf(), action.to_string()));
        self.changed.notify_one();
        Armed { watchdog: self, id }
    }

    fn watch(&self) {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let first = calls.open.values().min_by_key(|(deadline, ..)| *deadline).cloned();
            calls = match first {
                None => self.changed.wait(calls).unwrap_or_else(|p| p.into_inner()),
                Some((deadline, path, action)) => {
                    let now = Instant::now();
                    if now >= deadline {
                        give_up(&path, &action, self.timeout);
                    }
                    self.changed.wait_timeout(calls, deadline - now).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }
}

fn give_up(path: &Path, action: &str, timeout: Duration) -> ! {
    // Straight to stderr, not through `tracing`: the message must come out whatever the
    // program's subscriber does, and nothing else is going to run.
    let _ = writeln!(
        std::io::stderr(),
        "error: `{}` is probably damaged: the HDF5/netCDF library has not returned from {action} after {} s \
         (these libraries can loop forever on some damaged files), so the process aborts; hint: \
         regenerate or replace the file (`h5dump` and `ncdump` may not show this damage, or hang on it \
         too); the limit is {IO_TIMEOUT_ENV} (e.g. `600`, `10m`; `0` = none)",
        path.display(),
        timeout.as_secs_f64()
    );
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_is_an_error_naming_the_file_and_guards_nest() {
        let path = Path::new("/data/damaged.nc");
        let err = guarded::<()>(path, "reading the header", || {
            guarded(path, "inner", || -> Result<(), ExchangeError> {
                panic!("called `Result::unwrap()` on an `Err` value: Netcdf(-101)")
            })
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ExchangeError::Library { .. }), "{err:?}");
        assert!(text.contains("/data/damaged.nc") && text.contains("reading the header"), "{text}");
        assert!(text.contains("Netcdf(-101)") && text.contains("guard.rs"), "the panic and where: {text}");
        assert!(text.contains("NetCDF: HDF error"), "the library's text of the code: {text}");
        assert!(err.is_invalid_input(), "a damaged input is the caller's input (exit 3)");
        // The thread is out of the guard again: a value passes through.
        assert_eq!(guarded(path, "x", || Ok(7)).unwrap(), 7);
        assert_eq!(guarded_or(path, "y", 0, || -> i32 { panic!("boom") }), 0);
        assert_eq!(DEPTH.get(), 0);
    }

    #[test]
    fn the_deadline_takes_seconds_or_a_duration_and_refuses_anything_else() {
        let secs = |t: &str| parse_timeout(t).map(|d| d.map(|d| d.as_secs_f64()));
        assert_eq!(secs("600"), Some(Some(600.0)));
        assert_eq!(secs(" 2.5 "), Some(Some(2.5)));
        assert_eq!(secs("3s"), Some(Some(3.0)));
        assert_eq!(secs("500ms"), Some(Some(0.5)));
        assert_eq!(secs("10m"), Some(Some(600.0)));
        assert_eq!(secs("1h"), Some(Some(3600.0)));
        assert_eq!(secs("0"), Some(None), "0 turns the watchdog off");
        for bad in ["", "-1", "soon", "3 parsecs", "1e999"] {
            assert_eq!(secs(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_finished_call_is_disarmed() {
        let w = watchdog(io_timeout().unwrap()).expect("the watchdog runs unless TWIN_KERNEL_IO_TIMEOUT=0");
        let armed = w.arm(Path::new("f.h5"), "reading");
        let id = armed.id;
        assert!(w.calls.lock().unwrap().open.contains_key(&id));
        drop(armed);
        assert!(!w.calls.lock().unwrap().open.contains_key(&id));
    }
}
