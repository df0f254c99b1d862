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

//! A request's parameters, and each requested output's: `timeout` (microseconds, as Triton
//! defines it) is honoured; sequence batching is refused; `classification` on an output asks
//! for its top classes; others (priority, binary_data_output, ...) do not change what is
//! computed.

use std::time::Duration;

use super::error::{invalid, DecodeError};
use crate::proto::grpc_service::infer_parameter::Parameter_choice;
use crate::proto::grpc_service::model_infer_request::InferRequestedOutputTensor;
use crate::proto::grpc_service::{InferParameter, ModelInferRequest};

/// The request's own timeout, if it gives one; refuses sequence batching.
pub fn timeout(request: &ModelInferRequest) -> Result<Option<Duration>, DecodeError> {
    for key in ["sequence_id", "sequence_start", "sequence_end"] {
        if let Some(value) = request.parameters.get(key) {
            let set = match &value.parameter_choice {
                Some(Parameter_choice::BoolParam(b)) => *b,
                Some(Parameter_choice::Int64Param(n)) => *n != 0,
                Some(Parameter_choice::Uint64Param(n)) => *n != 0,
                Some(Parameter_choice::StringParam(s)) => !s.is_empty(),
                _ => false,
            };
            if set {
                return Err(invalid(format!(
                    "parameter {key:?}: sequence batching is not supported by this sidecar"
                )));
            }
        }
    }
    let Some(timeout) = request.parameters.get("timeout") else {
        return Ok(None);
    };
    let micros = timeout_micros(timeout)?;
    Ok((micros > 0).then(|| Duration::from_micros(micros)))
}

fn timeout_micros(parameter: &InferParameter) -> Result<u64, DecodeError> {
    match &parameter.parameter_choice {
        Some(Parameter_choice::Int64Param(n)) if *n >= 0 => Ok(*n as u64),
        Some(Parameter_choice::Uint64Param(n)) => Ok(*n),
        Some(Parameter_choice::Int64Param(n)) => Err(invalid(format!(
            "parameter \"timeout\" is {n}: give microseconds, 0 or more"
        ))),
        _ => Err(invalid(
            "parameter \"timeout\" must be an int64_param or uint64_param of microseconds"
                .to_string(),
        )),
    }
}

/// The `classification` parameter of a requested output: how many classes per row, if asked.
/// Fails on a count that is not a positive integer.
pub fn classification(output: &InferRequestedOutputTensor) -> Result<Option<usize>, DecodeError> {
    let Some(parameter) = output.parameters.get("classification") else {
        return Ok(None);
    };
    match &parameter.parameter_choice {
        Some(Parameter_choice::Int64Param(k)) => usize::try_from(*k).ok(),
        Some(Parameter_choice::Uint64Param(k)) => usize::try_from(*k).ok(),
        _ => None,
    }
    .filter(|&k| k > 0)
    .map(Some)
    .ok_or_else(|| {
        invalid(format!(
            "output {:?}: parameter \"classification\" must be an int64_param of at least 1 (how many classes per row)",
            output.name
        ))
    })
}
