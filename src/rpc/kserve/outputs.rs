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

//! The outputs of a request: those it asks for (by name, with their parameters) as it is
//! decoded, and its answer encoded from the model's named outputs, their bytes in
//! `raw_output_contents`.

use super::error::DecodeError;
use super::params;
use crate::model::request::RequestedOutput;
use crate::proto::grpc_service::model_infer_request::InferRequestedOutputTensor;
use crate::proto::grpc_service::model_infer_response::InferOutputTensor;
use crate::proto::grpc_service::ModelInferResponse;
use crate::tensor::NamedTensor;

/// The outputs `asked` for, in order.
pub fn requested(
    asked: &[InferRequestedOutputTensor],
) -> Result<Vec<RequestedOutput>, DecodeError> {
    asked
        .iter()
        .map(|output| {
            Ok(RequestedOutput {
                name: output.name.clone(),
                classification: params::classification(output)?,
            })
        })
        .collect()
}

/// The answer to request `id` of version `version` of model `model`: its named `outputs`,
/// their bytes in `raw_output_contents`.
pub fn response(
    model: &str,
    version: u64,
    id: String,
    outputs: Vec<NamedTensor>,
) -> ModelInferResponse {
    let mut response = ModelInferResponse {
        model_name: model.to_string(),
        model_version: version.to_string(),
        id,
        ..ModelInferResponse::default()
    };
    for output in outputs {
        response.outputs.push(InferOutputTensor {
            name: output.name,
            datatype: output.datatype.name().to_string(),
            shape: output.tensor.shape,
            ..InferOutputTensor::default()
        });
        response.raw_output_contents.push(output.tensor.data);
    }
    response
}
