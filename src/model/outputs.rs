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

//! What a request gets back, on the completion-queue threads: which of the model's outputs it
//! asked for and in what form ([`requested_outputs`], when it is checked), and the named
//! tensors made from the outputs of its execution ([`answer`]): as the model gives them,
//! as their top classes ([`super::classification`]), or pooled into embeddings
//! ([`super::text`]).

use std::collections::HashSet;

use super::classification;
use super::request::{invalid, names, RequestError, RequestedOutput};
use super::text::{self, TextInfo};
use crate::tensor::{DataType, NamedTensor, Signature, Tensor};

/// How one requested output is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputForm {
    /// As the model gives it.
    Tensor,
    /// Its top k classes (Triton's classification extension).
    Classification(usize),
    /// Pooled into one embedding per row (text models).
    Embedding,
}

/// How a request's answer is made from its outputs: each requested output's form, in the
/// request's order, and for embeddings which positions of each row pooling keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answering {
    pub forms: Vec<OutputForm>,
    /// `[rows, length]` row-major: whether each position is one of the row's tokens; none:
    /// all are.
    pub mask: Option<Vec<bool>>,
}

impl Answering {
    /// For a request of token ids that asks for an embedding: the mask pooling keeps, read
    /// from the attention mask it sent (every position when the model has none).
    pub fn with_mask_from(
        mut self,
        signature: &Signature,
        text: Option<&TextInfo>,
        inputs: &[Tensor],
    ) -> Self {
        let mask = text.and_then(|text| text.mask);
        if let (Some(mask), true) = (mask, self.forms.contains(&OutputForm::Embedding)) {
            let size = signature.inputs[mask].datatype.size().unwrap_or(1);
            self.mask = Some(
                inputs[mask]
                    .data
                    .chunks(size)
                    .map(|value| value.iter().any(|&b| b != 0))
                    .collect(),
            );
        }
        self
    }
}

/// The outputs asked for, in the order asked, as indices into the model's outputs, and how
/// each is answered. When none are named: every output the model serves, or for a request of
/// `texts`, the embedding (where one is served).
pub fn requested_outputs(
    signature: &Signature,
    text: Option<&TextInfo>,
    asked: &[RequestedOutput],
    texts: bool,
) -> Result<(Vec<usize>, Answering), RequestError> {
    let embedding = text.and_then(|text| text.embedding.as_ref());
    let chosen: Vec<(usize, OutputForm)> = if asked.is_empty() {
        match (texts, embedding) {
            (true, Some((pooled, _))) => vec![(*pooled, OutputForm::Embedding)],
            // Every output that can be served (BYTES outputs are left out until they can be).
            _ => (0..signature.outputs.len())
                .filter(|&index| signature.outputs[index].datatype.is_served())
                .map(|index| (index, OutputForm::Tensor))
                .collect(),
        }
    } else {
        let mut seen = HashSet::new();
        asked
            .iter()
            .map(|output| {
                if !seen.insert(output.name.as_str()) {
                    return Err(invalid(format!(
                        "output {:?} is asked for twice",
                        output.name
                    )));
                }
                if let Some((pooled, _)) = embedding.filter(|(_, spec)| spec.name == output.name) {
                    return Ok((*pooled, OutputForm::Embedding));
                }
                let index = signature
                    .outputs
                    .iter()
                    .position(|spec| spec.name == output.name)
                    .ok_or_else(|| {
                        let mut names = names(&signature.outputs);
                        if let Some((_, spec)) = embedding {
                            names = format!("{:?}, {names}", spec.name);
                        }
                        invalid(format!(
                            "unknown output {:?}: the model's outputs are {names}",
                            output.name
                        ))
                    })?;
                let spec = &signature.outputs[index];
                if !spec.datatype.is_served() {
                    return Err(invalid(format!(
                        "output {:?}: {} tensors are not served",
                        output.name, spec.datatype
                    )));
                }
                match output.classification {
                    Some(count) => {
                        classification::check(spec, signature.batching())?;
                        Ok((index, OutputForm::Classification(count)))
                    }
                    None => Ok((index, OutputForm::Tensor)),
                }
            })
            .collect::<Result<_, _>>()?
    };
    let (indices, forms) = chosen.into_iter().unzip();
    Ok((indices, Answering { forms, mask: None }))
}

/// The named outputs of an answer: `tensors` (the outputs at `indices` of the model's, as the
/// execution gave them) each in the form `answering` says.
pub fn answer(
    signature: &Signature,
    text: Option<&TextInfo>,
    answering: &Answering,
    tensors: Vec<Tensor>,
    indices: &[usize],
) -> Vec<NamedTensor> {
    indices
        .iter()
        .zip(tensors)
        .enumerate()
        .map(|(i, (&index, tensor))| {
            let spec = &signature.outputs[index];
            let form = answering
                .forms
                .get(i)
                .copied()
                .unwrap_or(OutputForm::Tensor);
            match (form, text) {
                (OutputForm::Classification(count), _) => NamedTensor {
                    name: spec.name.clone(),
                    datatype: DataType::Bytes,
                    tensor: classification::top_classes(spec, &tensor, count),
                },
                (OutputForm::Embedding, Some(text)) => NamedTensor {
                    name: text::EMBEDDING.to_string(),
                    datatype: DataType::Fp32,
                    tensor: text::pool(text, &tensor, answering.mask.as_deref()),
                },
                _ => NamedTensor {
                    name: spec.name.clone(),
                    datatype: spec.datatype,
                    tensor,
                },
            }
        })
        .collect()
}
