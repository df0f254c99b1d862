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

//! A new version swapped in under 16 streaming clients (by polling, SIGHUP and
//! RepositoryModelLoad) with no request failed or lost.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use futures_executor::block_on;
use futures_util::{SinkExt, StreamExt};
use grpcio::WriteFlags;

use crate::inference::{client, closed_cleanly, expected, patient};
use crate::repository::*;
use crate::scrape::Scrape;
use crate::util::TestDir;

/// How the new version is brought in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Trigger {
    /// The repository is polled every 200 ms.
    Poll,
    /// Polled hourly: only SIGHUP rescans it in time.
    Sighup,
    /// Explicit control: RepositoryModelLoad.
    LoadRpc,
}

/// What one streaming client saw: per answer, whether it was sent after the switch was
/// complete, and the version that computed it (0: neither).
struct Seen {
    answers: Vec<(bool, u64)>,
    failures: Vec<String>,
}

/// 16 clients stream requests, one at a time each, while version 2 of `affine` replaces
/// version 1; none fails, each answer is version 1's or 2's, a client that saw 2 never
/// sees 1 again, and once the switch is done only 2 answers.
fn swap_under_load(trigger: Trigger) {
    let dir = TestDir::new();
    let repository = dir.path().join("models");
    publish(&repository, "affine", 1, "affine");
    let control = match trigger {
        Trigger::Poll => "repository-control = \"poll\"\nrepository-poll-interval = \"200 ms\"",
        Trigger::Sighup => "repository-control = \"poll\"\nrepository-poll-interval = \"1 h\"",
        Trigger::LoadRpc => "repository-control = \"explicit\"",
    };
    let sidecar = serve(&dir, &format!("repository = \"models\"\n{control}"), "");
    let target = sidecar.grpc_target();
    let switched = Arc::new(AtomicBool::new(false));
    let stop_clients = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients = 16;
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (target, switched, stop_clients, answered) = (
                target.clone(),
                Arc::clone(&switched),
                Arc::clone(&stop_clients),
                Arc::clone(&answered),
            );
            thread::spawn(move || {
                let (v1, v2) = (expected("affine"), expected("affine_v2"));
                let client = client(&target);
                let (mut sink, mut receiver) = client.model_stream_infer_opt(patient()).unwrap();
                let mut seen = Seen {
                    answers: Vec::new(),
                    failures: Vec::new(),
                };
                block_on(async {
                    let mut i = 0;
                    while !stop_clients.load(Ordering::SeqCst) {
                        let after = switched.load(Ordering::SeqCst);
                        let row = (c + i) % 5;
                        let request = affine_row("affine", "", &format!("{c}-{i}"), row);
                        if let Err(e) = sink.send((request, WriteFlags::default())).await {
                            seen.failures.push(format!("send: {e}"));
                            break;
                        }
                        match receiver.next().await {
                            Some(Ok(message)) if message.error_message.is_empty() => {
                                let response = message.infer_response.unwrap();
                                seen.answers
                                    .push((after, which_affine(&response, row, &v1, &v2)));
                            }
                            Some(Ok(message)) => seen.failures.push(message.error_message),
                            other => {
                                seen.failures.push(format!("stream: {other:?}"));
                                break;
                            }
                        }
                        answered.fetch_add(1, Ordering::SeqCst);
                        i += 1;
                    }
                    let closed = sink.close().await;
                    if !closed_cleanly(&closed) {
                        seen.failures.push(format!("close: {closed:?}"));
                    }
                });
                seen
            })
        })
        .collect();
    let at_least = |count: usize| {
        wait_until(&sidecar, "the clients answered", || {
            answered.load(Ordering::SeqCst) >= count
        })
    };
    at_least(clients * 10);
    let client = client(&target);
    publish(&repository, "affine", 2, "affine_v2");
    match trigger {
        Trigger::Poll => {}
        Trigger::Sighup => sidecar.signal(libc::SIGHUP),
        Trigger::LoadRpc => {
            load(&client, "affine").unwrap();
            // Loaded: it answers once version 2 takes requests and version 1 none.
            assert_eq!(ready_versions(&client, "affine"), ["2"]);
        }
    }
    wait_until(&sidecar, "version 2 alone READY", || {
        ready_versions(&client, "affine") == ["2"]
    });
    switched.store(true, Ordering::SeqCst);
    let now = answered.load(Ordering::SeqCst);
    at_least(now + clients * 10);
    stop_clients.store(true, Ordering::SeqCst);
    let seen: Vec<Seen> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let failures: Vec<&String> = seen.iter().flat_map(|s| &s.failures).collect();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let mut by_version = [0usize; 3];
    for (c, client_seen) in seen.iter().enumerate() {
        let mut newest = 1;
        for &(after, version) in &client_seen.answers {
            by_version[version as usize] += 1;
            assert_ne!(version, 0, "client {c}: an answer of neither version");
            assert!(
                version >= newest,
                "client {c}: version 1 answered after version 2 had"
            );
            newest = version;
            assert!(
                !after || version == 2,
                "client {c}: version 1 after the switch"
            );
        }
    }
    assert!(
        by_version[1] > 0 && by_version[2] > 0,
        "answers by version: {by_version:?}"
    );
    // The old version is freed, and its series with it.
    sidecar.wait_for_log("model \"affine\" version 1: freed its session");
    let scrape = Scrape::fetch(sidecar.health_addr());
    assert_eq!(
        scrape.get("gpu_sidecar_model_ready{model=\"affine\",version=\"2\"}"),
        1.0
    );
    assert!(
        !scrape.samples.keys().any(|s| s.contains("version=\"1\"")),
        "version 1's series stay: {:#?}",
        scrape.samples
    );
    assert_ready(&sidecar, &client);
    if trigger == Trigger::Poll {
        // The newest version's folder removed: back to the version the policy then picks.
        std::fs::remove_dir_all(repository.join("affine").join("2")).unwrap();
        wait_until(&sidecar, "rolled back to version 1", || {
            ready_versions(&client, "affine") == ["1"]
        });
    }
    stop(sidecar);
}

#[test]
fn a_polled_new_version_takes_over_under_load_with_no_request_lost() {
    swap_under_load(Trigger::Poll);
}

#[test]
fn sighup_rescans_and_swaps_under_load_with_no_request_lost() {
    swap_under_load(Trigger::Sighup);
}

#[test]
fn load_model_swaps_under_load_with_no_request_lost() {
    swap_under_load(Trigger::LoadRpc);
}
