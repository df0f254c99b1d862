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

//! A model's warm-up inputs (its `warmup` key), made on the loader's thread before a version
//! takes requests: zeros (strings `"0"`, which a model that parses its strings as numbers
//! accepts), random values, or sample data read from a file per input: an `.npy` file (its
//! header gives the type and shape), or raw bytes as Triton's `input_data_file`.

use std::path::{Path, PathBuf};

use crate::config::Warmup;
use crate::tensor::{bytes_elements, element_count, DataType, Signature, Tensor, TensorSpec};

/// Why a model's warm-up inputs could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WarmupError {
    /// A warm-up file could not be read, or does not fit its input.
    #[error("warm-up file {} for input {input:?}: {reason}", path.display())]
    File {
        input: String,
        path: PathBuf,
        reason: String,
    },
    /// `warmup` names an input the model does not have.
    #[error(
        "warmup names input {input:?}, which the model does not have: its inputs are {inputs}"
    )]
    UnknownInput { input: String, inputs: String },
    /// The files give the inputs different numbers of rows.
    #[error("the warm-up files give input {first:?} {rows} row(s) and input {other:?} {other_rows}: give every input the same first dimension")]
    Rows {
        first: String,
        rows: i64,
        other: String,
        other_rows: i64,
    },
}

/// The inputs of `signature`'s warm-up execution, as `warmup` says.
pub fn inputs(signature: &Signature, warmup: &Warmup) -> Result<Vec<Tensor>, WarmupError> {
    match warmup {
        Warmup::Zeros => Ok(filled(signature, 1, |spec, count| {
            zeros(spec.datatype, count)
        })),
        Warmup::Random => Ok(filled(signature, 1, |spec, count| {
            random(spec.datatype, count)
        })),
        Warmup::Files(files) => {
            if let Some(input) = files
                .keys()
                .find(|input| !signature.inputs.iter().any(|spec| &spec.name == *input))
            {
                let inputs: Vec<String> = signature
                    .inputs
                    .iter()
                    .map(|s| format!("{:?}", s.name))
                    .collect();
                return Err(WarmupError::UnknownInput {
                    input: input.clone(),
                    inputs: inputs.join(", "),
                });
            }
            let mut read = Vec::new();
            for spec in &signature.inputs {
                if let Some(path) = files.get(&spec.name) {
                    let tensor =
                        from_file(signature, spec, path).map_err(|reason| WarmupError::File {
                            input: spec.name.clone(),
                            path: path.clone(),
                            reason,
                        })?;
                    read.push((spec.name.clone(), tensor));
                }
            }
            let rows = if signature.batching() {
                let mut rows = None;
                for (name, tensor) in &read {
                    match rows {
                        Some((first, count)) if count != tensor.shape[0] => {
                            return Err(WarmupError::Rows {
                                first: String::clone(first),
                                rows: count,
                                other: name.clone(),
                                other_rows: tensor.shape[0],
                            })
                        }
                        Some(_) => {}
                        None => rows = Some((name, tensor.shape[0])),
                    }
                }
                rows.map_or(1, |(_, count)| count as usize)
            } else {
                1
            };
            let mut zeros_for_the_rest =
                filled(signature, rows, |spec, count| zeros(spec.datatype, count)).into_iter();
            Ok(signature
                .inputs
                .iter()
                .map(|spec| {
                    let zero = zeros_for_the_rest.next().expect("one per input");
                    read.iter()
                        .position(|(name, _)| *name == spec.name)
                        .map_or(zero, |at| read[at].1.clone())
                })
                .collect())
        }
    }
}

/// One tensor per input of `rows` rows (other dynamic dimensions 1), its data from `data`
/// (the spec and the element count).
fn filled(
    signature: &Signature,
    rows: usize,
    data: impl Fn(&TensorSpec, usize) -> Vec<u8>,
) -> Vec<Tensor> {
    signature
        .inputs
        .iter()
        .map(|spec| {
            let shape = spec.filled_shape(rows, 1);
            let count = element_count(&shape).unwrap_or(0);
            Tensor {
                data: data(spec, count),
                shape,
            }
        })
        .collect()
}

/// `count` zeros of `datatype`; strings `"0"`.
fn zeros(datatype: DataType, count: usize) -> Vec<u8> {
    match datatype {
        DataType::Bytes => (0..count).flat_map(|_| string_element(b"0")).collect(),
        other => vec![0; count * other.size().unwrap_or(0)],
    }
}

/// `count` random elements of `datatype`: integers 0 to 9, floats 0 to 1, booleans, strings
/// of a random digit.
fn random(datatype: DataType, count: usize) -> Vec<u8> {
    (0..count)
        .flat_map(|_| match datatype {
            DataType::Fp16 => half::f16::from_f32(fastrand::f32()).to_le_bytes().to_vec(),
            DataType::Fp32 => fastrand::f32().to_le_bytes().to_vec(),
            DataType::Fp64 => fastrand::f64().to_le_bytes().to_vec(),
            DataType::Bytes => string_element(&[b'0' + fastrand::u8(0..10)]),
            DataType::Bool => vec![u8::from(fastrand::bool())],
            other => other.encode_integer(fastrand::i64(0..10)),
        })
        .collect()
}

/// One BYTES element as the protocol's raw form carries it: its length, then its bytes.
fn string_element(bytes: &[u8]) -> Vec<u8> {
    let mut element = (bytes.len() as u32).to_le_bytes().to_vec();
    element.extend_from_slice(bytes);
    element
}

/// Reads the warm-up data of input `spec` from `path`: an `.npy` file, or raw bytes.
fn from_file(signature: &Signature, spec: &TensorSpec, path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
    let tensor = if bytes.starts_with(NPY_MAGIC) {
        npy(spec, &bytes)?
    } else {
        raw(spec, bytes)?
    };
    let fits = tensor.shape.len() == spec.dims.len()
        && tensor
            .shape
            .iter()
            .zip(&spec.dims)
            .enumerate()
            .all(|(axis, (&dim, &model))| {
                dim >= 1
                    && (model == -1 || dim == model)
                    && !(signature.batching()
                        && axis == 0
                        && dim > i64::from(signature.max_batch_size))
            });
    if !fits {
        return Err(format!(
            "its shape {:?} does not fit the input's {:?} (-1: any size, the first at most max-batch-size)",
            tensor.shape, spec.dims
        ));
    }
    Ok(tensor)
}

/// The first bytes of every `.npy` file.
const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// An `.npy` file's tensor: little-endian numbers of the input's type in C order, or for a
/// BYTES input fixed-width bytes (`S`) or unicode (`U`) strings.
fn npy(spec: &TensorSpec, bytes: &[u8]) -> Result<Tensor, String> {
    // Version 1 has a 2-byte header length, versions 2 and 3 a 4-byte one; a file cut short
    // anywhere is refused below, never indexed past its end.
    let length_bytes = match bytes.get(6) {
        Some(1) => 2,
        Some(2 | 3) => 4,
        _ => 0,
    };
    let (header, data) = match bytes.get(8..8 + length_bytes) {
        Some(field) if length_bytes > 0 => {
            let mut length = [0u8; 4];
            length[..field.len()].copy_from_slice(field);
            let start = 8 + length_bytes;
            let end = start.saturating_add(u32::from_le_bytes(length) as usize);
            (bytes.get(start..end), bytes.get(end..))
        }
        _ => (None, None),
    };
    let (Some(header), Some(data)) = (header, data) else {
        return Err("is not an .npy file numpy can write (its header is cut short)".to_string());
    };
    let header = String::from_utf8_lossy(header);
    let field = |key: &str| {
        let start = header.find(&format!("'{key}':"))? + key.len() + 3;
        Some(header[start..].trim_start())
    };
    let descr = field("descr")
        .and_then(|rest| rest.strip_prefix('\'')?.split('\'').next())
        .ok_or("has no 'descr' in its header")?;
    if field("fortran_order").is_some_and(|rest| rest.starts_with("True")) {
        return Err(
            "is in Fortran order: save it with np.save of a C-ordered array (np.ascontiguousarray)"
                .to_string(),
        );
    }
    let shape: Vec<i64> = field("shape")
        .and_then(|rest| rest.strip_prefix('(')?.split(')').next())
        .ok_or("has no 'shape' in its header")?
        .split(',')
        .map(str::trim)
        .filter(|dim| !dim.is_empty())
        .map(|dim| {
            dim.parse::<i64>()
                .map_err(|_| format!("has shape dimension {dim:?}"))
        })
        .collect::<Result<_, _>>()?;
    let count = element_count(&shape).ok_or("has a shape too large")?;
    if spec.datatype == DataType::Bytes {
        return npy_strings(descr, shape, count, data);
    }
    let datatype = match descr.trim_start_matches(['<', '|', '=']) {
        "b1" => DataType::Bool,
        "u1" => DataType::Uint8,
        "i1" => DataType::Int8,
        "u2" => DataType::Uint16,
        "i2" => DataType::Int16,
        "u4" => DataType::Uint32,
        "i4" => DataType::Int32,
        "u8" => DataType::Uint64,
        "i8" => DataType::Int64,
        "f2" => DataType::Fp16,
        "f4" => DataType::Fp32,
        "f8" => DataType::Fp64,
        _ => DataType::Unsupported("other"),
    };
    if descr.starts_with('>') || datatype != spec.datatype {
        return Err(format!(
            "holds {descr:?}, not the input's {} (little-endian): save it with dtype matching the input",
            spec.datatype
        ));
    }
    let expected = count
        .checked_mul(datatype.size().unwrap_or(0))
        .ok_or("has a shape too large")?;
    let data = data.get(..expected).ok_or_else(|| {
        format!(
            "holds {} bytes of data, not the {expected} its shape {shape:?} needs",
            data.len()
        )
    })?;
    Ok(Tensor {
        shape,
        data: data.to_vec(),
    })
}

/// An `.npy` file of strings: fixed-width bytes (`|S8`) or unicode (`<U8`), as BYTES elements.
fn npy_strings(descr: &str, shape: Vec<i64>, count: usize, data: &[u8]) -> Result<Tensor, String> {
    let kind = descr.trim_start_matches(['<', '|', '=']);
    let (unicode, width) = match (kind.get(..1), kind.get(1..).and_then(|w| w.parse::<usize>().ok())) {
        (Some("S"), Some(width)) => (false, width),
        (Some("U"), Some(width)) if !descr.starts_with('>') => (true, width * 4),
        _ => {
            return Err(format!(
                "holds {descr:?}: for a BYTES input save fixed-width strings (np.array(texts, dtype='S') or dtype='U'); object arrays are pickled and not read"
            ))
        }
    };
    let needed = count.checked_mul(width).ok_or("has a shape too large")?;
    let data = data.get(..needed).ok_or_else(|| {
        format!(
            "holds {} bytes of data, not the {needed} its shape {shape:?} needs",
            data.len()
        )
    })?;
    let mut out = Vec::new();
    for element in data.chunks(width.max(1)).take(count) {
        let text: Vec<u8> = if unicode {
            let chars: String = element
                .chunks(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .take_while(|&c| c != 0)
                .map(|c| char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect();
            chars.into_bytes()
        } else {
            let end = element.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
            element[..end].to_vec()
        };
        out.extend(string_element(&text));
    }
    Ok(Tensor { shape, data: out })
}

/// Raw bytes, as Triton's `input_data_file`: the input's elements back to back (BYTES: each
/// a 4-byte little-endian length, then its bytes); the shape is the input's, its first
/// dimension from the length where it is of any size.
fn raw(spec: &TensorSpec, bytes: Vec<u8>) -> Result<Tensor, String> {
    if spec.dims.iter().skip(1).any(|&dim| dim == -1) {
        return Err(format!(
            "is raw bytes, but input {:?} has dimensions of any size past the first ({:?}): give an .npy file, which carries the shape",
            spec.name, spec.dims
        ));
    }
    let per_row = element_count(spec.dims.get(1..).unwrap_or_default()).unwrap_or(0);
    let elements = match spec.datatype.size() {
        Some(size) => {
            if !bytes.len().is_multiple_of(size) {
                return Err(format!(
                    "holds {} bytes, not whole {} elements of {size} bytes",
                    bytes.len(),
                    spec.datatype
                ));
            }
            bytes.len() / size
        }
        None => bytes_elements(&bytes)
            .map_err(|e| format!("is not BYTES elements (a 4-byte length, then the bytes): {e}"))?
            .len(),
    };
    let shape: Vec<i64> = match spec.dims.first() {
        Some(-1) if per_row > 0 && elements.is_multiple_of(per_row) => {
            std::iter::once((elements / per_row) as i64)
                .chain(spec.dims[1..].iter().copied())
                .collect()
        }
        _ => spec.dims.clone(),
    };
    if element_count(&shape) != Some(elements) {
        return Err(format!(
            "holds {elements} element(s), which do not fill the input's shape {:?}",
            spec.dims
        ));
    }
    Ok(Tensor { shape, data: bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(datatype: DataType, dims: &[i64]) -> TensorSpec {
        TensorSpec {
            name: "x".into(),
            datatype,
            dims: dims.to_vec(),
            labels: Vec::new(),
        }
    }

    /// An `.npy` file of `descr` and `shape` holding `data`, as numpy 1.0 format writes it.
    fn npy_file(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({shape}), }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut file = NPY_MAGIC.to_vec();
        file.extend([1, 0]);
        file.extend((header.len() as u16).to_le_bytes());
        file.extend(header.as_bytes());
        file.extend(data);
        file
    }

    #[test]
    fn an_npy_file_cut_short_anywhere_is_refused_without_a_panic() {
        let whole = npy_file("<f4", "2,", &[0; 8]);
        let version_2 = {
            let mut file = whole.clone();
            file[6] = 2;
            file
        };
        for file in [&whole, &version_2] {
            for end in 0..file.len() {
                let refused = npy(&spec(DataType::Fp32, &[-1]), &file[..end]);
                assert!(refused.is_err(), "{end} bytes of {}", file.len());
            }
        }
        npy(&spec(DataType::Fp32, &[-1]), &whole).unwrap();
        let huge = npy_file("<f4", "4611686018427387904,", &[]);
        assert!(npy(&spec(DataType::Fp32, &[-1]), &huge).is_err());
    }

    #[test]
    fn strings_come_from_fixed_width_npy_and_from_raw_elements() {
        let unicode: Vec<u8> = ["7", "42"]
            .iter()
            .flat_map(|s| {
                let mut chars: Vec<u8> = s.chars().flat_map(|c| (c as u32).to_le_bytes()).collect();
                chars.resize(8, 0);
                chars
            })
            .collect();
        let tensor = npy(
            &spec(DataType::Bytes, &[-1]),
            &npy_file("<U2", "2,", &unicode),
        )
        .unwrap();
        assert_eq!(tensor.shape, [2]);
        assert_eq!(
            tensor.data,
            [string_element(b"7"), string_element(b"42")].concat()
        );
        let raw_strings = [string_element(b"1"), string_element(b"")].concat();
        let tensor = raw(&spec(DataType::Bytes, &[-1, 1]), raw_strings.clone()).unwrap();
        assert_eq!((tensor.shape, tensor.data), (vec![2, 1], raw_strings));
        let error = npy(&spec(DataType::Bytes, &[-1]), &npy_file("|O", "2,", &[])).unwrap_err();
        assert!(error.contains("object arrays are pickled"), "{error}");
    }

    #[test]
    fn numbers_must_be_of_the_inputs_type_and_fill_its_shape() {
        let four: Vec<u8> = [1i32, 2, 3, 4]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let tensor = npy(
            &spec(DataType::Int32, &[-1, 2]),
            &npy_file("<i4", "2, 2", &four),
        );
        assert_eq!(tensor.unwrap().shape, [2, 2]);
        let error = npy(
            &spec(DataType::Int64, &[-1, 2]),
            &npy_file("<i4", "2, 2", &four),
        );
        assert!(error
            .unwrap_err()
            .contains("holds \"<i4\", not the input's INT64"));
        let tensor = raw(&spec(DataType::Int32, &[-1, 2]), four.clone()).unwrap();
        assert_eq!(tensor.shape, [2, 2]);
        let error = raw(&spec(DataType::Int32, &[-1, 3]), four).unwrap_err();
        assert!(
            error.contains("do not fill the input's shape [-1, 3]"),
            "{error}"
        );
    }
}
