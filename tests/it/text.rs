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

//! Text models (`tests/fixtures/make_text_model.py`: a small BERT-shaped encoder and its
//! WordPiece tokenizer) against the real binary: text in, embedding out, equal to the
//! Hugging Face tokenizer and ONNX Runtime in process; sentences and token ids of different
//! lengths batched together and each answer equal to its lone reference; truncation at the
//! model's positions; bad texts refused by name; the adaptive batching delay.

use std::thread;
use std::time::{Duration, Instant};

use gpu_sidecar::proto::grpc_service::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use gpu_sidecar::proto::grpc_service::*;
use gpu_sidecar::proto::grpc_service_grpc::GrpcInferenceServiceClient;
use grpcio::RpcStatusCode;

use crate::inference::{client, counts, patient};
use crate::util::{fixture_path, ConfigText, Sidecar, TestDir};

const MODEL: &str = "minibert";

/// One sentence as make_text_model.py recorded it, computed alone.
struct Sentence {
    text: String,
    ids: Vec<i64>,
    /// Mean-pooled over its tokens and L2-normalised.
    embedding: Vec<f32>,
    /// The graph's own masked mean, `sentence_embedding`.
    sentence_embedding: Vec<f32>,
    last_hidden_state: Vec<f32>,
}

fn sentences() -> Vec<Sentence> {
    let path = fixture_path(&format!("models/{MODEL}.expected.json"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    json["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sentence {
            text: s["text"].as_str().unwrap().to_string(),
            ids: serde_json::from_value(s["ids"].clone()).unwrap(),
            embedding: floats(&s["embedding"]),
            sentence_embedding: floats(&s["sentence_embedding"]),
            last_hidden_state: floats(&s["last_hidden_state"]),
        })
        .collect()
}

/// The sidecar serving the text model, READY, with `text` and `batching` lines added to
/// their tables.
fn serve_text(text: &str, batching: &str) -> (TestDir, Sidecar) {
    serve_text_with(text, batching, &[])
}

/// As [`serve_text`], with `envs` set for the sidecar.
fn serve_text_with(text: &str, batching: &str, envs: &[(&str, &str)]) -> (TestDir, Sidecar) {
    let dir = TestDir::new();
    dir.copy_fixture(MODEL, "minibert.onnx");
    std::fs::copy(
        fixture_path(&format!("models/{MODEL}.tokenizer.json")),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let mut config = ConfigText::new(&dir);
    config.model = "minibert.onnx".to_string();
    config.extra = format!(
        "[sidecar.model.text]\ntokenizer = \"tokenizer.json\"\n{text}\n[sidecar.batching]\n{batching}\n"
    );
    let path = dir.write_config(&config.render());
    let mut envs = envs.to_vec();
    envs.push(("CUDA_VISIBLE_DEVICES", ""));
    let mut sidecar = Sidecar::spawn(&path, &envs);
    sidecar.wait_ready();
    (dir, sidecar)
}

/// The outputs `names`, asked for by name.
fn requested(names: &[&str]) -> Vec<InferRequestedOutputTensor> {
    names
        .iter()
        .map(|name| InferRequestedOutputTensor {
            name: name.to_string(),
            ..Default::default()
        })
        .collect()
}

fn text_request(texts: &[&str], outputs: &[&str]) -> ModelInferRequest {
    let mut raw = Vec::new();
    for text in texts {
        raw.extend_from_slice(&(text.len() as u32).to_le_bytes());
        raw.extend_from_slice(text.as_bytes());
    }
    ModelInferRequest {
        model_name: MODEL.to_string(),
        inputs: vec![InferInputTensor {
            name: "text".to_string(),
            datatype: "BYTES".to_string(),
            shape: vec![texts.len() as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![raw],
        outputs: requested(outputs),
        ..Default::default()
    }
}

/// A request of the token ids of `sentence`, as a caller with its own tokenizer sends it.
fn token_request(sentence: &Sentence, outputs: &[&str]) -> ModelInferRequest {
    let length = sentence.ids.len() as i64;
    let tensor = |name: &str| InferInputTensor {
        name: name.to_string(),
        datatype: "INT64".to_string(),
        shape: vec![1, length],
        ..Default::default()
    };
    let bytes = |values: &[i64]| values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let n = sentence.ids.len();
    ModelInferRequest {
        model_name: MODEL.to_string(),
        inputs: vec![
            tensor("input_ids"),
            tensor("attention_mask"),
            tensor("token_type_ids"),
        ],
        raw_input_contents: vec![bytes(&sentence.ids), bytes(&vec![1; n]), bytes(&vec![0; n])],
        outputs: requested(outputs),
        ..Default::default()
    }
}

/// Output `name` of an answer: its shape and FP32 values.
fn output(response: &ModelInferResponse, name: &str) -> (Vec<i64>, Vec<f32>) {
    let i = response
        .outputs
        .iter()
        .position(|o| o.name == name)
        .unwrap_or_else(|| panic!("no output {name:?} in {:?}", response.outputs));
    assert_eq!(response.outputs[i].datatype, "FP32");
    let values = response.raw_output_contents[i]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (response.outputs[i].shape.clone(), values)
}

/// Asserts `got` equals `want` within rtol 1e-4 (plus atol 1e-5 near zero).
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 + 1e-4 * w.abs(),
            "{what}: element {i} is {g}, expected {w}"
        );
    }
}

fn infer(client: &GrpcInferenceServiceClient, request: &ModelInferRequest) -> ModelInferResponse {
    client.model_infer_opt(request, patient()).unwrap()
}

fn refused(client: &GrpcInferenceServiceClient, request: &ModelInferRequest) -> String {
    match client.model_infer_opt(request, patient()) {
        Err(grpcio::Error::RpcFailure(status)) => {
            assert_eq!(status.code(), RpcStatusCode::INVALID_ARGUMENT, "{status:?}");
            status.message().to_string()
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

#[test]
fn text_in_embedding_out_equal_to_the_reference() {
    let (_dir, sidecar) = serve_text("", "");
    let client = client(&sidecar.grpc_target());
    let sentences = sentences();

    let metadata = client
        .model_metadata_opt(
            &ModelMetadataRequest {
                name: MODEL.to_string(),
                ..Default::default()
            },
            patient(),
        )
        .unwrap();
    let inputs: Vec<_> = metadata
        .inputs
        .iter()
        .map(|t| (t.name.as_str(), t.datatype.as_str(), t.shape.clone()))
        .collect();
    assert_eq!(inputs, [("text", "BYTES", vec![-1])]);
    assert_eq!(metadata.outputs[0].name, "embedding");
    assert_eq!(metadata.outputs[0].shape, [-1, 32]);
    let config = client
        .model_config_opt(
            &ModelConfigRequest {
                name: MODEL.to_string(),
                ..Default::default()
            },
            patient(),
        )
        .unwrap();
    let parameter = |key: &str| config.config.parameters[key].string_value.clone();
    // The model's 64 positions, read from its graph.
    assert_eq!(parameter("text.max_length"), "64");
    assert_eq!(parameter("text.pooling"), "mean");

    // Each sentence alone: its embedding (the default output of a request of texts).
    for sentence in &sentences {
        let answer = infer(&client, &text_request(&[&sentence.text], &[]));
        assert_eq!(answer.outputs.len(), 1);
        let (shape, embedding) = output(&answer, "embedding");
        assert_eq!(shape, [1, 32]);
        assert_close(&embedding, &sentence.embedding, &sentence.text);
    }
    // Three of different lengths in one request: each row its own, the graph's pooled output
    // beside it (equal to the graph's output for the sentence alone).
    let three = [&sentences[1], &sentences[9], &sentences[4]];
    let texts: Vec<&str> = three.iter().map(|s| s.text.as_str()).collect();
    let answer = infer(
        &client,
        &text_request(&texts, &["embedding", "sentence_embedding"]),
    );
    let (shape, embeddings) = output(&answer, "embedding");
    assert_eq!(shape, [3, 32]);
    let (_, pooled) = output(&answer, "sentence_embedding");
    for (row, sentence) in three.iter().enumerate() {
        let range = row * 32..(row + 1) * 32;
        assert_close(
            &embeddings[range.clone()],
            &sentence.embedding,
            &sentence.text,
        );
        assert_close(&pooled[range], &sentence.sentence_embedding, &sentence.text);
    }
}

/// Batching for the tests of lengths batched together: padding not capped, as
/// text-embeddings-inference pads (the CPU default, 0.2, groups these 16 lengths in twos and
/// threes), and batches of the 16 clients' requests, waiting for all of them (a batch runs
/// as soon as it is full), so that the batches do not depend on how fast this machine is.
const ALL_LENGTHS_TOGETHER: &str = "max-batch-size = 16\nmax-queue-delay = \"1 s\"\n\
     delay-mode = \"fixed\"\nmax-padding = 1.0";

/// Runs `call` `rounds` times from each of 16 clients at once, client i with sentence i
/// (lengths 4 to 61 tokens).
fn from_16_clients(
    target: &str,
    sentences: &[Sentence],
    rounds: usize,
    call: impl Fn(&GrpcInferenceServiceClient, &Sentence) + Sync,
) {
    let call = &call;
    thread::scope(|scope| {
        for sentence in sentences.iter().take(16) {
            scope.spawn(move || {
                let client = client(target);
                for _ in 0..rounds {
                    call(&client, sentence);
                }
            });
        }
    });
}

/// Serves the text model batching all lengths together, runs `call` `rounds` times from each
/// of 16 clients at once, and returns the executions that ran their requests.
fn executions_for_16_clients(
    rounds: usize,
    call: impl Fn(&GrpcInferenceServiceClient, &Sentence) + Sync,
) -> u64 {
    let (_dir, sidecar) = serve_text("", ALL_LENGTHS_TOGETHER);
    let target = sidecar.grpc_target();
    from_16_clients(&target, &sentences(), rounds, call);
    let (inferences, executions) = counts(&client(&target), MODEL);
    assert_eq!(inferences, 16 * rounds as u64);
    executions
}

#[test]
fn concurrent_sentences_of_different_lengths_batch_and_each_gets_its_own_answer() {
    let rounds = 6;
    let executions = executions_for_16_clients(rounds, |client, sentence| {
        let answer = infer(
            client,
            &text_request(&[&sentence.text], &["embedding", "last_hidden_state"]),
        );
        let (_, embedding) = output(&answer, "embedding");
        assert_close(&embedding, &sentence.embedding, &sentence.text);
        // Token embeddings cut back to the sentence's own length.
        let (shape, tokens) = output(&answer, "last_hidden_state");
        assert_eq!(shape, [1, sentence.ids.len() as i64, 32]);
        assert_close(&tokens, &sentence.last_hidden_state, &sentence.text);
    });
    let inferences = 16 * rounds as u64;
    assert!(
        inferences as f64 / executions as f64 > 4.0,
        "{inferences} sentences of lengths 4 to 61 ran in {executions} executions"
    );
}

#[test]
fn token_ids_of_mixed_lengths_batch_and_are_cut_back() {
    let rounds = 4;
    let executions = executions_for_16_clients(rounds, |client, sentence| {
        let answer = infer(
            client,
            &token_request(
                sentence,
                &["last_hidden_state", "sentence_embedding", "embedding"],
            ),
        );
        let (shape, tokens) = output(&answer, "last_hidden_state");
        assert_eq!(shape, [1, sentence.ids.len() as i64, 32]);
        assert_close(&tokens, &sentence.last_hidden_state, &sentence.text);
        let (_, pooled) = output(&answer, "sentence_embedding");
        assert_close(&pooled, &sentence.sentence_embedding, &sentence.text);
        // The embedding is pooled from token ids too, over the mask sent.
        let (_, embedding) = output(&answer, "embedding");
        assert_close(&embedding, &sentence.embedding, &sentence.text);
    });
    let inferences = 16 * rounds as u64;
    assert!(
        executions < inferences,
        "{inferences} requests of token ids ran in {executions} executions: none batched"
    );
}

#[test]
fn long_texts_are_truncated_at_the_models_positions_or_refused() {
    let sentences = sentences();
    let long = sentences.last().unwrap();
    assert_eq!(
        long.ids.len(),
        64,
        "the fixture's long sentence is truncated"
    );
    {
        let (_dir, sidecar) = serve_text("", "");
        let client = client(&sidecar.grpc_target());
        let answer = infer(&client, &text_request(&[&long.text], &[]));
        let (_, embedding) = output(&answer, "embedding");
        assert_close(&embedding, &long.embedding, "the truncated sentence");
        // Token ids over the model's 64 positions are refused by name, before the runtime.
        let mut over = Sentence {
            text: String::new(),
            ids: vec![7; 65],
            embedding: Vec::new(),
            sentence_embedding: Vec::new(),
            last_hidden_state: Vec::new(),
        };
        let message = refused(&client, &token_request(&over, &[]));
        assert!(
            message.contains("\"input_ids\"") && message.contains("65 positions"),
            "{message}"
        );
        over.ids.truncate(64);
        infer(&client, &token_request(&over, &["sentence_embedding"]));
    }
    let (_dir, sidecar) = serve_text("truncate = false", "");
    let client = client(&sidecar.grpc_target());
    let message = refused(&client, &text_request(&["short one", &long.text], &[]));
    assert!(
        message.contains("\"text\"")
            && message.contains("element 1")
            && message.contains("max-length"),
        "{message}"
    );
}

#[test]
fn empty_and_invalid_texts_are_refused_by_name() {
    let (_dir, sidecar) = serve_text("", "");
    let client = client(&sidecar.grpc_target());
    let message = refused(&client, &text_request(&["a payment", ""], &[]));
    assert!(
        message.contains("\"text\"") && message.contains("element 1") && message.contains("empty"),
        "{message}"
    );
    let mut invalid = text_request(&["ok"], &[]);
    invalid.raw_input_contents[0] = [2u32.to_le_bytes().to_vec(), vec![0xff, 0xfe]].concat();
    let message = refused(&client, &invalid);
    assert!(
        message.contains("\"text\"") && message.contains("UTF-8"),
        "{message}"
    );
    let message = refused(&client, &text_request(&["ok"], &["no_such_output"]));
    assert!(message.contains("\"embedding\""), "{message}");
    // Token ids whose inputs disagree on the length, or have none, are refused by name
    // before they could be batched with others.
    let sentence = &sentences()[3];
    let mut uneven = token_request(sentence, &[]);
    uneven.inputs[1].shape[1] += 1;
    uneven.raw_input_contents[1].extend_from_slice(&1i64.to_le_bytes());
    let message = refused(&client, &uneven);
    assert!(
        message.contains("\"attention_mask\"") && message.contains("\"input_ids\""),
        "{message}"
    );
    let mut empty = token_request(sentence, &[]);
    for (input, raw) in empty.inputs.iter_mut().zip(&mut empty.raw_input_contents) {
        input.shape[1] = 0;
        raw.clear();
    }
    let message = refused(&client, &empty);
    assert!(message.contains("0 positions"), "{message}");
    // The sidecar still serves.
    infer(&client, &text_request(&["still here"], &[]));
}

#[test]
fn the_adaptive_delay_never_holds_a_lone_caller() {
    // A delay no test would wait out: a request held for company would take 5 s.
    let (_dir, sidecar) = serve_text("", "max-queue-delay = \"5 s\"");
    let lone = client(&sidecar.grpc_target());
    for sentence in sentences().iter().take(5) {
        let started = Instant::now();
        infer(&lone, &text_request(&[&sentence.text], &[]));
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "a lone request waited {:?} for company",
            started.elapsed()
        );
    }
}

/// A burst: while the first execution is held (at a failpoint's gate), 16 callers send at
/// once; once all have queued behind it, it is released, and they run together with the
/// adaptive delay.
#[cfg(feature = "failpoints")]
#[test]
fn the_adaptive_delay_batches_a_burst() {
    let gate = crate::gate::Gate::new();
    let failpoints = format!("gpu::execute=1*{}", gate.action());
    let (_dir, sidecar) = serve_text_with(
        "",
        "max-queue-delay = \"50 ms\"\nmax-padding = 1.0",
        &[("FAILPOINTS", &failpoints)],
    );
    let target = sidecar.grpc_target();
    std::thread::scope(|scope| {
        let burst = scope.spawn(|| {
            from_16_clients(&target, &sentences(), 1, |client, sentence| {
                infer(client, &text_request(&[&sentence.text], &[]));
            })
        });
        // The first execution is held with the requests it gathered; every one of the 16 has
        // arrived once those it holds and those queued behind it make 16.
        sidecar.wait_for_log("failpoint gpu::execute: held");
        let deadline = Instant::now() + crate::util::PATIENCE;
        loop {
            let scrape = crate::scrape::Scrape::fetch(sidecar.health_addr());
            let arrived = scrape.get("gpu_sidecar_inference_queue_seconds_count")
                + scrape.get("gpu_sidecar_inference_queue_depth");
            if arrived >= 16.0 {
                break;
            }
            assert!(Instant::now() < deadline, "{arrived} of the burst arrived");
            std::thread::sleep(Duration::from_millis(10));
        }
        gate.release();
        burst.join().unwrap();
    });
    let (inferences, executions) = counts(&client(&target), MODEL);
    assert_eq!(inferences, 16);
    assert!(
        executions <= 4,
        "a burst of 16 requests ran in {executions} executions"
    );
}

#[test]
fn a_tokenizer_that_cannot_be_read_is_a_configuration_error() {
    let dir = TestDir::new();
    dir.copy_fixture(MODEL, "minibert.onnx");
    std::fs::write(dir.path().join("tokenizer.json"), "{ not a tokenizer").unwrap();
    let mut config = ConfigText::new(&dir);
    config.model = "minibert.onnx".to_string();
    config.extra = "[sidecar.model.text]\ntokenizer = \"tokenizer.json\"\n".to_string();
    let log = crate::util::expect_exit(2, &dir, &config.render(), &[]);
    assert!(
        log.contains("tokenizer") && log.contains("tokenizer.json"),
        "{log}"
    );
}

#[test]
fn without_batching_a_request_of_several_texts_runs_as_one() {
    let (_dir, sidecar) = serve_text("", "max-batch-size = 0");
    let client = client(&sidecar.grpc_target());
    let sentences = sentences();
    let three = [&sentences[2], &sentences[12], &sentences[7]];
    let texts: Vec<&str> = three.iter().map(|s| s.text.as_str()).collect();
    let answer = infer(&client, &text_request(&texts, &[]));
    let (shape, embeddings) = output(&answer, "embedding");
    assert_eq!(shape, [3, 32]);
    for (row, sentence) in three.iter().enumerate() {
        assert_close(
            &embeddings[row * 32..(row + 1) * 32],
            &sentence.embedding,
            &sentence.text,
        );
    }
}

#[test]
fn a_model_a_tokenizer_cannot_feed_is_a_configuration_error_that_leaves_nothing_behind() {
    // The sample model takes FP32 features, not token ids: found once it is loaded, after
    // the gRPC socket is bound.
    let dir = TestDir::new();
    dir.copy_fixture("affine", "affine.onnx");
    std::fs::copy(
        fixture_path(&format!("models/{MODEL}.tokenizer.json")),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let mut config = ConfigText::new(&dir);
    config.model = "affine.onnx".to_string();
    config.extra = "[sidecar.model.text]\ntokenizer = \"tokenizer.json\"\n".to_string();
    let log = crate::util::expect_exit(2, &dir, &config.render(), &[("CUDA_VISIBLE_DEVICES", "")]);
    assert!(
        log.contains("model input \"features\" is not one a tokenizer makes"),
        "{log}"
    );
    assert!(
        !dir.socket().exists(),
        "the socket was left behind: {:?}",
        dir.entries()
    );
}
