//! A complete calorimeter run: simulate every event on its rank, gather to rank 0 in
//! bounded blocks, write one file in event order.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::CaloError;
use super::config::CaloPlan;
use super::output::{CaloWriter, TruthRow, truth_row};
use super::shower::{Scratch, Simulator};
use twinflow_comm::Communicator;
use twinflow_exchange::{ExchangeError, Provenance};

/// Kernel name recorded in provenance attributes.
pub const KERNEL_NAME: &str = "twin-kernel calo";

/// Bytes rank 0 may hold for one gathered block (all ranks' events of one round).
const GATHER_BUDGET_BYTES: usize = 256 << 20;

/// Values per event in a gathered block: the truth row, the PDG code, then the cells.
const HEADER: usize = 9;

/// Consecutive events handed to the writer thread.
struct Block {
    first_event: u64,
    cells: Vec<f32>,
    rows: Vec<TruthRow>,
    particles: Vec<i32>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Events simulated on all ranks.
    pub events: u64,
    /// Mean of visible / incident energy over all events (rank 0; 0 elsewhere).
    pub mean_visible_fraction: f64,
    /// Wall time of the whole run on this rank, s.
    pub seconds: f64,
    /// The output file (rank 0 only).
    pub output: Option<PathBuf>,
}

/// The contiguous range of events of `rank`: `(first, count)`; the first `events % size`
/// ranks get one event more.
pub fn partition(events: u64, size: usize, rank: usize) -> (u64, u64) {
    let (size, rank) = (size as u64, rank as u64);
    let (base, extra) = (events / size, events % size);
    let count = base + u64::from(rank < extra);
    let first = rank * base + rank.min(extra);
    (first, count)
}

/// Runs a calorimeter simulation. Collective: every rank calls it with the same plan;
/// rank 0 writes `out`. The output does not depend on the rank count: every event is a
/// pure function of (seed, event id) and lands at its own index.
pub fn run_calo(
    comm: &dyn Communicator,
    plan: &CaloPlan,
    out: &Path,
    command_line: &str,
) -> Result<RunSummary, CaloError> {
    let start = Instant::now();
    let (rank, size) = (comm.rank(), comm.size());
    let (first, count) = partition(plan.events, size, rank);
    let n_cells = plan.cells_per_event();
    let row_len = HEADER + n_cells;
    // Events per rank and round: a chunk of `/cells`, fewer if the gathered block would
    // exceed the budget on rank 0.
    let block = plan.chunk_events.min(GATHER_BUDGET_BYTES / (8 * row_len * size)).max(1) as u64;
    let rounds = partition(plan.events, size, 0).1.div_ceil(block);

    // Rank 0 writes on a thread of its own, so compression overlaps the simulation; the
    // bounded channel keeps at most two blocks in flight.
    let (blocks, io) = if rank == 0 {
        let parameters = serde_json::to_string(&plan.config).unwrap_or_default();
        let provenance = Provenance {
            mpi_ranks: Some(size),
            ..Provenance::from_env("twinflow calorimeter showers", KERNEL_NAME, parameters, command_line)
        };
        let chunk = plan.chunk_events.max(1) as u64;
        let in_flight = size * (block.div_ceil(chunk) as usize + 1) + 1;
        let mut writer = CaloWriter::create(out, plan, &provenance, in_flight)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Block>(2);
        let io = std::thread::spawn(move || -> Result<PathBuf, ExchangeError> {
            for b in rx {
                writer.write(b.first_event, &b.cells, &b.rows, &b.particles)?;
            }
            writer.finish()
        });
        (Some(tx), Some(io))
    } else {
        (None, None)
    };
    tracing::debug!(first, count, block, rounds, "event range of this rank");

    let sim = Simulator::new(plan);
    let mut scratch = Scratch::default();
    let mut cells = vec![0.0_f32; n_cells];
    let mut send = Vec::with_capacity(block as usize * row_len);
    let mut visible_fraction_sum = 0.0;
    let mut writer_gone = false;
    for round in 0..rounds {
        let lo = first + (round * block).min(count);
        let hi = first + ((round + 1) * block).min(count);
        send.clear();
        for event in lo..hi {
            let truth = sim.event(event, &mut scratch, &mut cells);
            send.extend_from_slice(&truth_row(&truth));
            send.push(f64::from(truth.primary.particle.pdg_code()));
            send.extend(cells.iter().map(|&c| f64::from(c)));
        }
        let Some(all) = comm.gather_f64(&send) else { continue };
        let Some(tx) = blocks.as_ref() else { continue };
        // Rank 0: the blocks arrive in rank order; each goes to its own event range.
        let mut offset = 0;
        for r in 0..size {
            let (f, c) = partition(plan.events, size, r);
            let n = ((round + 1) * block).min(c).saturating_sub(round * block) as usize;
            if n == 0 {
                continue;
            }
            let values = &all[offset..offset + n * row_len];
            offset += n * row_len;
            let mut b = Block {
                first_event: f + round * block,
                cells: Vec::with_capacity(n * n_cells),
                rows: Vec::with_capacity(n),
                particles: Vec::with_capacity(n),
            };
            for ev in values.chunks_exact(row_len) {
                let mut row = [0.0; 8];
                row.copy_from_slice(&ev[..8]);
                visible_fraction_sum += row[5] / row[0];
                b.rows.push(row);
                b.particles.push(ev[8] as i32);
                b.cells.extend(ev[HEADER..].iter().map(|&v| v as f32));
            }
            if tx.send(b).is_err() {
                // The writer failed; its error is collected below.
                writer_gone = true;
                break;
            }
        }
        if writer_gone {
            break;
        }
        tracing::debug!(round, rounds, "block handed to the writer");
    }
    drop(blocks);
    let output = match io {
        Some(io) => Some(io.join().map_err(|_| CaloError::WriterPanicked)??),
        None => None,
    };
    let seconds = start.elapsed().as_secs_f64();
    let mean_visible_fraction = if rank == 0 { visible_fraction_sum / plan.events as f64 } else { 0.0 };
    if rank == 0 {
        let rate = plan.events as f64 / seconds;
        tracing::info!(
            events = plan.events,
            mean_visible_over_e = format_args!("{mean_visible_fraction:.4}"),
            seconds = format_args!("{seconds:.3}"),
            showers_per_s = format_args!("{rate:.1}"),
            showers_per_s_per_rank = format_args!("{:.1}", rate / size as f64),
            ranks = size,
            "calo run finished"
        );
    }
    Ok(RunSummary { events: plan.events, mean_visible_fraction, seconds, output })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_contiguous_and_cover_every_event() {
        for (events, size) in [(10, 4), (3, 4), (1000, 3), (7, 1)] {
            let mut next = 0;
            for rank in 0..size {
                let (first, count) = partition(events, size, rank);
                assert_eq!(first, next);
                next += count;
            }
            assert_eq!(next, events);
            assert!(partition(events, size, 0).1 >= partition(events, size, size - 1).1);
        }
    }
}
