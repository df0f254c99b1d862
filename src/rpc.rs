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

//! The gRPC server: one grpcio `Environment` (its completion-queue threads, named `grpc-cq-N`,
//! run every handler), the `flink.sidecar.v1.Sidecar` service and the standard
//! `grpc.health.v1.Health` service, and the Unix socket file's life: checked before binding,
//! given its mode after, removed at exit.
//!
//! Handlers never block: Ping answers from the shared lifecycle state, and Watch forwards
//! lifecycle changes from a channel. Shutdown stops new calls, lets in-flight calls finish
//! within the grace period, then cancels the rest.

use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError};
use futures_util::{future, FutureExt, SinkExt, StreamExt};
use grpcio::{
    ChannelBuilder, EnvBuilder, Environment, RpcContext, RpcStatus, RpcStatusCode, Server,
    ServerBuilder, ServerCredentials, ServerStreamingSink, UnarySink, WriteFlags,
};

use crate::config::{Endpoint, RpcConfig};
use crate::gpu::{ModelLocation, ServingInfo};
use crate::lifecycle::{Lifecycle, State};
use crate::metrics::Metrics;
use crate::proto::health::health_check_response::ServingStatus;
use crate::proto::health::{HealthCheckRequest, HealthCheckResponse};
use crate::proto::health_grpc::{create_health, Health};
use crate::proto::sidecar::{self as pb, PingRequest, PingResponse};
use crate::proto::sidecar_grpc::{create_sidecar, Sidecar};

/// The name under which the Sidecar service reports its health (its full proto name).
pub const SIDECAR_SERVICE_NAME: &str = "flink.sidecar.v1.Sidecar";
/// How long cancelled calls and completion-queue threads get to wind down after the grace
/// period.
const WIND_DOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The gRPC endpoint could not be set up; exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The folder that should hold the socket file does not exist.
    #[error("cannot create socket {}: the folder {} does not exist (sidecar.rpc.endpoint)", path.display(), folder.display())]
    SocketFolderMissing { path: PathBuf, folder: PathBuf },
    /// Something other than a socket is at the socket path.
    #[error("cannot create socket {}: the path exists and is not a socket (sidecar.rpc.endpoint)", path.display())]
    NotASocket { path: PathBuf },
    /// A live process answers on the socket already.
    #[error("{endpoint} is already served by a live process (sidecar.rpc.endpoint); stop it first or choose another path")]
    EndpointInUse { endpoint: Endpoint },
    /// Checking or clearing the socket path failed.
    #[error("cannot prepare socket {}: {source}", path.display())]
    SocketPath { path: PathBuf, source: io::Error },
    /// gRPC could not bind the endpoint.
    #[error("cannot bind gRPC endpoint {endpoint} (sidecar.rpc.endpoint): {reason}")]
    Bind { endpoint: Endpoint, reason: String },
    /// Building the server failed.
    #[error("cannot build the gRPC server: {0}")]
    Build(grpcio::Error),
    /// Setting the socket file's permissions failed.
    #[error("cannot set mode {mode:04o} on socket {} (sidecar.rpc.socket-mode): {source}", path.display())]
    SocketMode {
        path: PathBuf,
        mode: u32,
        source: io::Error,
    },
    /// The server did not finish shutting down, even after cancelling calls.
    #[error("the gRPC server did not shut down within {} after the grace period", humantime::format_duration(*.0))]
    ShutdownTimeout(Duration),
}

/// The running gRPC server.
pub struct RpcServer {
    server: Server,
    environment: Arc<Environment>,
    completion_queues: usize,
    /// Receives one message as each completion-queue thread ends.
    queue_threads_ended: Receiver<()>,
    endpoint: Endpoint,
    bound: String,
    socket_file: Option<PathBuf>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer")
            .field("endpoint", &self.endpoint)
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl RpcServer {
    /// Prepares the endpoint (for a Unix socket: checks the folder, refuses a live endpoint,
    /// clears a stale socket file), binds it and starts serving.
    pub fn start(
        config: &RpcConfig,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RpcError> {
        let endpoint = config.endpoint.clone();
        if let Endpoint::Unix(path) = &endpoint {
            prepare_socket_path(&endpoint, path)?;
        }
        let completion_queues = thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
        let (queue_thread_ended, queue_threads_ended) = unbounded();
        let environment = Arc::new(
            EnvBuilder::new()
                .cq_count(completion_queues)
                .name_prefix("grpc-cq")
                .before_stop(move || {
                    let _ = queue_thread_ended.send(());
                })
                .build(),
        );
        // gRPC core sets SO_REUSEPORT by default, which would let a second sidecar bind the
        // same TCP port; refuse that.
        let channel_args = ChannelBuilder::new(Arc::clone(&environment))
            .reuse_port(false)
            .build_args();
        let mut server = ServerBuilder::new(Arc::clone(&environment))
            .channel_args(channel_args)
            .register_service(create_sidecar(SidecarService {
                lifecycle: Arc::clone(&lifecycle),
                metrics: Arc::clone(&metrics),
            }))
            .register_service(create_health(HealthService {
                lifecycle,
                metrics: Arc::clone(&metrics),
            }))
            .build()
            .map_err(RpcError::Build)?;
        let port = server
            .add_listening_port(endpoint.grpc_address(), ServerCredentials::insecure())
            .map_err(|_| RpcError::Bind {
                endpoint: endpoint.clone(),
                reason: diagnose_bind_failure(&endpoint),
            })?;
        let (bound, socket_file) = match &endpoint {
            Endpoint::Unix(path) => {
                let mode = config.socket_mode();
                fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
                    let _ = fs::remove_file(path);
                    RpcError::SocketMode {
                        path: path.clone(),
                        mode,
                        source,
                    }
                })?;
                (endpoint.to_string(), Some(path.clone()))
            }
            Endpoint::Tcp { host, .. } => {
                let bound = Endpoint::Tcp {
                    host: host.clone(),
                    port,
                };
                (bound.to_string(), None)
            }
        };
        server.start();
        log::info!("gRPC server listening on {bound}");
        Ok(RpcServer {
            server,
            environment,
            completion_queues,
            queue_threads_ended,
            endpoint,
            bound,
            socket_file,
            metrics,
        })
    }

    /// Calls being handled now.
    pub fn in_flight(&self) -> i64 {
        self.metrics.calls_in_flight().get()
    }

    /// The endpoint as bound (with the real port when 0 was asked for).
    pub fn bound(&self) -> &str {
        &self.bound
    }

    /// False once any completion-queue thread has ended: gRPC can no longer serve.
    pub fn completion_queues_running(&self) -> bool {
        self.queue_threads_ended.is_empty()
    }

    /// Stops accepting calls, waits up to `grace` for in-flight ones, cancels what is left,
    /// waits for the completion-queue threads to end and removes the socket file.
    pub fn shutdown(mut self, grace: Duration) -> Result<(), RpcError> {
        let in_flight = self.in_flight();
        log::info!(
            "gRPC server: refusing new calls; waiting up to {} for {in_flight} in-flight call(s)",
            humantime::format_duration(grace)
        );
        let mut shutdown = self.server.shutdown();
        let mut result = Ok(());
        if wait_until(&mut shutdown, Instant::now() + grace).is_none() {
            log::warn!(
                "gRPC server: grace period over; cancelling {} call(s) still in flight",
                self.in_flight()
            );
            self.server.cancel_all_calls();
            if wait_until(&mut shutdown, Instant::now() + WIND_DOWN_TIMEOUT).is_none() {
                result = Err(RpcError::ShutdownTimeout(WIND_DOWN_TIMEOUT));
            }
        }
        let RpcServer {
            server,
            environment,
            completion_queues,
            queue_threads_ended,
            socket_file,
            ..
        } = self;
        // Dropping the last reference to the environment shuts the completion queues down.
        drop(server);
        drop(environment);
        let deadline = Instant::now() + WIND_DOWN_TIMEOUT;
        for _ in 0..completion_queues {
            match queue_threads_ended.recv_deadline(deadline) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {}
                Err(RecvTimeoutError::Timeout) => {
                    log::warn!(
                        "gRPC completion-queue threads did not end within {}",
                        humantime::format_duration(WIND_DOWN_TIMEOUT)
                    );
                    break;
                }
            }
        }
        if let Some(path) = socket_file {
            remove_socket_file(&path);
        }
        log::info!("gRPC server stopped");
        result
    }
}

/// Readies `path` for binding: its folder must exist; a live socket there is an error; a
/// stale one (nobody accepts on it) is removed; anything else there is an error.
fn prepare_socket_path(endpoint: &Endpoint, path: &Path) -> Result<(), RpcError> {
    let folder = path.parent().unwrap_or(Path::new("/"));
    if !folder.is_dir() {
        return Err(RpcError::SocketFolderMissing {
            path: path.to_path_buf(),
            folder: folder.to_path_buf(),
        });
    }
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(RpcError::SocketPath {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(RpcError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(RpcError::EndpointInUse {
            endpoint: endpoint.clone(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!(
                "removing stale socket {} left by an earlier process",
                path.display()
            );
            fs::remove_file(path).map_err(|source| RpcError::SocketPath {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(RpcError::SocketPath {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Removes the socket file at exit, if it is still there.
fn remove_socket_file(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => log::info!("removed socket {}", path.display()),
        // gRPC core unlinks the sockets it listened on when it shuts down.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot remove socket {}: {e}", path.display()),
    }
}

/// gRPC core reports a failed bind without a reason; find it by binding the same address.
fn diagnose_bind_failure(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Tcp { host, port } => match std::net::TcpListener::bind((host.as_str(), *port)) {
            Err(e) => e.to_string(),
            Ok(_) => "gRPC refused the address".to_string(),
        },
        Endpoint::Unix(path) => match std::os::unix::net::UnixListener::bind(path) {
            Err(e) => e.to_string(),
            Ok(_) => {
                let _ = fs::remove_file(path);
                "gRPC refused the address".to_string()
            }
        },
    }
}

/// Wakes the thread that waits in [`wait_until`].
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread until it completes or `deadline` passes (then `None`).
fn wait_until<F: Future + Unpin>(future: &mut F, deadline: Instant) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = Pin::new(&mut *future).poll(&mut context) {
            return Some(output);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::park_timeout(deadline - now);
    }
}

/// Counts a call as in flight until dropped.
struct InFlightCall(prometheus::IntGauge);

impl InFlightCall {
    fn begin(metrics: &Metrics) -> Self {
        let gauge = metrics.calls_in_flight().clone();
        gauge.inc();
        InFlightCall(gauge)
    }
}

impl Drop for InFlightCall {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `flink.sidecar.v1.Sidecar`.
#[derive(Clone)]
struct SidecarService {
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
}

impl Sidecar for SidecarService {
    fn ping(&mut self, ctx: RpcContext, request: PingRequest, sink: UnarySink<PingResponse>) {
        let received = Instant::now();
        let call = InFlightCall::begin(&self.metrics);
        self.metrics.ping_received();
        log::debug!("Ping: {} byte payload", request.payload.len());
        // Test builds only: holds the call in flight, for the shutdown tests.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("rpc::ping");
        let metrics = Arc::clone(&self.metrics);
        // A call whose deadline has passed gets no work done: the client has given up.
        let expired = ctx.deadline().exceeded();
        let reply = if expired {
            sink.fail(RpcStatus::with_message(
                RpcStatusCode::DEADLINE_EXCEEDED,
                "the deadline passed before the call was handled".to_string(),
            ))
        } else {
            sink.success(ping_response(request, &self.lifecycle))
        };
        ctx.spawn(reply.map(move |result| {
            if let Err(e) = &result {
                log::debug!("Ping: reply not delivered: {e}");
            }
            metrics.ping_finished(received.elapsed(), !expired && result.is_ok());
            drop(call);
        }));
    }
}

/// The answer to a Ping: the payload back, with what the sidecar serves.
fn ping_response(request: PingRequest, lifecycle: &Lifecycle) -> PingResponse {
    let mut response = PingResponse {
        payload: request.payload,
        state: serving_state(lifecycle.state()).into(),
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_ms: u64::try_from(lifecycle.uptime().as_millis()).unwrap_or(u64::MAX),
        ..PingResponse::default()
    };
    if let Some(ServingInfo { gpu, model }) = lifecycle.serving() {
        response.model_loaded = true;
        response.model = protobuf::MessageField::some(pb::Model {
            path: model.path.display().to_string(),
            size_bytes: model.size_bytes,
            sha256: model.sha256.clone(),
            location: match model.location {
                ModelLocation::DeviceMemory => pb::ModelLocation::MODEL_LOCATION_DEVICE_MEMORY,
                ModelLocation::HostMemory => pb::ModelLocation::MODEL_LOCATION_HOST_MEMORY,
            }
            .into(),
            ..pb::Model::default()
        });
        if let Some(device) = gpu {
            response.gpu_in_use = true;
            response.gpu = protobuf::MessageField::some(pb::GpuDevice {
                ordinal: device.ordinal.unsigned_abs(),
                name: device.name.clone(),
                total_memory_bytes: device.total_memory_bytes,
                compute_capability: format!(
                    "{}.{}",
                    device.compute_capability.0, device.compute_capability.1
                ),
                driver_version: format!(
                    "{}.{}",
                    device.driver_cuda_version.0, device.driver_cuda_version.1
                ),
                ..pb::GpuDevice::default()
            });
        }
    }
    response
}

fn serving_state(state: State) -> pb::ServingState {
    match state {
        State::Starting => pb::ServingState::SERVING_STATE_STARTING,
        State::Ready => pb::ServingState::SERVING_STATE_READY,
        State::Draining => pb::ServingState::SERVING_STATE_DRAINING,
        State::Stopped => pb::ServingState::SERVING_STATE_STOPPED,
    }
}

/// `grpc.health.v1.Health`, for the whole server ("") and the Sidecar service.
#[derive(Clone)]
struct HealthService {
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
}

/// Whether `service` is one this server reports on.
fn is_known_service(service: &str) -> bool {
    service.is_empty() || service == SIDECAR_SERVICE_NAME
}

fn health_status(state: State) -> ServingStatus {
    match state {
        State::Ready => ServingStatus::SERVING,
        State::Starting | State::Draining | State::Stopped => ServingStatus::NOT_SERVING,
    }
}

fn health_response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
        ..HealthCheckResponse::default()
    }
}

impl Health for HealthService {
    fn check(
        &mut self,
        ctx: RpcContext,
        request: HealthCheckRequest,
        sink: UnarySink<HealthCheckResponse>,
    ) {
        let call = InFlightCall::begin(&self.metrics);
        self.metrics.health_check_received("Check");
        let reply = if is_known_service(&request.service) {
            sink.success(health_response(health_status(self.lifecycle.state())))
        } else {
            sink.fail(RpcStatus::with_message(
                RpcStatusCode::NOT_FOUND,
                format!("unknown service {:?}", request.service),
            ))
        };
        ctx.spawn(reply.map(move |result| {
            if let Err(e) = result {
                log::debug!("Health.Check: reply not delivered: {e}");
            }
            drop(call);
        }));
    }

    fn watch(
        &mut self,
        ctx: RpcContext,
        request: HealthCheckRequest,
        mut sink: ServerStreamingSink<HealthCheckResponse>,
    ) {
        let call = InFlightCall::begin(&self.metrics);
        self.metrics.health_check_received("Watch");
        let known = is_known_service(&request.service);
        let mut last_sent = None;
        // The current status first, then one message per change of status. An unknown
        // service gets SERVICE_UNKNOWN and the call stays open, as the protocol says.
        let mut updates = self
            .lifecycle
            .subscribe()
            .map(move |state| {
                if known {
                    health_status(state)
                } else {
                    ServingStatus::SERVICE_UNKNOWN
                }
            })
            .filter(move |status| future::ready(last_sent.replace(*status) != Some(*status)))
            .map(|status| Ok((health_response(status), WriteFlags::default())));
        let forward = async move {
            sink.send_all(&mut updates).await?;
            // The lifecycle ended the stream: the server is shutting down, and NOT_SERVING
            // was the last message. End with OK: some clients (grpcio's among them) drop
            // messages still buffered when a call ends with an error status.
            sink.close().await
        };
        ctx.spawn(forward.map(move |result: grpcio::Result<()>| {
            if let Err(e) = result {
                log::debug!("Health.Watch ended: {e}");
            }
            drop(call);
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_echoes_payload_and_reports_state() {
        let lifecycle = Lifecycle::new();
        let request = PingRequest {
            payload: vec![0, 1, 2, 255],
            ..PingRequest::default()
        };
        let response = ping_response(request.clone(), &lifecycle);
        assert_eq!(response.payload, request.payload);
        assert_eq!(
            response.state.enum_value(),
            Ok(pb::ServingState::SERVING_STATE_STARTING)
        );
        assert!(!response.model_loaded);
        lifecycle.set_ready(ServingInfo::for_tests());
        let response = ping_response(request, &lifecycle);
        assert_eq!(
            response.state.enum_value(),
            Ok(pb::ServingState::SERVING_STATE_READY)
        );
        assert!(response.model_loaded);
        assert!(!response.gpu_in_use);
        assert_eq!(
            response.model.location.enum_value(),
            Ok(pb::ModelLocation::MODEL_LOCATION_HOST_MEMORY)
        );
    }

    #[test]
    fn known_services() {
        assert!(is_known_service(""));
        assert!(is_known_service("flink.sidecar.v1.Sidecar"));
        assert!(!is_known_service("flink.sidecar.v1.Other"));
    }

    #[test]
    fn wait_until_gives_up_at_the_deadline() {
        let mut never = future::pending::<()>();
        assert!(wait_until(&mut never, Instant::now() + Duration::from_millis(20)).is_none());
        let mut ready = future::ready(7);
        assert_eq!(wait_until(&mut ready, Instant::now()), Some(7));
    }
}
