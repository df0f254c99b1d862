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

//! What a Ping run found, printed as a table line and as JSON, and what the sidecar's
//! `/metrics` says of its memory.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::cli::Args;

/// The outcome of one run.
#[derive(Debug)]
pub(crate) struct RunReport {
    pub(crate) transport: String,
    pub(crate) concurrency: usize,
    pub(crate) payload_bytes: u64,
    pub(crate) requests: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) seconds: f64,
    /// Sorted latencies of the successful calls, in nanoseconds.
    pub(crate) latencies: Vec<u64>,
    pub(crate) rss_bytes: Option<u64>,
}

impl RunReport {
    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub(crate) fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds.max(f64::EPSILON)
    }

    /// The `p`-th percentile (0-100) of the latencies, in microseconds.
    pub(crate) fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1] as f64 / 1000.0
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "ping",
            "transport": self.transport,
            "concurrency": self.concurrency,
            "payload_bytes": self.payload_bytes,
            "requests": self.requests,
            "ok": self.latencies.len(),
            "errors": self.errors,
            "seconds": self.seconds,
            "throughput_per_second": self.throughput(),
            "latency_us": {
                "p50": self.percentile_us(50.0),
                "p90": self.percentile_us(90.0),
                "p99": self.percentile_us(99.0),
                "max": self.percentile_us(100.0),
            },
            "rss_bytes": self.rss_bytes,
        })
    }
}

pub(crate) fn report_startup(args: &Args, label: &str, samples: &mut [Duration]) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "kind": "startup",
                "transport": label,
                "runs": samples.len(),
                "median_ms": median.as_secs_f64() * 1000.0,
                "samples_ms": ms,
            })
        );
    } else {
        println!(
            "{label}: spawn to READY, median of {}: {:.1} ms (min {:.1}, max {:.1})",
            samples.len(),
            median.as_secs_f64() * 1000.0,
            ms[0],
            ms[ms.len() - 1]
        );
    }
}

pub(crate) fn print_report(args: &Args, report: &RunReport) {
    if args.json {
        println!("{}", report.json());
        return;
    }
    let errors = if report.errors.is_empty() {
        "0".to_string()
    } else {
        report.error_count().to_string()
    };
    println!(
        "{:>11} {:>9} {:>9} {:>7} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
        report.concurrency,
        bytesize::ByteSize(report.payload_bytes)
            .display()
            .iec()
            .to_string(),
        report.requests,
        errors,
        report.throughput(),
        report.percentile_us(50.0),
        report.percentile_us(90.0),
        report.percentile_us(99.0),
        report.percentile_us(100.0),
    );
    for (code, count) in &report.errors {
        println!("{:>11} {count} x {code}", "error:");
    }
    if let Some(rss) = report.rss_bytes {
        println!(
            "{:>11} sidecar resident memory after the run: {}",
            "",
            bytesize::ByteSize(rss).display().iec()
        );
    }
}

/// The sidecar's `process_resident_memory_bytes`, from its `/metrics`.
pub(crate) fn resident_memory(health: SocketAddr) -> Option<u64> {
    metrics_text(health)?
        .lines()
        .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|bytes| bytes as u64)
}

/// The sidecar's /metrics, as text.
pub(crate) fn metrics_text(health: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&health, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {health}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}
