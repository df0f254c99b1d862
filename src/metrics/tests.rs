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

//! The metrics' unit tests: the exposition follows calls, the lifecycle, requests and
//! executions, and the GPU.

use super::*;
use crate::serving::ModelLocation;

/// The sum of the samples of `series`'s name that carry (at least) its labels; `None`
/// when there is none.
fn sample(text: &str, series: &str) -> Option<f64> {
    fn split(series: &str) -> (&str, Vec<&str>) {
        match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}').split(',').collect()),
            None => (series, Vec::new()),
        }
    }
    let (name, wanted) = split(series);
    let values: Vec<f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (sample_name, labels) = split(series);
            (sample_name == name && wanted.iter().all(|label| labels.contains(label)))
                .then(|| value.parse().ok())
                .flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[test]
fn exposition_follows_calls_and_lifecycle() {
    let metrics = Metrics::new(Transport::Unix).unwrap();
    let lifecycle = Lifecycle::new();
    let text = metrics.render(&lifecycle);
    assert_eq!(
        sample(&text, "gpu_sidecar_state{state=\"starting\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "gpu_sidecar_state{state=\"ready\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "gpu_sidecar_ping_calls_total{transport=\"unix\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "gpu_sidecar_ping_calls_total{transport=\"tcp\"}"),
        None
    );
    metrics.ping_received();
    metrics.ping_finished(Duration::from_micros(300), true);
    metrics.ping_received();
    metrics.ping_finished(Duration::from_millis(3), false);
    lifecycle.set_ready(ServingInfo::for_tests());
    metrics.record_ready(Duration::from_millis(1500), &ServingInfo::for_tests());
    metrics.model_loaded("m", 1, ModelLocation::HostMemory, 1, Duration::ZERO, 8);
    let text = metrics.render(&lifecycle);
    assert_eq!(
        sample(&text, "gpu_sidecar_state{state=\"ready\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "gpu_sidecar_ping_calls_total{transport=\"unix\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "gpu_sidecar_ping_errors_total{transport=\"unix\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "gpu_sidecar_ping_duration_seconds_bucket{transport=\"unix\",le=\"0.0005\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "gpu_sidecar_startup_duration_seconds"),
        Some(1.5)
    );
    assert_eq!(
        sample(
            &text,
            "gpu_sidecar_inference_queue_capacity{model=\"m\",version=\"1\"}"
        ),
        Some(8.0)
    );
    assert_eq!(
        sample(&text, "gpu_sidecar_model_load_failures_total{model=\"m\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "gpu_sidecar_model_resident_bytes{location=\"host\",model=\"m\",version=\"1\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "gpu_sidecar_model_ready{model=\"m\",version=\"1\"}"),
        Some(1.0)
    );
    assert!(text.contains("# TYPE gpu_sidecar_ping_duration_seconds histogram"));
}

#[test]
fn inference_series_follow_requests_and_executions() {
    let metrics = Metrics::new(Transport::Unix).unwrap();
    let lifecycle = Lifecycle::new();
    // A model's series are there, at zero, as soon as it is loaded.
    let model = metrics.for_model("affine", 2);
    let text = metrics.render(&lifecycle);
    assert_eq!(
            sample(
                &text,
                "gpu_sidecar_inference_requests_total{model=\"affine\",outcome=\"deadline\",version=\"2\"}"
            ),
            Some(0.0)
        );
    model.inference_finished(Outcome::Ok);
    model.inference_finished(Outcome::Ok);
    model.inference_finished(Outcome::ResourceExhausted);
    model.record_execution(3, Duration::from_micros(40));
    model.set_queue_depth(5);
    metrics.unrouted_inference_finished(Outcome::Invalid);
    metrics.streams_open().inc();
    let text = metrics.render(&lifecycle);
    assert_eq!(
        sample(
            &text,
            "gpu_sidecar_inference_requests_total{outcome=\"ok\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "gpu_sidecar_inference_requests_total{outcome=\"resource_exhausted\"}"
        ),
        Some(1.0)
    );
    // A request that named no model served has no model.
    assert_eq!(
        sample(
            &text,
            "gpu_sidecar_inference_requests_total{model=\"\",outcome=\"invalid\",version=\"\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "gpu_sidecar_inference_rows_total{model=\"affine\",version=\"2\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "gpu_sidecar_inference_executions_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "gpu_sidecar_inference_batch_rows_bucket{le=\"4\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "gpu_sidecar_inference_queue_depth"),
        Some(5.0)
    );
    assert_eq!(
        sample(&text, "gpu_sidecar_inference_streams_open"),
        Some(1.0)
    );
}

#[test]
fn gpu_series_appear_only_with_a_gpu() {
    let metrics = Metrics::new(Transport::Tcp).unwrap();
    let lifecycle = Lifecycle::new();
    assert!(!metrics.render(&lifecycle).contains("gpu_sidecar_gpu_"));
    metrics.record_gpu_memory(0, 30, 100);
    let text = metrics.render(&lifecycle);
    assert_eq!(
        sample(&text, "gpu_sidecar_gpu_memory_used_bytes{ordinal=\"0\"}"),
        Some(70.0)
    );
}
