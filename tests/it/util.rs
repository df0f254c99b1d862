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

//! Helpers shared by the integration tests: a temp folder with a config and a model, the
//! built binary spawned on it with its log captured, a minimal HTTP client, gRPC clients,
//! and waiting with deadlines. Every sidecar a test starts is killed by pid when its handle
//! drops, if the test has not stopped it.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use gpu_sidecar::proto::health::HealthCheckRequest;
use gpu_sidecar::proto::health_grpc::HealthClient;
use gpu_sidecar::proto::sidecar::{PingRequest, PingResponse};
use gpu_sidecar::proto::sidecar_grpc::SidecarClient;
use grpcio::{CallOption, ChannelBuilder, EnvBuilder, Environment};
use rustix::process::{kill_process, Pid, Signal};

/// The sidecar binary. Cargo names it to the daemon's own tests; the bench's tests, which
/// share this file, find it in the same target folder as their own test binary.
pub fn binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_gpu-sidecar") {
        Some(path) => PathBuf::from(path),
        None => {
            let test = std::env::current_exe().expect("the test binary's path");
            let profile = test
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps");
            profile.join("gpu-sidecar")
        }
    }
}

/// The project's root folder (the daemon's crate), from the daemon's or the bench's tests.
pub fn project_root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if manifest.ends_with("bench") {
        manifest.parent().expect("bench/ has a parent")
    } else {
        manifest
    }
}
/// A generous bound for things that take milliseconds when healthy.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A temp folder holding a config file, a model and (usually) the socket.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("gpu-sidecar-test")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("sidecar.sock")
    }

    /// Writes the sample ONNX model (tests/fixtures/models/affine.onnx) as `name`, padded to
    /// at least `len` bytes, and returns its path.
    pub fn write_model(&self, name: &str, len: usize) -> PathBuf {
        let path = self.path().join(name);
        fs::write(&path, padded_model(len)).expect("write model");
        path
    }

    /// Copies the fixture model `tests/fixtures/models/<fixture>.onnx` in as `name`.
    pub fn copy_fixture(&self, fixture: &str, name: &str) -> PathBuf {
        let path = self.path().join(name);
        fs::copy(fixture_path(&format!("models/{fixture}.onnx")), &path).expect("copy model");
        path
    }

    /// Writes `text` as `sidecar.toml` and returns its path.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.path().join("sidecar.toml");
        fs::write(&path, text).expect("write config");
        path
    }

    /// Names of the entries in the folder, sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path())
            .expect("read temp dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// A file under tests/fixtures.
pub fn fixture_path(relative: &str) -> PathBuf {
    project_root().join("tests/fixtures").join(relative)
}

/// The sample ONNX model, padded to `len` bytes (when larger) with a field that ONNX Runtime
/// skips (an unknown length-delimited field, number 999, of zeros): a valid model of any size.
pub fn padded_model(len: usize) -> Vec<u8> {
    let mut bytes = fs::read(fixture_path("models/affine.onnx")).expect("read fixture model");
    let tag = (999 << 3) | 2;
    for length_bytes in 1..=10 {
        let Some(payload) = len.checked_sub(bytes.len() + 2 + length_bytes) else {
            break;
        };
        let mut header = Vec::new();
        write_varint(&mut header, tag);
        write_varint(&mut header, payload as u64);
        if header.len() == 2 + length_bytes {
            bytes.extend_from_slice(&header);
            bytes.resize(len, 0);
            break;
        }
    }
    bytes
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// ONNX Runtime's CPU library for the sidecars that tests start: `ORT_DYLIB_PATH` if set, else
/// the one `bin/dev.sh runtime` puts in .onnxruntime/.
pub fn runtime_library() -> PathBuf {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let local = project_root().join(".onnxruntime/libonnxruntime.so");
    assert!(
        local.exists(),
        "the tests need ONNX Runtime's CPU library: run `bin/dev.sh runtime` (fetches the onnxruntime wheel into .onnxruntime/) or set ORT_DYLIB_PATH"
    );
    local
}

/// A config text; fields have the values most tests want.
pub struct ConfigText {
    pub endpoint: String,
    pub model: String,
    pub health_port: u16,
    pub grace_period: String,
    pub gpu_mode: String,
    /// Lines added to `[sidecar.rpc]`.
    pub rpc_extra: String,
    /// Lines added to `[sidecar.health]`.
    pub health_extra: String,
    /// Tables added at the end.
    pub extra: String,
}

impl ConfigText {
    /// Unix socket in `dir`, model `model.bin` in `dir`, free health port, 10 s grace, GPU auto.
    pub fn new(dir: &TestDir) -> Self {
        ConfigText {
            endpoint: format!("unix:{}", dir.socket().display()),
            model: "model.bin".to_string(),
            health_port: 0,
            grace_period: "10 s".to_string(),
            gpu_mode: "auto".to_string(),
            rpc_extra: String::new(),
            health_extra: String::new(),
            extra: String::new(),
        }
    }

    pub fn render(&self) -> String {
        format!(
            r#"
[sidecar.rpc]
endpoint = "{}"
{}
[sidecar.model]
uri = "{}"

[sidecar.health]
port = {}
{}

[sidecar.shutdown]
grace-period = "{}"

[sidecar.gpu]
mode = "{}"

[sidecar.log]
level = "debug"
{}
"#,
            self.endpoint,
            self.rpc_extra,
            self.model,
            self.health_port,
            self.health_extra,
            self.grace_period,
            self.gpu_mode,
            self.extra
        )
    }
}

/// What a child writes to one stream, collected line by line as it arrives.
#[derive(Default)]
struct LogLines {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
    /// Set when the stream reached its end.
    closed: Mutex<bool>,
}

/// A spawned sidecar. Killed (SIGKILL, by pid) on drop if still running.
pub struct Sidecar {
    child: Child,
    log: Arc<LogLines>,
    stdout: Arc<LogLines>,
    started: Instant,
    status: Option<ExitStatus>,
}

impl Sidecar {
    /// Spawns the binary with `args`; `envs` are added to the environment.
    pub fn spawn_args(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary());
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.env("ORT_DYLIB_PATH", runtime_library());
        for (key, value) in envs {
            command.env(key, value);
        }
        let started = Instant::now();
        let mut child = command.spawn().expect("spawn gpu-sidecar");
        let log = collect(child.stderr.take().expect("stderr"));
        let stdout = collect(child.stdout.take().expect("stdout"));
        Sidecar {
            child,
            log,
            stdout,
            started,
            status: None,
        }
    }

    /// Spawns `gpu-sidecar -c config`.
    pub fn spawn(config: &Path, envs: &[(&str, &str)]) -> Self {
        Self::spawn_args(&["-c", config.to_str().expect("utf-8 path")], envs)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn since_spawn(&self) -> Duration {
        self.started.elapsed()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: i32) {
        let signal = Signal::from_named_raw(signal).expect("a named signal");
        let pid = Pid::from_raw(self.pid()).expect("a child's pid is positive");
        kill_process(pid, signal)
            .unwrap_or_else(|e| panic!("kill({}, {signal:?}) failed: {e}", self.pid()));
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lines.lock().unwrap().join("\n")
    }

    /// Everything printed on stdout so far (complete only after exit).
    pub fn stdout(&self) -> String {
        self.stdout.lines.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle` and returns it. Panics after `PATIENCE`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut lines = self.log.lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no log line with {needle:?} within {PATIENCE:?}; log:\n{}",
                lines.join("\n")
            );
            lines = self
                .log
                .changed
                .wait_timeout(lines, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// The health endpoint's address, read from the log.
    pub fn health_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("health endpoint listening on http://");
        let rest = line.split("http://").nth(1).expect("address");
        rest.trim_end_matches("/health")
            .parse()
            .expect("health address")
    }

    /// The gRPC address served, read from the log ("unix:/..." or "host:port").
    pub fn grpc_target(&self) -> String {
        let line = self.wait_for_log("gRPC server listening on ");
        line.split("gRPC server listening on ")
            .nth(1)
            .expect("target")
            .trim()
            .to_string()
    }

    /// Polls `/health` until it answers 200; returns the time since spawn.
    pub fn wait_ready(&mut self) -> Duration {
        let addr = self.health_addr();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok((200, _)) = http(addr, "GET", "/health") {
                return self.since_spawn();
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "sidecar exited with {status} before READY; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not READY within {PATIENCE:?}; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit. Panics if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running {timeout:?} later; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for exit and returns its code (panics if it was killed by a signal). The log
    /// is complete afterwards.
    pub fn exit_code(&mut self, timeout: Duration) -> i32 {
        let status = self.wait_exit(timeout);
        for stream in [&self.log, &self.stdout] {
            let deadline = Instant::now() + PATIENCE;
            while !*stream.closed.lock().unwrap() {
                assert!(Instant::now() < deadline, "output not closed after exit");
                thread::sleep(Duration::from_millis(5));
            }
        }
        status
            .code()
            .unwrap_or_else(|| panic!("ended by a signal: {status}; log:\n{}", self.log()))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts a thread that appends each line of `stream` to a shared log.
fn collect(stream: impl Read + Send + 'static) -> Arc<LogLines> {
    let log = Arc::new(LogLines::default());
    let sink = Arc::clone(&log);
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lines.lock().unwrap().push(line);
            sink.changed.notify_all();
        }
        *sink.closed.lock().unwrap() = true;
    });
    log
}

/// A minimal HTTP request (HTTP/1.0, so that no answer comes chunked); returns the status code
/// and body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// gRPC clients for one sidecar, on their own environment.
pub struct Clients {
    _environment: Arc<Environment>,
    pub sidecar: SidecarClient,
    pub health: HealthClient,
}

impl Clients {
    pub fn connect(target: &str) -> Self {
        let environment = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("test-cq").build());
        let channel = ChannelBuilder::new(Arc::clone(&environment))
            .max_receive_message_len(16 << 20)
            .max_send_message_len(16 << 20)
            .connect(target);
        Clients {
            _environment: environment,
            sidecar: SidecarClient::new(channel.clone()),
            health: HealthClient::new(channel),
        }
    }

    pub fn ping(&self, payload: &[u8]) -> grpcio::Result<PingResponse> {
        let request = PingRequest {
            payload: payload.to_vec(),
            ..PingRequest::default()
        };
        self.sidecar.ping_opt(&request, call_option())
    }

    pub fn health_check(
        &self,
        service: &str,
    ) -> grpcio::Result<gpu_sidecar::proto::health::HealthCheckResponse> {
        self.health
            .check_opt(&health_request(service), call_option())
    }
}

pub fn health_request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
        ..HealthCheckRequest::default()
    }
}

/// Every test call carries a deadline, so no call can hang a test.
pub fn call_option() -> CallOption {
    CallOption::default().timeout(PATIENCE)
}

/// Lower-case hex SHA-256 of the file at `path`.
pub fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(fs::read(path).expect("read"));
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a sidecar on `config` that must fail at start-up: asserts exit code 1 and returns
/// its log.
pub fn expect_exit_1(dir: &TestDir, config: &str, envs: &[(&str, &str)]) -> String {
    expect_exit(1, dir, config, envs)
}

/// Runs the sidecar on `config` and expects it to exit with `code`; returns its log.
pub fn expect_exit(code: i32, dir: &TestDir, config: &str, envs: &[(&str, &str)]) -> String {
    let mut sidecar = Sidecar::spawn(&dir.write_config(config), envs);
    let exited = sidecar.exit_code(PATIENCE);
    let log = sidecar.log();
    assert_eq!(exited, code, "expected exit {code}; log:\n{log}");
    log
}

/// A sidecar with a 4 KiB model, started on a fresh dir and READY. `envs` hide GPUs when
/// tests need host mode on any machine.
pub fn ready_sidecar(configure: impl FnOnce(&mut ConfigText)) -> (TestDir, Sidecar) {
    let dir = TestDir::new();
    dir.write_model("model.bin", 4096);
    let mut config = ConfigText::new(&dir);
    configure(&mut config);
    let path = dir.write_config(&config.render());
    let mut sidecar = Sidecar::spawn(&path, &[("CUDA_VISIBLE_DEVICES", "")]);
    sidecar.wait_ready();
    (dir, sidecar)
}

/// A READY sidecar (CPU only) serving fixture model `fixture`, its config as `configure` sets.
pub fn fixture_sidecar(
    fixture: &str,
    configure: impl FnOnce(&mut ConfigText),
) -> (TestDir, Sidecar) {
    let dir = TestDir::new();
    let file = format!("{fixture}.onnx");
    dir.copy_fixture(fixture, &file);
    let mut config = ConfigText::new(&dir);
    config.model = file;
    configure(&mut config);
    let mut sidecar = Sidecar::spawn(
        &dir.write_config(&config.render()),
        &[("CUDA_VISIBLE_DEVICES", "")],
    );
    sidecar.wait_ready();
    (dir, sidecar)
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let mode = rustix::fs::Mode::from_raw_mode(0o600);
    rustix::fs::mknodat(rustix::fs::CWD, path, rustix::fs::FileType::Fifo, mode, 0)
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// Opens the FIFO for writing once the sidecar has opened it for reading, without blocking:
/// a sidecar that died first fails the test instead of hanging it.
pub fn open_fifo_writer(sidecar: &mut Sidecar, fifo: &Path) -> fs::File {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(file) => return file,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                assert!(sidecar.try_exit().is_none(), "exited: {}", sidecar.log());
                assert!(
                    Instant::now() < deadline,
                    "the sidecar never opened the FIFO"
                );
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("open {}: {e}", fifo.display()),
        }
    }
}
