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

//! Stopping: the events that end the main thread's wait (a signal, a component thread that
//! ended), the signal thread that produces the first kind, and [`ComponentThread`], the handle
//! through which `main` starts, watches and joins each named thread.
//!
//! The first SIGTERM or SIGINT becomes an [`Event::Signal`] for the main thread, which runs the
//! orderly shutdown. A second one ends the process at once from the signal handler, with exit
//! code 128 + the signal number, for an operator who does not want to wait. SIGHUP becomes an
//! [`Event::Reload`]: the model repository is rescanned.

use std::any::Any;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::flag;
use signal_hook::iterator::{Handle as SignalsHandle, Signals};

/// The signals that start the orderly shutdown.
pub const SHUTDOWN_SIGNALS: [i32; 2] = [SIGTERM, SIGINT];

/// How long a [`ComponentThread`] dropped without an explicit join is waited for.
const DROP_JOIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Something the main thread must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// SIGHUP: rescan the model repository.
    Reload,
    /// A shutdown signal arrived (its number).
    Signal(i32),
    /// A component thread ended; `failure` says why when it returned an error or panicked.
    ThreadExited {
        name: String,
        failure: Option<String>,
    },
}

/// A thread that could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// The OS refused to create a thread.
    #[error("cannot start the {name} thread: {source}")]
    Spawn { name: String, source: io::Error },
    /// Installing the signal handlers failed.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    /// The thread did not finish in time.
    #[error("the {name} thread did not stop within {}", humantime::format_duration(*.waited))]
    JoinTimeout { name: String, waited: Duration },
    /// The thread panicked.
    #[error("the {name} thread panicked: {message}")]
    Panicked { name: String, message: String },
}

/// A named thread whose end is reported as an [`Event::ThreadExited`] and which can be
/// joined with a deadline. Dropping an unjoined handle waits briefly for the thread.
#[derive(Debug)]
pub struct ComponentThread {
    name: String,
    handle: Option<JoinHandle<()>>,
    /// Disconnects when the thread's body has returned or unwound.
    finished: Receiver<()>,
}

impl ComponentThread {
    /// Spawns `body` on a thread called `name`. When it returns an error or panics, the
    /// failure goes into the [`Event::ThreadExited`] sent on `events`.
    pub fn spawn<F>(name: &str, events: Sender<Event>, body: F) -> Result<Self, ShutdownError>
    where
        F: FnOnce() -> Result<(), String> + Send + 'static,
    {
        let (finished_sender, finished) = bounded::<()>(0);
        let thread_name = name.to_string();
        let handle = thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let failure = match panic::catch_unwind(AssertUnwindSafe(body)) {
                    Ok(Ok(())) => None,
                    Ok(Err(message)) => Some(message),
                    Err(payload) => Some(format!("panicked: {}", panic_message(&*payload))),
                };
                let _ = events.send(Event::ThreadExited {
                    name: thread_name,
                    failure,
                });
                drop(finished_sender);
            })
            .map_err(|source| ShutdownError::Spawn {
                name: name.to_string(),
                source,
            })?;
        Ok(ComponentThread {
            name: name.to_string(),
            handle: Some(handle),
            finished,
        })
    }

    /// Waits up to `timeout` for the thread to end and joins it. Fails if it is still running
    /// then (it is left detached) or if it panicked.
    pub fn join_within(&mut self, timeout: Duration) -> Result<(), ShutdownError> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        match self.finished.recv_timeout(timeout) {
            Err(RecvTimeoutError::Timeout) => {
                return Err(ShutdownError::JoinTimeout {
                    name: self.name.clone(),
                    waited: timeout,
                })
            }
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {}
        }
        handle.join().map_err(|payload| ShutdownError::Panicked {
            name: self.name.clone(),
            message: panic_message(&*payload),
        })
    }
}

impl Drop for ComponentThread {
    fn drop(&mut self) {
        if self.handle.is_some() {
            if let Err(e) = self.join_within(DROP_JOIN_TIMEOUT) {
                log::warn!("{e}");
            }
        }
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// The thread that turns shutdown signals into [`Event::Signal`]s.
#[derive(Debug)]
pub struct SignalThread {
    handle: SignalsHandle,
    thread: ComponentThread,
}

impl SignalThread {
    /// Installs the handlers and starts the `signals` thread. Call before any other thread
    /// starts, so that no signal finds the default (kill) disposition.
    pub fn start(events: Sender<Event>) -> Result<Self, ShutdownError> {
        let shutdown_requested = Arc::new(AtomicBool::new(false));
        for signal in SHUTDOWN_SIGNALS {
            // Registered first, so it sees the flag as the previous signal left it: the first
            // signal passes, any later one exits the process at once.
            flag::register_conditional_shutdown(
                signal,
                128 + signal,
                Arc::clone(&shutdown_requested),
            )
            .map_err(ShutdownError::Signals)?;
            flag::register(signal, Arc::clone(&shutdown_requested))
                .map_err(ShutdownError::Signals)?;
        }
        let mut signals = Signals::new(SHUTDOWN_SIGNALS.iter().chain(&[SIGHUP]))
            .map_err(ShutdownError::Signals)?;
        let handle = signals.handle();
        let thread_events = events.clone();
        let thread = ComponentThread::spawn("signals", events, move || {
            for signal in signals.forever() {
                log::info!("received signal {}", signal_name(signal));
                let event = if signal == SIGHUP {
                    Event::Reload
                } else {
                    Event::Signal(signal)
                };
                if thread_events.send(event).is_err() {
                    break;
                }
            }
            Ok(())
        })?;
        Ok(SignalThread { handle, thread })
    }

    /// Stops the signal thread and joins it.
    pub fn stop(mut self, timeout: Duration) -> Result<(), ShutdownError> {
        self.handle.close();
        self.thread.join_within(timeout)
    }
}

/// "SIGTERM", "SIGINT", or the number.
pub fn signal_name(signal: i32) -> String {
    match signal {
        SIGTERM => "SIGTERM".to_string(),
        SIGINT => "SIGINT".to_string(),
        SIGHUP => "SIGHUP".to_string(),
        other => format!("signal {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::unbounded;

    #[test]
    fn thread_end_is_reported_with_its_outcome() {
        let (events, received) = unbounded();
        let mut ok = ComponentThread::spawn("ok", events.clone(), || Ok(())).unwrap();
        ok.join_within(Duration::from_secs(10)).unwrap();
        let mut failing =
            ComponentThread::spawn("failing", events.clone(), || Err("broken".into())).unwrap();
        failing.join_within(Duration::from_secs(10)).unwrap();
        assert_eq!(
            received.try_recv().unwrap(),
            Event::ThreadExited {
                name: "ok".into(),
                failure: None
            }
        );
        assert_eq!(
            received.try_recv().unwrap(),
            Event::ThreadExited {
                name: "failing".into(),
                failure: Some("broken".into())
            }
        );
    }

    #[test]
    fn a_panic_becomes_an_event() {
        let (events, received) = unbounded();
        let mut thread = ComponentThread::spawn("panicky", events, || panic!("boom")).unwrap();
        thread.join_within(Duration::from_secs(10)).unwrap();
        match received.try_recv().unwrap() {
            Event::ThreadExited { name, failure } => {
                assert_eq!(name, "panicky");
                assert!(failure.unwrap().contains("boom"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn join_times_out_on_a_running_thread() {
        let (events, _received) = unbounded();
        let (release, wait) = bounded::<()>(0);
        let mut thread = ComponentThread::spawn("busy", events, move || {
            let _ = wait.recv();
            Ok(())
        })
        .unwrap();
        let err = thread.join_within(Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, ShutdownError::JoinTimeout { .. }), "{err}");
        drop(release);
    }
}
