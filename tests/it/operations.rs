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

//! The operations files in `deploy/` against the real tools: the Prometheus alert rules pass
//! `promtool check rules` and their unit tests; a real Prometheus server (Debian's
//! `prometheus` package, which the test command installs) scrapes a real sidecar under load,
//! answers every query of the Grafana dashboard with data, and fires GpuSidecarDown once the
//! sidecar is stopped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use grpcio::RpcStatusCode;

use crate::inference::{client, patient, status_of, zero_features};
use crate::util::{fixture_sidecar, http, project_root, TestDir, PATIENCE};

/// How to get Prometheus's tools when they are missing.
const INSTALL_HINT: &str =
    "this test needs Debian's prometheus package (promtool and prometheus): `bin/dev.sh test` installs it, or `sudo apt-get install prometheus`";

fn deploy(relative: &str) -> PathBuf {
    project_root().join("deploy").join(relative)
}

/// Runs `tool` with `args` in `dir`; panics with its output unless it succeeds.
fn run_tool(tool: &str, args: &[&str], dir: &Path) -> String {
    let output = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}; {INSTALL_HINT}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let folder = deploy("prometheus");
    let checked = run_tool(
        "promtool",
        &["check", "rules", "gpu-sidecar-alerts.yml"],
        &folder,
    );
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_tool(
        "promtool",
        &["test", "rules", "gpu-sidecar-alerts.test.yml"],
        &folder,
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// A Prometheus server on a free loopback port, killed by pid when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: TestDir,
}

impl Prometheus {
    /// Scrapes `target` every second as job `gpu-sidecar`, evaluating `rules` every second.
    fn start(target: SocketAddr, rules: &str) -> Self {
        let mut dir = TestDir::new();
        std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\nscrape_configs:\n  - job_name: gpu-sidecar\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        // A free port, found by binding and letting go: another process may take it between,
        // so a server that cannot listen is started again on another.
        for _ in 0..3 {
            let addr = {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap()
            };
            let child = Command::new("prometheus")
                .current_dir(dir.path())
                .arg("--config.file=prometheus.yml")
                .arg("--storage.tsdb.path=data")
                .arg(format!("--web.listen-address={addr}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start prometheus: {e}; {INSTALL_HINT}"));
            let mut prometheus = Prometheus {
                child,
                addr,
                _dir: dir,
            };
            let deadline = Instant::now() + PATIENCE;
            loop {
                if let Ok((200, _)) = http(prometheus.addr, "GET", "/-/ready") {
                    return prometheus;
                }
                if let Some(status) = prometheus.child.try_wait().unwrap() {
                    let log = prometheus.log();
                    assert!(
                        log.contains("address already in use"),
                        "prometheus exited ({status}):\n{log}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "Prometheus not ready within {PATIENCE:?}\n{}",
                    prometheus.log()
                );
                thread::sleep(Duration::from_millis(100));
            }
            dir = std::mem::replace(&mut prometheus._dir, TestDir::new());
        }
        panic!("prometheus found no free port in 3 tries");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's result vector; panics on a query Prometheus refuses.
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let (status, body) = http(
            self.addr,
            "GET",
            &format!("/api/v1/query?query={}", encode(expr)),
        )
        .unwrap_or_else(|e| panic!("query {expr}: {e}\n{}", self.log()));
        let answer: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("query {expr}: {e}: {body}"));
        assert_eq!(status, 200, "query {expr}: {body}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn wait_until(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "Prometheus: not {what} within {PATIENCE:?}\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The dashboard's queries, with Grafana's variables as a user who picked "All" sees them.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("grafana/gpu-sidecar.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "10s")
                .replace("$job", "gpu-sidecar")
                .replace("$instance", ".*")
                .replace("$model", ".*");
            queries.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    queries
}

/// Panels whose series exist only on a GPU.
const GPU_ONLY: [&str; 3] = [
    "GPU memory",
    "GPU utilisation (driver)",
    "GPUs out of service",
];

#[test]
fn a_real_prometheus_answers_every_dashboard_query_and_alerts_when_the_sidecar_stops() {
    let (_dir, mut sidecar) = fixture_sidecar("affine", |config| {
        config.rpc_extra = "max-message-size = \"1 MiB\"".to_string();
    });
    // The shipped rules, with GpuSidecarDown's wait cut from 2 minutes to none.
    let rules = std::fs::read_to_string(deploy("prometheus/gpu-sidecar-alerts.yml")).unwrap();
    let shipped_wait = "expr: up{job=\"gpu-sidecar\"} == 0\n        for: 2m";
    assert!(
        rules.contains(shipped_wait),
        "GpuSidecarDown's rule changed shape"
    );
    let rules = rules.replace(
        shipped_wait,
        "expr: up{job=\"gpu-sidecar\"} == 0\n        for: 0s",
    );
    let prometheus = Prometheus::start(sidecar.health_addr(), &rules);

    // Load: answered requests, and refused ones (over max-message-size), until every query
    // has data.
    let client = client(&sidecar.grpc_target());
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let mut sent = 0;
    let mut empty: Vec<&(String, String)> = queries.iter().collect();
    let deadline = Instant::now() + PATIENCE;
    while !empty.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no data within {PATIENCE:?} for:\n{empty:#?}\n{}",
            prometheus.log()
        );
        for _ in 0..20 {
            client
                .model_infer_opt(&zero_features(&format!("r{sent}"), 4), patient())
                .unwrap();
            sent += 1;
        }
        let (code, _) =
            status_of(client.model_infer_opt(&zero_features("big", 100_000), patient()));
        assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
        empty.retain(|(panel, expr)| {
            GPU_ONLY.iter().all(|only| panel != only) && prometheus.query(expr).is_empty()
        });
    }
    // The GPU panels' queries are valid PromQL, and empty here, with no GPU.
    for (panel, expr) in queries
        .iter()
        .filter(|(p, _)| GPU_ONLY.contains(&p.as_str()))
    {
        assert!(prometheus.query(expr).is_empty(), "{panel}: {expr}");
    }
    // The rules' recording rules and alert expressions evaluate without error.
    prometheus.wait_until("recording the share of invalid requests", || {
        !prometheus
            .query("gpu_sidecar:inference_requests:ratio_5m{outcome=\"invalid\"} > 0")
            .is_empty()
    });
    assert!(prometheus.query("ALERTS{alertstate=\"firing\"}").is_empty());

    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.exit_code(PATIENCE), 0, "{}", sidecar.log());
    prometheus.wait_until("firing GpuSidecarDown", || {
        !prometheus
            .query("ALERTS{alertname=\"GpuSidecarDown\", alertstate=\"firing\"}")
            .is_empty()
    });
}
