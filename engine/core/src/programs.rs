//! Finding the program a step runs, as the shell would: the first *executable* file of that
//! name on `PATH` (the `which` crate), so a data file that happens to share the name is
//! passed over instead of being hashed into the cache key and then failing to start.

use std::ffi::OsStr;
use std::path::PathBuf;

/// Finds `prog` on `PATH`; a name with a `/` is returned as it is (it names a file relative
/// to the step's directory, or an absolute one, and is not searched for).
pub fn which(prog: &str) -> Option<PathBuf> {
    find_in(prog, std::env::var_os("PATH").as_deref())
}

fn find_in(prog: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    if prog.is_empty() {
        return None;
    }
    let cwd = std::env::current_dir().ok()?;
    which::which_in(prog, path, cwd).ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write(path: &std::path::Path, mode: u32) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_non_executable_file_on_path_is_passed_over() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        write(&first.path().join("tool"), 0o644);
        write(&second.path().join("tool"), 0o755);
        write(&first.path().join("data"), 0o644);
        let path = std::env::join_paths([first.path(), second.path()]).unwrap();
        assert_eq!(find_in("tool", Some(&path)), Some(second.path().join("tool")));
        assert_eq!(find_in("data", Some(&path)), None, "a non-executable file is not a program");
        assert_eq!(find_in("missing", Some(&path)), None);
        assert_eq!(find_in("./x.sh", Some(&path)), Some(PathBuf::from("./x.sh")));
        assert_eq!(find_in("", Some(&path)), None);
    }
}
