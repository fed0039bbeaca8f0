//! Index selection along named dimensions, shared by subset and merge checks.

use std::collections::BTreeMap;

use ndarray::{ArrayD, Axis, IxDyn};

use twinflow_exchange::{Dataset, Dim, Values, Variable};

/// Keeps, along each dimension named in `keep`, the listed indices (in that order).
pub(super) fn select(data: &Dataset, keep: &BTreeMap<String, Vec<usize>>) -> Dataset {
    let dims = data.dims.iter().map(|d| Dim { len: keep.get(&d.name).map_or(d.len, Vec::len), ..d.clone() }).collect();
    let variables = data
        .variables
        .iter()
        .map(|v| {
            if !v.dims.iter().any(|d| keep.contains_key(d)) {
                return v.clone();
            }
            let shape = data.shape_of(v);
            let values = match &v.values {
                Values::Num(x) => Values::Num(select_array(x.clone(), &shape, &v.dims, keep)),
                Values::Str(x) => Values::Str(select_array(x.clone(), &shape, &v.dims, keep)),
            };
            Variable { values, ..v.clone() }
        })
        .collect();
    Dataset { dims, variables, attrs: data.attrs.clone() }
}

fn select_array<T: Clone>(
    values: Vec<T>,
    shape: &[usize],
    dims: &[String],
    keep: &BTreeMap<String, Vec<usize>>,
) -> Vec<T> {
    let mut arr = ArrayD::from_shape_vec(IxDyn(shape), values).expect("checked when read");
    for (k, d) in dims.iter().enumerate() {
        if let Some(idx) = keep.get(d) {
            arr = arr.select(Axis(k), idx);
        }
    }
    arr.iter().cloned().collect()
}
