//! End-to-end tests of the `twinflow` binary.

mod cache;
mod checks;
mod common;
mod cycling;
mod detector;
mod engine_behaviour;
mod execution;
mod failures;
mod flood;
mod flood_twin;
mod hardening;
mod invalid;
mod kill;
mod mpiexec;
mod project;
mod provenance;
mod reports;
mod run_database;
mod run_report;
mod services;
mod slurm;
mod slurm_cycling;
mod slurm_faults;
mod slurm_modes;
mod slurm_pilot;
mod support;
