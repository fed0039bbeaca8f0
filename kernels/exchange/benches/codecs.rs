//! Cost of the window codecs: one 64 MiB window of 12-bit ADC samples (1024 records ×
//! 16 000 samples, stored as 32-bit integers, a smooth waveform plus noise, like the
//! ingest benchmark's), written by the exchange layer's dataset writer in each format and
//! codec; the uncompressed write of the same run is the baseline.
//!
//! `cargo bench -p twinflow-exchange --bench codecs` (release build; best of 3 per codec).
#![allow(clippy::print_stdout)] // a benchmark harness reports on stdout

use std::time::Instant;

use twinflow_exchange::{Compression, DType, Dataset, Dim, Values, Variable, write_dataset};

fn window(records: usize, samples: usize) -> Dataset {
    let mut state = 1u64;
    let mut values = Vec::with_capacity(records * samples);
    for r in 0..records {
        for k in 0..samples {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let noise = ((state >> 33) % 61) as f64 - 30.0;
            values.push((2000.0 + 200.0 * ((k + r) as f64 / 50.0).sin() + noise).round());
        }
    }
    Dataset {
        dims: vec![
            Dim { name: "record".into(), len: records, unlimited: true },
            Dim { name: "sample".into(), len: samples, unlimited: false },
        ],
        variables: vec![Variable {
            name: "adc".into(),
            dims: vec!["record".into(), "sample".into()],
            dtype: DType::I32,
            attrs: vec![],
            values: Values::Num(values),
        }],
        attrs: vec![],
    }
}

fn main() {
    let (records, samples) = (1024, 16_000);
    let data = window(records, samples);
    let bytes = (records * samples * 4) as f64;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let codecs = [
        ("NetCDF, none", "nc", Compression { deflate_level: None, ..Compression::default() }),
        ("NetCDF, shuffle + deflate 1", "nc", Compression { deflate_level: Some(1), ..Compression::default() }),
        ("HDF5, none", "h5", Compression { deflate_level: None, ..Compression::default() }),
        ("HDF5, shuffle + deflate 1", "h5", Compression { deflate_level: Some(1), ..Compression::default() }),
        (
            "HDF5, scale-offset",
            "h5",
            Compression { deflate_level: Some(1), scale_offset: true, ..Compression::default() },
        ),
    ];
    println!("one window of {records} × {samples} 32-bit ADC samples ({:.0} MiB), best of 3:", bytes / 1048576.0);
    let mut baseline = f64::NAN;
    for (name, ext, compression) in codecs {
        let path = dir.path().join(format!("w.{ext}"));
        let best = (0..3)
            .map(|_| {
                let t = Instant::now();
                write_dataset(&path, &data, &compression).expect("the window is written");
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        if name == "NetCDF, none" {
            baseline = best;
        }
        let size = std::fs::metadata(&path).expect("the window exists").len() as f64;
        println!(
            "  {name:<28} {best:6.3} s  {:7.1} MB/s  {:5.1}× the uncompressed NetCDF write  ratio {:.2}  ({:.1} s/GB on one core)",
            bytes / best / 1e6,
            best / baseline,
            bytes / size,
            best / bytes * 1e9
        );
    }
}
