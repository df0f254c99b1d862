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

//! The model's description in Triton's terms, for the metadata calls of the inference
//! service: `ModelMetadata`, `ModelConfig` (a truthful minimal model configuration) and
//! `ModelStatistics`. Pure mapping from what the GPU-owner thread reported; runs on the
//! completion-queue threads.

use std::sync::atomic::Ordering;

use protobuf::MessageField;

use crate::model::stats::Phase;
use crate::model::ModelVersion;
use crate::proto::grpc_service as pb;
use crate::proto::model_config as config_pb;
use crate::tensor::{DataType, Signature, TensorSpec};

/// The platform name Triton gives ONNX models.
const PLATFORM: &str = "onnxruntime_onnx";
/// ModelConfig's `parameters` key of an output's class labels is the output's name and this:
/// `output_probability.labels` = `["setosa", "versicolor", "virginica"]` (a JSON array, in the
/// order of the output's columns).
pub const LABELS_SUFFIX: &str = ".labels";

/// The inputs a client sees: a text model's text input (its token inputs are still taken,
/// from callers who tokenize themselves), else the model's own.
fn served_inputs(model: &ModelVersion) -> Vec<TensorSpec> {
    match model.text_info() {
        Some(text) => vec![TensorSpec {
            name: text.input.clone(),
            datatype: DataType::Bytes,
            dims: vec![-1],
            labels: Vec::new(),
        }],
        None => model.signature.inputs.clone(),
    }
}

/// The outputs a client sees: a text model's embedding first, then the model's own.
fn served_outputs(model: &ModelVersion) -> Vec<TensorSpec> {
    let embedding = model
        .text_info()
        .and_then(|text| text.embedding.as_ref())
        .map(|(_, spec)| spec.clone());
    embedding
        .into_iter()
        .chain(model.signature.outputs.iter().cloned())
        .collect()
}

/// `ModelMetadata`: the inputs and outputs with datatype and shape (-1: any size; with
/// batching, the first dimension is the batch).
/// `versions`: those that take requests.
pub fn model_metadata(model: &ModelVersion, versions: &[u64]) -> pb::ModelMetadataResponse {
    use pb::model_metadata_response::TensorMetadata;
    let tensor = |spec: &TensorSpec| TensorMetadata {
        name: spec.name.clone(),
        datatype: spec.datatype.name().to_string(),
        shape: spec.dims.clone(),
        ..Default::default()
    };
    pb::ModelMetadataResponse {
        name: model.name.clone(),
        versions: versions.iter().map(u64::to_string).collect(),
        platform: PLATFORM.to_string(),
        inputs: served_inputs(model).iter().map(tensor).collect(),
        outputs: served_outputs(model).iter().map(tensor).collect(),
        ..Default::default()
    }
}

/// `ModelConfig`: a truthful minimal Triton model configuration.
pub fn model_config(model: &ModelVersion) -> config_pb::ModelConfig {
    use config_pb::model_instance_group::Kind;
    let batching = &model.batching;
    let signature = &model.signature;
    let data_type = |spec: &TensorSpec| config_data_type(spec.datatype);
    let mut config = config_pb::ModelConfig {
        name: model.name.clone(),
        platform: PLATFORM.to_string(),
        backend: "onnxruntime".to_string(),
        max_batch_size: i32::try_from(signature.max_batch_size).unwrap_or(i32::MAX),
        input: served_inputs(model)
            .iter()
            .map(|spec| {
                let (dims, reshape) = config_shape(signature, spec);
                config_pb::ModelInput {
                    name: spec.name.clone(),
                    data_type: data_type(spec).into(),
                    dims,
                    reshape,
                    ..Default::default()
                }
            })
            .collect(),
        output: served_outputs(model)
            .iter()
            .map(|spec| {
                let (dims, reshape) = config_shape(signature, spec);
                config_pb::ModelOutput {
                    name: spec.name.clone(),
                    data_type: data_type(spec).into(),
                    dims,
                    reshape,
                    ..Default::default()
                }
            })
            .collect(),
        instance_group: vec![config_pb::ModelInstanceGroup {
            name: format!("{}_0", model.name),
            kind: if model.instances.devices.is_empty() {
                Kind::KIND_CPU
            } else {
                Kind::KIND_GPU
            }
            .into(),
            count: i32::try_from(model.instances.count).unwrap_or(i32::MAX),
            gpus: model.instances.devices.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    // A classifier's class labels, per output, where a client can read them: Triton's
    // ModelMetadata has no parameters, its ModelConfig does.
    for spec in signature
        .outputs
        .iter()
        .filter(|spec| !spec.labels.is_empty())
    {
        config.parameters.insert(
            format!("{}{}", spec.name, LABELS_SUFFIX),
            config_pb::ModelParameter {
                string_value: serde_json::to_string(&spec.labels).unwrap_or_default(),
                ..Default::default()
            },
        );
    }
    // What a text model expects, for clients that tokenize themselves.
    if let Some(text) = model.text_info() {
        let token_inputs: Vec<&str> = signature.inputs.iter().map(|s| s.name.as_str()).collect();
        for (key, value) in [
            ("text.tokenizer", text.tokenizer.display().to_string()),
            ("text.max_length", text.max_length.to_string()),
            ("text.truncate", text.truncate.to_string()),
            ("text.pooling", text.pooling.to_string()),
            ("text.normalize", text.normalize.to_string()),
            (
                "text.token_inputs",
                serde_json::to_string(&token_inputs).unwrap_or_default(),
            ),
        ] {
            config.parameters.insert(
                key.to_string(),
                config_pb::ModelParameter {
                    string_value: value,
                    ..Default::default()
                },
            );
        }
    }
    // ONNX Runtime's CUDA provider options, as configured (they apply on a GPU).
    for (key, value) in model.cuda.pairs() {
        config.parameters.insert(
            format!("cuda.{key}"),
            config_pb::ModelParameter {
                string_value: value,
                ..Default::default()
            },
        );
    }
    if signature.batching() {
        config.scheduling_choice =
            Some(config_pb::model_config::Scheduling_choice::DynamicBatching(
                config_pb::ModelDynamicBatching {
                    max_queue_delay_microseconds: u64::try_from(
                        batching.max_queue_delay.as_micros(),
                    )
                    .unwrap_or(u64::MAX),
                    default_queue_policy: Some(config_pb::ModelQueuePolicy {
                        max_queue_size: batching.max_queue_size,
                        default_timeout_microseconds: batching
                            .default_timeout
                            .map_or(0, |t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX)),
                        allow_timeout_override: true,
                        timeout_action: config_pb::model_queue_policy::TimeoutAction::REJECT.into(),
                        ..Default::default()
                    })
                    .into(),
                    ..Default::default()
                },
            ));
    }
    config
}

/// A tensor's `dims` in Triton's model configuration, and its `reshape` where one is needed.
/// With batching the batch dimension is left out; a tensor of one value per row (the model's
/// `[-1]`) is then written as Triton's own configurations write it, `dims: [1]` with
/// `reshape: { shape: [] }`, since Triton's tools refuse empty `dims`.
fn config_shape(
    signature: &Signature,
    spec: &TensorSpec,
) -> (Vec<i64>, MessageField<config_pb::ModelTensorReshape>) {
    let dims = signature.config_dims(spec);
    if signature.batching() && dims.is_empty() {
        let reshape = config_pb::ModelTensorReshape::default();
        return (vec![1], MessageField::some(reshape));
    }
    (dims, MessageField::none())
}

/// Triton's `DataType` for a tensor datatype.
fn config_data_type(datatype: crate::tensor::DataType) -> config_pb::DataType {
    use crate::tensor::DataType as T;
    use config_pb::DataType as C;
    match datatype {
        T::Bool => C::TYPE_BOOL,
        T::Uint8 => C::TYPE_UINT8,
        T::Uint16 => C::TYPE_UINT16,
        T::Uint32 => C::TYPE_UINT32,
        T::Uint64 => C::TYPE_UINT64,
        T::Int8 => C::TYPE_INT8,
        T::Int16 => C::TYPE_INT16,
        T::Int32 => C::TYPE_INT32,
        T::Int64 => C::TYPE_INT64,
        T::Fp16 => C::TYPE_FP16,
        T::Fp32 => C::TYPE_FP32,
        T::Fp64 => C::TYPE_FP64,
        T::Bytes => C::TYPE_STRING,
        T::Unsupported("BF16") => C::TYPE_BF16,
        T::Unsupported(_) => C::TYPE_INVALID,
    }
}

/// `ModelStatistics` for the served model.
pub fn model_statistics(model: &ModelVersion) -> pb::ModelStatistics {
    let stats = model.recorder().stats();
    let duration = |phase: &Phase| {
        let (count, ns) = phase.read();
        Some(pb::StatisticDuration {
            count,
            ns,
            ..Default::default()
        })
        .into()
    };
    pb::ModelStatistics {
        name: model.name.clone(),
        version: model.version.to_string(),
        last_inference: stats.last_inference_ms.load(Ordering::Relaxed),
        inference_count: stats.inferences.load(Ordering::Relaxed),
        execution_count: stats.executions.load(Ordering::Relaxed),
        inference_stats: Some(pb::InferStatistics {
            success: duration(&stats.success),
            fail: duration(&stats.fail),
            queue: duration(&stats.queue),
            compute_input: duration(&stats.compute_input),
            compute_infer: duration(&stats.compute_infer),
            compute_output: duration(&stats.compute_output),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}
