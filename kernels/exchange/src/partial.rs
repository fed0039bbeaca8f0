//! Write-then-rename: outputs appear under their final name only once complete.

use std::path::{Path, PathBuf};

use super::ExchangeError;

/// An output being written under `<name>.partial` (see [`twinflow_contract::PARTIAL_SUFFIX`]).
///
/// [`PartialFile::commit`] renames it to its final name (atomic on POSIX within a file
/// system). Dropped without commit (an error path), the partial file is removed; after a
/// crash it stays, visibly incomplete.
#[derive(Debug)]
pub struct PartialFile {
    final_path: PathBuf,
    partial_path: PathBuf,
    committed: bool,
}

impl PartialFile {
    /// Reserves `path`: removes a stale partial file and any previous output there, so a
    /// failed run cannot leave an older complete-looking result behind.
    pub fn new(path: &Path) -> Result<Self, ExchangeError> {
        let mut name = path.as_os_str().to_owned();
        name.push(twinflow_contract::PARTIAL_SUFFIX);
        let partial_path = PathBuf::from(name);
        for p in [&partial_path, &path.to_path_buf()] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ExchangeError::Io { path: p.clone(), action: "remove", source }),
            }
        }
        Ok(Self { final_path: path.to_path_buf(), partial_path, committed: false })
    }

    /// Where to write now.
    pub fn partial_path(&self) -> &Path {
        &self.partial_path
    }

    /// The name the file gets once committed.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Flushes the (closed) partial file to disk, so a rename after it publishes data that
    /// survive a power cut, not only a crash of the process.
    pub fn sync(&self) -> Result<(), ExchangeError> {
        let io = |source| ExchangeError::Io { path: self.partial_path.clone(), action: "flush", source };
        std::fs::File::open(&self.partial_path).map_err(io)?.sync_all().map_err(io)
    }

    /// Renames the (closed) partial file to its final name.
    pub fn commit(mut self) -> Result<PathBuf, ExchangeError> {
        std::fs::rename(&self.partial_path, &self.final_path).map_err(|source| ExchangeError::Io {
            path: self.partial_path.clone(),
            action: "rename",
            source,
        })?;
        self.committed = true;
        Ok(self.final_path.clone())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.partial_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commit_produces_the_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("result.nc");
        let p = PartialFile::new(&out).unwrap();
        assert_eq!(p.partial_path(), dir.path().join("result.nc.partial"));
        std::fs::write(p.partial_path(), b"data").unwrap();
        assert!(!out.exists());
        p.commit().unwrap();
        assert!(out.exists() && !dir.path().join("result.nc.partial").exists());

        let p = PartialFile::new(&out).unwrap();
        assert!(!out.exists(), "a new run removes the previous output first");
        std::fs::write(p.partial_path(), b"data").unwrap();
        drop(p);
        assert!(!dir.path().join("result.nc.partial").exists());
    }
}
