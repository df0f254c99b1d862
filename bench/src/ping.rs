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

//! The Ping runs: each --concurrency × --payload, a closed loop of Pings per client, each
//! client on a connection of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::{CallOption, Environment};

use gpu_sidecar::proto::sidecar::PingRequest;
use gpu_sidecar::proto::sidecar_grpc::SidecarClient;

use crate::cli::Args;
use crate::load::{self, Limit};
use crate::report::{print_report, resident_memory, RunReport};
use crate::{BenchError, Target};

/// The Ping runs of the matrix: each --concurrency × --payload.
pub(crate) fn measure_ping(
    args: &Args,
    environment: &Arc<Environment>,
    target: &Target,
) -> Result<(), BenchError> {
    let probe = connect(environment, target);
    probe
        .ping_opt(
            &PingRequest::default(),
            CallOption::default().timeout(Duration::from_secs(5)),
        )
        .map_err(|e| BenchError::Unreachable {
            target: target.grpc.clone(),
            reason: e.to_string(),
        })?;
    if !args.json {
        println!(
            "\n{} ({}): closed loop, {} warm-up, {} per run",
            target.label,
            target.grpc,
            humantime::format_duration(args.warmup),
            args.requests.map_or_else(
                || humantime::format_duration(args.duration).to_string(),
                |n| format!("{n} requests")
            )
        );
        println!(
            "{:>11} {:>9} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "concurrency",
            "payload",
            "requests",
            "errors",
            "req/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "max µs"
        );
    }
    for &concurrency in &args.concurrency {
        for &payload in &args.payload {
            let clients: Vec<SidecarClient> = (0..concurrency)
                .map(|_| connect(environment, target))
                .collect();
            let payload_bytes = vec![0x5au8; usize::try_from(payload).unwrap_or(usize::MAX)];
            closed_loop(
                &clients,
                &payload_bytes,
                Limit::Time(args.warmup),
                args.deadline,
            );
            let limit = args
                .requests
                .map_or(Limit::Time(args.duration), Limit::Requests);
            let mut report = closed_loop(&clients, &payload_bytes, limit, args.deadline);
            report.transport = target.label.clone();
            report.payload_bytes = payload;
            report.rss_bytes = target.health.and_then(resident_memory);
            print_report(args, &report);
        }
    }
    Ok(())
}

/// A channel of its own (its own connection: subchannels are not shared).
pub(crate) fn connect(environment: &Arc<Environment>, target: &Target) -> SidecarClient {
    SidecarClient::new(crate::channel(environment, target, 64 << 20))
}

/// Runs one closed loop of Pings per client until `limit`.
pub(crate) fn closed_loop(
    clients: &[SidecarClient],
    payload: &[u8],
    limit: Limit,
    deadline: Duration,
) -> RunReport {
    let request = PingRequest {
        payload: payload.to_vec(),
        ..PingRequest::default()
    };
    let tally = load::closed_loop(clients, limit, |client, go_on, tally| {
        while go_on() {
            let began = Instant::now();
            match client.ping_opt(&request, CallOption::default().timeout(deadline)) {
                Ok(response) if response.payload.len() == request.payload.len() => {
                    tally.answered(began)
                }
                Ok(_) => tally.failed("WRONG_PAYLOAD"),
                Err(e) => tally.rpc_failed(&e),
            }
        }
    });
    RunReport {
        transport: String::new(),
        concurrency: clients.len(),
        payload_bytes: payload.len() as u64,
        requests: tally.requests(),
        errors: tally.errors,
        seconds: tally.seconds,
        latencies: tally.latencies,
        rss_bytes: None,
    }
}
