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

//! The Open Inference Protocol's tensor codec (KServe v2, as Triton speaks it), on the
//! completion-queue threads, before any model lock is taken: it turns a `ModelInferRequest`
//! into the model's [`InferRequest`] of named tensors ([`inputs`]: `raw_input_contents` or
//! typed `contents`, never both; [`params`]: the request's and each output's parameters),
//! and the named outputs of an answer back into a `ModelInferResponse` ([`outputs`]). It
//! knows the protocol, not the model: whether a tensor fits the model is checked by the
//! model's version (`model/request.rs`). A message that breaks the protocol is refused with
//! a message naming the tensor and what is wrong.

mod error;
mod inputs;
mod outputs;
mod params;

pub use self::error::DecodeError;
pub use self::outputs::response;

use self::error::invalid;
use crate::model::request::InferRequest;
use crate::proto::grpc_service::ModelInferRequest;

/// Fails if `message`, a request or an answer (`what`), is larger than `limit` bytes.
pub fn check_size(
    what: &'static str,
    message: &impl protobuf::Message,
    limit: usize,
) -> Result<(), DecodeError> {
    let size = usize::try_from(message.compute_size()).unwrap_or(usize::MAX);
    if size > limit {
        return Err(DecodeError::TooLarge { what, size, limit });
    }
    Ok(())
}

/// Decodes `request` into named tensors, taking their bytes out of it.
pub fn decode(request: &mut ModelInferRequest) -> Result<InferRequest, DecodeError> {
    let timeout = params::timeout(request)?;
    let raw = std::mem::take(&mut request.raw_input_contents);
    if !raw.is_empty() {
        if raw.len() != request.inputs.len() {
            return Err(invalid(format!(
                "raw_input_contents has {} entries but the request has {} inputs: give one per input, in order",
                raw.len(),
                request.inputs.len()
            )));
        }
        if let Some(input) = request.inputs.iter().find(|i| i.contents.is_some()) {
            return Err(invalid(format!(
                "input {:?}: has typed contents while the request uses raw_input_contents; use one or the other for all inputs",
                input.name
            )));
        }
    }
    let mut raw = raw.into_iter();
    let inputs = request
        .inputs
        .iter_mut()
        .map(|input| inputs::decode(input, raw.next()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(InferRequest {
        inputs,
        outputs: outputs::requested(&request.outputs)?,
        timeout,
    })
}

#[cfg(test)]
mod tests;
