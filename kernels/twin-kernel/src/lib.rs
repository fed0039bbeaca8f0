//! The library side of `twin-kernel`: its command line ([`cli::Cli`], parsed with
//! [`parse_args`]) and [`cli::run`], which the binary calls. A library so that the
//! argument parser can be exercised without starting a process (the fuzz targets in
//! `fuzz/` and their replay test on the stable toolchain).

pub mod cli;

/// Parses `twin-kernel`'s command line exactly as the binary does (`argv[0]` first);
/// `--help` and `--version` come back as errors of kind `DisplayHelp`/`DisplayVersion`,
/// as from clap.
pub fn parse_args<I, T>(argv: I) -> Result<cli::Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    <cli::Cli as clap::Parser>::try_parse_from(argv)
}
