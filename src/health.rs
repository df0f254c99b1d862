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

//! The HTTP health endpoint, served by tiny_http on the `health` thread. It comes up before
//! anything else so that a probe sees NOT_READY during start-up rather than a refused
//! connection, and it goes down last.
//!
//! - `GET /health`, `/health/ready`: 200 `READY` when READY, else 503 `NOT_READY`.
//! - `GET /health/live`: 200 `LIVE` while every component thread is alive, else 503 `NOT_LIVE`.
//! - `HEAD` answers the same without a body; other methods 405; other paths 404.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::config::HealthConfig;
use crate::lifecycle::{Lifecycle, State};
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

/// The running health endpoint.
pub struct HealthServer {
    server: Arc<Server>,
    stopping: Arc<AtomicBool>,
    thread: ComponentThread,
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
        events: Sender<Event>,
    ) -> Result<Self, HealthError> {
        let requested = SocketAddr::new(config.host, config.port);
        let server = Server::http(requested).map_err(|e| HealthError::Bind {
            addr: requested,
            reason: e.to_string(),
        })?;
        let addr = server.server_addr().to_ip().unwrap_or(requested);
        let server = Arc::new(server);
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let server = Arc::clone(&server);
            let stopping = Arc::clone(&stopping);
            ComponentThread::spawn("health", events, move || {
                serve(&server, &lifecycle, &stopping)
            })?
        };
        log::info!("health endpoint listening on http://{addr}/health");
        Ok(HealthServer {
            server,
            stopping,
            thread,
            addr,
        })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and joins the thread, waiting up to `timeout`.
    pub fn stop(mut self, timeout: Duration) -> Result<(), ShutdownError> {
        self.stopping.store(true, Ordering::SeqCst);
        self.server.unblock();
        self.thread.join_within(timeout)
    }
}

/// Answers requests until `stopping` is set and the server is unblocked.
fn serve(server: &Server, lifecycle: &Lifecycle, stopping: &AtomicBool) -> Result<(), String> {
    loop {
        match server.recv() {
            Ok(request) => respond(request, lifecycle),
            Err(_) if stopping.load(Ordering::SeqCst) => return Ok(()),
            // A failed accept or a broken connection concerns one client only.
            Err(e) => log::debug!("health endpoint: {e}"),
        }
    }
}

/// What a request gets: status code and body.
fn answer(method: &Method, url: &str, lifecycle: &Lifecycle) -> (u16, &'static str) {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let known = matches!(path, "/health" | "/health/ready" | "/health/live");
    if !known {
        return (404, "NOT_FOUND");
    }
    if !matches!(method, Method::Get | Method::Head) {
        return (405, "METHOD_NOT_ALLOWED");
    }
    if path == "/health/live" {
        return if lifecycle.is_live() {
            (200, "LIVE")
        } else {
            (503, "NOT_LIVE")
        };
    }
    if lifecycle.state() == State::Ready {
        (200, "READY")
    } else {
        (503, "NOT_READY")
    }
}

fn respond(request: Request, lifecycle: &Lifecycle) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("health::respond");
    let (status, body) = answer(request.method(), request.url(), lifecycle);
    let mut response = Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
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
    use crate::gpu::ServingInfo;

    #[test]
    fn answers_follow_the_lifecycle() {
        let lifecycle = Lifecycle::new();
        assert_eq!(
            answer(&Method::Get, "/health", &lifecycle),
            (503, "NOT_READY")
        );
        assert_eq!(
            answer(&Method::Get, "/health/live", &lifecycle),
            (200, "LIVE")
        );
        lifecycle.set_ready(ServingInfo::for_tests());
        assert_eq!(answer(&Method::Get, "/health", &lifecycle), (200, "READY"));
        assert_eq!(
            answer(&Method::Head, "/health/ready?x=1", &lifecycle),
            (200, "READY")
        );
        lifecycle.begin_draining();
        assert_eq!(
            answer(&Method::Get, "/health/ready", &lifecycle),
            (503, "NOT_READY")
        );
        lifecycle.mark_failed("gpu-owner");
        assert_eq!(
            answer(&Method::Get, "/health/live", &lifecycle),
            (503, "NOT_LIVE")
        );
    }

    #[test]
    fn unknown_paths_and_methods_are_refused() {
        let lifecycle = Lifecycle::new();
        assert_eq!(answer(&Method::Get, "/", &lifecycle).0, 404);
        assert_eq!(answer(&Method::Get, "/healthz", &lifecycle).0, 404);
        assert_eq!(answer(&Method::Post, "/health", &lifecycle).0, 405);
        assert_eq!(answer(&Method::Delete, "/health/live", &lifecycle).0, 405);
    }
}
