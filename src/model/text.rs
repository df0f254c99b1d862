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

//! Text in, embeddings out, for a model of token ids (`[sidecar.model.text]`): the Hugging
//! Face tokenizer (`tokenizer.json`, read with the `tokenizers` crate) that turns a request's
//! texts into the inputs the model declares, and the pooling that turns its token embeddings
//! into one vector per text. The tokenizer is read on the main thread at start-up (to check
//! it) and by the repository thread for each load, and bound to the model as its version is
//! built; texts are tokenized, and embeddings pooled, on the completion-queue threads (a text
//! takes microseconds), never on the GPU-owner thread.

use std::path::PathBuf;

use tokenizers::{Tokenizer, TruncationParams};

use crate::config::{Pooling, TextConfig};
use crate::tensor::{DataType, Signature, Tensor, TensorSpec};

/// The model inputs a tokenizer feeds.
const TOKEN_IDS: &str = "input_ids";
const ATTENTION_MASK: &str = "attention_mask";
const TOKEN_TYPES: &str = "token_type_ids";
/// The most tokens per text when neither the config nor the model's graph says.
const DEFAULT_MAX_LENGTH: usize = 512;
/// The served name of the pooled output.
pub const EMBEDDING: &str = "embedding";

/// Why texts cannot be served: at start-up (exit 2: a matter of configuration) or for one
/// request (INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// The tokenizer file cannot be read.
    #[error("cannot read the tokenizer {} (sidecar.model.text.tokenizer): {message}; give the model's Hugging Face tokenizer.json", path.display())]
    Tokenizer { path: PathBuf, message: String },
    /// The model takes an input the tokenizer does not make.
    #[error("model input {name:?} is not one a tokenizer makes (input_ids, attention_mask, token_type_ids): sidecar.model.text serves models of token ids only")]
    UnknownInput { name: String },
    /// The model has no `input_ids`.
    #[error(
        "the model has no input \"input_ids\": sidecar.model.text serves models of token ids only"
    )]
    NoTokenIds,
    /// No output can be pooled.
    #[error("{0}")]
    Pooling(String),
    /// `max-length` is over the model's positions.
    #[error("sidecar.model.text.max-length is {max_length} but the model has {positions} positions: at most {positions}")]
    MaxLength { max_length: usize, positions: usize },
    /// A text is empty.
    #[error("input {input:?}: element {element} is an empty text; send at least one character")]
    Empty { input: String, element: usize },
    /// A text makes no tokens at all (a tokenizer without special tokens, given spaces).
    #[error("input {input:?}: element {element} makes no tokens; send some words")]
    NoTokens { input: String, element: usize },
    /// A text is longer than `max-length` and truncation is off.
    #[error("input {input:?}: element {element} is {tokens} tokens, over the model's {max_length} (sidecar.model.text.max-length; truncate = false): shorten it")]
    TooLong {
        input: String,
        element: usize,
        tokens: usize,
        max_length: usize,
    },
    /// The tokenizer failed on a text.
    #[error("input {input:?}: element {element} cannot be tokenized: {message}")]
    Tokenize {
        input: String,
        element: usize,
        message: String,
    },
}

/// What a model served text in takes and gives, beside its own inputs and outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextInfo {
    /// The BYTES input of texts.
    pub input: String,
    pub tokenizer: PathBuf,
    /// The most tokens per text.
    pub max_length: usize,
    /// Whether longer texts are cut to `max-length` (else refused).
    pub truncate: bool,
    pub pooling: Pooling,
    pub normalize: bool,
    /// The model output pooled, and the embedding served from it (with pooling).
    pub embedding: Option<(usize, TensorSpec)>,
    /// The model's attention mask input, if it has one.
    pub mask: Option<usize>,
}

/// A tokenizer as configured, before the model is known.
#[derive(Debug, Clone)]
pub struct TextStage {
    tokenizer: Tokenizer,
    config: TextConfig,
}

impl TextStage {
    /// Reads the tokenizer. Fails naming the file and the reason.
    pub fn load(config: &TextConfig) -> Result<Self, TextError> {
        let tokenizer =
            Tokenizer::from_file(&config.tokenizer).map_err(|e| TextError::Tokenizer {
                path: config.tokenizer.clone(),
                message: e.to_string(),
            })?;
        Ok(TextStage {
            tokenizer,
            config: config.clone(),
        })
    }

    /// The id that pads token ids: the tokenizer's own padding's, else its `[PAD]` or
    /// `<pad>` token's, else 0.
    pub fn pad_id(&self) -> i64 {
        let id = match self.tokenizer.get_padding() {
            Some(padding) => Some(padding.pad_id),
            None => ["[PAD]", "<pad>"]
                .iter()
                .find_map(|token| self.tokenizer.token_to_id(token)),
        };
        i64::from(id.unwrap_or(0))
    }

    /// Binds the tokenizer to the resident model's `signature`: which inputs it feeds, what
    /// is pooled, and the longest text. Fixed padding written in tokenizer.json is turned off
    /// (the batcher pads per batch); truncation is set to `max-length`. Fails when the model
    /// is not one of token ids, or nothing can be pooled.
    pub fn bind(self, signature: &Signature) -> Result<TextModel, TextError> {
        let TextStage {
            mut tokenizer,
            config,
        } = self;
        let position = |name: &str| signature.inputs.iter().position(|s| s.name == name);
        if let Some(other) = signature
            .inputs
            .iter()
            .find(|s| ![TOKEN_IDS, ATTENTION_MASK, TOKEN_TYPES].contains(&s.name.as_str()))
        {
            return Err(TextError::UnknownInput {
                name: other.name.clone(),
            });
        }
        if position(TOKEN_IDS).is_none() {
            return Err(TextError::NoTokenIds);
        }
        let max_length = match (config.max_length, signature.max_positions) {
            (Some(length), Some(positions)) if length as usize > positions => {
                return Err(TextError::MaxLength {
                    max_length: length as usize,
                    positions,
                })
            }
            (Some(length), _) => length as usize,
            (None, Some(positions)) => positions,
            (None, None) => DEFAULT_MAX_LENGTH,
        };
        let embedding = match config.pooling {
            Pooling::None => None,
            _ => Some(pooled_output(signature, config.pooled_from.as_deref())?),
        };
        tokenizer.with_padding(None);
        let truncation = config.truncate.then(|| TruncationParams {
            max_length,
            ..TruncationParams::default()
        });
        tokenizer
            .with_truncation(truncation)
            .map_err(|e| TextError::Tokenizer {
                path: config.tokenizer.clone(),
                message: e.to_string(),
            })?;
        let info = TextInfo {
            input: config.input.clone(),
            tokenizer: config.tokenizer.clone(),
            max_length,
            truncate: config.truncate,
            pooling: config.pooling,
            normalize: config.normalized(),
            embedding,
            mask: position(ATTENTION_MASK),
        };
        Ok(TextModel {
            tokenizer,
            info,
            inputs: signature
                .inputs
                .iter()
                .map(|spec| (spec.name.clone(), spec.datatype))
                .collect(),
        })
    }
}

/// The output pooled (`pooled-from`, else the first `[-1, -1, H]`) and the embedding served
/// from it.
fn pooled_output(
    signature: &Signature,
    pooled_from: Option<&str>,
) -> Result<(usize, TensorSpec), TextError> {
    let is_tokens = |spec: &TensorSpec| {
        spec.dims.len() == 3 && spec.dims[0] == -1 && spec.datatype == DataType::Fp32
    };
    let index = match pooled_from {
        Some(name) => {
            let index = signature
                .outputs
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| {
                    TextError::Pooling(format!(
                        "sidecar.model.text.pooled-from names {name:?}, which is not an output of the model"
                    ))
                })?;
            if !is_tokens(&signature.outputs[index]) {
                return Err(TextError::Pooling(format!(
                    "sidecar.model.text.pooled-from names {name:?}, of shape {:?} {}: pooling takes an FP32 output [batch, tokens, hidden]",
                    signature.outputs[index].dims, signature.outputs[index].datatype
                )));
            }
            index
        }
        None => signature.outputs.iter().position(is_tokens).ok_or_else(|| {
            TextError::Pooling("no output of the model is FP32 [batch, tokens, hidden] to pool: name one in sidecar.model.text.pooled-from, or set pooling = \"none\"".to_string())
        })?,
    };
    if signature.outputs.iter().any(|s| s.name == EMBEDDING) {
        return Err(TextError::Pooling(format!(
            "the model has an output named {EMBEDDING:?} already: set pooling = \"none\" and use it"
        )));
    }
    let hidden = signature.outputs[index].dims[2];
    Ok((
        index,
        TensorSpec {
            name: EMBEDDING.to_string(),
            datatype: DataType::Fp32,
            dims: vec![-1, hidden],
            labels: Vec::new(),
        },
    ))
}

/// The tokenizer bound to the resident model.
#[derive(Debug)]
pub struct TextModel {
    tokenizer: Tokenizer,
    info: TextInfo,
    /// The model's inputs, in order, with their datatypes.
    inputs: Vec<(String, DataType)>,
}

/// A request's texts as model inputs.
#[derive(Debug)]
pub struct Tokens {
    /// One tensor per model input, `[texts, longest]`.
    pub inputs: Vec<Tensor>,
    /// Per text and position (`[texts, longest]`, row-major): whether it is one of the
    /// text's tokens; what pooling keeps.
    pub mask: Vec<bool>,
}

impl TextModel {
    /// What the model serves for text, for metadata and the codec.
    pub fn info(&self) -> &TextInfo {
        &self.info
    }

    /// Tokenizes `texts` into the model's inputs, padded to the longest of them. Fails on an
    /// empty text, or one over `max-length` when truncation is off.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Tokens, TextError> {
        let input = &self.info.input;
        let mut encodings = Vec::with_capacity(texts.len());
        for (element, text) in texts.iter().enumerate() {
            if text.is_empty() {
                return Err(TextError::Empty {
                    input: input.clone(),
                    element,
                });
            }
            let encoding =
                self.tokenizer
                    .encode_fast(*text, true)
                    .map_err(|e| TextError::Tokenize {
                        input: input.clone(),
                        element,
                        message: e.to_string(),
                    })?;
            if encoding.is_empty() {
                return Err(TextError::NoTokens {
                    input: input.clone(),
                    element,
                });
            }
            if encoding.len() > self.info.max_length {
                return Err(TextError::TooLong {
                    input: input.clone(),
                    element,
                    tokens: encoding.len(),
                    max_length: self.info.max_length,
                });
            }
            encodings.push(encoding);
        }
        let longest = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let shape = vec![texts.len() as i64, longest as i64];
        let column = |values: &dyn Fn(&tokenizers::Encoding) -> Vec<i64>, datatype: DataType| {
            let mut data = Vec::new();
            for encoding in &encodings {
                let values = values(encoding);
                for position in 0..longest {
                    let value = values.get(position).copied().unwrap_or(0);
                    data.extend(datatype.encode_integer(value));
                }
            }
            Tensor {
                shape: shape.clone(),
                data,
            }
        };
        let ids = |e: &tokenizers::Encoding| e.get_ids().iter().map(|&id| i64::from(id)).collect();
        let mask = |e: &tokenizers::Encoding| vec![1; e.len()];
        let types =
            |e: &tokenizers::Encoding| e.get_type_ids().iter().map(|&t| i64::from(t)).collect();
        let inputs = self
            .inputs
            .iter()
            .map(|(name, datatype)| match name.as_str() {
                TOKEN_IDS => column(&ids, *datatype),
                ATTENTION_MASK => column(&mask, *datatype),
                _ => column(&types, *datatype),
            })
            .collect();
        let mask = encodings
            .iter()
            .flat_map(|e| (0..longest).map(move |position| position < e.len()))
            .collect();
        Ok(Tokens { inputs, mask })
    }
}

/// One embedding per row of `tokens` (FP32 `[rows, length, hidden]`), pooled over the
/// positions that `mask` (`[rows, length]` row-major, or none: every position) keeps, and
/// L2-normalised if asked.
pub fn pool(info: &TextInfo, tokens: &Tensor, mask: Option<&[bool]>) -> Tensor {
    let dims: Vec<usize> = tokens.shape.iter().map(|&d| d.max(0) as usize).collect();
    let (rows, length, hidden) = match dims[..] {
        [rows, length, hidden] => (rows, length, hidden),
        _ => (0, 0, 0),
    };
    let values: Vec<f32> = bytemuck::pod_collect_to_vec(&tokens.data);
    let all = vec![true; rows * length];
    let kept = mask.filter(|m| m.len() == rows * length).unwrap_or(&all);
    let mut out = Vec::with_capacity(rows * hidden);
    for row in 0..rows {
        let token = |position: usize| {
            let start = (row * length + position) * hidden;
            &values[start..start + hidden]
        };
        let positions: Vec<usize> = (0..length).filter(|&p| kept[row * length + p]).collect();
        let mut vector = vec![0f32; hidden];
        match info.pooling {
            Pooling::Mean | Pooling::None => {
                for &p in &positions {
                    for (sum, v) in vector.iter_mut().zip(token(p)) {
                        *sum += v;
                    }
                }
                let count = positions.len().max(1) as f32;
                vector.iter_mut().for_each(|v| *v /= count);
            }
            Pooling::Cls => {
                if length > 0 {
                    vector.copy_from_slice(token(0));
                }
            }
            Pooling::Last => {
                if let Some(&p) = positions.last() {
                    vector.copy_from_slice(token(p));
                }
            }
        }
        if info.normalize {
            let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            vector.iter_mut().for_each(|v| *v /= norm);
        }
        out.extend(vector);
    }
    Tensor {
        shape: vec![rows as i64, hidden as i64],
        data: bytemuck::cast_slice(&out).to_vec(),
    }
}
