// Copyright 2026 The gpu-sidecar Authors
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Finds at warm-up, on the GPU-owner thread, whether requests of token sequences of
//! different lengths can share an execution ([`Padding`]). Exporters do not name output
//! dimensions consistently, so the model is run instead: once on one row of 3 positions,
//! once on that row padded to 5 beside a row of 5. The output axes that went from 3 to 5
//! follow the length; if the padded row's outputs, cut back to 3, equal the lone row's, the
//! model pads: every caller gets what it would have got alone.

use crate::backend::Session;
use crate::tensor::{cut_axis, row_offsets, DataType, Padding, Signature, Tensor};

const SHORT: usize = 3;
const LONG: usize = 5;
/// How close a padded row's outputs must be to the lone row's (as numpy's `allclose`).
const RELATIVE_TOLERANCE: f64 = 1e-3;
const ABSOLUTE_TOLERANCE: f64 = 1e-4;

/// The padding of a model whose every input is integer `[-1, -1, ...]` (token ids, masks,
/// token types), if padding leaves each row's outputs unchanged; `pad_id` pads the input
/// named `input_ids`, 0 the others. `Err` says why a model of sequences cannot pad.
pub fn padding(
    session: &mut dyn Session,
    signature: &Signature,
    pad_id: i64,
) -> Result<Option<Padding>, String> {
    let is_sequence = |dims: &[i64], datatype: DataType| {
        dims.len() >= 2 && dims[0] == -1 && dims[1] == -1 && is_integer(datatype)
    };
    if !signature.batching()
        || signature.inputs.is_empty()
        || !signature
            .inputs
            .iter()
            .all(|spec| is_sequence(&spec.dims, spec.datatype))
    {
        return Ok(None);
    }
    let pads: Vec<i64> = signature
        .inputs
        .iter()
        .map(|spec| if spec.name == "input_ids" { pad_id } else { 0 })
        .collect();
    // Every position a token: 1 in the ids and the mask, 0 in token types (a model may have
    // one type only, as RoBERTa's).
    let token = |spec: &crate::tensor::TensorSpec| i64::from(!spec.name.contains("type"));
    let lone: Vec<Tensor> = signature
        .inputs
        .iter()
        .zip(signature.filled_inputs(1, SHORT, 0))
        .map(|(spec, zeros)| filled(spec.datatype, zeros.shape, token(spec)))
        .collect();
    let padded: Vec<Tensor> = signature
        .inputs
        .iter()
        .zip(&pads)
        .zip(signature.filled_inputs(2, LONG, 0))
        .map(|((spec, &pad), zeros)| {
            let shape = zeros.shape;
            let one = spec.datatype.encode_integer(token(spec));
            let pad = spec.datatype.encode_integer(pad);
            let per_position: usize = shape[2..].iter().map(|&d| d as usize).product();
            let mut data = Vec::new();
            for position in 0..LONG {
                let value = if position < SHORT { &one } else { &pad };
                for _ in 0..per_position {
                    data.extend_from_slice(value);
                }
            }
            for _ in 0..LONG * per_position {
                data.extend_from_slice(&one);
            }
            Tensor { shape, data }
        })
        .collect();
    let alone = session
        .run(lone)
        .map_err(|e| format!("cannot run one row of {SHORT} positions: {e}"))?;
    let together = session.run(padded).map_err(|e| {
        format!("cannot run a row of {SHORT} positions padded to {LONG} beside one of {LONG}: {e}")
    })?;
    let mut axes = Vec::with_capacity(signature.outputs.len());
    for ((spec, alone), together) in signature.outputs.iter().zip(&alone).zip(&together) {
        let name = &spec.name;
        if spec.datatype.size().is_none() {
            return Err(format!("output {name:?} is {}", spec.datatype));
        }
        let (a, b) = (&alone.shape, &together.shape);
        if a.len() != b.len() || a.first() != Some(&1) || b.first() != Some(&2) {
            return Err(format!(
                "output {name:?} has the shape {a:?} for one row and {b:?} for two"
            ));
        }
        let mut axis = None;
        for d in 1..a.len() {
            match (a[d] as usize, b[d] as usize) {
                (SHORT, LONG) if axis.is_none() => axis = Some(d),
                (x, y) if x == y => {}
                _ => {
                    return Err(format!(
                        "output {name:?} has the shape {a:?} for {SHORT} positions and {b:?} for {LONG}"
                    ))
                }
            }
        }
        let rows = row_offsets(spec.datatype, b, &together.data, 2)
            .ok_or_else(|| format!("output {name:?} does not hold 2 rows"))?;
        let mut first_shape = b.clone();
        first_shape[0] = 1;
        let first_row = &together.data[rows[0]..rows[1]];
        let first = match axis {
            Some(axis) => cut_axis(&first_shape, first_row, axis, SHORT),
            None => Tensor {
                shape: first_shape,
                data: first_row.to_vec(),
            },
        };
        if let Some(at) = difference(spec.datatype, &alone.data, &first.data) {
            return Err(format!(
                "padding changes output {name:?} (element {at} differs from the row run alone)"
            ));
        }
        axes.push(axis);
    }
    Ok(Some(Padding {
        inputs: pads.into_iter().map(Some).collect(),
        outputs: axes,
    }))
}

/// A tensor of `shape` whose every element is `value`.
fn filled(datatype: DataType, shape: Vec<i64>, value: i64) -> Tensor {
    let count: usize = shape.iter().map(|&d| d.max(0) as usize).product();
    let element = datatype.encode_integer(value);
    Tensor {
        data: element.repeat(count),
        shape,
    }
}

fn is_integer(datatype: DataType) -> bool {
    matches!(
        datatype,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64
    )
}

/// The first element at which `a` and `b` (of `datatype`) differ beyond the tolerance.
fn difference(datatype: DataType, a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(0);
    }
    let close = |x: f64, y: f64| (x - y).abs() <= ABSOLUTE_TOLERANCE + RELATIVE_TOLERANCE * y.abs();
    let floats: Option<(Vec<f64>, Vec<f64>)> = match datatype {
        DataType::Fp32 => Some((
            bytemuck::pod_collect_to_vec::<u8, f32>(a)
                .into_iter()
                .map(f64::from)
                .collect(),
            bytemuck::pod_collect_to_vec::<u8, f32>(b)
                .into_iter()
                .map(f64::from)
                .collect(),
        )),
        DataType::Fp64 => Some((
            bytemuck::pod_collect_to_vec::<u8, f64>(a),
            bytemuck::pod_collect_to_vec::<u8, f64>(b),
        )),
        DataType::Fp16 => Some((
            bytemuck::pod_collect_to_vec::<u8, half::f16>(a)
                .into_iter()
                .map(f64::from)
                .collect(),
            bytemuck::pod_collect_to_vec::<u8, half::f16>(b)
                .into_iter()
                .map(f64::from)
                .collect(),
        )),
        _ => None,
    };
    match floats {
        Some((a, b)) => a.iter().zip(&b).position(|(&x, &y)| !close(x, y)),
        None => {
            let size = datatype.size().unwrap_or(1);
            a.chunks(size).zip(b.chunks(size)).position(|(x, y)| x != y)
        }
    }
}
