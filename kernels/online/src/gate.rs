//! The validation gate and the versioned calibration payload.
//!
//! Every cycle's candidate model (the warm-started update) is scored on the window's
//! held-out events, beside the payload in force (the previous cycle's): relative bias
//! `⟨(Ê − E)/E⟩` and resolution `σ((Ê − E)/E)`. The candidate is **published** when its
//! scores are finite and its resolution is at most `(1 + tolerance)` × the previous
//! payload's on the same events; otherwise the previous payload is **kept** and the payload
//! file says so, with the numbers (and the kernel logs a warning and writes an alert).
//! Bias is not a gate criterion: following the drift, i.e. changing the bias, is what the
//! update is for.
//!
//! A payload carries a **version** (1 for the first, +1 per publication) and its
//! **interval of validity** (IOV): the first and last cycle, and the first and last event
//! time, it applies to. A published payload is valid for the window it was derived from
//! (prompt calibration: the constants from a run's calibration stream reconstruct that
//! run); a kept one extends its IOV to the current window.

use serde::{Deserialize, Serialize};

/// Scores of one model on held-out events.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Mean relative error.
    pub bias: f64,
    /// Standard deviation of the relative error.
    pub resolution: f64,
    /// Held-out events scored.
    pub events: usize,
}

/// Interval of validity of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Iov {
    /// First cycle it applies to.
    pub first_cycle: u64,
    /// Last cycle it applies to (so far).
    pub last_cycle: u64,
    /// Time of the first event it applies to, s since 1970.
    pub first_time: f64,
    /// Time of the last event it applies to, s since 1970.
    pub last_time: f64,
}

/// The calibration payload of a cycle (`payload.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// Version of the payload in force (1, 2, ...).
    pub version: u64,
    /// Whether this cycle published a new version.
    pub published: bool,
    /// `published` or `kept-previous`.
    pub decision: String,
    /// Why, in words, with the numbers.
    pub reason: String,
    /// The cycle that wrote this file.
    pub cycle: u64,
    /// The window it scored.
    pub window: u64,
    /// The cycle whose window the model in force was derived from.
    pub derived_from_cycle: u64,
    /// Where it applies.
    pub iov: Iov,
    /// File name of the model in force, beside this file.
    pub model: String,
    /// The gate's tolerance on the resolution (relative).
    pub tolerance: f64,
    /// The candidate's scores on this window's held-out events.
    pub candidate: Scores,
    /// The previous payload's scores on the same events (none in the first cycle).
    pub previous: Option<Scores>,
}

/// Whether the candidate may be published, and why.
pub fn decide(candidate: &Scores, previous: Option<&Scores>, tolerance: f64) -> (bool, String) {
    let finite = candidate.bias.is_finite() && candidate.resolution.is_finite();
    match previous {
        _ if !finite => (false, "the candidate's predictions are not finite (diverged training)".into()),
        None => (true, "first calibration".into()),
        Some(p) => {
            let limit = p.resolution * (1.0 + tolerance);
            if candidate.resolution <= limit || !p.resolution.is_finite() {
                (
                    true,
                    format!(
                        "resolution {:.4} within {:.4} (the previous {:.4} + {:.1} %)",
                        candidate.resolution,
                        limit,
                        p.resolution,
                        100.0 * tolerance
                    ),
                )
            } else {
                (
                    false,
                    format!(
                        "the candidate's resolution {:.4} exceeds {:.4} (the previous {:.4} + {:.1} %): the previous payload is kept",
                        candidate.resolution,
                        limit,
                        p.resolution,
                        100.0 * tolerance
                    ),
                )
            }
        }
    }
}

/// What the gate is given for one cycle.
#[derive(Debug, Clone, Copy)]
pub struct GateInput<'a> {
    /// This cycle.
    pub cycle: u64,
    /// The window it scored.
    pub window: u64,
    /// First and last event time of the window.
    pub times: (f64, f64),
    /// The candidate's scores.
    pub candidate: Scores,
    /// The payload in force and its scores on this window (none in the first cycle).
    pub previous: Option<(&'a Payload, Scores)>,
    /// Tolerance on the resolution.
    pub tolerance: f64,
    /// File name of the model beside the payload.
    pub model: &'a str,
}

/// The payload of this cycle.
pub fn next_payload(input: &GateInput<'_>) -> Payload {
    let (publish, reason) = decide(&input.candidate, input.previous.as_ref().map(|(_, s)| s), input.tolerance);
    match (publish, input.previous) {
        (false, Some((prev, scores))) => Payload {
            published: false,
            decision: "kept-previous".into(),
            reason,
            cycle: input.cycle,
            window: input.window,
            iov: Iov { last_cycle: input.cycle, last_time: input.times.1, ..prev.iov },
            model: input.model.into(),
            tolerance: input.tolerance,
            candidate: input.candidate,
            previous: Some(scores),
            ..prev.clone()
        },
        (publish, prev) => Payload {
            version: prev.map_or(1, |(p, _)| p.version + 1),
            // A first candidate that is not finite is still the only calibration there is.
            published: true,
            decision: "published".into(),
            reason: if publish { reason } else { format!("{reason}; published anyway: there is no earlier payload") },
            cycle: input.cycle,
            window: input.window,
            derived_from_cycle: input.cycle,
            iov: Iov {
                first_cycle: input.cycle,
                last_cycle: input.cycle,
                first_time: input.times.0,
                last_time: input.times.1,
            },
            model: input.model.into(),
            tolerance: input.tolerance,
            candidate: input.candidate,
            previous: prev.map(|(_, s)| s),
        },
    }
}

/// Header of the scores table (`scores.csv`), one row per cycle.
pub const SCORES_HEADER: &str = "cycle,window,events,temperature_k,online_bias,online_resolution,frozen_bias,frozen_resolution,candidate_bias,candidate_resolution,published,version";

#[cfg(test)]
mod tests {
    use super::*;

    fn s(bias: f64, resolution: f64) -> Scores {
        Scores { bias, resolution, events: 100 }
    }

    #[test]
    fn the_gate_publishes_within_the_tolerance_and_keeps_the_previous_payload_otherwise() {
        let first = next_payload(&GateInput {
            cycle: 0,
            window: 0,
            times: (10.0, 20.0),
            candidate: s(0.001, 0.050),
            previous: None,
            tolerance: 0.05,
            model: "model.h5",
        });
        assert_eq!((first.version, first.published, first.iov.first_cycle, first.iov.last_cycle), (1, true, 0, 0));
        // 0.052 ≤ 0.050 × 1.05: published as version 2, valid for cycle 1 only.
        let second = next_payload(&GateInput {
            cycle: 1,
            window: 1,
            times: (20.0, 30.0),
            candidate: s(0.002, 0.052),
            previous: Some((&first, s(-0.02, 0.050))),
            tolerance: 0.05,
            model: "model.h5",
        });
        assert_eq!((second.version, second.published, second.derived_from_cycle), (2, true, 1));
        assert_eq!(second.iov, Iov { first_cycle: 1, last_cycle: 1, first_time: 20.0, last_time: 30.0 });
        // 0.060 > 0.052 × 1.05: version 2 stays in force, its IOV now reaches cycle 2.
        let third = next_payload(&GateInput {
            cycle: 2,
            window: 2,
            times: (30.0, 40.0),
            candidate: s(0.0, 0.060),
            previous: Some((&second, s(-0.02, 0.052))),
            tolerance: 0.05,
            model: "model.h5",
        });
        assert_eq!((third.version, third.published, third.decision.as_str()), (2, false, "kept-previous"));
        assert_eq!(third.iov, Iov { first_cycle: 1, last_cycle: 2, first_time: 20.0, last_time: 40.0 });
        assert_eq!(third.derived_from_cycle, 1);
        assert!(third.reason.contains("exceeds") && third.reason.contains("kept"), "{}", third.reason);
        // A diverged candidate is never published over an existing payload.
        let (ok, why) = decide(&s(f64::NAN, f64::NAN), Some(&s(0.0, 0.05)), 0.05);
        assert!(!ok && why.contains("not finite"));
    }
}
