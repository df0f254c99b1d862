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

//! `bin/gpu-sidecar.sh`, the TaskManager launch script, run against the real binary: disabled
//! by default, start waits for READY, a second start is refused, stop leaves nothing behind,
//! a stale pid file is cleaned up, a start-up failure is reported, a stuck sidecar is killed.
//! The supervisor's tests are in [`crate::launch_supervisor`].

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, test_kill_process, Pid, Signal};

use crate::util::{binary, http, padded_model, TestDir, PATIENCE};

pub(crate) const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bin/gpu-sidecar.sh");

/// What one run of the script printed, and its exit code.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// A Flink-like layout in a temp dir (conf/, pid/, log/) and the script run against it. On
/// drop, the supervisors and sidecars named by the pid files, if still running, are killed by
/// pid (supervisors first, so that they restart nothing).
pub(crate) struct Launcher {
    pub(crate) dir: TestDir,
    /// Pids seen in the pid files, killed on drop if still alive.
    pub(crate) started: Vec<i32>,
}

impl Launcher {
    /// A conf/sidecar.toml with a 4 KiB model, a socket in the dir and the given grace period.
    pub(crate) fn new(grace_period: &str) -> Self {
        let dir = TestDir::new();
        let conf = dir.path().join("conf");
        fs::create_dir(&conf).unwrap();
        fs::write(conf.join("model.bin"), padded_model(4096)).unwrap();
        let launcher = Launcher {
            dir,
            started: Vec::new(),
        };
        launcher.write_config("model.bin", grace_period);
        launcher
    }

    pub(crate) fn write_config(&self, model: &str, grace_period: &str) {
        let text = format!(
            "[sidecar.rpc]\nendpoint = \"unix:{}\"\n[sidecar.model]\nuri = \"{model}\"\n\
             [sidecar.health]\nport = 0\n[sidecar.shutdown]\ngrace-period = \"{grace_period}\"\n",
            self.dir.socket().display()
        );
        fs::write(self.dir.path().join("conf/sidecar.toml"), text).unwrap();
    }

    pub(crate) fn pid_file(&self) -> PathBuf {
        self.dir.path().join("pid/flink-tester-gpu-sidecar.pid")
    }

    pub(crate) fn supervisor_pid_file(&self) -> PathBuf {
        self.dir
            .path()
            .join("pid/flink-tester-gpu-sidecar-supervisor.pid")
    }

    /// The pid in the supervisor's pid file, if there is one.
    pub(crate) fn supervisor_pid(&self) -> Option<i32> {
        fs::read_to_string(self.supervisor_pid_file())
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    /// Waits until the pid file names a live sidecar other than `old` whose health is READY,
    /// and returns its pid.
    pub(crate) fn wait_for_restart(&mut self, old: i32) -> i32 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(pid) = self.pid().filter(|&pid| pid != old && is_alive(pid)) {
                self.remember(pid);
                if self.run("status", true, &[]).code == 0 {
                    return pid;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no READY sidecar replaced pid {old}: {}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the supervisor has ended.
    pub(crate) fn wait_for_supervisor_end(&self, supervisor: i32) {
        let deadline = Instant::now() + PATIENCE;
        while is_alive(supervisor) {
            assert!(
                Instant::now() < deadline,
                "the supervisor (pid {supervisor}) did not give up: {}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    pub(crate) fn remember(&mut self, pid: i32) {
        if !self.started.contains(&pid) {
            self.started.push(pid);
        }
    }

    pub(crate) fn log_file(&self) -> PathBuf {
        self.dir
            .path()
            .join("log/flink-tester-gpu-sidecar-testhost.log")
    }

    /// Runs `gpu-sidecar.sh command` with the sidecar enabled or not, plus `envs`.
    pub(crate) fn run(&mut self, command: &str, enabled: bool, envs: &[(&str, &str)]) -> Outcome {
        let outcome = run_command(self.command(command, enabled, envs));
        for pid in [self.pid(), self.supervisor_pid()].into_iter().flatten() {
            self.remember(pid);
        }
        outcome
    }

    /// The command line of `gpu-sidecar.sh command` against this layout.
    pub(crate) fn command(&self, command: &str, enabled: bool, envs: &[(&str, &str)]) -> Command {
        let mut script = Command::new("bash");
        script
            .arg(SCRIPT)
            .arg(command)
            .env("FLINK_CONF_DIR", self.dir.path().join("conf"))
            .env("FLINK_PID_DIR", self.dir.path().join("pid"))
            .env("FLINK_LOG_DIR", self.dir.path().join("log"))
            .env("FLINK_IDENT_STRING", "tester")
            .env("ORT_DYLIB_PATH", crate::util::runtime_library())
            .env("HOSTNAME", "testhost")
            .env("GPU_SIDECAR_BIN", binary())
            .env("GPU_SIDECAR_START_TIMEOUT", PATIENCE.as_secs().to_string())
            .env("CUDA_VISIBLE_DEVICES", "")
            .env_remove("GPU_SIDECAR_ENABLED")
            .env_remove("GPU_SIDECAR_CONF")
            .env_remove("NOTIFY_SOCKET");
        if enabled {
            script.env("GPU_SIDECAR_ENABLED", "true");
        }
        for (key, value) in envs {
            script.env(key, value);
        }
        script
    }

    /// The pid in the pid file, if there is one.
    pub(crate) fn pid(&self) -> Option<i32> {
        fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    /// The health address the script reported on a successful start.
    pub(crate) fn health_addr(outcome: &Outcome) -> std::net::SocketAddr {
        outcome
            .stdout
            .split("health http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no health address in {outcome:#?}"))
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Supervisors first: a sidecar killed before its supervisor would be restarted.
        let supervisors: Vec<i32> = self.supervisor_pid().into_iter().collect();
        for pid in supervisors.iter().chain(&self.started) {
            if is_alive(*pid) {
                let _ = kill_process(Pid::from_raw(*pid).unwrap(), Signal::KILL);
            }
        }
    }
}

/// Runs the script to its end. Its output is read to the end too: a process left holding the
/// caller's stdout or stderr (a supervisor that did not detach) would hang this.
pub(crate) fn run_command(mut script: Command) -> Outcome {
    let output = script.output().expect("run bash");
    Outcome {
        code: output.status.code().expect("script exited"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub(crate) fn is_alive(pid: i32) -> bool {
    let Some(pid) = Pid::from_raw(pid) else {
        return false;
    };
    if test_kill_process(pid).is_err() {
        return false;
    }
    // An exited process that nobody has reaped yet is a zombie: not alive.
    fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()))
        .map(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

pub(crate) fn assert_code(outcome: &Outcome, code: i32) {
    assert_eq!(outcome.code, code, "{outcome:#?}");
}

#[test]
fn disabled_by_default_start_starts_nothing() {
    let mut launcher = Launcher::new("10 s");
    for command in ["start", "start-foreground"] {
        let outcome = launcher.run(command, false, &[]);
        assert_code(&outcome, 0);
        assert!(outcome.stdout.contains("disabled"), "{outcome:#?}");
    }
    assert!(!launcher.pid_file().exists());
    assert!(!launcher.dir.path().join("log").exists());
    assert!(!launcher.dir.socket().exists());
    assert_code(&launcher.run("status", false, &[]), 3);
}

#[test]
fn start_reaches_ready_refuses_a_second_start_and_stop_leaves_nothing() {
    let mut launcher = Launcher::new("10 s");
    let started = launcher.run("start", true, &[]);
    assert_code(&started, 0);
    assert!(started.stdout.contains("is READY"), "{started:#?}");
    let pid = launcher.pid().expect("pid file written");
    assert!(is_alive(pid));
    let health = Launcher::health_addr(&started);
    assert_eq!(
        http(health, "GET", "/health").unwrap(),
        (200, "READY".to_string())
    );
    let log = fs::read_to_string(launcher.log_file()).unwrap();
    assert!(log.contains("READY in"), "{log}");

    let status = launcher.run("status", true, &[]);
    assert_code(&status, 0);
    assert!(
        status
            .stdout
            .contains(&format!("running as pid {pid} and READY")),
        "{status:#?}"
    );

    let second = launcher.run("start", true, &[]);
    assert_code(&second, 1);
    assert!(
        second
            .stderr
            .contains(&format!("already running as pid {pid}")),
        "{second:#?}"
    );
    assert_eq!(launcher.pid(), Some(pid), "the pid file was overwritten");
    assert_eq!(http(health, "GET", "/health").unwrap().0, 200);

    let stopped = launcher.run("stop", true, &[]);
    assert_code(&stopped, 0);
    assert!(
        stopped.stdout.contains("gpu-sidecar stopped"),
        "{stopped:#?}"
    );
    assert!(!is_alive(pid), "pid {pid} still running after stop");
    assert!(!launcher.pid_file().exists(), "pid file left behind");
    assert!(!launcher.dir.socket().exists(), "socket left behind");
    let log = fs::read_to_string(launcher.log_file()).unwrap();
    assert!(log.contains("exiting with code 0"), "{log}");
    assert_code(&launcher.run("status", true, &[]), 3);
    // Stopping again is not an error.
    assert_code(&launcher.run("stop", true, &[]), 0);
}

#[test]
fn a_stale_pid_file_is_cleaned_up_not_trusted() {
    let mut launcher = Launcher::new("10 s");
    // The pid of a process that has exited.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    fs::create_dir_all(launcher.dir.path().join("pid")).unwrap();
    fs::write(launcher.pid_file(), format!("{gone_pid}\n")).unwrap();

    let status = launcher.run("status", true, &[]);
    assert_code(&status, 3);
    assert!(
        status.stderr.contains("removing stale pid file"),
        "{status:#?}"
    );
    assert!(!launcher.pid_file().exists());

    // Also through `start`: a stale file does not block it.
    fs::write(launcher.pid_file(), format!("{gone_pid}\n")).unwrap();
    let started = launcher.run("start", true, &[]);
    assert_code(&started, 0);
    let pid = launcher.pid().unwrap();
    assert_ne!(pid, gone_pid as i32);
    assert_code(&launcher.run("stop", true, &[]), 0);
    assert!(!is_alive(pid));
}

#[test]
fn a_sidecar_that_dies_during_start_up_is_reported_with_its_log_and_not_restarted() {
    let mut launcher = Launcher::new("10 s");
    // A file that is there (so the config checks pass) but is no model.
    fs::write(
        launcher.dir.path().join("conf/garbage.onnx"),
        b"not a model",
    )
    .unwrap();
    launcher.write_config("garbage.onnx", "10 s");
    let outcome = launcher.run("start", true, &[]);
    assert_code(&outcome, 1);
    assert!(
        outcome
            .stderr
            .contains("died during start-up with exit code 2"),
        "{outcome:#?}"
    );
    assert!(
        outcome.stderr.contains("ONNX Runtime cannot load model")
            && outcome
                .stderr
                .contains("before it was READY; not restarting"),
        "the log's tail is missing: {outcome:#?}"
    );
    assert!(!launcher.pid_file().exists());
    assert!(!launcher.supervisor_pid_file().exists());
    assert_code(&launcher.run("status", true, &[]), 3);
}

#[test]
fn a_missing_model_is_refused_before_starting() {
    let mut launcher = Launcher::new("10 s");
    launcher.write_config("missing-model.bin", "10 s");
    let outcome = launcher.run("start", true, &[]);
    assert_code(&outcome, 2);
    assert!(
        outcome
            .stderr
            .contains("invalid config: gpu-sidecar: error: model file")
            && outcome
                .stderr
                .contains("missing-model.bin does not exist (sidecar.model.uri)\n"),
        "{outcome:#?}"
    );
    assert!(!launcher.pid_file().exists());
    assert!(!launcher.dir.path().join("log").exists());
}

#[test]
fn two_starts_at_once_start_one_sidecar() {
    let launcher = std::sync::Mutex::new(Launcher::new("10 s"));
    let mut outcomes: Vec<Outcome> = Vec::new();
    thread::scope(|scope| {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let launcher = &launcher;
                scope.spawn(move || {
                    // Each run holds the launcher only to build its command, not while it runs.
                    let command = launcher.lock().unwrap().command("start", true, &[]);
                    run_command(command)
                })
            })
            .collect();
        outcomes.extend(runs.into_iter().map(|run| run.join().unwrap()));
    });
    let mut launcher = launcher.into_inner().unwrap();
    for pid in [launcher.pid(), launcher.supervisor_pid()]
        .into_iter()
        .flatten()
    {
        launcher.remember(pid);
    }
    let mut codes: Vec<i32> = outcomes.iter().map(|o| o.code).collect();
    codes.sort_unstable();
    assert_eq!(codes, [0, 1], "{outcomes:#?}");
    let refused = outcomes.iter().find(|o| o.code == 1).unwrap();
    assert!(
        refused.stderr.contains("already running as pid"),
        "{refused:#?}"
    );
    let log = launcher.log();
    assert_eq!(
        log.matches("started gpu-sidecar as pid").count(),
        1,
        "{log}"
    );
    assert_code(&launcher.run("stop", true, &[]), 0);
}

#[test]
fn bad_config_is_refused_before_starting() {
    let mut launcher = Launcher::new("10 s");
    launcher.write_config("model.bin", "soon");
    let outcome = launcher.run("start", true, &[]);
    assert_code(&outcome, 2);
    assert!(
        outcome.stderr.contains("sidecar.shutdown.grace-period"),
        "{outcome:#?}"
    );
    assert!(!launcher.pid_file().exists());
}

/// A sidecar that cannot act on SIGTERM (here: stopped with SIGSTOP) is killed once the grace
/// period and the margin have passed, and the script says so.
#[test]
fn stop_escalates_to_sigkill_after_the_grace_period_and_margin() {
    let mut launcher = Launcher::new("1 s");
    assert_code(&launcher.run("start", true, &[]), 0);
    let pid = launcher.pid().unwrap();
    kill_process(Pid::from_raw(pid).unwrap(), Signal::STOP).unwrap();
    let began = Instant::now();
    let stopped = launcher.run("stop", true, &[("GPU_SIDECAR_STOP_MARGIN", "1")]);
    let took = began.elapsed();
    assert_code(&stopped, 0);
    assert!(
        stopped
            .stderr
            .contains("did not stop within 2 s of SIGTERM (grace period + 1 s); sent SIGKILL"),
        "{stopped:#?}"
    );
    assert!(took >= Duration::from_secs(2), "killed after {took:?}");
    let deadline = Instant::now() + PATIENCE;
    while is_alive(pid) {
        assert!(Instant::now() < deadline, "pid {pid} survived SIGKILL");
        thread::sleep(Duration::from_millis(10));
    }
    assert!(!launcher.pid_file().exists());
}

#[test]
fn usage_errors_exit_2() {
    let mut launcher = Launcher::new("10 s");
    let outcome = launcher.run("restart-please", true, &[]);
    assert_code(&outcome, 2);
    assert!(
        outcome.stderr.contains("Usage: gpu-sidecar.sh"),
        "{outcome:#?}"
    );
    let outcome = launcher.run("start", true, &[("GPU_SIDECAR_START_TIMEOUT", "soon")]);
    assert_code(&outcome, 2);
    assert!(
        outcome
            .stderr
            .contains("GPU_SIDECAR_START_TIMEOUT must be a whole number"),
        "{outcome:#?}"
    );
}

/// The scripts pass shellcheck (installed by `bin/dev.sh` and `.ci/run`).
#[test]
fn the_scripts_pass_shellcheck() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new("shellcheck")
        .current_dir(root)
        .args([
            "bin/gpu-sidecar.sh",
            "bin/gpu-sidecar-taskmanager.sh",
            "bin/dev.sh",
            ".ci/run",
            "tests/e2e/flink_cluster.sh",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run shellcheck ({e}); install it: apt-get install -y shellcheck")
        });
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
