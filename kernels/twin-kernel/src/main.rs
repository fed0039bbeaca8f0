//! `twin-kernel`: the science kernels of twinflow as one command-line program.
//!
//! `main` only parses the arguments, sets up logging and the communicator, and maps the
//! outcome of [`cli::run`] to an exit code ([`cli::exit_code`]).

use twinflow_kernels::cli;

fn main() -> std::process::ExitCode {
    let args = match twinflow_kernels::parse_args(std::env::args_os()) {
        Ok(args) => args,
        Err(err) => {
            // `--help` and `--version` are "errors" that print to stdout and succeed.
            let _ = err.print();
            let code = if err.use_stderr() { cli::exit_code::USAGE } else { cli::exit_code::SUCCESS };
            return std::process::ExitCode::from(code);
        }
    };
    std::process::ExitCode::from(cli::run(args))
}
