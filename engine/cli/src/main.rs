#![allow(clippy::print_stdout, clippy::print_stderr)]
//! `twinflow`: the command-line front end. All logic lives in `twinflow-engine`; this binary
//! parses arguments, renders events and maps results to exit codes.

mod cli;
mod commands;
mod exit;
mod report;

#[allow(clippy::exit)]
fn main() {
    let args = <cli::Cli as clap::Parser>::parse();
    let code = commands::run(args);
    std::process::exit(code);
}
