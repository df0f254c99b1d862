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

//! Triton's classification extension, on the completion-queue threads: a requested output
//! asked for with the parameter `classification` = k (the codec reads it) is answered,
//! instead of its scores, with the top min(k, C) classes of each row as a BYTES tensor
//! `[rows, min(k, C)]`, highest first, each element `"<score>:<column>"`, or
//! `"<score>:<column>:<label>"` when the model names its classes; the score written as
//! Triton writes it (`std::to_string`: 6 decimals for floats).

use super::request::RequestError;
use crate::tensor::{DataType, Tensor, TensorSpec};

/// Checks that output `spec` can be answered with its top classes: one vector of numeric
/// scores per row. Fails naming the output and its shape.
pub fn check(spec: &TensorSpec, batching: bool) -> Result<(), RequestError> {
    let row_dims = if batching {
        &spec.dims[1.min(spec.dims.len())..]
    } else {
        &spec.dims[..]
    };
    let numeric = spec.datatype.size().is_some() && spec.datatype != DataType::Bool;
    if !numeric || row_dims.len() != 1 {
        return Err(RequestError::Invalid(format!(
            "output {:?} is {} {:?}: classification needs one vector of scores per row",
            spec.name, spec.datatype, spec.dims
        )));
    }
    Ok(())
}

/// The top `count` classes of each row of `tensor` (the scores of output `spec`), as the BYTES
/// tensor the extension answers with, its elements length-prefixed as `raw_output_contents`
/// carries them.
pub fn top_classes(spec: &TensorSpec, tensor: &Tensor, count: usize) -> Tensor {
    let scores = values(spec.datatype, &tensor.data);
    let classes = tensor.shape.last().copied().unwrap_or(0).max(0) as usize;
    let rows = scores.len().checked_div(classes).unwrap_or(0);
    let kept = count.min(classes);
    let mut data = Vec::new();
    for row in scores.chunks(classes.max(1)).take(rows) {
        let mut order: Vec<usize> = (0..classes).collect();
        // Highest first; equal scores keep the lower column first.
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        for &column in &order[..kept] {
            let mut element = match spec.datatype {
                DataType::Fp16 | DataType::Fp32 | DataType::Fp64 => format!("{:.6}", row[column]),
                _ => format!("{}", row[column] as i64),
            };
            element.push_str(&format!(":{column}"));
            if let Some(label) = spec.labels.get(column) {
                element.push(':');
                element.push_str(label);
            }
            data.extend_from_slice(&(element.len() as u32).to_le_bytes());
            data.extend_from_slice(element.as_bytes());
        }
    }
    let mut shape = tensor.shape.clone();
    if let Some(last) = shape.last_mut() {
        *last = kept as i64;
    }
    Tensor { shape, data }
}

/// The values of little-endian `data` of a numeric `datatype`, as f64.
fn values(datatype: DataType, data: &[u8]) -> Vec<f64> {
    macro_rules! read {
        ($t:ty) => {
            data.chunks_exact(std::mem::size_of::<$t>())
                .map(|bytes| <$t>::from_le_bytes(bytes.try_into().expect("element size")) as f64)
                .collect()
        };
    }
    match datatype {
        DataType::Uint8 => read!(u8),
        DataType::Int8 => read!(i8),
        DataType::Uint16 => read!(u16),
        DataType::Int16 => read!(i16),
        DataType::Uint32 => read!(u32),
        DataType::Int32 => read!(i32),
        DataType::Uint64 => read!(u64),
        DataType::Int64 => read!(i64),
        DataType::Fp16 => data
            .chunks_exact(2)
            .map(|bytes| half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f64())
            .collect(),
        DataType::Fp32 => read!(f32),
        DataType::Fp64 => read!(f64),
        DataType::Bool | DataType::Bytes | DataType::Unsupported(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(tensor: &Tensor) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = &tensor.data[..];
        while rest.len() >= 4 {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            out.push(String::from_utf8(rest[4..4 + len].to_vec()).unwrap());
            rest = &rest[4 + len..];
        }
        out
    }

    #[test]
    fn top_classes_are_written_as_triton_writes_them() {
        let spec = TensorSpec {
            name: "p".into(),
            datatype: DataType::Fp32,
            dims: vec![-1, 3],
            labels: vec!["setosa".into(), "versicolor".into(), "virginica".into()],
        };
        let scores: [f32; 6] = [0.1, 0.7, 0.2, 0.25, 0.25, 0.5];
        let tensor = Tensor {
            shape: vec![2, 3],
            data: bytemuck::cast_slice(&scores).to_vec(),
        };
        let top = top_classes(&spec, &tensor, 2);
        assert_eq!(top.shape, [2, 2]);
        assert_eq!(
            strings(&top),
            [
                "0.700000:1:versicolor",
                "0.200000:2:virginica",
                "0.500000:2:virginica",
                "0.250000:0:setosa"
            ]
        );
        // More classes asked for than there are: all of them; no labels: none written.
        let unlabelled = TensorSpec {
            labels: Vec::new(),
            ..spec
        };
        let all = top_classes(&unlabelled, &tensor, 5);
        assert_eq!(all.shape, [2, 3]);
        assert_eq!(
            strings(&all)[..3],
            ["0.700000:1", "0.200000:2", "0.100000:0"]
        );
    }
}
