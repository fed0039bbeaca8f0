//! What MPI launchers print when a rank fails, read back for failure messages.
//!
//! A multi-rank step that crashes often says nothing on its standard error: the launcher
//! reports the dead rank, and where it does so differs.
//!
//! - MPICH's Hydra `mpiexec` prints a `BAD TERMINATION OF ONE OF YOUR APPLICATION
//!   PROCESSES` block on **stdout**, with `EXIT CODE: N`, `PID P RUNNING AT HOST` (MPICH
//!   4.1 and later: `RANK R PID P RUNNING AT HOST`) and `YOUR APPLICATION TERMINATED WITH
//!   THE EXIT STRING: Segmentation fault (signal 11)`; it then exits with the signal's
//!   number (11), not 128 + 11. `MPI_Abort` prints `Abort(C) on node R (rank R in comm 0)`.
//! - Open MPI (`mpiexec`, `prterun`) prints `mpiexec noticed that process rank R with PID P
//!   on node H exited on signal N (Segmentation fault).`, or for an exit code `Process name:
//!   [[J,1],R]` then `Exit code: C`; `MPI_Abort` gives `MPI_ABORT was invoked on rank R`.
//! - `srun` prints `srun: error: HOST: task R: Segmentation fault` (or `tasks 0-1: Killed`,
//!   `task 1: Exited with exit code 3`).
//!
//! [`find`] looks for these in a step's output (both files, the whole of what is read)
//! and returns what the launcher said about the first rank it names.

/// What a launcher said about a rank that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankFailure {
    /// The launcher, as a user would name it (`mpiexec` (MPICH), `srun`).
    pub launcher: &'static str,
    /// The rank, when the launcher names it (MPICH 4.0 names only the process id).
    pub rank: Option<String>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The launcher's words for what happened (`Segmentation fault`, `MPI_Abort with
    /// error code 3`).
    pub what: Option<String>,
    /// Where it ran: `pid 32628 on vm`.
    pub place: Option<String>,
}

impl RankFailure {
    /// `rank 1 was killed by signal 11: SIGSEGV (segmentation fault)` and the like, naming
    /// the rank when the launcher did (`a rank (pid 32628 on vm) ...` otherwise).
    pub fn describe(&self) -> String {
        let who = match (&self.rank, &self.place) {
            (Some(r), _) if r.contains(['-', ',']) => format!("ranks {r}"),
            (Some(r), _) => format!("rank {r}"),
            (None, Some(p)) => format!("a rank ({p})"),
            (None, None) => "a rank".to_string(),
        };
        let how = match (self.signal, self.exit_code, &self.what) {
            (Some(s), _, _) => format!("was killed by signal {s}: {}", super::signal_name(s)),
            (None, Some(c), _) => format!("exited with code {c}"),
            (None, None, Some(w)) => format!("ended: {w}"),
            (None, None, None) => "failed".to_string(),
        };
        format!("{who} {how}, as `{}` reports", self.launcher)
    }
}

/// What a launcher reported about a failed rank in `text` (a step's stdout and stderr).
pub fn find(text: &str) -> Option<RankFailure> {
    mpich(text).or_else(|| openmpi(text)).or_else(|| srun(text)).or_else(|| aborts(text))
}

/// The text after `prefix` on a line of `text` that contains it.
fn after<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.find(prefix).map(|i| l[i + prefix.len()..].trim()))
}

/// The leading decimal number of `s`.
fn number(s: &str) -> Option<&str> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The signal named `(signal N)` or `signal N` in `s`.
fn signal_in(s: &str) -> Option<i32> {
    let i = s.find("signal ")?;
    number(&s[i + "signal ".len()..])?.parse().ok()
}

fn mpich(text: &str) -> Option<RankFailure> {
    if !text.contains("BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES") {
        return None;
    }
    let exit_string = after(text, "TERMINATED WITH THE EXIT STRING:").map(str::to_string);
    let signal = exit_string.as_deref().and_then(signal_in);
    let exit_code = after(text, "EXIT CODE:").and_then(number).and_then(|n| n.parse().ok());
    // `=   RANK 1 PID 32628 RUNNING AT vm` (4.1+) or `=   PID 32628 RUNNING AT vm`.
    let line = text.lines().find(|l| l.contains(" RUNNING AT "));
    let rank = line.and_then(|l| after(l, "RANK ")).and_then(number).map(str::to_string);
    let place = line.and_then(|l| {
        let pid = after(l, "PID ").and_then(number)?;
        let host = after(l, "RUNNING AT ")?.split_whitespace().next()?;
        Some(format!("pid {pid} on {host}"))
    });
    Some(RankFailure {
        launcher: "mpiexec",
        rank,
        // Hydra's `EXIT CODE` is the signal's number when a signal killed the rank.
        exit_code: if signal.is_some() { None } else { exit_code },
        signal,
        what: exit_string,
        place,
    })
}

fn openmpi(text: &str) -> Option<RankFailure> {
    // `mpiexec noticed that process rank 1 with PID 0 on node vm exited on signal 11 (...)`.
    if let Some(rest) = after(text, "noticed that process rank ") {
        let rank = number(rest).map(str::to_string);
        let place = match (after(rest, "with PID ").and_then(number), after(rest, " on node ")) {
            (Some(pid), Some(h)) => h.split_whitespace().next().map(|h| format!("pid {pid} on {h}")),
            _ => None,
        };
        let signal = after(rest, "exited on signal ").and_then(number).and_then(|n| n.parse().ok());
        return Some(RankFailure {
            launcher: "mpiexec",
            rank,
            signal,
            exit_code: None,
            what: Some(rest.trim_end_matches('.').to_string()),
            place,
        });
    }
    // `Process name: [[12345,1],1]` then `Exit code: 3`.
    if text.contains("exited with non-zero status")
        && let Some(name) = after(text, "Process name:")
    {
        let rank = name.trim_end_matches(']').rsplit(',').next().and_then(number).map(str::to_string);
        let exit_code = after(text, "Exit code:").and_then(number).and_then(|n| n.parse().ok());
        return Some(RankFailure { launcher: "mpiexec", rank, signal: None, exit_code, what: None, place: None });
    }
    None
}

fn srun(text: &str) -> Option<RankFailure> {
    // `srun: error: node1: task 1: Segmentation fault (core dumped)`.
    let line =
        text.lines().find(|l| l.contains("srun: error:") && (l.contains(": task ") || l.contains(": tasks ")))?;
    let (_, rest) = line.split_once(": task").map(|(a, b)| (a, b.trim_start_matches('s').trim()))?;
    let (ranks, what) = rest.split_once(':')?;
    let what = what.trim().to_string();
    let signal = match what.as_str() {
        w if w.starts_with("Segmentation fault") => Some(11),
        w if w.starts_with("Bus error") => Some(7),
        w if w.starts_with("Aborted") => Some(6),
        w if w.starts_with("Floating point exception") => Some(8),
        w if w.starts_with("Illegal instruction") => Some(4),
        w if w.starts_with("Killed") => Some(9),
        w if w.starts_with("Terminated") => Some(15),
        _ => None,
    };
    let exit_code = after(&what, "exit code ").and_then(number).and_then(|n| n.parse().ok());
    Some(RankFailure {
        launcher: "srun",
        rank: Some(ranks.trim().to_string()),
        signal,
        exit_code,
        what: Some(what),
        place: None,
    })
}

/// `MPI_Abort`: MPICH's `Abort(3) on node 1 (rank 1 in comm 0): ...`, Open MPI's
/// `MPI_ABORT was invoked on rank 1 in communicator MPI_COMM_WORLD with errorcode 3`.
fn aborts(text: &str) -> Option<RankFailure> {
    if let Some(rest) = after(text, "MPI_ABORT was invoked on rank ") {
        let code = after(rest, "errorcode ").and_then(number).map(str::to_string);
        return Some(RankFailure {
            launcher: "mpiexec",
            rank: number(rest).map(str::to_string),
            signal: None,
            exit_code: None,
            what: Some(abort_words(code)),
            place: None,
        });
    }
    let line = text.lines().find(|l| l.trim_start().starts_with("Abort(") && l.contains("(rank "))?;
    let code = after(line, "Abort(").and_then(number).map(str::to_string);
    Some(RankFailure {
        launcher: "mpiexec",
        rank: after(line, "(rank ").and_then(number).map(str::to_string),
        signal: None,
        exit_code: None,
        what: Some(abort_words(code)),
        place: None,
    })
}

/// `called `MPI_Abort` with error code 3`.
fn abort_words(code: Option<String>) -> String {
    format!("called `MPI_Abort`{}", code.map(|c| format!(" with error code {c}")).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MPICH 4.0.2 (Debian 12), a rank killed by SIGSEGV: on stdout, no rank number.
    const MPICH_4_0: &str = "
===================================================================================
=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES
=   PID 32628 RUNNING AT vm
=   EXIT CODE: 11
=   CLEANING UP REMAINING PROCESSES
=   YOU CAN IGNORE THE BELOW CLEANUP MESSAGES
===================================================================================
YOUR APPLICATION TERMINATED WITH THE EXIT STRING: Segmentation fault (signal 11)
This typically refers to a problem with your application.
Please see the FAQ page for debugging suggestions
";

    #[test]
    fn mpich_bad_termination_names_the_signal_and_the_rank_when_it_says_it() {
        let f = find(MPICH_4_0).unwrap();
        assert_eq!((f.rank.as_deref(), f.signal, f.exit_code), (None, Some(11), None));
        assert_eq!(
            f.describe(),
            "a rank (pid 32628 on vm) was killed by signal 11: SIGSEGV (segmentation fault), as `mpiexec` reports"
        );
        // MPICH 4.1 and later name the rank.
        let newer = MPICH_4_0.replace("=   PID 32628", "=   RANK 1 PID 32628");
        assert_eq!(
            find(&newer).unwrap().describe(),
            "rank 1 was killed by signal 11: SIGSEGV (segmentation fault), as `mpiexec` reports"
        );
    }

    #[test]
    fn open_mpi_reports_name_the_rank() {
        let sig = "--------------------------------------------------------------------------\nmpiexec noticed that process rank 1 with PID 0 on node vm exited on signal 11 (Segmentation fault).\n--------------------------------------------------------------------------\n";
        let f = find(sig).unwrap();
        assert_eq!((f.rank.as_deref(), f.signal, f.place.as_deref()), (Some("1"), Some(11), Some("pid 0 on vm")));
        assert!(f.describe().starts_with("rank 1 was killed by signal 11: SIGSEGV"), "{}", f.describe());
        let code = "mpiexec detected that one or more processes exited with non-zero status, thus causing\nthe job to be terminated. The first process to do so was:\n\n  Process name: [[41234,1],3]\n  Exit code:    7\n";
        assert_eq!(find(code).unwrap().describe(), "rank 3 exited with code 7, as `mpiexec` reports");
        let abort = "MPI_ABORT was invoked on rank 2 in communicator MPI_COMM_WORLD\nwith errorcode 4.\n";
        let f = find(&abort.replace('\n', " ")).unwrap();
        assert_eq!(f.describe(), "rank 2 ended: called `MPI_Abort` with error code 4, as `mpiexec` reports");
    }

    #[test]
    fn srun_and_mpich_abort_reports() {
        let f = find("srun: error: node1: task 1: Segmentation fault (core dumped)\n").unwrap();
        assert_eq!(f.describe(), "rank 1 was killed by signal 11: SIGSEGV (segmentation fault), as `srun` reports");
        let f = find("srun: error: node1: tasks 0-1: Exited with exit code 3\n").unwrap();
        assert_eq!(f.describe(), "ranks 0-1 exited with code 3, as `srun` reports");
        let f = find(
            "Abort(3) on node 1 (rank 1 in comm 0): application called MPI_Abort(MPI_COMM_WORLD, 3) - process 1\n",
        )
        .unwrap();
        assert_eq!(f.describe(), "rank 1 ended: called `MPI_Abort` with error code 3, as `mpiexec` reports");
    }

    #[test]
    fn ordinary_output_is_no_launcher_report() {
        assert_eq!(find("step 1 of 10\nerror: mesh file missing\n"), None);
        assert_eq!(find(""), None);
    }
}
