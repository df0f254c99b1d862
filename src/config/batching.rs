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

//! `[sidecar.batching]` and a model's own `[batching]`: the dynamic batcher's limits and delay
//! mode, each checked as it is read.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::values::{parse_duration, MAX_GRACE_PERIOD};

const DEFAULT_MAX_BATCH_SIZE: u32 = 64;
const DEFAULT_MAX_QUEUE_DELAY: Duration = Duration::from_millis(1);
const DEFAULT_MAX_QUEUE_SIZE: u32 = 1024;
/// As text-embeddings-inference's default: 64 rows of 256 tokens.
const DEFAULT_MAX_BATCH_TOKENS: u32 = 16384;
/// Limits that catch typos: more rows or waiting requests than this is never meant.
pub const MAX_BATCH_SIZE_LIMIT: u32 = 1 << 20;
pub const MAX_QUEUE_SIZE_LIMIT: u32 = 1 << 20;
pub const MAX_QUEUE_DELAY_LIMIT: Duration = Duration::from_secs(10);

/// `[sidecar.batching]`: the dynamic batcher in front of the model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BatchingConfig {
    /// The most rows one execution runs; 0 turns batching off (one request per execution).
    #[serde(default = "default_max_batch_size", deserialize_with = "batch_size")]
    pub max_batch_size: u32,
    /// How long the oldest waiting request may wait for more to join its batch.
    #[serde(default = "default_max_queue_delay", deserialize_with = "queue_delay")]
    pub max_queue_delay: Duration,
    /// How many requests may wait; more are refused with RESOURCE_EXHAUSTED.
    #[serde(default = "default_max_queue_size", deserialize_with = "queue_size")]
    pub max_queue_size: u32,
    /// How long a request may wait before it runs, unless its deadline is sooner; unset: none.
    #[serde(default, deserialize_with = "default_timeout")]
    pub default_timeout: Option<Duration>,
    /// When a batch waits for company.
    #[serde(default)]
    pub delay_mode: DelayMode,
    /// The most padded tokens (rows times the longest) in one execution of a model of token
    /// sequences.
    #[serde(
        default = "default_max_batch_tokens",
        deserialize_with = "batch_tokens"
    )]
    pub max_batch_tokens: u32,
    /// For models of token sequences: the largest share of a batch's tokens that may be
    /// padding; unset: 0.5 on a GPU, 0.2 on the CPU.
    #[serde(default, deserialize_with = "padding_share")]
    pub max_padding: Option<f64>,
}

impl BatchingConfig {
    /// `max-padding`, or its default where the model runs.
    pub fn max_padding(&self, on_gpu: bool) -> f64 {
        self.max_padding.unwrap_or(if on_gpu { 0.5 } else { 0.2 })
    }
}

fn padding_share<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let share = f64::deserialize(d)?;
    if !(0.0..=1.0).contains(&share) {
        return Err(serde::de::Error::custom(format!(
            "{share} is out of range: a share of the batch's tokens, 0.0 (no padding) to 1.0"
        )));
    }
    Ok(Some(share))
}

/// When a batch that is not full waits for more requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DelayMode {
    /// Up to `max-queue-delay`, only while company is coming: other requests waited already,
    /// or more than one arrived since the previous batch began to form. A lone caller never
    /// waits.
    #[default]
    Adaptive,
    /// Always up to `max-queue-delay`.
    Fixed,
}

impl fmt::Display for DelayMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DelayMode::Adaptive => "adaptive",
            DelayMode::Fixed => "fixed",
        })
    }
}

fn default_max_batch_tokens() -> u32 {
    DEFAULT_MAX_BATCH_TOKENS
}

fn batch_tokens<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = i64::deserialize(d)?;
    u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
        serde::de::Error::custom(format!("{n} tokens is out of range (1 to {})", u32::MAX))
    })
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_queue_delay: DEFAULT_MAX_QUEUE_DELAY,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            default_timeout: None,
            delay_mode: DelayMode::default(),
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            max_padding: None,
        }
    }
}

fn default_max_batch_size() -> u32 {
    DEFAULT_MAX_BATCH_SIZE
}

fn default_max_queue_delay() -> Duration {
    DEFAULT_MAX_QUEUE_DELAY
}

fn default_max_queue_size() -> u32 {
    DEFAULT_MAX_QUEUE_SIZE
}

fn batch_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = i64::deserialize(d)?;
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= MAX_BATCH_SIZE_LIMIT)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{n} rows is out of range (0 turns batching off; at most {MAX_BATCH_SIZE_LIMIT})"
            ))
        })
}

fn queue_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = i64::deserialize(d)?;
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_QUEUE_SIZE_LIMIT).contains(n))
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{n} requests is out of range (1 to {MAX_QUEUE_SIZE_LIMIT})"
            ))
        })
}

fn queue_delay<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let delay = parse_duration(&text).map_err(serde::de::Error::custom)?;
    if delay > MAX_QUEUE_DELAY_LIMIT {
        return Err(serde::de::Error::custom(format!(
            "{text:?} is out of range: at most {}",
            humantime::format_duration(MAX_QUEUE_DELAY_LIMIT)
        )));
    }
    Ok(delay)
}

fn default_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    let timeout = parse_duration(&text).map_err(serde::de::Error::custom)?;
    if timeout.is_zero() || timeout > MAX_GRACE_PERIOD {
        return Err(serde::de::Error::custom(format!(
            "{text:?} is out of range: more than 0 and at most {} (leave it out for no timeout)",
            humantime::format_duration(MAX_GRACE_PERIOD)
        )));
    }
    Ok(Some(timeout))
}
