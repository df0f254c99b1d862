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

//! The sidecar's shared lifecycle state: STARTING → READY → DRAINING → STOPPED, the device
//! served on once READY, whether every model that should be served is, and whether every
//! component is alive. Written by the main thread (and by
//! component threads reporting a failure); read by the health thread and the gRPC handlers.
//! Subscribers (gRPC health `Watch` calls) are told each state change, in order.

use std::fmt;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};

use crate::serving::ServingInfo;

/// Where the sidecar is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Start-up: binding, bringing up the GPU, loading the model.
    Starting,
    /// Everything is up and the model is resident.
    Ready,
    /// Shutting down: in-flight calls finish, new ones are refused.
    Draining,
    /// Shut down; the process is about to exit.
    Stopped,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Starting => "STARTING",
            State::Ready => "READY",
            State::Draining => "DRAINING",
            State::Stopped => "STOPPED",
        })
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Senders of the live `Watch` subscriptions; `None` once subscriptions are closed.
    subscribers: Option<Vec<UnboundedSender<State>>>,
    /// The first component that failed, if any.
    failed_component: Option<String>,
    /// A component that is alive but has stopped answering, if any.
    stalled_component: Option<String>,
    /// A model that should be served and has no version that takes requests, if any.
    missing_model: Option<String>,
    /// The GPUs taken out of service, with why.
    failed_devices: Vec<(i32, String)>,
}

/// The state every thread shares (behind an `Arc`).
#[derive(Debug)]
pub struct Lifecycle {
    inner: Mutex<Inner>,
    serving: OnceLock<ServingInfo>,
    started_at: Instant,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A lifecycle in the STARTING state.
    pub fn new() -> Self {
        Lifecycle {
            inner: Mutex::new(Inner {
                state: State::Starting,
                subscribers: Some(Vec::new()),
                failed_component: None,
                stalled_component: None,
                missing_model: None,
                failed_devices: Vec::new(),
            }),
            serving: OnceLock::new(),
            started_at: Instant::now(),
        }
    }

    // A panic while holding this lock cannot leave `Inner` half-updated, so recover from poison.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    /// How long ago the lifecycle (the process, in effect) started.
    pub fn uptime(&self) -> Duration {
        self.started_at.elapsed()
    }

    /// Records what is served and moves STARTING → READY. Does nothing if shutdown has
    /// already begun.
    pub fn set_ready(&self, info: ServingInfo) {
        let _ = self.serving.set(info);
        let mut inner = self.lock();
        if inner.state == State::Starting {
            Self::transition(&mut inner, State::Ready);
        }
    }

    /// Moves to DRAINING (from STARTING or READY); returns false if already draining or stopped.
    pub fn begin_draining(&self) -> bool {
        let mut inner = self.lock();
        match inner.state {
            State::Starting | State::Ready => {
                Self::transition(&mut inner, State::Draining);
                true
            }
            State::Draining | State::Stopped => false,
        }
    }

    /// Moves to STOPPED.
    pub fn set_stopped(&self) {
        let mut inner = self.lock();
        Self::transition(&mut inner, State::Stopped);
    }

    fn transition(inner: &mut Inner, to: State) {
        if inner.state == to {
            return;
        }
        log::info!("state {} -> {}", inner.state, to);
        inner.state = to;
        if let Some(subscribers) = inner.subscribers.as_mut() {
            subscribers.retain(|s| s.unbounded_send(to).is_ok());
        }
    }

    /// Whether requests are served: READY, and every model that should be loaded has a
    /// version that takes requests.
    pub fn is_ready(&self) -> bool {
        let inner = self.lock();
        inner.state == State::Ready && inner.missing_model.is_none()
    }

    /// Records which model, if any, should be served but has no ready version (the
    /// repository says so after each change). Returns the one recorded before.
    pub fn set_missing_model(&self, model: Option<&str>) -> Option<String> {
        let mut inner = self.lock();
        let before = std::mem::replace(&mut inner.missing_model, model.map(str::to_string));
        if before.is_some() != model.is_some() {
            // Readiness changed within the state: subscribers look again.
            let state = inner.state;
            if let Some(subscribers) = inner.subscribers.as_mut() {
                subscribers.retain(|s| s.unbounded_send(state).is_ok());
            }
        }
        before
    }

    /// Records that GPU `ordinal` was taken out of service, and why.
    pub fn mark_device_failed(&self, ordinal: i32, reason: &str) {
        self.lock()
            .failed_devices
            .push((ordinal, reason.to_string()));
    }

    /// The GPUs taken out of service, with why.
    pub fn failed_devices(&self) -> Vec<(i32, String)> {
        self.lock().failed_devices.clone()
    }

    /// The model that should be served and is not, if any.
    pub fn missing_model(&self) -> Option<String> {
        self.lock().missing_model.clone()
    }

    /// The device the models run on, once READY has been reached.
    pub fn serving(&self) -> Option<&ServingInfo> {
        self.serving.get()
    }

    /// A stream of states: the current one first, then each change. It ends when
    /// [`Lifecycle::close_subscriptions`] is called (at once, after the current state, if it
    /// already was).
    pub fn subscribe(&self) -> UnboundedReceiver<State> {
        let (sender, receiver) = unbounded();
        let mut inner = self.lock();
        // Cannot fail: the receiver is alive.
        let _ = sender.unbounded_send(inner.state);
        if let Some(subscribers) = inner.subscribers.as_mut() {
            subscribers.retain(|s| !s.is_closed());
            subscribers.push(sender);
        }
        receiver
    }

    /// Ends every subscription stream, and those made later, so that long-lived calls do not
    /// hold up the gRPC server's shutdown.
    pub fn close_subscriptions(&self) {
        self.lock().subscribers = None;
    }

    /// Number of open subscriptions.
    #[cfg(test)]
    fn subscriber_count(&self) -> usize {
        self.lock()
            .subscribers
            .as_ref()
            .map_or(0, |s| s.iter().filter(|sender| !sender.is_closed()).count())
    }

    /// Records that a component thread died; liveness turns false for good.
    pub fn mark_failed(&self, component: &str) {
        let mut inner = self.lock();
        if inner.failed_component.is_none() {
            inner.failed_component = Some(component.to_string());
        }
    }

    /// Records which component, if any, has stopped answering; liveness is false while one
    /// has. Returns the component recorded before.
    pub fn set_stalled(&self, component: Option<&str>) -> Option<String> {
        let mut inner = self.lock();
        std::mem::replace(&mut inner.stalled_component, component.map(str::to_string))
    }

    /// True while no component thread has died and none has stopped answering.
    pub fn is_live(&self) -> bool {
        let inner = self.lock();
        inner.failed_component.is_none() && inner.stalled_component.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_channel::mpsc::TryRecvError;

    fn drain(receiver: &mut UnboundedReceiver<State>) -> Vec<State> {
        let mut seen = Vec::new();
        while let Ok(state) = receiver.try_recv() {
            seen.push(state);
        }
        seen
    }

    #[test]
    fn subscribers_see_current_state_then_each_change() {
        let lifecycle = Lifecycle::new();
        let mut early = lifecycle.subscribe();
        lifecycle.set_ready(ServingInfo::for_tests());
        let mut late = lifecycle.subscribe();
        assert!(lifecycle.begin_draining());
        assert!(!lifecycle.begin_draining());
        assert_eq!(
            drain(&mut early),
            [State::Starting, State::Ready, State::Draining]
        );
        assert_eq!(drain(&mut late), [State::Ready, State::Draining]);
    }

    #[test]
    fn closing_subscriptions_ends_streams() {
        let lifecycle = Lifecycle::new();
        let mut before = lifecycle.subscribe();
        lifecycle.close_subscriptions();
        let mut after = lifecycle.subscribe();
        assert_eq!(before.try_recv(), Ok(State::Starting));
        assert_eq!(before.try_recv(), Err(TryRecvError::Closed));
        assert_eq!(after.try_recv(), Ok(State::Starting));
        assert_eq!(after.try_recv(), Err(TryRecvError::Closed));
        assert_eq!(lifecycle.subscriber_count(), 0);
    }

    #[test]
    fn ready_is_not_reached_once_draining() {
        let lifecycle = Lifecycle::new();
        assert!(lifecycle.begin_draining());
        lifecycle.set_ready(ServingInfo::for_tests());
        assert_eq!(lifecycle.state(), State::Draining);
    }

    #[test]
    fn a_failed_component_ends_liveness() {
        let lifecycle = Lifecycle::new();
        assert!(lifecycle.is_live());
        lifecycle.mark_failed("health");
        assert!(!lifecycle.is_live());
    }

    #[test]
    fn a_stalled_component_suspends_liveness_until_it_answers() {
        let lifecycle = Lifecycle::new();
        assert_eq!(lifecycle.set_stalled(Some("gpu-owner")), None);
        assert!(!lifecycle.is_live());
        assert_eq!(lifecycle.set_stalled(None).as_deref(), Some("gpu-owner"));
        assert!(lifecycle.is_live());
    }
}
