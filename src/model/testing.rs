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

//! Helpers for the unit tests of the queue, the batcher and the assembling of batches: jobs
//! answered on a channel, a model of token sequences.

use std::sync::mpsc;

use super::job::{Job, JobResult};
use crate::tensor::{DataType, Padding, Signature, Tensor, TensorSpec};

/// A job of `rows` rows of `width` values, each `tag`.
pub fn job(rows: usize, width: i64, tag: u8) -> (Job, mpsc::Receiver<JobResult>) {
    let input = Tensor {
        shape: vec![rows as i64, width],
        data: vec![tag; rows * width as usize],
    };
    job_of(vec![input], rows)
}

/// A job of `inputs`, `rows` rows.
pub fn job_of(inputs: Vec<Tensor>, rows: usize) -> (Job, mpsc::Receiver<JobResult>) {
    Job::for_tests(inputs, rows)
}

/// A model of token ids `[-1, -1]` (INT64) whose output `[-1, -1, 2]` follows the length.
pub fn sequence_model() -> Signature {
    Signature {
        inputs: vec![TensorSpec {
            name: "input_ids".into(),
            datatype: DataType::Int64,
            dims: vec![-1, -1],
            labels: Vec::new(),
        }],
        outputs: vec![TensorSpec {
            name: "tokens".into(),
            datatype: DataType::Int64,
            dims: vec![-1, -1, 2],
            labels: Vec::new(),
        }],
        max_batch_size: 8,
        padding: Some(Padding {
            inputs: vec![Some(9)],
            outputs: vec![Some(1)],
        }),
        max_positions: None,
    }
}

/// Token ids, one row per slice.
pub fn ids(rows: &[&[i64]]) -> Tensor {
    let length = rows[0].len();
    Tensor {
        shape: vec![rows.len() as i64, length as i64],
        data: rows
            .iter()
            .flat_map(|r| r.iter().flat_map(|v| v.to_le_bytes()))
            .collect(),
    }
}

/// An INT64 tensor's values.
pub fn values(tensor: &Tensor) -> Vec<i64> {
    bytemuck::pod_collect_to_vec(&tensor.data)
}
