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
    /// Strings (ONNX string tensors, UTF-8), as the protocol's raw form carries them: each
    /// element a 4-byte little-endian length, then its bytes.
    Bytes,
    /// Any other element type of the model (BF16, FP8, ...), never served.
    Unsupported(&'static str),
}

impl DataType {
    /// Every type the sidecar serves, for messages.
    pub const SERVED: [DataType; 13] = [
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
        DataType::Bytes,
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
        Self::SERVED.into_iter().find(|t| t.name() == name)
    }

    /// Whether tensors of this type are served.
    pub fn is_served(self) -> bool {
        !matches!(self, DataType::Unsupported(_))
    }

    /// `value` as one little-endian element of this type (BYTES: an empty element); for
    /// filling and padding integer inputs such as token ids.
    pub fn encode_integer(self, value: i64) -> Vec<u8> {
        match self {
            DataType::Bool => vec![u8::from(value != 0)],
            DataType::Uint8 | DataType::Int8 => vec![value as u8],
            DataType::Uint16 | DataType::Int16 => (value as u16).to_le_bytes().to_vec(),
            DataType::Uint32 | DataType::Int32 => (value as u32).to_le_bytes().to_vec(),
            DataType::Uint64 | DataType::Int64 => value.to_le_bytes().to_vec(),
            DataType::Fp16 => half::f16::from_f64(value as f64).to_le_bytes().to_vec(),
            DataType::Fp32 => (value as f32).to_le_bytes().to_vec(),
            DataType::Fp64 => (value as f64).to_le_bytes().to_vec(),
            DataType::Bytes => vec![0; BYTES_LENGTH_PREFIX],
            DataType::Unsupported(_) => Vec::new(),
        }
    }

    /// Bytes per element, for the types of a fixed size (all served types but BYTES).
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

impl TensorSpec {
    /// Its shape with `rows` rows and every other dimension of any size `length`.
    pub fn filled_shape(&self, rows: usize, length: usize) -> Vec<i64> {
        self.dims
            .iter()
            .enumerate()
            .map(|(axis, &dim)| match (axis, dim) {
                (0, -1) => rows as i64,
                (_, -1) => length as i64,
                (_, dim) => dim,
            })
            .collect()
    }
}

/// The model's inputs and outputs, and whether requests can be batched along dimension 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// The most rows one execution takes; 0: no batching, each request runs alone with the
    /// model's own shapes.
    pub max_batch_size: u32,
    /// How requests of different lengths share an execution, when they can.
    pub padding: Option<Padding>,
    /// The most positions (tokens) a row may have, when the model says (the rows of its
    /// position embeddings).
    pub max_positions: Option<usize>,
}

/// How requests of different sequence lengths (axis 1 of some inputs: token ids, attention
/// mask, token types) run in one execution: those inputs are padded to the longest in the
/// batch, and the outputs whose size follows the length are cut back to each request's own.
/// Found at warm-up, where padding was seen to leave each row's outputs unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Padding {
    /// Per model input: the value it is padded with along axis 1, if it has a sequence axis.
    pub inputs: Vec<Option<i64>>,
    /// Per model output: the axis whose size is the sequence length, if any.
    pub outputs: Vec<Option<usize>>,
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
        self.filled_inputs(rows, 1, 0)
    }

    /// Inputs of `rows` rows whose other dynamic dimensions are `length`, every element
    /// `value` (integer inputs), 1 (floating point) or `"0"` (BYTES).
    pub fn filled_inputs(&self, rows: usize, length: usize, value: i64) -> Vec<Tensor> {
        self.inputs
            .iter()
            .map(|spec| {
                let shape = spec.filled_shape(rows, length);
                let count = element_count(&shape).unwrap_or(0);
                let data = if spec.datatype == DataType::Bytes {
                    // "0" each: a string a model that parses its strings as numbers accepts.
                    (0..count).flat_map(|_| [1, 0, 0, 0, b'0']).collect()
                } else if value == 0 {
                    vec![0; count * spec.datatype.size().unwrap_or(0)]
                } else {
                    (0..count)
                        .flat_map(|_| spec.datatype.encode_integer(value))
                        .collect()
                };
                Tensor { shape, data }
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

/// A tensor with its name and element type: what the protocol carries, and what the codec and
/// the model hand each other (a request's inputs, an answer's outputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedTensor {
    pub name: String,
    pub datatype: DataType,
    pub tensor: Tensor,
}

/// The length prefix of each element of a BYTES tensor's raw form.
pub const BYTES_LENGTH_PREFIX: usize = 4;

/// Why raw BYTES contents cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BytesError {
    /// Fewer than 4 bytes are left where an element's length should be.
    #[error("element {index}'s 4-byte length prefix runs past the end of the contents")]
    TruncatedPrefix { index: usize },
    /// An element's length runs past the end.
    #[error("element {index} is {length} bytes long, past the end of the contents")]
    TruncatedElement { index: usize, length: usize },
}

/// The elements of a BYTES tensor's raw form.
pub fn bytes_elements(mut data: &[u8]) -> Result<Vec<&[u8]>, BytesError> {
    let mut elements = Vec::new();
    while !data.is_empty() {
        let index = elements.len();
        let Some(prefix) = data.get(..BYTES_LENGTH_PREFIX) else {
            return Err(BytesError::TruncatedPrefix { index });
        };
        let length = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
        let rest = &data[BYTES_LENGTH_PREFIX..];
        let Some(element) = rest.get(..length) else {
            return Err(BytesError::TruncatedElement { index, length });
        };
        elements.push(element);
        data = &rest[length..];
    }
    Ok(elements)
}

/// The raw form of BYTES elements: each a 4-byte little-endian length, then its bytes.
pub fn encode_bytes_elements<E: AsRef<[u8]>>(elements: impl IntoIterator<Item = E>) -> Vec<u8> {
    let mut data = Vec::new();
    for element in elements {
        let element = element.as_ref();
        data.extend_from_slice(&(element.len() as u32).to_le_bytes());
        data.extend_from_slice(element);
    }
    data
}

/// The byte offset at which each row starts in a tensor's data, and its end: `rows + 1`
/// offsets. Rows of a fixed-size type are equal slices; BYTES rows are found by walking the
/// length prefixes. `None` if the data does not hold `rows` rows of `shape` (whose first
/// dimension is the rows).
pub fn row_offsets(
    datatype: DataType,
    shape: &[i64],
    data: &[u8],
    rows: usize,
) -> Option<Vec<usize>> {
    if rows == 0 || shape.first() != Some(&(rows as i64)) {
        return None;
    }
    match datatype.size() {
        Some(_) => {
            if !data.len().is_multiple_of(rows) {
                return None;
            }
            let row = data.len() / rows;
            Some((0..=rows).map(|r| r * row).collect())
        }
        None => {
            let per_row = element_count(&shape[1..])?;
            let mut offsets = vec![0];
            let mut at = 0;
            for _ in 0..rows {
                for _ in 0..per_row {
                    let prefix = data.get(at..at + BYTES_LENGTH_PREFIX)?;
                    let length = u32::from_le_bytes(prefix.try_into().ok()?) as usize;
                    at += BYTES_LENGTH_PREFIX + length;
                }
                offsets.push(at);
            }
            (at == data.len()).then_some(offsets)
        }
    }
}

/// `data`, a tensor of `shape` of a fixed-size type, with axis `axis` cut to its first
/// `length` positions (for outputs that follow a padded sequence length).
pub fn cut_axis(shape: &[i64], data: &[u8], axis: usize, length: usize) -> Tensor {
    let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let outer: usize = dims[..axis].iter().product();
    let elements: usize = dims.iter().product();
    let element = data.len().checked_div(elements).unwrap_or(0);
    let inner: usize = dims[axis + 1..].iter().product::<usize>() * element;
    let full = dims[axis] * inner;
    let length = length.min(dims[axis]);
    let mut cut = Vec::with_capacity(outer * length * inner);
    for block in data.chunks_exact(full.max(1)).take(outer) {
        cut.extend_from_slice(&block[..length * inner]);
    }
    let mut shape = shape.to_vec();
    shape[axis] = length as i64;
    Tensor { shape, data: cut }
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
            assert!(datatype.is_served());
            assert_eq!(datatype.size().is_none(), datatype == DataType::Bytes);
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
            ..Default::default()
        };
        assert_eq!(signature.config_dims(&spec), vec![4]);
        signature.max_batch_size = 0;
        assert_eq!(signature.config_dims(&spec), vec![-1, 4]);
    }

    #[test]
    fn bytes_elements_round_trip_and_bad_ones_are_named() {
        let data = encode_bytes_elements(["web", "", "pos"]);
        assert_eq!(bytes_elements(&data).unwrap(), [&b"web"[..], b"", b"pos"]);
        assert_eq!(
            bytes_elements(&data[..data.len() - 1]),
            Err(BytesError::TruncatedElement {
                index: 2,
                length: 3
            })
        );
        assert_eq!(
            bytes_elements(&data[..12]),
            Err(BytesError::TruncatedPrefix { index: 2 })
        );
        // Rows of variable length: two rows of two elements.
        let rows = encode_bytes_elements(["a", "bb", "ccc", ""]);
        assert_eq!(
            row_offsets(DataType::Bytes, &[2, 2], &rows, 2),
            Some(vec![0, 11, 22])
        );
        assert_eq!(row_offsets(DataType::Bytes, &[2, 3], &rows, 2), None);
        assert_eq!(
            row_offsets(DataType::Fp32, &[2, 1], &[0; 8], 2),
            Some(vec![0, 4, 8])
        );
    }
}
