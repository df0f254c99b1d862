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

//! The launch script's supervisor, run against the real binary: it restarts a sidecar that
//! dies, with backoff, gives up after a crash loop, never restarts exit 2, and a stop during
//! a backoff wait returns at once.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use crate::launch_script::*;
use crate::util::PATIENCE;

/// Restart delays short enough for tests: 100 ms, doubling to 400 ms.
const QUICK_RESTARTS: [(&str, &str); 2] = [
    ("GPU_SIDECAR_RESTART_DELAY_MS", "100"),
    ("GPU_SIDECAR_RESTART_MAX_DELAY_MS", "400"),
];

#[test]
fn the_supervisor_restarts_a_dead_sidecar_then_gives_up_after_a_crash_loop() {
    let mut launcher = Launcher::new("10 s");
    let started = launcher.run("start", true, &QUICK_RESTARTS);
    assert_code(&started, 0);
    let supervisor = launcher.supervisor_pid().expect("supervisor pid file");
    assert!(is_alive(supervisor));
    let status = launcher.run("status", true, &[]);
    assert!(
        status
            .stdout
            .contains(&format!("READY; supervised by pid {supervisor}")),
        "{status:#?}"
    );
    let mut pid = launcher.pid().unwrap();
    // Five crashes within five minutes are restarted, each after a longer wait.
    for crash in 1..=5 {
        kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL).unwrap();
        pid = launcher.wait_for_restart(pid);
        let log = launcher.log();
        assert!(
            log.contains(&format!(
                "ended with signal 9 (crash {crash} of at most 5 within 5 minutes); restarting in"
            )),
            "{log}"
        );
    }
    for delay in ["0.100 s", "0.200 s", "0.400 s"] {
        assert!(launcher.log().contains(&format!("restarting in {delay}")));
    }
    // The sixth is not.
    kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL).unwrap();
    launcher.wait_for_supervisor_end(supervisor);
    assert!(
        launcher
            .log()
            .contains("its 6th crash within 5 minutes: giving up"),
        "{}",
        launcher.log()
    );
    assert!(!launcher.pid_file().exists());
    assert!(!launcher.supervisor_pid_file().exists());
    let status = launcher.run("status", true, &[]);
    assert_code(&status, 3);
    assert!(
        status.stdout.contains("crashed 6 times within 5 minutes"),
        "{status:#?}"
    );
    // A start afterwards is a fresh start.
    assert_code(&launcher.run("start", true, &[]), 0);
    assert_code(&launcher.run("stop", true, &[]), 0);
}

#[test]
fn exit_2_is_not_restarted() {
    let mut launcher = Launcher::new("10 s");
    assert_code(&launcher.run("start", true, &QUICK_RESTARTS), 0);
    let supervisor = launcher.supervisor_pid().unwrap();
    let pid = launcher.pid().unwrap();
    // The config goes bad while it runs; the restart then exits 2.
    launcher.write_config("model.bin", "soon");
    kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL).unwrap();
    launcher.wait_for_supervisor_end(supervisor);
    let log = launcher.log();
    assert!(
        log.contains("ended with exit code 2 (a bad configuration, or a model it cannot serve): not restarting it"),
        "{log}"
    );
    assert_eq!(
        log.matches("started gpu-sidecar as pid").count(),
        2,
        "one start and one restart: {log}"
    );
    let status = launcher.run("status", true, &[]);
    assert_code(&status, 3);
    assert!(status.stdout.contains("exit code 2"), "{status:#?}");
    assert!(!launcher.pid_file().exists());
}

#[test]
fn stop_during_a_backoff_wait_returns_at_once_and_leaves_nothing() {
    let mut launcher = Launcher::new("10 s");
    let long_wait = [("GPU_SIDECAR_RESTART_DELAY_MS", "60000")];
    assert_code(&launcher.run("start", true, &long_wait), 0);
    let supervisor = launcher.supervisor_pid().unwrap();
    let pid = launcher.pid().unwrap();
    kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !launcher.log().contains("restarting in 60.000 s") {
        assert!(Instant::now() < deadline, "{}", launcher.log());
        thread::sleep(Duration::from_millis(20));
    }
    let status = launcher.run("status", true, &[]);
    assert_code(&status, 1);
    assert!(status.stdout.contains("restarting it"), "{status:#?}");
    let began = Instant::now();
    let stopped = launcher.run("stop", true, &[]);
    assert_code(&stopped, 0);
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "stop waited out the backoff"
    );
    assert!(!is_alive(supervisor));
    assert!(!launcher.pid_file().exists());
    assert!(!launcher.supervisor_pid_file().exists());
    assert_eq!(
        fs::read_dir(launcher.dir.path().join("pid"))
            .unwrap()
            .count(),
        0,
        "files left in the pid folder"
    );
    assert_eq!(
        launcher.log().matches("started gpu-sidecar as pid").count(),
        1,
        "restarted after stop: {}",
        launcher.log()
    );
}
