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
//! Assembling a batch on the GPU-owner thread: the jobs' inputs concatenated along dimension 0
//! into one tensor per model input (sequence inputs padded to the batch's longest, where the
//! model allows), and after the execution, each job answered with its own rows of the
//! outputs it asked for (outputs that follow the sequence length cut back to its own).

use std::collections::BTreeSet;

use super::job::{Job, JobFailure};
use crate::backend::RunError;
use crate::tensor::{cut_axis, row_offsets, DataType, Signature, Tensor};

/// Concatenates the jobs' inputs along dimension 0: one tensor per model input. Inputs with
/// a sequence axis in the signature's [`Padding`] are first padded to the batch's longest.
/// A lone job's inputs are moved, not copied: answering it needs only its outputs.
pub fn concatenate(batch: &mut [Job], signature: &Signature) -> Vec<Tensor> {
    if let [lone] = batch {
        return std::mem::take(&mut lone.inputs);
    }
    let batch: &[Job] = batch;
    let Some(first) = batch.first() else {
        return Vec::new();
    };
    let rows: usize = batch.iter().map(|job| job.rows).sum();
    let padded: &[Option<i64>] = signature.padding.as_ref().map_or(&[], |p| &p.inputs);
    (0..first.inputs.len())
        .map(|input| {
            let mut shape = first.inputs[input].shape.clone();
            if let Some(dim0) = shape.first_mut() {
                *dim0 = rows as i64;
            }
            let pad = padded.get(input).copied().flatten();
            let datatype = signature.inputs.get(input).map(|spec| spec.datatype);
            if let (Some(pad), Some(datatype)) = (pad, datatype) {
                let longest = batch
                    .iter()
                    .filter_map(|job| job.inputs[input].shape.get(1).copied())
                    .max()
                    .unwrap_or(0);
                shape[1] = longest;
                return pad_and_join(batch, input, &shape, &datatype.encode_integer(pad));
            }
            let bytes = batch.iter().map(|job| job.inputs[input].data.len()).sum();
            let mut data = Vec::with_capacity(bytes);
            for job in batch {
                data.extend_from_slice(&job.inputs[input].data);
            }
            Tensor { shape, data }
        })
        .collect()
}

/// Joins input `input` of every job, each row's axis 1 padded with `pad` (one element's
/// bytes) to `shape[1]`.
fn pad_and_join(batch: &[Job], input: usize, shape: &[i64], pad: &[u8]) -> Tensor {
    let longest = shape[1] as usize;
    // Bytes per position: the element and any axes past the sequence axis.
    let per_position = pad.len() * shape[2..].iter().map(|&d| d as usize).product::<usize>();
    let mut data = Vec::with_capacity(shape[0] as usize * longest * per_position);
    for job in batch {
        let tensor = &job.inputs[input];
        let length = tensor.shape.get(1).map_or(0, |&l| l as usize);
        let row_bytes = length * per_position;
        for row in 0..job.rows {
            data.extend_from_slice(&tensor.data[row * row_bytes..(row + 1) * row_bytes]);
            for _ in 0..(longest - length) * per_position / pad.len() {
                data.extend_from_slice(pad);
            }
        }
    }
    Tensor {
        shape: shape.to_vec(),
        data,
    }
}

/// Splits the execution's outputs (one per model output, `rows` rows each) back into each
/// job's rows, outputs whose axis follows the sequence length cut back to the job's own,
/// and answers every job with the outputs it asked for. Fails every job if an output it asks
/// for does not have the batch's rows.
pub fn split_and_answer(batch: Vec<Job>, outputs: Vec<Tensor>, signature: &Signature) {
    let rows: usize = batch.iter().map(|job| job.rows).sum();
    if batch.len() == 1 {
        let job = batch.into_iter().next().expect("one job");
        let mut outputs: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
        // An output asked for twice (as itself and pooled, say) is copied for the first.
        let mine = job
            .outputs
            .iter()
            .enumerate()
            .map(|(i, &index)| {
                if job.outputs[i + 1..].contains(&index) {
                    outputs[index].clone().unwrap_or_default()
                } else {
                    outputs[index].take().unwrap_or_default()
                }
            })
            .collect();
        job.answer_outputs(mine);
        return;
    }
    let padding = signature.padding.as_ref();
    let padded: &[Option<i64>] = padding.map_or(&[], |p| &p.inputs);
    // Only what some job asks for: an output that is not served comes back empty and is
    // never split. Each output's row boundaries, in bytes.
    let asked: BTreeSet<usize> = batch
        .iter()
        .flat_map(|job| job.outputs.iter().copied())
        .collect();
    let mut offsets: Vec<Vec<usize>> = vec![Vec::new(); outputs.len()];
    for &index in &asked {
        let tensor = &outputs[index];
        let datatype = signature
            .outputs
            .get(index)
            .map_or(DataType::Uint8, |spec| spec.datatype);
        match row_offsets(datatype, &tensor.shape, &tensor.data, rows) {
            Some(found) => offsets[index] = found,
            None => {
                let error = RunError::OutputRows {
                    index,
                    shape: tensor.shape.clone(),
                    rows,
                };
                for job in batch {
                    job.answer(Err(JobFailure::Execution(error.clone())));
                }
                return;
            }
        }
    }
    let mut start_row = 0;
    for job in batch {
        let length = job.length(padded);
        let mine = job
            .outputs
            .iter()
            .map(|&index| {
                let tensor = &outputs[index];
                let rows = &offsets[index];
                let mut shape = tensor.shape.clone();
                shape[0] = job.rows as i64;
                let data = &tensor.data[rows[start_row]..rows[start_row + job.rows]];
                let axis = padding.and_then(|p| p.outputs.get(index).copied().flatten());
                match axis {
                    Some(axis) if shape.get(axis).is_some_and(|&l| l as usize > length) => {
                        cut_axis(&shape, data, axis, length)
                    }
                    _ => Tensor {
                        shape,
                        data: data.to_vec(),
                    },
                }
            })
            .collect();
        start_row += job.rows;
        job.answer_outputs(mine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::*;
    use crate::tensor::TensorSpec;

    #[test]
    fn sequences_of_different_lengths_are_padded_together_and_cut_back() {
        let signature = sequence_model();
        let (short, r_short) = job_of(vec![ids(&[&[1, 2]])], 1);
        let (long, r_long) = job_of(vec![ids(&[&[3, 4, 5, 6], &[7, 8, 9, 1]])], 2);
        let mut batch = vec![short, long];
        let inputs = concatenate(&mut batch, &signature);
        assert_eq!(inputs[0].shape, [3, 4]);
        assert_eq!(values(&inputs[0]), [1, 2, 9, 9, 3, 4, 5, 6, 7, 8, 9, 1]);
        // A model that repeats each id twice: [rows, length, 2].
        let repeated: Vec<i64> = values(&inputs[0]).iter().flat_map(|&v| [v, v]).collect();
        let output = Tensor {
            shape: vec![3, 4, 2],
            data: bytemuck::cast_slice(&repeated).to_vec(),
        };
        split_and_answer(batch, vec![output], &signature);
        let (short_out, _) = r_short.recv().unwrap().unwrap();
        assert_eq!(short_out[0].shape, [1, 2, 2]);
        assert_eq!(values(&short_out[0]), [1, 1, 2, 2]);
        let (long_out, _) = r_long.recv().unwrap().unwrap();
        assert_eq!(long_out[0].shape, [2, 4, 2]);
        assert_eq!(values(&long_out[0])[..4], [3, 3, 4, 4]);
    }

    #[test]
    fn concatenates_and_splits_rows_back_to_each_job() {
        let (a, ra) = job(1, 2, 7);
        let (b, rb) = job(2, 2, 9);
        let mut batch = vec![a, b];
        let signature = Signature::default();
        let inputs = concatenate(&mut batch, &signature);
        assert_eq!(inputs[0].shape, [3, 2]);
        assert_eq!(inputs[0].data, [7, 7, 9, 9, 9, 9]);
        // An "identity model": the output is the input.
        split_and_answer(batch, inputs, &signature);
        let (a_out, a_indices) = ra.recv().unwrap().unwrap();
        let (b_out, _) = rb.recv().unwrap().unwrap();
        assert_eq!(a_indices, [0]);
        assert_eq!(a_out[0].shape, [1, 2]);
        assert_eq!(a_out[0].data, [7, 7]);
        assert_eq!(b_out[0].shape, [2, 2]);
        assert_eq!(b_out[0].data, [9, 9, 9, 9]);
    }

    #[test]
    fn a_lone_jobs_inputs_are_moved_and_its_outputs_handed_over() {
        let (lone, answer) = job(2, 3, 5);
        let mut batch = vec![lone];
        let inputs = concatenate(&mut batch, &Signature::default());
        assert_eq!(inputs[0].shape, [2, 3]);
        assert_eq!(inputs[0].data, [5; 6]);
        assert!(batch[0].inputs.is_empty(), "moved, not copied");
        split_and_answer(batch, inputs, &Signature::default());
        let (outputs, _) = answer.recv().unwrap().unwrap();
        assert_eq!(outputs[0].data, [5; 6]);
    }

    #[test]
    fn an_output_no_job_asks_for_is_not_split() {
        let (a, ra) = job(1, 2, 3);
        let (b, rb) = job(1, 2, 4);
        let mut batch = vec![a, b];
        let signature = Signature {
            outputs: vec![
                TensorSpec {
                    name: "y".into(),
                    datatype: DataType::Uint8,
                    dims: vec![-1, 2],
                    labels: Vec::new(),
                },
                TensorSpec {
                    name: "s".into(),
                    datatype: DataType::Bytes,
                    dims: vec![-1],
                    labels: Vec::new(),
                },
            ],
            ..Default::default()
        };
        let inputs = concatenate(&mut batch, &signature);
        // Output 1 (say, a BYTES output nobody may ask for) comes back empty.
        split_and_answer(
            batch,
            vec![inputs[0].clone(), Tensor::default()],
            &signature,
        );
        assert_eq!(ra.recv().unwrap().unwrap().0[0].data, [3, 3]);
        assert_eq!(rb.recv().unwrap().unwrap().0[0].data, [4, 4]);
    }

    #[test]
    fn an_output_without_the_batch_rows_fails_every_job() {
        let (a, ra) = job(1, 2, 1);
        let (b, rb) = job(1, 2, 2);
        let wrong = Tensor {
            shape: vec![1, 2],
            data: vec![0; 2],
        };
        split_and_answer(vec![a, b], vec![wrong], &Signature::default());
        for r in [ra, rb] {
            assert!(matches!(
                r.recv().unwrap(),
                Err(JobFailure::Execution(RunError::OutputRows { index: 0, .. }))
            ));
        }
    }
}
