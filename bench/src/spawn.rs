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

//! Sidecars the bench starts itself (`--spawn`): a fresh config per sidecar in a temp folder,
//! the addresses read from its log, READY awaited on its health endpoint; stopped when
//! dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::Transport;
use crate::{BenchError, Target};

/// The sample model spawned sidecars serve unless --model names another.
pub(crate) const SAMPLE_MODEL: &[u8] = include_bytes!("../../tests/fixtures/models/affine.onnx");

/// How long a spawned sidecar may take to say where it listens, and to become READY.
pub(crate) const SPAWN_PATIENCE: Duration = Duration::from_secs(60);

/// Starts sidecars on one transport, each on a fresh config in `folder`.
#[derive(Debug)]
pub(crate) struct Spawner {
    pub(crate) binary: PathBuf,
    pub(crate) folder: PathBuf,
    pub(crate) model: PathBuf,
    pub(crate) transport: Transport,
    pub(crate) max_batch_size: u32,
    /// The model's instances and their intra-op threads (unset: the sidecar's default).
    pub(crate) instances: u32,
    pub(crate) intra_op_threads: Option<usize>,
    /// gRPC's completion queues (unset: the sidecar's default).
    pub(crate) completion_queues: Option<usize>,
    /// Whether unary calls' callers are watched (unset: the sidecar's default).
    pub(crate) watch_unary_cancellation: Option<bool>,
    pub(crate) max_queue_delay: String,
    pub(crate) delay_mode: String,
    pub(crate) tokenizer: Option<PathBuf>,
    /// Serve this model repository (explicit control) instead of `model`.
    pub(crate) repository: Option<PathBuf>,
}

/// A spawned sidecar, READY.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) target: Target,
    pub(crate) ready_after: Duration,
}

impl Spawner {
    pub(crate) fn label(&self) -> String {
        match self.transport {
            Transport::Unix => "unix".to_string(),
            Transport::Tcp => "tcp".to_string(),
            Transport::Tls => "tls".to_string(),
        }
    }

    pub(crate) fn spawn_error(&self, reason: impl Into<String>) -> BenchError {
        BenchError::Spawn {
            binary: self.binary.clone(),
            reason: reason.into(),
        }
    }

    /// Spawns a sidecar and waits until `/health` says READY.
    pub(crate) fn spawn(&self) -> Result<Spawned, BenchError> {
        let endpoint = match self.transport {
            Transport::Unix => format!("unix:{}", self.folder.join("bench.sock").display()),
            Transport::Tcp | Transport::Tls => "127.0.0.1:0".to_string(),
        };
        let tls_ca = match self.transport {
            Transport::Tls => Some(self_signed(&self.folder).map_err(|e| self.spawn_error(e))?),
            _ => None,
        };
        let tls_table = if tls_ca.is_some() {
            format!(
                "[sidecar.rpc.tls]\ncert-file = {:?}\nkey-file = {:?}\n",
                self.folder.join("tls.pem").display(),
                self.folder.join("tls.key").display()
            )
        } else {
            String::new()
        };
        let queues = self
            .completion_queues
            .map_or_else(String::new, |n| format!("completion-queues = {n}\n"))
            + &self
                .watch_unary_cancellation
                .map_or_else(String::new, |w| format!("watch-unary-cancellation = {w}\n"));
        let config = self.folder.join(format!("{}.toml", self.label()));
        std::fs::write(
            &config,
            format!(
                "{}[sidecar.rpc]\nendpoint = \"{endpoint}\"\n{queues}{tls_table}{}\
                 [sidecar.health]\nport = 0\n[sidecar.shutdown]\ngrace-period = \"5 s\"\n\
                 [sidecar.batching]\nmax-batch-size = {}\nmax-queue-delay = {:?}\n\
                 delay-mode = {:?}\n[sidecar.log]\nlevel = \"info\"\n{}",
                self.repository
                    .as_ref()
                    .map_or_else(String::new, |folder| format!(
                        "[sidecar]\nrepository = {:?}\nrepository-control = \"explicit\"\n",
                        folder.display()
                    )),
                match &self.repository {
                    Some(_) => String::new(),
                    None => format!(
                        "[sidecar.model]\nuri = {:?}\ninstances = {}\n{}",
                        self.model.display(),
                        self.instances,
                        self.intra_op_threads
                            .map_or_else(String::new, |n| format!("intra-op-threads = {n}\n"))
                    ),
                },
                self.max_batch_size,
                self.max_queue_delay,
                self.delay_mode,
                self.tokenizer
                    .as_ref()
                    .map_or_else(String::new, |path| format!(
                        "[sidecar.model.text]\ntokenizer = {:?}\n",
                        path.display()
                    )),
            ),
        )?;
        let spawned_at = Instant::now();
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_error(e.to_string()))?;
        let addresses = listen_addresses(child.stderr.take().expect("piped stderr"));
        let (grpc, health) = match addresses.recv_timeout(SPAWN_PATIENCE) {
            Ok(found) => found,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(self.spawn_error(format!("it did not report its addresses ({status})")));
            }
        };
        let deadline = spawned_at + SPAWN_PATIENCE;
        loop {
            if health_is_ready(health) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(self.spawn_error(format!("it exited with {status} before READY")));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(self.spawn_error("it did not become READY within 60 s"));
            }
            thread::sleep(Duration::from_micros(500));
        }
        let pid = child.id();
        Ok(Spawned {
            ready_after: spawned_at.elapsed(),
            child,
            target: Target {
                label: self.label(),
                grpc,
                health: Some(health),
                max_batch_size: None,
                instances: None,
                completion_queues: None,
                pid: Some(pid),
                tls_ca,
            },
        })
    }
}

impl Spawned {
    /// SIGTERM, then waits for the exit.
    pub(crate) fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    /// Never leaves a spawned sidecar behind, even when a measurement panics.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads the sidecar's log until it names its gRPC and health addresses (sent once), then
/// keeps draining it so the sidecar never blocks on a full pipe.
pub(crate) fn listen_addresses(
    log: impl Read + Send + 'static,
) -> mpsc::Receiver<(String, SocketAddr)> {
    let (found, addresses) = mpsc::channel();
    thread::spawn(move || {
        let mut grpc = None;
        let mut health = None;
        let mut sent = false;
        for line in BufReader::new(log).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("gRPC server listening on ").nth(1) {
                grpc = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.split("health endpoint listening on http://").nth(1) {
                health = rest.trim_end_matches("/health").parse().ok();
            }
            if !sent {
                if let (Some(grpc), Some(health)) = (&grpc, health) {
                    let _ = found.send((grpc.clone(), health));
                    sent = true;
                }
            }
        }
    });
    addresses
}

/// Whether `GET /health` answers 200.
pub(crate) fn health_is_ready(health: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&health, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET /health HTTP/1.0\r\nHost: {health}\r\n\r\n").is_err() {
        return false;
    }
    let mut status_line = String::new();
    let _ = BufReader::new(stream).read_line(&mut status_line);
    status_line.starts_with("HTTP/1.1 200") || status_line.starts_with("HTTP/1.0 200")
}

/// A self-signed certificate for 127.0.0.1, written as `tls.pem` and `tls.key` into
/// `folder`; returns the certificate, which the clients trust.
fn self_signed(folder: &std::path::Path) -> Result<Vec<u8>, String> {
    use openssl::{asn1, bn, ec, hash, nid, pkey, x509};
    let made = || -> Result<(Vec<u8>, Vec<u8>), openssl::error::ErrorStack> {
        let group = ec::EcGroup::from_curve_name(nid::Nid::X9_62_PRIME256V1)?;
        let key = pkey::PKey::from_ec_key(ec::EcKey::generate(&group)?)?;
        let mut name = x509::X509NameBuilder::new()?;
        name.append_entry_by_text("CN", "gpu-sidecar-bench")?;
        let name = name.build();
        let mut builder = x509::X509Builder::new()?;
        builder.set_version(2)?;
        let serial = bn::BigNum::from_u32(1)?.to_asn1_integer()?;
        builder.set_serial_number(&serial)?;
        builder.set_subject_name(&name)?;
        builder.set_issuer_name(&name)?;
        builder.set_pubkey(&key)?;
        let (from, until) = (
            asn1::Asn1Time::days_from_now(0)?,
            asn1::Asn1Time::days_from_now(1)?,
        );
        builder.set_not_before(&from)?;
        builder.set_not_after(&until)?;
        let names = x509::extension::SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .build(&builder.x509v3_context(None, None))?;
        builder.append_extension(names)?;
        builder.sign(&key, hash::MessageDigest::sha256())?;
        Ok((builder.build().to_pem()?, key.private_key_to_pem_pkcs8()?))
    };
    let (cert, key) = made().map_err(|e| format!("cannot make a TLS certificate: {e}"))?;
    std::fs::write(folder.join("tls.pem"), &cert).map_err(|e| e.to_string())?;
    std::fs::write(folder.join("tls.key"), key).map_err(|e| e.to_string())?;
    Ok(cert)
}
