//! What the ingest keeps on disk besides the windows, so a restart (after SIGTERM or
//! kill -9) neither loses nor repeats a record.
//!
//! `ingest-state.json` in the output directory holds, after each window: the next window
//! index, the length of the dead-letter file, the last time written per sensor (the
//! monotonic check continues across restarts) and the fingerprints of the messages of the
//! recent windows whose acknowledgements may not have reached the broker (a restart drops
//! their redeliveries instead of writing them twice).
//!
//! A window is committed in this order, each step flushed to disk (`fsync`) before the next:
//! 1. the window file, written as `window-NNNNNN.nc.partial`;
//! 2. its dead letters, appended to the dead-letter file;
//! 3. the state (written as `ingest-state.json.partial`, renamed): the commit point;
//! 4. the rename of the window file to its final name, then the acknowledgements.
//!
//! [`recover`] finishes or undoes an interrupted commit: before step 3 nothing happened
//! (the partial file is removed, the dead-letter file cut back to the recorded length, the
//! broker redelivers the messages); after it, a window file still under its partial name is
//! renamed into place.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use twinflow_contract::{PARTIAL_SUFFIX, stream};
use twinflow_exchange::Format;

use crate::IngestError;

/// Name of the state file in the output directory.
pub const STATE_FILE: &str = "ingest-state.json";
const VERSION: u32 = 1;

/// Fingerprints of one committed window's messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentWindow {
    /// Window index.
    pub window: u64,
    /// 64-bit fingerprints (topic and payload) of its messages, written and dead-lettered.
    pub fingerprints: Vec<u64>,
}

/// The state after the last committed window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version of this file.
    pub version: u32,
    /// MQTT client id whose persistent session the windows come from.
    pub client_id: String,
    /// Index of the next window.
    pub next_window: u64,
    /// Bytes of the dead-letter file that belong to committed windows.
    pub dead_letter_bytes: u64,
    /// Latest time written (or dead-lettered as valid) per sensor.
    pub last_time: BTreeMap<String, f64>,
    /// Recent windows whose messages may still be redelivered.
    pub recent: Vec<RecentWindow>,
    /// Topic filters the session is subscribed to.
    #[serde(default)]
    pub topics: Vec<String>,
}

impl State {
    /// The state of an output directory no window was written to yet.
    pub fn fresh(client_id: &str) -> Self {
        Self {
            version: VERSION,
            client_id: client_id.into(),
            next_window: 0,
            dead_letter_bytes: 0,
            last_time: BTreeMap::new(),
            recent: Vec::new(),
            topics: Vec::new(),
        }
    }

    /// Writes the state durably: `.partial`, flushed, renamed, directory flushed.
    pub fn save(&self, out_dir: &Path) -> Result<(), IngestError> {
        let path = out_dir.join(STATE_FILE);
        let partial = with_suffix(&path, PARTIAL_SUFFIX);
        let text =
            serde_json::to_vec(self).map_err(|e| IngestError::State { path: path.clone(), reason: e.to_string() })?;
        let io = |action: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| IngestError::Io { path: p, action, source }
        };
        let mut f = std::fs::File::create(&partial).map_err(io("create", &partial))?;
        f.write_all(&text).map_err(io("write", &partial))?;
        f.sync_all().map_err(io("flush", &partial))?;
        std::fs::rename(&partial, &path).map_err(io("rename", &partial))?;
        sync_dir(out_dir)
    }
}

/// `path` with `suffix` appended to its file name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Flushes a directory's entries (renames, new files) to disk.
pub fn sync_dir(dir: &Path) -> Result<(), IngestError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|source| IngestError::Io {
        path: dir.to_path_buf(),
        action: "flush",
        source,
    })
}

/// The file of window `index`: `window-000042.nc` (`.h5` for HDF5).
pub fn window_path(out_dir: &Path, index: u64, format: Format) -> PathBuf {
    let ext = match format {
        Format::Netcdf => "nc",
        Format::Hdf5 => "h5",
    };
    out_dir.join(format!("{}{index:06}.{ext}", stream::WINDOW_PREFIX))
}

/// Index of a window file name (final or partial), if it is one.
fn window_index_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(stream::WINDOW_PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    let known = [".nc", ".h5"].iter().any(|ext| tail == *ext || tail.strip_prefix(ext) == Some(PARTIAL_SUFFIX));
    (digits.len() >= 6 && known).then(|| digits.parse().ok()).flatten()
}

/// Loads the state of `out_dir` (creating the directory) and repairs an interrupted
/// commit (see the module documentation).
pub fn recover(out_dir: &Path, dead_letter: &Path, client_id: &str, format: Format) -> Result<State, IngestError> {
    std::fs::create_dir_all(out_dir).map_err(|source| IngestError::Io {
        path: out_dir.to_path_buf(),
        action: "create",
        source,
    })?;
    let path = out_dir.join(STATE_FILE);
    let mut windows: Vec<(u64, bool, PathBuf)> = Vec::new();
    let entries = std::fs::read_dir(out_dir).map_err(|source| IngestError::Io {
        path: out_dir.into(),
        action: "list",
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(k) = window_index_of(&name) {
            windows.push((k, name.ends_with(PARTIAL_SUFFIX), entry.path()));
        }
    }
    let state = match std::fs::read(&path) {
        Ok(bytes) => {
            let state: State = serde_json::from_slice(&bytes)
                .map_err(|e| IngestError::State { path: path.clone(), reason: e.to_string() })?;
            if state.version != VERSION {
                return Err(IngestError::State {
                    path,
                    reason: format!("version {} is not the version {VERSION} this ingest writes", state.version),
                });
            }
            if state.client_id != client_id {
                return Err(IngestError::ClientId {
                    out_dir: out_dir.to_path_buf(),
                    recorded: state.client_id,
                    given: client_id.into(),
                });
            }
            state
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if windows.iter().any(|(_, partial, _)| !partial) {
                return Err(IngestError::State {
                    path,
                    reason: format!(
                        "`{}` holds window files but no `{STATE_FILE}`; hint: ingest into an empty directory",
                        out_dir.display()
                    ),
                });
            }
            State::fresh(client_id)
        }
        Err(source) => return Err(IngestError::Io { path, action: "read", source }),
    };
    // Finish the rename of a committed window; drop windows begun after the commit point.
    for (k, partial, p) in &windows {
        if !partial {
            continue;
        }
        if *k + 1 == state.next_window {
            let done = window_path(out_dir, *k, format);
            tracing::info!(window = k, path = %done.display(), "finishing the commit of a window interrupted after its state was saved");
            std::fs::rename(p, &done).map_err(|source| IngestError::Io {
                path: p.clone(),
                action: "rename",
                source,
            })?;
        } else {
            tracing::info!(window = k, path = %p.display(), "removing a window that was not committed (its messages are redelivered)");
            std::fs::remove_file(p).map_err(|source| IngestError::Io { path: p.clone(), action: "remove", source })?;
        }
    }
    if state.next_window > 0 {
        let last = state.next_window - 1;
        let present = windows.iter().any(|(k, _, _)| *k == last);
        if !present {
            return Err(IngestError::State {
                path: out_dir.join(STATE_FILE),
                reason: format!(
                    "the last committed window {last} is missing from `{}`; hint: restore it, or ingest into a new directory with a new `--client-id`",
                    out_dir.display()
                ),
            });
        }
    }
    cut_dead_letters(dead_letter, state.dead_letter_bytes)?;
    sync_dir(out_dir)?;
    Ok(state)
}

/// Cuts the dead-letter file back to the bytes of committed windows.
fn cut_dead_letters(path: &Path, len: u64) -> Result<(), IngestError> {
    let io = |action: &'static str| move |source| IngestError::Io { path: path.to_path_buf(), action, source };
    match std::fs::metadata(path) {
        Ok(m) if m.len() > len => {
            tracing::info!(path = %path.display(), from = m.len(), to = len, "cutting dead letters of an uncommitted window");
            let f = std::fs::OpenOptions::new().write(true).open(path).map_err(io("open"))?;
            f.set_len(len).map_err(io("truncate"))?;
            f.sync_all().map_err(io("flush"))
        }
        Ok(m) if m.len() < len => Err(IngestError::State {
            path: path.to_path_buf(),
            reason: format!("the dead-letter file has {} bytes, the state records {len}", m.len()),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && len == 0 => Ok(()),
        Err(source) => Err(IngestError::Io { path: path.to_path_buf(), action: "read", source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_names_are_recognised() {
        assert_eq!(window_index_of("window-000042.nc"), Some(42));
        assert_eq!(window_index_of("window-000042.h5.partial"), Some(42));
        assert_eq!(window_index_of("window-1234567.nc"), Some(1_234_567));
        assert_eq!(window_index_of("window-42.nc"), None);
        assert_eq!(window_index_of("window-000042.ncx"), None);
        assert_eq!(window_path(Path::new("o"), 7, Format::Hdf5), Path::new("o/window-000007.h5"));
    }

    #[test]
    fn recovery_finishes_a_committed_rename_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let dl = out.join("dead.jsonl");
        let mut s = State::fresh("c");
        s.next_window = 2;
        s.dead_letter_bytes = 4;
        s.save(out).unwrap();
        std::fs::write(out.join("window-000000.nc"), b"w0").unwrap();
        std::fs::write(out.join("window-000001.nc.partial"), b"w1").unwrap();
        std::fs::write(out.join("window-000002.nc.partial"), b"w2").unwrap();
        std::fs::write(&dl, b"abcdefgh").unwrap();
        let back = recover(out, &dl, "c", Format::Netcdf).unwrap();
        assert_eq!(back, s);
        assert!(out.join("window-000001.nc").exists());
        assert!(!out.join("window-000002.nc.partial").exists());
        assert_eq!(std::fs::read(&dl).unwrap(), b"abcd");

        let err = recover(out, &dl, "other", Format::Netcdf).unwrap_err();
        assert!(err.to_string().contains("client id"), "{err}");
        std::fs::remove_file(out.join("window-000001.nc")).unwrap();
        let err = recover(out, &dl, "c", Format::Netcdf).unwrap_err();
        assert!(err.to_string().contains("window 1 is missing"), "{err}");
    }

    #[test]
    fn windows_without_state_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("window-000000.nc"), b"w0").unwrap();
        let err = recover(dir.path(), &dir.path().join("d"), "c", Format::Netcdf).unwrap_err();
        assert!(err.to_string().contains("empty directory"), "{err}");
    }
}
