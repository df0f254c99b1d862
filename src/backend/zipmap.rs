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

//! ZipMap outputs, as scikit-learn classifiers (skl2onnx) and LightGBM's (onnxmltools) end by
//! default: a `Sequence<Map<class, probability>>`, one map per row. Served as an FP32 tensor
//! `[-1, C]`, one column per class in the classifier's own order (the ZipMap node's class
//! labels, read from the model's graph), with the labels kept for clients. Runs on the
//! GPU-owner thread, at load and after each execution.

use std::collections::HashMap;

use ort::value::{DynMapValueType, DynSequenceValueType, DynValue};
use protobuf::Message;

use crate::proto::onnx_graph::{GraphProto, ModelProto};
use crate::tensor::Tensor;

/// The classes of a ZipMap, in the classifier's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassKeys {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

impl ClassKeys {
    pub fn len(&self) -> usize {
        match self {
            ClassKeys::Ints(keys) => keys.len(),
            ClassKeys::Strings(keys) => keys.len(),
        }
    }

    /// The class labels as text, in column order.
    pub fn labels(&self) -> Vec<String> {
        match self {
            ClassKeys::Ints(keys) => keys.iter().map(i64::to_string).collect(),
            ClassKeys::Strings(keys) => keys.clone(),
        }
    }
}

/// The class keys of every ZipMap in the model's graph, by the name of the value it produces
/// (and of any Identity that passes it on to a graph output). Fails on bytes that are no ONNX
/// model, or a ZipMap without class labels.
pub fn class_keys(model: &[u8]) -> Result<HashMap<String, ClassKeys>, String> {
    let model = ModelProto::parse_from_bytes(model)
        .map_err(|e| format!("cannot read the model's graph: {e}"))?;
    let graph: &GraphProto = &model.graph;
    let mut keys = HashMap::new();
    for node in graph.node.iter().filter(|node| node.op_type == "ZipMap") {
        let attribute = |name: &str| node.attribute.iter().find(|a| a.name == name);
        let classes = if let Some(ints) = attribute("classlabels_int64s") {
            ClassKeys::Ints(ints.ints.clone())
        } else if let Some(strings) = attribute("classlabels_strings") {
            ClassKeys::Strings(
                strings
                    .strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            )
        } else {
            return Err(format!(
                "ZipMap node {:?} has no classlabels_int64s or classlabels_strings",
                node.name
            ));
        };
        for output in &node.output {
            keys.insert(output.clone(), classes.clone());
        }
    }
    // Identity nodes may pass a ZipMap's output on under another name.
    loop {
        let passed: Vec<(String, ClassKeys)> = graph
            .node
            .iter()
            .filter(|node| node.op_type == "Identity")
            .filter_map(|node| {
                let classes = keys.get(node.input.first()?)?;
                let output = node.output.first()?;
                (!keys.contains_key(output)).then(|| (output.clone(), classes.clone()))
            })
            .collect();
        if passed.is_empty() {
            break;
        }
        keys.extend(passed);
    }
    Ok(keys)
}

/// One execution's ZipMap output as an FP32 tensor `[rows, classes]`, columns in the order of
/// `keys`. Fails naming the class a row lacks, or a value that is no sequence of maps.
pub fn to_tensor(keys: &ClassKeys, value: &DynValue) -> Result<Tensor, String> {
    let sequence = value
        .view()
        .downcast::<DynSequenceValueType>()
        .map_err(|e| e.to_string())?;
    let maps = sequence
        .try_extract_sequence::<DynMapValueType>()
        .map_err(|e| e.to_string())?;
    let mut probabilities: Vec<f32> = Vec::with_capacity(maps.len() * keys.len());
    for (row, map) in maps.iter().enumerate() {
        let missing = |class: &dyn std::fmt::Display| format!("row {row} has no class {class}");
        match keys {
            ClassKeys::Ints(classes) => {
                let map: HashMap<i64, f32> = map.try_extract_map().map_err(|e| e.to_string())?;
                for class in classes {
                    probabilities.push(*map.get(class).ok_or_else(|| missing(class))?);
                }
            }
            ClassKeys::Strings(classes) => {
                let map: HashMap<String, f32> = map.try_extract_map().map_err(|e| e.to_string())?;
                for class in classes {
                    probabilities.push(*map.get(class).ok_or_else(|| missing(class))?);
                }
            }
        }
    }
    Ok(Tensor {
        shape: vec![maps.len() as i64, keys.len() as i64],
        data: bytemuck::cast_slice(&probabilities).to_vec(),
    })
}
