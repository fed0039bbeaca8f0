//! Sessions: what the command line asks of the engine, one function per command (start or
//! resume a run, cancel it, report its status, explain the cache, show the plan). A session
//! chooses the backend from the run's settings, owns a SLURM allocation and its heartbeat,
//! and opens the run database; the CLI only parses arguments and renders what comes back.

pub mod render;
