//! [`Dataset`] ↔ NetCDF-4 through the `netcdf` crate.

use std::collections::HashMap;
use std::path::Path;

use netcdf::AttributeValue as A;
use netcdf::types::{FloatType, IntType, NcVariableType};
use twinflow_contract::cf;

use super::dataset::{Attr, DType, Dataset, Dim, Values, Variable, chunk_shape, unravel};
use super::error::{Context, OpenContext};
use super::{Compression, ExchangeError, PartialFile};

fn attr_from_nc(v: A) -> Attr {
    match v {
        A::Str(s) => Attr::Str(s),
        A::Strs(s) => Attr::Str(s.join("\n")),
        A::Double(x) => Attr::F64(vec![x]),
        A::Doubles(x) => Attr::F64(x),
        A::Float(x) => Attr::F32(vec![x]),
        A::Floats(x) => Attr::F32(x),
        A::Int(x) => Attr::I32(vec![x]),
        A::Ints(x) => Attr::I32(x),
        A::Short(x) => Attr::I32(vec![x.into()]),
        A::Shorts(x) => Attr::I32(x.into_iter().map(Into::into).collect()),
        A::Ushort(x) => Attr::I32(vec![x.into()]),
        A::Ushorts(x) => Attr::I32(x.into_iter().map(Into::into).collect()),
        A::Schar(x) => Attr::I32(vec![x.into()]),
        A::Schars(x) => Attr::I32(x.into_iter().map(Into::into).collect()),
        A::Uchar(x) => Attr::I32(vec![x.into()]),
        A::Uchars(x) => Attr::I32(x.into_iter().map(Into::into).collect()),
        A::Uint(x) => Attr::I64(vec![x.into()]),
        A::Uints(x) => Attr::I64(x.into_iter().map(Into::into).collect()),
        A::Longlong(x) => Attr::I64(vec![x]),
        A::Longlongs(x) => Attr::I64(x),
        // Values above i64::MAX do not occur in exchange files; they saturate.
        A::Ulonglong(x) => Attr::I64(vec![i64::try_from(x).unwrap_or(i64::MAX)]),
        A::Ulonglongs(x) => Attr::I64(x.into_iter().map(|x| i64::try_from(x).unwrap_or(i64::MAX)).collect()),
    }
}

fn attr_to_nc(a: &Attr) -> A {
    fn one_or_many<T: Copy>(v: &[T], one: fn(T) -> A, many: fn(Vec<T>) -> A) -> A {
        if v.len() == 1 { one(v[0]) } else { many(v.to_vec()) }
    }
    match a {
        Attr::Str(s) => A::Str(s.clone()),
        Attr::F64(v) => one_or_many(v, A::Double, A::Doubles),
        Attr::F32(v) => one_or_many(v, A::Float, A::Floats),
        Attr::I32(v) => one_or_many(v, A::Int, A::Ints),
        Attr::I64(v) => one_or_many(v, A::Longlong, A::Longlongs),
    }
}

fn dtype_of(path: &Path, name: &str, t: &NcVariableType) -> Result<DType, ExchangeError> {
    Ok(match t {
        NcVariableType::Float(FloatType::F64) => DType::F64,
        NcVariableType::Float(FloatType::F32) => DType::F32,
        NcVariableType::Int(IntType::I8 | IntType::U8 | IntType::I16 | IntType::U16 | IntType::I32) => DType::I32,
        NcVariableType::Int(IntType::U32 | IntType::I64 | IntType::U64) => DType::I64,
        NcVariableType::String => DType::Str,
        other => {
            return Err(ExchangeError::Layout {
                path: path.to_path_buf(),
                reason: format!(
                    "variable `{name}` has the type {other:?}, which staging does not handle; hint: store text as NetCDF-4 strings and numbers as int/float/double"
                ),
            });
        }
    })
}

/// Reads a NetCDF file (root group); without `values`, variables are left empty.
pub(super) fn read(path: &Path, with_values: bool) -> Result<Dataset, ExchangeError> {
    let file = netcdf::open(path).open_ctx(path)?;
    let dims = file.dimensions().map(|d| Dim { name: d.name(), len: d.len(), unlimited: d.is_unlimited() }).collect();
    let mut attrs = Vec::new();
    for a in file.attributes() {
        let name = a.name().to_string();
        attrs.push((name.clone(), attr_from_nc(a.value().ctx(path, format!("reading attribute `{name}`"))?)));
    }
    let mut variables = Vec::new();
    for v in file.variables() {
        let name = v.name();
        let dtype = dtype_of(path, &name, &v.vartype())?;
        let shape: Vec<usize> = v.dimensions().iter().map(|d| d.len()).collect();
        let n: usize = shape.iter().product();
        let mut vattrs = Vec::new();
        for a in v.attributes() {
            let an = a.name().to_string();
            vattrs.push((an.clone(), attr_from_nc(a.value().ctx(path, format!("reading `{name}:{an}`"))?)));
        }
        let values = if n == 0 || !with_values {
            Values::empty_for(dtype)
        } else if dtype == DType::Str {
            let zero = vec![0; shape.len()];
            let strings = (0..n)
                .map(|k| v.get_string(unravel(k, &zero, &shape)).ctx(path, format!("reading `{name}`")))
                .collect::<Result<_, _>>()?;
            Values::Str(strings)
        } else {
            Values::Num(v.get_values::<f64, _>(..).ctx(path, format!("reading `{name}`"))?)
        };
        let dims = v.dimensions().iter().map(|d| d.name()).collect();
        variables.push(Variable { name, dims, dtype, attrs: vattrs, values });
    }
    Ok(Dataset { dims, variables, attrs })
}

/// A NetCDF file being written.
pub(super) struct Writer {
    file: Option<netcdf::FileMut>,
    partial: PartialFile,
    dtypes: Vec<(String, DType)>,
    /// Chunk shape of each chunked variable: numeric blocks are written chunk by chunk.
    chunks: HashMap<String, Vec<usize>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("nc::Writer").field("path", &self.partial.partial_path()).finish_non_exhaustive()
    }
}

fn define(
    file: &mut netcdf::FileMut,
    p: &Path,
    header: &Dataset,
    var: &Variable,
    compression: &Compression,
) -> Result<Option<Vec<usize>>, ExchangeError> {
    let name = var.name.as_str();
    let dims: Vec<&str> = var.dims.iter().map(String::as_str).collect();
    let action = || format!("defining `{name}`");
    let mut v = match var.dtype {
        DType::F64 => file.add_variable::<f64>(name, &dims),
        DType::F32 => file.add_variable::<f32>(name, &dims),
        DType::I32 => file.add_variable::<i32>(name, &dims),
        DType::I64 => file.add_variable::<i64>(name, &dims),
        DType::Str => file.add_string_variable(name, &dims),
    }
    .ctx(p, action())?;
    let shape = header.shape_of(var);
    // Fields and columns along a record (unlimited) dimension are chunked and compressed;
    // fixed 1-D coordinates stay contiguous.
    let along_records = var.dims.first().and_then(|d| header.dim(d)).is_some_and(|d| d.unlimited);
    let mut chunked = None;
    if var.dtype != DType::Str && (shape.len() >= 2 || (shape.len() == 1 && along_records)) {
        let chunk = chunk_shape(&shape);
        v.set_chunking(&chunk).ctx(p, format!("chunking `{name}`"))?;
        chunked = Some(chunk);
        if let Some(level) = compression.deflate_level {
            v.set_compression(i32::from(level.min(9)), compression.shuffle).ctx(p, format!("compressing `{name}`"))?;
        }
    }
    for (k, a) in &var.attrs {
        if k == cf::FILL_VALUE && var.dtype != DType::Str {
            // `_FillValue` must have the variable's type and be set before data are written.
            let fill = a.as_f64().unwrap_or(cf::FILL_F64);
            match var.dtype {
                DType::F64 => v.set_fill_value(fill),
                DType::F32 => v.set_fill_value(fill as f32),
                DType::I32 => v.set_fill_value(fill as i32),
                DType::I64 => v.set_fill_value(fill as i64),
                DType::Str => unreachable!("excluded above"),
            }
            .ctx(p, format!("setting `{name}:_FillValue`"))?;
        } else {
            v.put_attribute(k, attr_to_nc(a)).ctx(p, format!("writing `{name}:{k}`"))?;
        }
    }
    Ok(chunked)
}

/// The blocks of the chunk grid `chunk` (aligned to absolute multiples of it) that cover
/// the hyperslab `start`/`count`, each as (start, count), in row-major order.
fn chunk_blocks(start: &[usize], count: &[usize], chunk: &[usize]) -> Vec<(Vec<usize>, Vec<usize>)> {
    // Per dimension, the intervals [a, b) of the grid inside [start, start + count).
    let per_dim: Vec<Vec<(usize, usize)>> = (0..start.len())
        .map(|k| {
            let (lo, hi, c) = (start[k], start[k] + count[k], chunk[k].max(1));
            let mut out = Vec::new();
            let mut a = lo;
            while a < hi {
                let b = ((a / c + 1) * c).min(hi);
                out.push((a, b));
                a = b;
            }
            out
        })
        .collect();
    let mut blocks = vec![(Vec::new(), Vec::new())];
    for intervals in &per_dim {
        blocks = blocks
            .into_iter()
            .flat_map(|(s, c): (Vec<usize>, Vec<usize>)| {
                intervals.iter().map(move |&(a, b)| {
                    let (mut s, mut c) = (s.clone(), c.clone());
                    s.push(a);
                    c.push(b - a);
                    (s, c)
                })
            })
            .collect();
    }
    blocks
}

/// Copies the block `bstart`/`bcount` out of `values` (row-major over the hyperslab
/// `start`/`count`) into `out`, converted by `conv`.
fn gather<T>(
    values: &[f64],
    start: &[usize],
    count: &[usize],
    bstart: &[usize],
    bcount: &[usize],
    out: &mut Vec<T>,
    conv: impl Fn(f64) -> T,
) {
    out.clear();
    let n = count.len();
    let mut strides = vec![1usize; n];
    for k in (0..n.saturating_sub(1)).rev() {
        strides[k] = strides[k + 1] * count[k + 1];
    }
    let run = bcount[n - 1];
    let rows: usize = bcount[..n - 1].iter().product();
    let mut idx = vec![0usize; n - 1]; // odometer over every dimension but the last
    for _ in 0..rows {
        let mut offset = bstart[n - 1] - start[n - 1];
        for k in 0..n - 1 {
            offset += (bstart[k] + idx[k] - start[k]) * strides[k];
        }
        out.extend(values[offset..offset + run].iter().map(|&x| conv(x)));
        for k in (0..n - 1).rev() {
            idx[k] += 1;
            if idx[k] < bcount[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

impl Writer {
    pub(super) fn create(path: &Path, header: &Dataset, compression: &Compression) -> Result<Self, ExchangeError> {
        let partial = PartialFile::new(path)?;
        let p = partial.partial_path().to_path_buf();
        let mut file = netcdf::create(&p).ctx(&p, "creating the file")?;
        for (k, a) in &header.attrs {
            file.add_attribute(k, attr_to_nc(a)).ctx(&p, format!("writing global attribute `{k}`"))?;
        }
        for d in &header.dims {
            if d.unlimited {
                file.add_unlimited_dimension(&d.name).map(drop)
            } else {
                file.add_dimension(&d.name, d.len).map(drop)
            }
            .ctx(&p, format!("defining dimension `{}`", d.name))?;
        }
        let mut chunks = HashMap::new();
        for var in &header.variables {
            if let Some(chunk) = define(&mut file, &p, header, var, compression)? {
                chunks.insert(var.name.clone(), chunk);
            }
        }
        let dtypes = header.variables.iter().map(|v| (v.name.clone(), v.dtype)).collect();
        Ok(Self { file: Some(file), partial, dtypes, chunks })
    }

    pub(super) fn path(&self) -> &Path {
        self.partial.partial_path()
    }

    pub(super) fn write(
        &mut self,
        name: &str,
        start: &[usize],
        count: &[usize],
        values: &Values,
    ) -> Result<(), ExchangeError> {
        let p = self.path().to_path_buf();
        let dtype = self.dtypes.iter().find(|(n, _)| n == name).map(|(_, d)| *d);
        let file = self.file.as_mut().expect("file open until finish");
        let (Some(dtype), Some(mut var)) = (dtype, file.variable_mut(name)) else {
            return Err(ExchangeError::Layout { path: p, reason: format!("`{name}` was not defined") });
        };
        if values.is_empty() {
            return Ok(());
        }
        let action = || format!("writing `{name}`");
        // A chunked variable is written one chunk-aligned block at a time: each chunk is
        // compressed once, whole, and the converted values of a block (at most one chunk)
        // stay small, where one call for a window of tens of MB would first convert it all
        // into a fresh buffer of that size.
        if let (Values::Num(v), Some(chunk)) = (values, self.chunks.get(name))
            && !start.is_empty()
            && chunk.len() == start.len()
        {
            macro_rules! blocks {
                ($t:ty, $conv:expr) => {{
                    let mut buf: Vec<$t> = Vec::new();
                    for (bs, bc) in chunk_blocks(start, count, chunk) {
                        gather(v, start, count, &bs, &bc, &mut buf, $conv);
                        let e = netcdf::Extents::try_from((bs, bc)).ctx(&p, action())?;
                        var.put_values(&buf, e).ctx(&p, action())?;
                    }
                }};
            }
            match dtype {
                DType::F64 => blocks!(f64, |x| x),
                DType::F32 => blocks!(f32, |x| x as f32),
                DType::I32 => blocks!(i32, |x| x as i32),
                DType::I64 | DType::Str => blocks!(i64, |x| x as i64),
            }
            return Ok(());
        }
        let extents = || netcdf::Extents::try_from((start.to_vec(), count.to_vec())).ctx(&p, action());
        match (values, dtype) {
            (Values::Str(s), _) => {
                for (k, text) in s.iter().enumerate() {
                    var.put_string(text, unravel(k, start, count)).ctx(&p, action())?;
                }
                Ok(())
            }
            (Values::Num(v), _) if start.is_empty() => match dtype {
                DType::F64 => var.put_value(v[0], ()),
                DType::F32 => var.put_value(v[0] as f32, ()),
                DType::I32 => var.put_value(v[0] as i32, ()),
                DType::I64 | DType::Str => var.put_value(v[0] as i64, ()),
            }
            .ctx(&p, action()),
            (Values::Num(v), DType::F64) => var.put_values(v, extents()?).ctx(&p, action()),
            (Values::Num(v), DType::F32) => {
                var.put_values(&v.iter().map(|&x| x as f32).collect::<Vec<_>>(), extents()?).ctx(&p, action())
            }
            (Values::Num(v), DType::I32) => {
                var.put_values(&v.iter().map(|&x| x as i32).collect::<Vec<_>>(), extents()?).ctx(&p, action())
            }
            (Values::Num(v), DType::I64 | DType::Str) => {
                var.put_values(&v.iter().map(|&x| x as i64).collect::<Vec<_>>(), extents()?).ctx(&p, action())
            }
        }
    }

    pub(super) fn close(mut self) -> Result<PartialFile, ExchangeError> {
        let p = self.path().to_path_buf();
        if let Some(file) = self.file.take() {
            file.close().ctx(&p, "closing the file")?;
        }
        Ok(self.partial)
    }
}

#[cfg(test)]
mod tests {
    use super::{chunk_blocks, gather};

    /// Blocks tile the hyperslab exactly, aligned to the chunk grid, and gathering each
    /// block reproduces its values.
    #[test]
    fn blocks_tile_the_slab_on_the_chunk_grid() {
        let (start, count, chunk) = ([1usize, 3, 0], [3usize, 7, 5], [2usize, 4, 5]);
        let blocks = chunk_blocks(&start, &count, &chunk);
        // dim 0: [1,2) [2,4); dim 1: [3,4) [4,8) [8,10); dim 2: [0,5)
        assert_eq!(blocks.len(), 2 * 3);
        assert_eq!(blocks[0], (vec![1, 3, 0], vec![1, 1, 5]));
        assert_eq!(blocks[5], (vec![2, 8, 0], vec![2, 2, 5]));
        let total: usize = blocks.iter().map(|(_, c)| c.iter().product::<usize>()).sum();
        assert_eq!(total, count.iter().product::<usize>());
        // The value at absolute (i, j, k) is 100 i + 10 j + k.
        let mut values = Vec::new();
        for i in 1..4 {
            for j in 3..10 {
                for k in 0..5 {
                    values.push((100 * i + 10 * j + k) as f64);
                }
            }
        }
        let mut out = Vec::new();
        for (bs, bc) in &blocks {
            gather(&values, &start, &count, bs, bc, &mut out, |x| x as i64);
            let mut expect = Vec::new();
            for i in bs[0]..bs[0] + bc[0] {
                for j in bs[1]..bs[1] + bc[1] {
                    for k in bs[2]..bs[2] + bc[2] {
                        expect.push((100 * i + 10 * j + k) as i64);
                    }
                }
            }
            assert_eq!(out, expect, "block {bs:?} {bc:?}");
        }
        assert_eq!(chunk_blocks(&[0], &[10000], &[4096]).len(), 3);
    }
}
