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
//! run every handler), the services it serves on one endpoint, and the Unix socket file's
//! life: checked before binding, given its mode after, removed at exit.
//!
//! - `inference`: `inference.GRPCInferenceService`, the Open Inference Protocol as Triton
//!   speaks it; requests are decoded (`kserve`) and submitted through the model's handle;
//!   `metadata` describes the model in Triton's terms; `status` maps failures to gRPC codes.
//! - `sidecar`: `flink.sidecar.v1.Sidecar` (Ping).
//! - `health`: `grpc.health.v1.Health`.
//!
//! Handlers never block: they answer from shared state or hand work over and complete the
//! call when the answer comes back. Shutdown stops new calls, lets in-flight calls finish
//! within the grace period, then cancels the rest.

mod health;
pub mod inference;
pub mod kserve;
mod metadata;
mod shared_memory;
mod sidecar;
mod status;
mod tls;

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
use grpcio::{ChannelBuilder, EnvBuilder, Environment, Server, ServerBuilder, ServerCredentials};

pub use self::health::{INFERENCE_SERVICE_NAME, SIDECAR_SERVICE_NAME};

use self::health::HealthService;
use self::inference::InferenceService;
use self::sidecar::SidecarService;
use self::tls::TlsCredentials;
use crate::config::tls::TlsError;
use crate::config::{Endpoint, RpcConfig};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::proto::health_grpc::create_health;
use crate::proto::sidecar_grpc::create_sidecar;

/// How long cancelled calls and completion-queue threads get to wind down after the grace
/// period.
const WIND_DOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The gRPC endpoint could not be set up; exit code 1, except [`RpcError::Tls`] (2).
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// A TLS file cannot be used (it changed since the config was checked).
    #[error("`{key}`: {error}", key = error.key())]
    Tls {
        #[from]
        error: TlsError,
    },
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

impl RpcError {
    /// Whether this is a configuration's fault (exit code 2).
    pub fn is_config(&self) -> bool {
        matches!(self, RpcError::Tls { .. })
    }
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
    /// With `[sidecar.rpc.tls]`: the files, reloaded on SIGHUP.
    tls: Option<Arc<TlsCredentials>>,
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
        inference: InferenceService,
    ) -> Result<Self, RpcError> {
        let endpoint = config.endpoint.clone();
        if let Endpoint::Unix(path) = &endpoint {
            prepare_socket_path(&endpoint, path)?;
        }
        let completion_queues = config.host_completion_queues();
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
        // same TCP port; refuse that. The services check sidecar.rpc.max-message-size
        // themselves and answer INVALID_ARGUMENT naming it, where gRPC core would answer
        // RESOURCE_EXHAUSTED and end a whole stream for one large message; gRPC's own limit
        // sits a margin above it, so that only a request far over the limit is refused by
        // gRPC (and ends its stream), before it costs more memory than the limit.
        let receive_limit = i32::try_from(config.receive_limit()).unwrap_or(i32::MAX);
        let channel_args = ChannelBuilder::new(Arc::clone(&environment))
            .reuse_port(false)
            .max_receive_message_len(receive_limit)
            .max_send_message_len(-1)
            .build_args();
        let mut server = ServerBuilder::new(Arc::clone(&environment))
            .channel_args(channel_args)
            .register_service(create_sidecar(SidecarService {
                lifecycle: Arc::clone(&lifecycle),
                metrics: Arc::clone(&metrics),
                repository: inference.repository(),
                max_message_size: config.max_message_size(),
            }))
            .register_service(create_health(HealthService {
                lifecycle,
                metrics: Arc::clone(&metrics),
            }))
            .register_service(inference::create_service(inference))
            .build()
            .map_err(RpcError::Build)?;
        let tls = match &config.tls {
            Some(tls) => Some(TlsCredentials::load(tls, Arc::clone(&metrics))?),
            None => None,
        };
        let credentials = tls.as_ref().map_or_else(
            ServerCredentials::insecure,
            TlsCredentials::server_credentials,
        );
        let port = server
            .add_listening_port(endpoint.grpc_address(), credentials)
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
        match &config.tls {
            Some(tls) if tls.requires_client_certificates() => log::info!(
                "TLS on {bound}: certificate {}, client certificates required (sidecar.rpc.tls)",
                tls.cert_file.display()
            ),
            Some(tls) => log::info!(
                "TLS on {bound}: certificate {} (sidecar.rpc.tls)",
                tls.cert_file.display()
            ),
            None => {}
        }
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
            tls,
        })
    }

    /// SIGHUP: reads the TLS files again, for the connections that come next.
    pub fn reload_tls(&self) {
        if let Some(tls) = &self.tls {
            tls.reload();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_gives_up_at_the_deadline() {
        let mut never = futures_util::future::pending::<()>();
        assert!(wait_until(&mut never, Instant::now() + Duration::from_millis(20)).is_none());
        let mut ready = futures_util::future::ready(7);
        assert_eq!(wait_until(&mut ready, Instant::now()), Some(7));
    }
}
