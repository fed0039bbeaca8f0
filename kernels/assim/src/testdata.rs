//! Test fixtures shared by the unit tests of the crate.

use twinflow_contract::{cf, datasets};
use twinflow_exchange::{Attr, DType, Dataset, Dim, Values, Variable};

/// A CF `timeSeries` header of stations `g0`, `g1`, … at `xy`: the `station` dimension,
/// `station_name`, `x`, `y`; callers add times and values.
pub(crate) fn stations(xy: &[(f64, f64)]) -> Dataset {
    let ns = xy.len();
    Dataset {
        dims: vec![Dim { name: datasets::STATION.into(), len: ns, unlimited: false }],
        variables: vec![
            Variable {
                name: datasets::STATION_NAME.into(),
                dims: vec![datasets::STATION.into()],
                dtype: DType::Str,
                attrs: vec![],
                values: Values::Str((0..ns).map(|s| format!("g{s}")).collect()),
            },
            Variable::f64(datasets::X, &[datasets::STATION], "x", "m", xy.iter().map(|p| p.0).collect()),
            Variable::f64(datasets::Y, &[datasets::STATION], "y", "m", xy.iter().map(|p| p.1).collect()),
        ],
        attrs: vec![(cf::FEATURE_TYPE.into(), Attr::Str("timeSeries".into()))],
    }
}
