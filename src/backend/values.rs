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

//! Conversion between the sidecar's tensors and ONNX Runtime's values, and the signature a
//! session is served with. Run by the loader (signatures) and the GPU-owner thread (values).

use std::path::Path;

use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};

use super::zipmap::{self, ClassKeys};
use super::{LoadError, RunError};
use crate::tensor::{bytes_elements, encode_bytes_elements, DataType, Tensor, TensorSpec};

/// The signature of the session's outputs: tensors as they are, a ZipMap (a sequence of maps
/// from class to probability) as the FP32 tensor `[-1, classes]` it is served as, with its
/// classes, read from `model`'s graph.
pub(super) fn output_specs(
    path: &Path,
    model: &[u8],
    outlets: &[ort::value::Outlet],
) -> Result<(Vec<TensorSpec>, Vec<Option<ClassKeys>>), LoadError> {
    let mut graph_keys = None;
    let mut specs = Vec::with_capacity(outlets.len());
    let mut zipmaps = Vec::with_capacity(outlets.len());
    for outlet in outlets {
        let is_zipmap = match outlet.dtype() {
            ValueType::Sequence(inner) => matches!(
                **inner,
                ValueType::Map {
                    key: TensorElementType::Int64 | TensorElementType::String,
                    value: TensorElementType::Float32,
                }
            ),
            _ => false,
        };
        if !is_zipmap {
            specs.extend(tensor_specs(path, "output", std::slice::from_ref(outlet))?);
            zipmaps.push(None);
            continue;
        }
        let refused = |why: String| LoadError::NotATensor {
            path: path.to_path_buf(),
            what: "output",
            name: outlet.name().to_string(),
            kind: format!("{} ({why})", outlet.dtype()),
        };
        if graph_keys.is_none() {
            graph_keys = Some(zipmap::class_keys(model).map_err(&refused)?);
        }
        let classes = graph_keys
            .as_ref()
            .and_then(|keys| keys.get(outlet.name()))
            .cloned()
            .ok_or_else(|| refused("no ZipMap node of the graph produces it".to_string()))?;
        specs.push(TensorSpec {
            name: outlet.name().to_string(),
            datatype: DataType::Fp32,
            dims: vec![-1, classes.len() as i64],
            labels: classes.labels(),
        });
        zipmaps.push(Some(classes));
    }
    Ok((specs, zipmaps))
}

/// The signature of the session's inputs or outputs.
pub(super) fn tensor_specs(
    path: &Path,
    what: &'static str,
    outlets: &[ort::value::Outlet],
) -> Result<Vec<TensorSpec>, LoadError> {
    outlets
        .iter()
        .map(|outlet| match outlet.dtype() {
            ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
                name: outlet.name().to_string(),
                datatype: datatype_of(*ty),
                dims: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
                labels: Vec::new(),
            }),
            other => Err(LoadError::NotATensor {
                path: path.to_path_buf(),
                what,
                name: outlet.name().to_string(),
                kind: other.to_string(),
            }),
        })
        .collect()
}

/// The protocol's datatype for a runtime element type.
pub(super) fn datatype_of(ty: TensorElementType) -> DataType {
    match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        TensorElementType::Bfloat16 => DataType::Unsupported("BF16"),
        _ => DataType::Unsupported("UNSUPPORTED"),
    }
}

/// A runtime tensor holding `tensor`'s bytes as `spec`'s element type.
pub(super) fn to_value(spec: &TensorSpec, tensor: Tensor) -> Result<DynValue, RunError> {
    let shape = tensor.shape;
    let bytes = tensor.data;
    macro_rules! typed {
        ($t:ty) => {
            OrtTensor::<$t>::from_array((shape, bytemuck::pod_collect_to_vec::<u8, $t>(&bytes)))
                .map(|t| t.into_dyn())
        };
    }
    let value = match spec.datatype {
        DataType::Bool => OrtTensor::<bool>::from_array((
            shape,
            bytes.iter().map(|&b| b != 0).collect::<Vec<_>>(),
        ))
        .map(|t| t.into_dyn()),
        DataType::Uint8 => OrtTensor::<u8>::from_array((shape, bytes)).map(|t| t.into_dyn()),
        DataType::Int8 => typed!(i8),
        DataType::Uint16 => typed!(u16),
        DataType::Int16 => typed!(i16),
        DataType::Uint32 => typed!(u32),
        DataType::Int32 => typed!(i32),
        DataType::Uint64 => typed!(u64),
        DataType::Int64 => typed!(i64),
        DataType::Fp16 => typed!(half::f16),
        DataType::Fp32 => typed!(f32),
        DataType::Fp64 => typed!(f64),
        DataType::Bytes => {
            // Checked as UTF-8 when the request was decoded.
            let strings: Vec<String> = bytes_elements(&bytes)
                .map_err(|e| RunError::Input {
                    message: format!("input {:?}: {e}", spec.name),
                })?
                .into_iter()
                .map(|element| String::from_utf8_lossy(element).into_owned())
                .collect();
            OrtTensor::<String>::from_string_array((shape, &strings[..])).map(|t| t.into_dyn())
        }
        DataType::Unsupported(_) => {
            return Err(RunError::Input {
                message: format!(
                    "input {:?} has datatype {}, which is not served",
                    spec.name, spec.datatype
                ),
            })
        }
    };
    value.map_err(|e| RunError::Input {
        message: e.to_string(),
    })
}

/// The bytes of a runtime output tensor of `spec`'s element type.
pub(super) fn from_value(spec: &TensorSpec, value: &DynValue) -> Result<Tensor, RunError> {
    let output_error = |message: String| RunError::Output {
        name: spec.name.clone(),
        message,
    };
    macro_rules! typed {
        ($t:ty) => {{
            let (shape, data) = value
                .try_extract_tensor::<$t>()
                .map_err(|e| output_error(e.to_string()))?;
            (
                shape.to_vec(),
                bytemuck::cast_slice::<$t, u8>(data).to_vec(),
            )
        }};
    }
    let (shape, data) = match spec.datatype {
        DataType::Bool => {
            let (shape, data) = value
                .try_extract_tensor::<bool>()
                .map_err(|e| output_error(e.to_string()))?;
            (shape.to_vec(), data.iter().map(|&b| u8::from(b)).collect())
        }
        DataType::Uint8 => typed!(u8),
        DataType::Int8 => typed!(i8),
        DataType::Uint16 => typed!(u16),
        DataType::Int16 => typed!(i16),
        DataType::Uint32 => typed!(u32),
        DataType::Int32 => typed!(i32),
        DataType::Uint64 => typed!(u64),
        DataType::Int64 => typed!(i64),
        DataType::Fp16 => typed!(half::f16),
        DataType::Fp32 => typed!(f32),
        DataType::Fp64 => typed!(f64),
        DataType::Bytes => {
            let (shape, strings) = value
                .try_extract_strings()
                .map_err(|e| output_error(e.to_string()))?;
            (shape.to_vec(), encode_bytes_elements(&strings))
        }
        DataType::Unsupported(_) => {
            return Err(output_error(format!(
                "datatype {} is not served",
                spec.datatype
            )))
        }
    };
    Ok(Tensor { shape, data })
}
