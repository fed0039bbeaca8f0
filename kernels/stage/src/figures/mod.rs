//! Figures a scientist can put in a talk, drawn with plotters into an RGB buffer and written
//! as PNG: axes with units, a title, a colour bar with ticks, labelled gauges. Text uses
//! DejaVu Sans, bundled in the binary (`kernels/stage/fonts/`, its licence beside it), so
//! figures render the same on a bare compute node without fonts or fontconfig.
//!
//! - [`flood_map`]: an exceedance probability (or any field in [0, 1]) over the hillshaded
//!   terrain, x/y in metres, with the gauges and their names.
//! - [`hydrographs`]: each gauge's depth over time, the ensemble median and its 5–95 %
//!   band, with observations and the truth when given.
//! - [`gauge_table`]: the summary's gauge statistics as CSV and as a Markdown table.
//! - [`line_panels`]: line charts (a twin's RMSE and spread per cycle, a detector's
//!   resolution against energy with its [`fit_resolution`] curve, bias against
//!   temperature, training curves) and [`ranked_markdown`], a sweep's ranked trials.
//!
//! Tested at the pixel level (axes, text and data are drawn where they belong, the image is
//! not one colour) in this module and end to end in `tests/e2e/flood.rs`.

mod charts;
mod flood;
mod font;
mod table;

pub use charts::{Line, PALETTE, Panel, fit_resolution, line_panels, ranked_markdown};
pub use flood::{FloodMap, GaugeSeriesPlot, Series, flood_map, hydrographs};
pub use table::gauge_table;

/// Why a figure could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    /// The drawing library failed (a bug or an impossible layout).
    #[error("drawing the figure failed: {0}")]
    Draw(String),
    /// The data cannot make this figure.
    #[error("{0}")]
    Data(String),
}

impl<E: std::error::Error + Send + Sync> From<plotters::drawing::DrawingAreaErrorKind<E>> for FigureError {
    fn from(e: plotters::drawing::DrawingAreaErrorKind<E>) -> Self {
        FigureError::Draw(e.to_string())
    }
}
