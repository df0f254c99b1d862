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

//! The closed loop every run shares: N client threads, each sending its next request as soon
//! as the last one is answered, until a time or a request count is reached; what they
//! measured is merged into one [`Tally`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// When a run ends.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Time(Duration),
    Requests(u64),
}

/// What a run's clients measured.
#[derive(Debug, Default)]
pub struct Tally {
    /// Latencies of the answered requests, in nanoseconds; sorted once merged.
    pub latencies: Vec<u64>,
    /// Failed requests by status code (or error text).
    pub errors: BTreeMap<String, u64>,
    /// How long the run took.
    pub seconds: f64,
}

impl Tally {
    /// Counts a request answered, sent at `began`.
    pub fn answered(&mut self, began: Instant) {
        self.latencies.push(began.elapsed().as_nanos() as u64);
    }

    /// Counts a request failed with `code`.
    pub fn failed(&mut self, code: impl Into<String>) {
        *self.errors.entry(code.into()).or_default() += 1;
    }

    /// Counts a request failed with a gRPC error: by its status code when it has one.
    pub fn rpc_failed(&mut self, error: &grpcio::Error) {
        match error {
            grpcio::Error::RpcFailure(status) => self.failed(format!("{:?}", status.code())),
            other => self.failed(other.to_string()),
        }
    }

    /// Requests counted, answered or not.
    pub fn requests(&self) -> u64 {
        self.latencies.len() as u64 + self.errors.values().sum::<u64>()
    }
}

/// Runs one closed loop per client, each on its own thread, until `limit`: `client_loop`
/// sends the client's requests while `go_on()` allows, counting each in its tally.
pub fn closed_loop<C: Sync>(
    clients: &[C],
    limit: Limit,
    client_loop: impl Fn(&C, &mut dyn FnMut() -> bool, &mut Tally) + Sync,
) -> Tally {
    let started = Instant::now();
    let issued = AtomicU64::new(0);
    let (results, collected) = mpsc::channel();
    thread::scope(|scope| {
        for client in clients {
            let results = results.clone();
            let (issued, client_loop) = (&issued, &client_loop);
            scope.spawn(move || {
                let mut go_on = || match limit {
                    Limit::Time(d) => started.elapsed() < d,
                    Limit::Requests(n) => issued.fetch_add(1, Ordering::Relaxed) < n,
                };
                let mut tally = Tally::default();
                client_loop(client, &mut go_on, &mut tally);
                let _ = results.send(tally);
            });
        }
    });
    drop(results);
    let mut merged = Tally {
        seconds: started.elapsed().as_secs_f64(),
        ..Tally::default()
    };
    for tally in collected {
        merged.latencies.extend(tally.latencies);
        for (code, count) in tally.errors {
            *merged.errors.entry(code).or_default() += count;
        }
    }
    merged.latencies.sort_unstable();
    merged
}
