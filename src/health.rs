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

//! The HTTP health endpoint, served by tiny_http on the `health` thread behind a connection
//! guard (the `health-accept` thread, [`guard`]) that bounds connections, request sizes and
//! slow clients. It comes up before anything else so that a probe sees NOT_READY during
//! start-up rather than a refused connection, and it goes down last.
//!
//! - `GET /health`, `/health/ready`: 200 `READY` when READY and every model that should be
//!   served has a version that takes requests, else 503 `NOT_READY`.
//! - `GET /health/live`: 200 `LIVE` while every component thread is alive and answering, else
//!   503 `NOT_LIVE`.
//! - `GET /metrics`: the Prometheus text exposition ([`crate::metrics`]).
//! - `HEAD` answers the same without a body; other methods 405; other paths 404.

mod guard;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::config::HealthConfig;
use crate::lifecycle::Lifecycle;
use crate::metrics::{self, Metrics};
use crate::shutdown::{ComponentThread, Event, ShutdownError};

/// The health endpoint could not be started; exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// Binding the listening socket failed (port in use, address not local, ...).
    #[error("cannot listen for health checks on {addr} (sidecar.health): {reason}")]
    Bind { addr: SocketAddr, reason: String },
    /// The serving thread could not be started.
    #[error(transparent)]
    Thread(#[from] ShutdownError),
}

/// How often the serving loop comes round when no request arrives, to show it is not stuck.
const LOOP_TICK: Duration = Duration::from_millis(250);

/// When the serving loop last came round, in milliseconds since `base`.
#[derive(Debug)]
struct LoopClock {
    base: Instant,
    last_turn_ms: AtomicU64,
}

impl LoopClock {
    fn turn(&self) {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_turn_ms.store(now, Ordering::Relaxed);
    }

    fn since_last_turn(&self) -> Duration {
        let last = Duration::from_millis(self.last_turn_ms.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last)
    }
}

/// The running health endpoint.
pub struct HealthServer {
    // Declared before `_backend_folder`: tiny_http removes its socket when dropped, then the
    // folder goes.
    server: Arc<Server>,
    _backend_folder: guard::BackendFolder,
    /// Stops the guard's accept loop.
    accepting_stopped: Arc<AtomicBool>,
    /// Stops tiny_http's request loop.
    stopping: Arc<AtomicBool>,
    clock: Arc<LoopClock>,
    thread: ComponentThread,
    acceptor: ComponentThread,
    addr: SocketAddr,
}

impl std::fmt::Debug for HealthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthServer")
            .field("addr", &self.addr)
            .field("thread", &self.thread)
            .finish_non_exhaustive()
    }
}

impl HealthServer {
    /// Binds `config.host:config.port` and starts the `health` thread. Fails if the address
    /// cannot be bound.
    pub fn start(
        config: &HealthConfig,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
        events: Sender<Event>,
    ) -> Result<Self, HealthError> {
        let requested = SocketAddr::new(config.host, config.port);
        let bind_error = |e: &dyn std::fmt::Display| HealthError::Bind {
            addr: requested,
            reason: e.to_string(),
        };
        let listener = TcpListener::bind(requested).map_err(|e| bind_error(&e))?;
        let addr = listener.local_addr().map_err(|e| bind_error(&e))?;
        let (backend, backend_path, backend_folder) =
            guard::backend_listener().map_err(|e| bind_error(&e))?;
        let server = Server::from_listener(backend, None).map_err(|e| bind_error(&e))?;
        let server = Arc::new(server);
        let stopping = Arc::new(AtomicBool::new(false));
        let clock = Arc::new(LoopClock {
            base: Instant::now(),
            last_turn_ms: AtomicU64::new(0),
        });
        let thread = {
            let server = Arc::clone(&server);
            let stopping = Arc::clone(&stopping);
            let clock = Arc::clone(&clock);
            ComponentThread::spawn("health", events.clone(), move || {
                serve(&server, &lifecycle, &metrics, &stopping, &clock)
            })?
        };
        let accepting_stopped = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let stopped = Arc::clone(&accepting_stopped);
            ComponentThread::spawn("health-accept", events, move || {
                guard::accept_loop(&listener, &backend_path, &stopped, guard::MAX_CONNECTIONS)
            })
        };
        let acceptor = match acceptor {
            Ok(acceptor) => acceptor,
            Err(e) => {
                // Stop the request loop already running, so that it is joined, not leaked.
                stopping.store(true, Ordering::SeqCst);
                server.unblock();
                drop(thread);
                return Err(e.into());
            }
        };
        log::info!("health endpoint listening on http://{addr}/health");
        Ok(HealthServer {
            server,
            _backend_folder: backend_folder,
            accepting_stopped,
            stopping,
            clock,
            thread,
            acceptor,
            addr,
        })
    }

    /// How long since the serving loop last came round; more than a second means it is stuck
    /// (in answering a request).
    pub fn silent_for(&self) -> Duration {
        self.clock.since_last_turn()
    }

    /// Stops answering and joins the thread, waiting up to `timeout`.
    /// Connections are closed first, while tiny_http still answers what they relay.
    pub fn stop(mut self, timeout: Duration) -> Result<(), ShutdownError> {
        self.accepting_stopped.store(true, Ordering::SeqCst);
        guard::wake(self.addr);
        let accepted = self.acceptor.join_within(timeout);
        self.stopping.store(true, Ordering::SeqCst);
        self.server.unblock();
        self.thread.join_within(timeout).and(accepted)
    }
}

/// Answers requests until `stopping` is set and the server is unblocked.
fn serve(
    server: &Server,
    lifecycle: &Lifecycle,
    metrics: &Metrics,
    stopping: &AtomicBool,
    clock: &LoopClock,
) -> Result<(), String> {
    loop {
        clock.turn();
        match server.recv_timeout(LOOP_TICK) {
            Ok(Some(request)) => respond(request, lifecycle, metrics),
            Ok(None) if stopping.load(Ordering::SeqCst) => return Ok(()),
            Ok(None) => {}
            Err(_) if stopping.load(Ordering::SeqCst) => return Ok(()),
            // A failed accept or a broken connection concerns one client only.
            Err(e) => log::debug!("health endpoint: {e}"),
        }
    }
}

/// The plain-text content type of the probe answers.
const TEXT: &str = "text/plain; charset=utf-8";

/// What a request gets: status code, body and content type.
fn answer(
    method: &Method,
    url: &str,
    lifecycle: &Lifecycle,
    metrics: &Metrics,
) -> (u16, String, &'static str) {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let known = matches!(
        path,
        "/health" | "/health/ready" | "/health/live" | "/metrics"
    );
    let text = |status: u16, body: &str| (status, body.to_string(), TEXT);
    if !known {
        return text(404, "NOT_FOUND");
    }
    if !matches!(method, Method::Get | Method::Head) {
        return text(405, "METHOD_NOT_ALLOWED");
    }
    match path {
        "/metrics" => (200, metrics.render(lifecycle), metrics::CONTENT_TYPE),
        "/health/live" if lifecycle.is_live() => text(200, "LIVE"),
        "/health/live" => text(503, "NOT_LIVE"),
        _ => {
            let (status, mut body) = if lifecycle.is_ready() {
                (200, "READY".to_string())
            } else {
                (503, "NOT_READY".to_string())
            };
            // A GPU out of service does not by itself make the sidecar unready (its models'
            // other instances serve), but whoever looks is told.
            for (ordinal, reason) in lifecycle.failed_devices() {
                body.push_str(&format!("\nGPU {ordinal} out of service: {reason}"));
            }
            text(status, &body)
        }
    }
}

fn respond(request: Request, lifecycle: &Lifecycle, metrics: &Metrics) {
    #[cfg(feature = "failpoints")]
    crate::failpoint::hold("health::respond");
    let (status, body, content_type) = answer(request.method(), request.url(), lifecycle, metrics);
    let mut response = Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cache-Control", "no-store"));
    if status == 405 {
        response = response.with_header(header("Allow", "GET, HEAD"));
    }
    // tiny_http leaves the body out of answers to HEAD itself.
    if let Err(e) = request.respond(response) {
        log::debug!("health endpoint: could not answer: {e}");
    }
}

fn header(name: &str, value: &str) -> Header {
    // Both are ASCII constants written above.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Transport;
    use crate::serving::ServingInfo;

    fn status_and_body(method: &Method, url: &str, lifecycle: &Lifecycle) -> (u16, String) {
        let metrics = Metrics::new(Transport::Unix).unwrap();
        let (status, body, _) = answer(method, url, lifecycle, &metrics);
        (status, body)
    }

    fn answered(status: u16, body: &str) -> (u16, String) {
        (status, body.to_string())
    }

    #[test]
    fn answers_follow_the_lifecycle() {
        let lifecycle = Lifecycle::new();
        let get = |url| status_and_body(&Method::Get, url, &lifecycle);
        assert_eq!(get("/health"), answered(503, "NOT_READY"));
        assert_eq!(get("/health/live"), answered(200, "LIVE"));
        lifecycle.set_ready(ServingInfo::for_tests());
        assert_eq!(get("/health"), answered(200, "READY"));
        assert_eq!(
            status_and_body(&Method::Head, "/health/ready?x=1", &lifecycle),
            answered(200, "READY")
        );
        lifecycle.begin_draining();
        assert_eq!(get("/health/ready"), answered(503, "NOT_READY"));
        lifecycle.mark_failed("gpu-owner");
        assert_eq!(get("/health/live"), answered(503, "NOT_LIVE"));
    }

    #[test]
    fn metrics_are_served_as_prometheus_text() {
        let lifecycle = Lifecycle::new();
        let metrics = Metrics::new(Transport::Tcp).unwrap();
        let (status, body, content_type) = answer(&Method::Get, "/metrics", &lifecycle, &metrics);
        assert_eq!(status, 200);
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        assert!(body.contains("gpu_sidecar_state{state=\"starting\"} 1"));
    }

    #[test]
    fn unknown_paths_and_methods_are_refused() {
        let lifecycle = Lifecycle::new();
        assert_eq!(status_and_body(&Method::Get, "/", &lifecycle).0, 404);
        assert_eq!(status_and_body(&Method::Get, "/healthz", &lifecycle).0, 404);
        assert_eq!(status_and_body(&Method::Post, "/health", &lifecycle).0, 405);
        assert_eq!(
            status_and_body(&Method::Delete, "/health/live", &lifecycle).0,
            405
        );
        assert_eq!(status_and_body(&Method::Put, "/metrics", &lifecycle).0, 405);
    }
}
