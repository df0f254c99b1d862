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

//! The tensor vocabulary every layer speaks: element types (by their Open Inference Protocol
//! names), a model's signature, and tensors as row-major little-endian bytes. A leaf: the
//! backend builds signatures, the gRPC codec checks requests against them, the batcher
//! concatenates and splits tensors.

use std::fmt;

/// A tensor element type, named as the Open Inference Protocol (and Triton) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    /// Strings: the model may use them, but requests for them are refused for now.
    Bytes,
    /// Any other element type of the model (BF16, FP8, ...), never served.
    Unsupported(&'static str),
}

impl DataType {
    /// Every type the sidecar serves, for messages.
    pub const SERVED: [DataType; 12] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
    ];

    /// The protocol's name: "FP32", "INT64", ...
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
            DataType::Unsupported(name) => name,
        }
    }

    /// Parses a protocol name; `None` for names the protocol does not have.
    pub fn parse(name: &str) -> Option<DataType> {
        Self::SERVED
            .into_iter()
            .chain([DataType::Bytes])
            .find(|t| t.name() == name)
    }

    /// Bytes per element, for the types that are served.
    pub fn size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes | DataType::Unsupported(_) => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One input or output of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    /// The model's full shape; -1 for a dimension of any size.
    pub dims: Vec<i64>,
    /// What each column of the last dimension stands for, when the model says (a classifier's
    /// class labels); empty otherwise.
    pub labels: Vec<String>,
}

/// The model's inputs and outputs, and whether requests can be batched along dimension 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// The most rows one execution takes; 0: no batching, each request runs alone with the
    /// model's own shapes.
    pub max_batch_size: u32,
}

impl Signature {
    /// Whether requests are batched.
    pub fn batching(&self) -> bool {
        self.max_batch_size > 0
    }

    /// The dimensions of one row (the model's shape without the batch dimension), as Triton's
    /// model configuration gives them when batching.
    pub fn config_dims(&self, spec: &TensorSpec) -> Vec<i64> {
        if self.batching() {
            spec.dims.iter().skip(1).copied().collect()
        } else {
            spec.dims.clone()
        }
    }

    /// Inputs of zeros with `rows` rows (or the model's own first dimension when it is
    /// fixed); other dynamic dimensions are 1. For warm-up and the bench.
    pub fn zero_inputs(&self, rows: usize) -> Vec<Tensor> {
        self.inputs
            .iter()
            .map(|spec| {
                let shape: Vec<i64> = spec
                    .dims
                    .iter()
                    .enumerate()
                    .map(|(axis, &dim)| match (axis, dim) {
                        (0, -1) => rows as i64,
                        (_, -1) => 1,
                        (_, dim) => dim,
                    })
                    .collect();
                let bytes = element_count(&shape).unwrap_or(0) * spec.datatype.size().unwrap_or(1);
                Tensor {
                    shape,
                    data: vec![0; bytes],
                }
            })
            .collect()
    }
}

/// A tensor as row-major little-endian bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tensor {
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

/// The number of elements of `shape`, or `None` on a negative dimension or overflow.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |count, &dim| {
        usize::try_from(dim).ok().and_then(|d| count.checked_mul(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatypes_round_trip_their_names() {
        for datatype in DataType::SERVED {
            assert_eq!(DataType::parse(datatype.name()), Some(datatype));
            assert!(datatype.size().is_some());
        }
        assert_eq!(DataType::parse("BYTES"), Some(DataType::Bytes));
        assert_eq!(DataType::parse("fp32"), None);
        assert_eq!(DataType::Bytes.size(), None);
    }

    #[test]
    fn element_counts() {
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[2, -1]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }

    #[test]
    fn config_dims_drop_the_batch_dimension_only_when_batching() {
        let spec = TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            dims: vec![-1, 4],
            labels: Vec::new(),
        };
        let mut signature = Signature {
            inputs: vec![spec.clone()],
            outputs: vec![],
            max_batch_size: 8,
        };
        assert_eq!(signature.config_dims(&spec), vec![4]);
        signature.max_batch_size = 0;
        assert_eq!(signature.config_dims(&spec), vec![-1, 4]);
    }
}
