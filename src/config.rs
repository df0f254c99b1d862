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

//! Configuration: the TOML file's serde structs (`deny_unknown_fields` throughout), parsing of
//! endpoints, Flink-style durations, socket modes and model URIs, and the checks that need more
//! than one key. Runs on the main thread before anything starts; every error names the key it
//! is about and maps to exit code 2.

use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// The longest path a Unix socket address can hold (`sun_path` is 108 bytes with its NUL).
const MAX_UNIX_SOCKET_PATH: usize = 107;
/// The longest grace period accepted: long enough for any drain, short enough to catch typos.
const MAX_GRACE_PERIOD: Duration = Duration::from_secs(3600);
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);
const DEFAULT_SOCKET_MODE: u32 = 0o660;
const DEFAULT_MAX_BATCH_SIZE: u32 = 64;
const DEFAULT_MAX_QUEUE_DELAY: Duration = Duration::from_millis(1);
const DEFAULT_MAX_QUEUE_SIZE: u32 = 1024;
/// As text-embeddings-inference's default: 64 rows of 256 tokens.
const DEFAULT_MAX_BATCH_TOKENS: u32 = 16384;
/// The longest `max-length` accepted, in tokens.
const MAX_LENGTH_LIMIT: u32 = 1 << 20;
/// Limits that catch typos: more rows or waiting requests than this is never meant.
const MAX_BATCH_SIZE_LIMIT: u32 = 1 << 20;
const MAX_QUEUE_SIZE_LIMIT: u32 = 1 << 20;
const MAX_QUEUE_DELAY_LIMIT: Duration = Duration::from_secs(10);
/// The keys without a default, checked before anything else so that an empty or partial file
/// names what it lacks.
const REQUIRED_KEYS: [&str; 3] = [
    "sidecar.rpc.endpoint",
    "sidecar.model.uri",
    "sidecar.health.port",
];

/// A configuration that cannot be used; exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The TOML is malformed, or a key is unknown or of the wrong type or value.
    #[error("config file {}: `{key}`: {message}", path.display())]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// A key without a default is not in the file.
    #[error("config file {}: {key} is required", path.display())]
    Missing { path: PathBuf, key: String },
}

/// What is wrong with a config text: a key's value, or a key that is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The dotted key and what is wrong with it.
    Key(String, String),
    /// A required dotted key that is not there.
    Missing(String),
}

/// The whole file: everything lives under the `[sidecar]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    sidecar: Config,
}

/// The validated configuration of one sidecar process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub rpc: RpcConfig,
    /// `[sidecar.model]`: the one-model shorthand.
    pub model: Option<ModelConfig>,
    /// `[[sidecar.models]]`: several models, one file each.
    #[serde(default)]
    pub models: Vec<ModelTable>,
    /// A model repository in Triton's layout: `DIR/<name>/<version>/model.onnx`.
    pub repository: Option<PathBuf>,
    /// Who changes what is loaded once started.
    #[serde(default)]
    pub repository_control: RepositoryControl,
    /// With `explicit`: the models loaded at start; unset: all.
    pub startup_models: Option<Vec<ModelName>>,
    /// With `poll`: how often the repository is rescanned.
    #[serde(default = "default_poll_interval", deserialize_with = "poll_interval")]
    pub repository_poll_interval: Duration,
    /// ONNX Runtime's shared library, for every model.
    runtime_library: Option<PathBuf>,
    pub health: HealthConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub gpu: GpuConfig,
    #[serde(default)]
    pub batching: BatchingConfig,
    #[serde(default)]
    pub log: LogConfig,
}

/// `[sidecar.rpc]`: where the gRPC server listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RpcConfig {
    pub endpoint: Endpoint,
    /// Permissions of the socket file; only for `unix:` endpoints. Default 0660.
    socket_mode: Option<SocketMode>,
    /// The largest message taken or sent, in bytes. Default 64 MiB.
    max_message_size: Option<MessageSize>,
}

impl RpcConfig {
    /// The permissions to give the socket file of a `unix:` endpoint.
    pub fn socket_mode(&self) -> u32 {
        self.socket_mode.map_or(DEFAULT_SOCKET_MODE, |m| m.0)
    }

    /// The largest request or answer, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
            .map_or(DEFAULT_MAX_MESSAGE_SIZE, |m| m.0)
    }
}

/// The default `sidecar.rpc.max-message-size`: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;

/// A message size: a byte count with a unit ("64 MiB", "512 KiB", "100 MB") or a plain
/// number of bytes; from 1 KiB to 2 GiB (what protobuf can carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct MessageSize(pub usize);

impl TryFrom<toml::Value> for MessageSize {
    type Error = String;

    fn try_from(value: toml::Value) -> Result<Self, Self::Error> {
        let bytes = match &value {
            toml::Value::Integer(n) => u64::try_from(*n).ok(),
            // bytesize reads "64 MiB", "64MiB", "100 MB", "4096".
            toml::Value::String(s) => s.trim().parse::<bytesize::ByteSize>().ok().map(|b| b.0),
            _ => None,
        };
        match bytes {
            Some(n @ 1024..=0x7fff_ffff) => Ok(MessageSize(n as usize)),
            Some(n) => Err(format!(
                "{n} bytes is out of range: give 1 KiB to 2 GiB, e.g. \"64 MiB\""
            )),
            None => Err(format!(
                "{value} is not a size: write bytes with a unit, e.g. \"64 MiB\", or a number of bytes"
            )),
        }
    }
}

/// `[sidecar.model]`: the ONNX model loaded at start-up, and the runtime that serves it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelConfig {
    /// The `.onnx` file.
    pub uri: ModelUri,
    /// The model's name in the inference protocol; default: the file's stem.
    name: Option<ModelName>,
    /// ONNX Runtime's shared library; default: `ORT_DYLIB_PATH`, else `libonnxruntime.so` on
    /// the loader's path.
    pub runtime_library: Option<PathBuf>,
    /// ONNX Runtime's intra-op threads; default: 1 with a GPU, else the cores.
    pub intra_op_threads: Option<ThreadCount>,
    /// Text in: the tokenizer and pooling in front of a model of token ids.
    pub text: Option<TextConfig>,
}

/// `[sidecar.model.text]`: a model of token ids served text in, embeddings out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TextConfig {
    /// A Hugging Face `tokenizer.json`; relative to the config file's folder.
    pub tokenizer: PathBuf,
    /// The name of the BYTES input that takes the texts.
    #[serde(default = "default_text_input")]
    pub input: String,
    /// The most tokens per text; default: the model's positions where its graph says, else
    /// 512.
    #[serde(default, deserialize_with = "max_length")]
    pub max_length: Option<u32>,
    /// Whether a longer text is cut to `max-length` (else refused).
    #[serde(default = "default_true")]
    pub truncate: bool,
    /// How token embeddings become one embedding per text.
    #[serde(default)]
    pub pooling: Pooling,
    /// The output pooled; default: the first of shape [-1, -1, H].
    pub pooled_from: Option<String>,
    /// Whether the embedding is scaled to length 1 (L2); default: with pooling.
    pub normalize: Option<bool>,
}

impl TextConfig {
    /// Whether embeddings are L2-normalised.
    pub fn normalized(&self) -> bool {
        self.normalize.unwrap_or(self.pooling != Pooling::None)
    }
}

/// How the token embeddings of a text become one vector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// No pooling: the embedding output is not served.
    None,
    /// The mean over the text's tokens.
    #[default]
    Mean,
    /// The first token's ([CLS]).
    Cls,
    /// The last token's.
    Last,
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pooling::None => "none",
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        })
    }
}

fn default_text_input() -> String {
    "text".to_string()
}

fn default_true() -> bool {
    true
}

fn max_length<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = i64::deserialize(d)?;
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_LENGTH_LIMIT).contains(n))
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{n} tokens is out of range (1 to {MAX_LENGTH_LIMIT})"
            ))
        })
}

/// A `[[sidecar.models]]` table: one model, from one file (its version 1) or from a folder of
/// numbered versions (`<uri>/<version>/model.onnx`, as in a repository).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelTable {
    pub name: ModelName,
    pub uri: ModelUri,
    pub intra_op_threads: Option<ThreadCount>,
    pub text: Option<TextConfig>,
    /// This model's batcher; unset: `[sidecar.batching]`.
    pub batching: Option<BatchingConfig>,
    /// Which versions are served, when `uri` is a folder of versions.
    pub version_policy: Option<VersionPolicy>,
}

/// A repository model's `model.toml`: its settings, all optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelSettings {
    pub intra_op_threads: Option<ThreadCount>,
    pub text: Option<TextConfig>,
    /// This model's batcher; unset: `[sidecar.batching]`.
    pub batching: Option<BatchingConfig>,
    /// Which of its versions are served.
    #[serde(default)]
    pub version_policy: VersionPolicy,
}

impl ModelSettings {
    /// Parses a `model.toml`; relative paths in it resolve against `folder`, the model's.
    /// Fails with the key and what is wrong with it.
    /// `default_batching` is `[sidecar.batching]`, which a file without `[batching]` gets.
    pub fn parse(
        text: &str,
        folder: &Path,
        default_batching: &BatchingConfig,
    ) -> Result<ModelSettings, (String, String)> {
        let mut settings: ModelSettings =
            serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
                let key = e.path().to_string();
                (key, e.into_inner().to_string().trim_end().to_string())
            })?;
        let (batching, batching_key) = match &settings.batching {
            Some(batching) => (batching.clone(), "batching"),
            None => (default_batching.clone(), "sidecar.batching"),
        };
        if let Some(text) = &mut settings.text {
            validate_text(text, "text", folder, &batching, batching_key)?;
        }
        Ok(settings)
    }
}

/// Which versions of a model are served, as Triton's `version_policy`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub enum VersionPolicy {
    /// Every version there is.
    All,
    /// The `n` highest-numbered versions.
    Latest(u32),
    /// These versions only.
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl TryFrom<toml::Value> for VersionPolicy {
    type Error = String;

    fn try_from(value: toml::Value) -> Result<Self, Self::Error> {
        const USE: &str =
            "use \"all\", { latest = N } (N at least 1) or { specific = [1, 3] } (versions at least 1)";
        match &value {
            toml::Value::String(s) if s == "all" => Ok(VersionPolicy::All),
            toml::Value::Table(table) if table.len() == 1 => {
                match (table.get("latest"), table.get("specific")) {
                    (Some(toml::Value::Integer(n)), None) if (1..=1_000_000).contains(n) => {
                        Ok(VersionPolicy::Latest(*n as u32))
                    }
                    (None, Some(toml::Value::Array(versions))) if !versions.is_empty() => versions
                        .iter()
                        .map(|v| match v {
                            toml::Value::Integer(n) if *n >= 1 => Ok(*n as u64),
                            _ => Err(format!("{value} is not a version policy: {USE}")),
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map(VersionPolicy::Specific),
                    _ => Err(format!("{value} is not a version policy: {USE}")),
                }
            }
            _ => Err(format!("{value} is not a version policy: {USE}")),
        }
    }
}

impl VersionPolicy {
    /// The versions of `available` (ascending) that the policy serves.
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        match self {
            VersionPolicy::All => available.to_vec(),
            VersionPolicy::Latest(n) => {
                let skip = available.len().saturating_sub(*n as usize);
                available[skip..].to_vec()
            }
            VersionPolicy::Specific(versions) => available
                .iter()
                .copied()
                .filter(|v| versions.contains(v))
                .collect(),
        }
    }
}

impl fmt::Display for VersionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionPolicy::All => f.write_str("\"all\""),
            VersionPolicy::Latest(n) => write!(f, "{{ latest = {n} }}"),
            VersionPolicy::Specific(versions) => write!(f, "{{ specific = {versions:?} }}"),
        }
    }
}

/// `sidecar.repository-control`: who changes what is loaded once the sidecar runs (Triton's
/// `--model-control-mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepositoryControl {
    /// What is configured is loaded at start, and stays.
    #[default]
    None,
    /// `sidecar.startup-models` at start, then `RepositoryModelLoad` and `Unload`.
    Explicit,
    /// The repository is rescanned every `repository-poll-interval` and on SIGHUP.
    Poll,
}

impl fmt::Display for RepositoryControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RepositoryControl::None => "none",
            RepositoryControl::Explicit => "explicit",
            RepositoryControl::Poll => "poll",
        })
    }
}

/// One model as the sidecar serves it, whichever way it was configured.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    /// Its one file (served as version 1), or its folder of numbered versions.
    pub source: ModelSource,
    pub intra_op_threads: Option<ThreadCount>,
    pub text: Option<TextConfig>,
    pub batching: BatchingConfig,
    pub version_policy: VersionPolicy,
}

/// Where a model's versions are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// One `.onnx` file, version 1.
    File(PathBuf),
    /// `<folder>/<version>/model.onnx`.
    Folder(PathBuf),
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(10)
}

fn poll_interval<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let interval = parse_duration(&text).map_err(serde::de::Error::custom)?;
    if interval < Duration::from_millis(100) || interval > Duration::from_secs(86_400) {
        return Err(serde::de::Error::custom(format!(
            "{text:?} is out of range (100 ms to 1 d)"
        )));
    }
    Ok(interval)
}

/// Checks a text table (`key` is its dotted name) and resolves its tokenizer against `base`;
/// `batching` is the model's, the table `batching_key` names.
fn validate_text(
    text: &mut TextConfig,
    key: &str,
    base: &Path,
    batching: &BatchingConfig,
    batching_key: &str,
) -> Result<(), (String, String)> {
    if text.tokenizer.as_os_str().is_empty() {
        return Err((
            format!("{key}.tokenizer"),
            "is empty: give the model's tokenizer.json".to_string(),
        ));
    }
    if text.tokenizer.is_relative() {
        text.tokenizer = base.join(&text.tokenizer);
    }
    if text.input.is_empty() {
        return Err((
            format!("{key}.input"),
            "is empty: name the input that takes the texts (default \"text\")".to_string(),
        ));
    }
    if text.pooling == Pooling::None && text.normalize == Some(true) {
        return Err((
            format!("{key}.normalize"),
            format!("normalises the pooled embedding, but {key}.pooling is \"none\": choose a pooling or leave normalize out"),
        ));
    }
    if batching.max_batch_size > 0 {
        if let Some(max_length) = text.max_length {
            if max_length > batching.max_batch_tokens {
                return Err((
                    format!("{batching_key}.max-batch-tokens"),
                    format!(
                        "is {}, less than one text of {key}.max-length ({max_length}): raise it",
                        batching.max_batch_tokens
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl ModelConfig {
    /// The model's name in the protocol: `name`, else the file stem of the model.
    pub fn name(&self) -> String {
        match &self.name {
            Some(name) => name.0.clone(),
            None => self
                .uri
                .path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .filter(|stem| !stem.is_empty())
                .unwrap_or_else(|| "model".to_string()),
        }
    }
}

/// A model name usable in the protocol (and in URLs): letters, digits, `-`, `_`, `.`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ModelName(pub String);

impl TryFrom<String> for ModelName {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let valid = !s.is_empty()
            && s.len() <= 128
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if valid {
            Ok(ModelName(s))
        } else {
            Err(format!(
                "{s:?} is not a model name: use 1 to 128 letters, digits, '-', '_' or '.'"
            ))
        }
    }
}

/// A thread count, 1 to 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct ThreadCount(pub usize);

impl TryFrom<i64> for ThreadCount {
    type Error = String;

    fn try_from(n: i64) -> Result<Self, Self::Error> {
        match usize::try_from(n) {
            Ok(n @ 1..=1024) => Ok(ThreadCount(n)),
            _ => Err(format!("{n} threads is out of range (1 to 1024)")),
        }
    }
}

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

/// `[sidecar.health]`: the HTTP health endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "default_health_host")]
    pub host: IpAddr,
    /// 0 picks a free port; the bound address is logged.
    pub port: u16,
}

fn default_health_host() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// `[sidecar.shutdown]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ShutdownConfig {
    /// How long in-flight calls may run after SIGTERM before they are cancelled.
    #[serde(default)]
    pub grace_period: GracePeriod,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_period: GracePeriod(DEFAULT_GRACE_PERIOD),
        }
    }
}

/// `[sidecar.gpu]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    #[serde(default)]
    pub mode: GpuMode,
    /// The CUDA device ordinal (as the driver numbers them after `CUDA_VISIBLE_DEVICES`).
    #[serde(default)]
    pub device: DeviceOrdinal,
}

/// Whether the sidecar uses a GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuMode {
    /// Use a GPU when a driver and the device are there, else run on the host and say so.
    #[default]
    Auto,
    /// Refuse to start without a GPU.
    Required,
    /// Never touch CUDA.
    Off,
}

impl fmt::Display for GpuMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GpuMode::Auto => "auto",
            GpuMode::Required => "required",
            GpuMode::Off => "off",
        })
    }
}

/// `[sidecar.log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub level: LogLevel,
}

/// The most verbose level that is logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for log::LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// Where the gRPC server listens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Endpoint {
    /// A Unix domain socket at this absolute path.
    Unix(PathBuf),
    /// A TCP address: an IPv4 address, a bracketed IPv6 address or a host name, and a port.
    Tcp { host: String, port: u16 },
}

impl Endpoint {
    /// The address in the form gRPC core binds and connects to.
    pub fn grpc_address(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = String;

    /// Parses `unix:/abs/path`, `unix:///abs/path` or `host:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("unix:") {
            return parse_unix_endpoint(s, rest);
        }
        if s.contains("://") {
            return Err(format!(
                "unsupported endpoint {s:?}: use unix:/abs/path.sock or host:port"
            ));
        }
        parse_tcp_endpoint(s)
    }
}

impl TryFrom<String> for Endpoint {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

fn parse_unix_endpoint(full: &str, rest: &str) -> Result<Endpoint, String> {
    // `unix:///abs` is the URI form of `unix:/abs`; `unix://host/...` is not a local socket.
    let path = match rest.strip_prefix("//") {
        Some(after) if after.starts_with('/') => after,
        Some(_) => {
            return Err(format!(
                "invalid endpoint {full:?}: a unix endpoint is unix:/abs/path or unix:///abs/path"
            ))
        }
        None => rest,
    };
    if path.is_empty() {
        return Err(format!(
            "invalid endpoint {full:?}: the socket path is empty"
        ));
    }
    if !path.starts_with('/') {
        return Err(format!(
            "invalid endpoint {full:?}: the socket path must be absolute"
        ));
    }
    if path.ends_with('/') {
        return Err(format!(
            "invalid endpoint {full:?}: the socket path names a folder, not a file"
        ));
    }
    if path.len() > MAX_UNIX_SOCKET_PATH {
        return Err(format!(
            "invalid endpoint {full:?}: the socket path is {} bytes, more than the {} a Unix socket address holds",
            path.len(),
            MAX_UNIX_SOCKET_PATH
        ));
    }
    if path.contains('\0') {
        return Err(format!(
            "invalid endpoint {full:?}: the socket path contains a NUL byte"
        ));
    }
    Ok(Endpoint::Unix(PathBuf::from(path)))
}

fn parse_tcp_endpoint(s: &str) -> Result<Endpoint, String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("invalid endpoint {s:?}: missing ']' after the IPv6 address"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "invalid endpoint {s:?}: {host:?} is not an IPv6 address"
            ));
        }
        let port = after.strip_prefix(':').ok_or_else(|| {
            format!("invalid endpoint {s:?}: expected host:port (e.g. [::1]:50051)")
        })?;
        (host, port)
    } else {
        let (host, port) = s.rsplit_once(':').ok_or_else(|| {
            format!("invalid endpoint {s:?}: expected unix:/abs/path.sock or host:port")
        })?;
        if host.contains(':') {
            return Err(format!(
                "invalid endpoint {s:?}: write an IPv6 address in brackets, e.g. [::1]:50051"
            ));
        }
        if !is_valid_host(host) {
            return Err(format!(
                "invalid endpoint {s:?}: {host:?} is not an IPv4 address or host name"
            ));
        }
        (host, port)
    };
    let port = port.parse::<u16>().map_err(|_| {
        format!("invalid endpoint {s:?}: the port {port:?} is not a number from 0 to 65535")
    })?;
    Ok(Endpoint::Tcp {
        host: host.to_string(),
        port,
    })
}

/// An IPv4 address or an RFC 1123 host name.
fn is_valid_host(host: &str) -> bool {
    if host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    let all_digits_and_dots = host.chars().all(|c| c.is_ascii_digit() || c == '.');
    !host.is_empty()
        && host.len() <= 253
        && !all_digits_and_dots
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A Flink-style duration: `"30 s"`, `"500 ms"`, `"2 min"`; a bare number is milliseconds,
/// as in Flink. Must be more than zero and at most an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct GracePeriod(pub Duration);

impl Default for GracePeriod {
    fn default() -> Self {
        GracePeriod(DEFAULT_GRACE_PERIOD)
    }
}

impl TryFrom<String> for GracePeriod {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let duration = parse_duration(&s)?;
        if duration.is_zero() || duration > MAX_GRACE_PERIOD {
            return Err(format!(
                "{s:?} is out of range: the grace period must be more than 0 and at most {}",
                humantime::format_duration(MAX_GRACE_PERIOD)
            ));
        }
        Ok(GracePeriod(duration))
    }
}

/// Parses a Flink-style duration (`"30 s"`, `"500 ms"`, `"2 min"`, `"1 h"`, or a bare number of
/// milliseconds). Fails with a message that shows the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err("empty duration: write e.g. \"30 s\", \"500 ms\" or \"2 min\"".to_string());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return trimmed
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("duration {s:?} is too large"));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("invalid duration {s:?} ({e}): write e.g. \"30 s\", \"500 ms\" or \"2 min\"")
    })
}

/// Permissions of the socket file, written in octal as a string: `"0660"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SocketMode(pub u32);

impl TryFrom<String> for SocketMode {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let digits = s.strip_prefix("0o").unwrap_or(&s);
        let valid = !digits.is_empty() && digits.len() <= 4;
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if valid && mode <= 0o777 => Ok(SocketMode(mode)),
            _ => Err(format!(
                "{s:?} is not a file mode: write octal permissions from \"0000\" to \"0777\", e.g. \"0660\""
            )),
        }
    }
}

/// A CUDA device ordinal, 0 to `i32::MAX` (the driver takes a C `int`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct DeviceOrdinal(pub i32);

impl TryFrom<i64> for DeviceOrdinal {
    type Error = String;

    fn try_from(n: i64) -> Result<Self, Self::Error> {
        i32::try_from(n)
            .ok()
            .filter(|n| *n >= 0)
            .map(DeviceOrdinal)
            .ok_or_else(|| format!("device ordinal {n} is out of range (0 to {})", i32::MAX))
    }
}

/// The model's location as written (`file://` URI or path); resolved by [`Config::load`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ModelUri {
    pub written: String,
    /// The file, absolute once the config is loaded.
    pub path: PathBuf,
}

impl TryFrom<String> for ModelUri {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.trim().is_empty() {
            return Err("the model URI is empty".to_string());
        }
        let path = if s.starts_with("file:") {
            let url = url::Url::parse(&s).map_err(|e| format!("invalid file URI {s:?}: {e}"))?;
            if url
                .host_str()
                .is_some_and(|h| !h.is_empty() && h != "localhost")
            {
                return Err(format!(
                    "file URI {s:?} names the host {:?}: only local files can be loaded",
                    url.host_str().unwrap_or_default()
                ));
            }
            url.to_file_path()
                .map_err(|()| format!("file URI {s:?} does not name a local file"))?
        } else if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "unsupported model URI scheme {scheme:?} in {s:?}: use a file:// URI or a path"
            ));
        } else {
            PathBuf::from(&s)
        };
        Ok(ModelUri { written: s, path })
    }
}

impl Config {
    /// ONNX Runtime's shared library: `sidecar.runtime-library` (or the shorthand's
    /// `sidecar.model.runtime-library`); unset: `ORT_DYLIB_PATH`, else `libonnxruntime.so`.
    pub fn runtime_library(&self) -> Option<&Path> {
        self.runtime_library.as_deref()
    }

    /// The models configured by file (`[sidecar.model]` or `[[sidecar.models]]`); a
    /// repository's are found by scanning it.
    pub fn model_specs(&self) -> Vec<ModelSpec> {
        let shorthand = self.model.iter().map(|model| ModelSpec {
            name: model.name(),
            source: ModelSource::File(model.uri.path.clone()),
            intra_op_threads: model.intra_op_threads,
            text: model.text.clone(),
            batching: self.batching.clone(),
            version_policy: VersionPolicy::default(),
        });
        let tables = self.models.iter().map(|table| ModelSpec {
            name: table.name.0.clone(),
            // A folder holds numbered versions; anything else is one file.
            source: if table.uri.path.is_dir() {
                ModelSource::Folder(table.uri.path.clone())
            } else {
                ModelSource::File(table.uri.path.clone())
            },
            intra_op_threads: table.intra_op_threads,
            text: table.text.clone(),
            batching: table.batching.clone().unwrap_or(self.batching.clone()),
            version_policy: table.version_policy.clone().unwrap_or_default(),
        });
        shorthand.chain(tables).collect()
    }

    /// Reads, parses and validates the file at `path`. Relative model paths resolve against the
    /// file's folder. Fails with a [`ConfigError`] that names the offending key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = absolute_parent(path);
        Config::parse(&text, &base).map_err(|problem| match problem {
            Problem::Key(key, message) => ConfigError::Key {
                path: path.to_path_buf(),
                key,
                message,
            },
            Problem::Missing(key) => ConfigError::Missing {
                path: path.to_path_buf(),
                key,
            },
        })
    }

    /// Parses and validates TOML text; `base` is the folder relative model paths resolve
    /// against. Fails with the dotted key and what is wrong with it, or the first required
    /// key that is missing.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Problem> {
        let key_problem = |e: serde_path_to_error::Error<toml::de::Error>| {
            let key = e.path().to_string();
            let message = e.into_inner().to_string().trim_end().to_string();
            Problem::Key(key, message)
        };
        // Malformed TOML is reported as such; then an unknown key by name (a mistyped key is
        // the likeliest cause of a missing one); then missing keys by name, before serde would
        // report only the first missing table ("missing field `sidecar`").
        let table: toml::Table =
            serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(key_problem)?;
        let file: ConfigFile = match serde_path_to_error::deserialize(toml::Deserializer::new(text))
        {
            Ok(file) => file,
            Err(e) if e.inner().message().starts_with("unknown field") => {
                return Err(key_problem(e))
            }
            Err(e) => {
                return Err(
                    match REQUIRED_KEYS.iter().find(|key| {
                        let elsewhere = **key == "sidecar.model.uri"
                            && (has_key(&table, "sidecar.models")
                                || has_key(&table, "sidecar.repository"));
                        !elsewhere && !has_key(&table, key)
                    }) {
                        Some(missing) => Problem::Missing(missing.to_string()),
                        None => key_problem(e),
                    },
                )
            }
        };
        let mut config = file.sidecar;
        if config.model.is_none() && config.models.is_empty() && config.repository.is_none() {
            return Err(Problem::Missing("sidecar.model.uri".to_string()));
        }
        config
            .validate(base)
            .map_err(|(key, message)| Problem::Key(key, message))?;
        Ok(config)
    }

    /// The checks that span keys, and resolution of the model path.
    fn validate(&mut self, base: &Path) -> Result<(), (String, String)> {
        if self.rpc.socket_mode.is_some() && !matches!(self.rpc.endpoint, Endpoint::Unix(_)) {
            return Err((
                "sidecar.rpc.socket-mode".to_string(),
                format!(
                    "applies only to unix: endpoints, but sidecar.rpc.endpoint is {}",
                    self.rpc.endpoint
                ),
            ));
        }
        if let Endpoint::Tcp { port, .. } = self.rpc.endpoint {
            if port != 0 && port == self.health.port {
                return Err((
                    "sidecar.health.port".to_string(),
                    format!(
                        "port {port} is also the port of sidecar.rpc.endpoint; give each its own"
                    ),
                ));
            }
        }
        let sources = [
            self.model.is_some(),
            !self.models.is_empty(),
            self.repository.is_some(),
        ];
        if sources.iter().filter(|&&given| given).count() > 1 {
            return Err((
                "sidecar.repository".to_string(),
                "sidecar.model, [[sidecar.models]] and sidecar.repository each say which models to serve: use one of them".to_string(),
            ));
        }
        if let Some(model) = &mut self.model {
            if model.uri.path.is_relative() {
                model.uri.path = base.join(&model.uri.path);
            }
            if let Some(text) = &mut model.text {
                validate_text(
                    text,
                    "sidecar.model.text",
                    base,
                    &self.batching,
                    "sidecar.batching",
                )?;
            }
            if model
                .runtime_library
                .as_ref()
                .is_some_and(|library| library.as_os_str().is_empty())
            {
                return Err((
                    "sidecar.model.runtime-library".to_string(),
                    "is empty: leave it out to use ORT_DYLIB_PATH or libonnxruntime.so".to_string(),
                ));
            }
            if model.runtime_library.is_some() && self.runtime_library.is_some() {
                return Err((
                    "sidecar.model.runtime-library".to_string(),
                    "and sidecar.runtime-library are both set: keep one".to_string(),
                ));
            }
            if let Some(library) = model.runtime_library.take() {
                self.runtime_library = Some(library);
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, table) in self.models.iter_mut().enumerate() {
            let key = format!("sidecar.models[{i}]");
            if !names.insert(table.name.0.clone()) {
                return Err((
                    format!("{key}.name"),
                    format!(
                        "{:?} names two models: give each its own name",
                        table.name.0
                    ),
                ));
            }
            if table.uri.path.is_relative() {
                table.uri.path = base.join(&table.uri.path);
            }
            if table.version_policy.is_some() && table.uri.path.is_file() {
                return Err((
                    format!("{key}.version-policy"),
                    format!(
                        "applies to a uri that is a folder of numbered versions (<uri>/<version>/model.onnx), and {} is a file: leave it out, or point uri at the folder",
                        table.uri.path.display()
                    ),
                ));
            }
            let (batching, batching_key) = match &table.batching {
                Some(batching) => (batching.clone(), format!("{key}.batching")),
                None => (self.batching.clone(), "sidecar.batching".to_string()),
            };
            if let Some(text) = &mut table.text {
                validate_text(text, &format!("{key}.text"), base, &batching, &batching_key)?;
            }
        }
        if let Some(repository) = &mut self.repository {
            if repository.as_os_str().is_empty() {
                return Err((
                    "sidecar.repository".to_string(),
                    "is empty: give the folder of models".to_string(),
                ));
            }
            if repository.is_relative() {
                *repository = base.join(&*repository);
            }
        } else if self.repository_control == RepositoryControl::Poll {
            return Err((
                "sidecar.repository-control".to_string(),
                "is \"poll\", which rescans sidecar.repository, but no repository is set"
                    .to_string(),
            ));
        }
        if self.startup_models.is_some() && self.repository_control != RepositoryControl::Explicit {
            return Err((
                "sidecar.startup-models".to_string(),
                format!(
                    "applies only to sidecar.repository-control = \"explicit\", not \"{}\"",
                    self.repository_control
                ),
            ));
        }
        if let Some(library) = &mut self.runtime_library {
            if library.as_os_str().is_empty() {
                return Err((
                    "sidecar.runtime-library".to_string(),
                    "is empty: leave it out to use ORT_DYLIB_PATH or libonnxruntime.so".to_string(),
                ));
            }
            // A bare file name is for the loader to find; a path resolves like the model's.
            if library.is_relative() && library.components().count() > 1 {
                *library = base.join(&*library);
            }
        }
        Ok(())
    }
}

/// Whether the dotted `key` is in `table` (every part but the last a table).
fn has_key(table: &toml::Table, key: &str) -> bool {
    let mut parts = key.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        match current.get(part) {
            Some(_) if parts.peek().is_none() => return true,
            Some(toml::Value::Table(inner)) => current = inner,
            _ => return false,
        }
    }
    false
}

/// The effective configuration, one `key = value` line per key, defaults filled in.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sidecar.rpc.endpoint = \"{}\"", self.rpc.endpoint)?;
        if matches!(self.rpc.endpoint, Endpoint::Unix(_)) {
            writeln!(
                f,
                "sidecar.rpc.socket-mode = \"{:04o}\"",
                self.rpc.socket_mode()
            )?;
        }
        writeln!(
            f,
            "sidecar.rpc.max-message-size = \"{}\"  # {} bytes",
            bytesize::ByteSize(self.rpc.max_message_size() as u64)
                .display()
                .iec(),
            self.rpc.max_message_size()
        )?;
        match &self.runtime_library {
            Some(path) => writeln!(f, "sidecar.runtime-library = {:?}", path.display())?,
            None => writeln!(
                f,
                "# sidecar.runtime-library: unset (ORT_DYLIB_PATH, else libonnxruntime.so)"
            )?,
        }
        if let Some(model) = &self.model {
            writeln!(
                f,
                "sidecar.model.uri = {:?}  # {}",
                model.uri.written,
                model.uri.path.display()
            )?;
            writeln!(f, "sidecar.model.name = {:?}", model.name())?;
            write_model_settings(f, "sidecar.model", model.intra_op_threads, &model.text)?;
        }
        for (i, table) in self.models.iter().enumerate() {
            let key = format!("sidecar.models[{i}]");
            writeln!(f, "{key}.name = {:?}", table.name.0)?;
            writeln!(
                f,
                "{key}.uri = {:?}  # {}",
                table.uri.written,
                table.uri.path.display()
            )?;
            write_model_settings(f, &key, table.intra_op_threads, &table.text)?;
            if let Some(policy) = &table.version_policy {
                writeln!(f, "{key}.version-policy = {policy}")?;
            }
            match &table.batching {
                Some(batching) => write_batching(f, &format!("{key}.batching"), batching)?,
                None => writeln!(f, "# {key}.batching: unset (sidecar.batching)")?,
            }
        }
        if let Some(repository) = &self.repository {
            writeln!(f, "sidecar.repository = {:?}", repository.display())?;
        }
        writeln!(
            f,
            "sidecar.repository-control = \"{}\"",
            self.repository_control
        )?;
        if let Some(models) = &self.startup_models {
            let names: Vec<&str> = models.iter().map(|name| name.0.as_str()).collect();
            writeln!(f, "sidecar.startup-models = {names:?}")?;
        }
        if self.repository_control == RepositoryControl::Poll {
            writeln!(
                f,
                "sidecar.repository-poll-interval = \"{}\"",
                humantime::format_duration(self.repository_poll_interval)
            )?;
        }
        write_batching(f, "sidecar.batching", &self.batching)?;
        writeln!(f, "sidecar.health.host = \"{}\"", self.health.host)?;
        writeln!(f, "sidecar.health.port = {}", self.health.port)?;
        writeln!(
            f,
            "sidecar.shutdown.grace-period = \"{}\"  # {} ms",
            humantime::format_duration(self.shutdown.grace_period.0),
            self.shutdown.grace_period.0.as_millis()
        )?;
        writeln!(f, "sidecar.gpu.mode = \"{}\"", self.gpu.mode)?;
        writeln!(f, "sidecar.gpu.device = {}", self.gpu.device.0)?;
        write!(
            f,
            "sidecar.log.level = \"{}\"",
            log::LevelFilter::from(self.log.level)
                .as_str()
                .to_lowercase()
        )
    }
}

/// The lines of a model's own settings, under `key`.
fn write_model_settings(
    f: &mut fmt::Formatter<'_>,
    key: &str,
    intra_op_threads: Option<ThreadCount>,
    text: &Option<TextConfig>,
) -> fmt::Result {
    match intra_op_threads {
        Some(threads) => writeln!(f, "{key}.intra-op-threads = {}", threads.0)?,
        None => writeln!(
            f,
            "# {key}.intra-op-threads: unset (1 with a GPU, else the cores)"
        )?,
    }
    if let Some(text) = text {
        writeln!(f, "{key}.text.tokenizer = {:?}", text.tokenizer.display())?;
        writeln!(f, "{key}.text.input = {:?}", text.input)?;
        match text.max_length {
            Some(length) => writeln!(f, "{key}.text.max-length = {length}")?,
            None => writeln!(
                f,
                "# {key}.text.max-length: unset (the model's positions, else 512)"
            )?,
        }
        writeln!(f, "{key}.text.truncate = {}", text.truncate)?;
        writeln!(f, "{key}.text.pooling = \"{}\"", text.pooling)?;
        match &text.pooled_from {
            Some(output) => writeln!(f, "{key}.text.pooled-from = {output:?}")?,
            None => writeln!(
                f,
                "# {key}.text.pooled-from: unset (the first [-1, -1, H] output)"
            )?,
        }
        writeln!(f, "{key}.text.normalize = {}", text.normalized())?;
    }
    Ok(())
}

/// The lines of a batching table, under `key`.
fn write_batching(f: &mut fmt::Formatter<'_>, key: &str, batching: &BatchingConfig) -> fmt::Result {
    writeln!(f, "{key}.max-batch-size = {}", batching.max_batch_size)?;
    writeln!(f, "{key}.delay-mode = \"{}\"", batching.delay_mode)?;
    writeln!(f, "{key}.max-batch-tokens = {}", batching.max_batch_tokens)?;
    match batching.max_padding {
        Some(share) => writeln!(f, "{key}.max-padding = {share}")?,
        None => writeln!(
            f,
            "# {key}.max-padding: unset (0.5 on a GPU, 0.2 on the CPU)"
        )?,
    }
    writeln!(
        f,
        "{key}.max-queue-delay = \"{}\"",
        humantime::format_duration(batching.max_queue_delay)
    )?;
    writeln!(f, "{key}.max-queue-size = {}", batching.max_queue_size)?;
    match batching.default_timeout {
        Some(timeout) => writeln!(
            f,
            "{key}.default-timeout = \"{}\"",
            humantime::format_duration(timeout)
        )?,
        None => writeln!(f, "# {key}.default-timeout: unset (none)")?,
    }
    Ok(())
}

/// The folder holding `path`, made absolute against the working directory.
fn absolute_parent(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [sidecar.rpc]
        endpoint = "unix:/tmp/s.sock"
        [sidecar.model]
        uri = "model.bin"
        [sidecar.health]
        port = 0
    "#;

    fn parse(text: &str) -> Result<Config, Problem> {
        Config::parse(text, Path::new("/etc/flink"))
    }

    #[test]
    fn a_models_text_is_checked_against_its_own_batching() {
        let tables = MINIMAL.replace(
            "[sidecar.model]\n        uri = \"model.bin\"",
            "[[sidecar.models]]\nname = \"embed\"\nuri = \"m.onnx\"\n\
             [sidecar.models.text]\ntokenizer = \"t.json\"\nmax-length = 512\n\
             [sidecar.models.batching]\nmax-batch-tokens = 256\n",
        );
        let (key, message) = parse_err(&tables);
        assert_eq!(
            key, "sidecar.models[0].batching.max-batch-tokens",
            "{message}"
        );
        assert!(
            message.contains("sidecar.models[0].text.max-length"),
            "{message}"
        );
        let folder = Path::new("/models/embed");
        let (key, _) = ModelSettings::parse(
            "[text]\ntokenizer = \"t.json\"\nmax-length = 512\n",
            folder,
            &BatchingConfig {
                max_batch_tokens: 256,
                ..BatchingConfig::default()
            },
        )
        .unwrap_err();
        assert_eq!(key, "sidecar.batching.max-batch-tokens");
        let settings = ModelSettings::parse(
            "[text]\ntokenizer = \"t.json\"\n",
            folder,
            &BatchingConfig::default(),
        )
        .unwrap();
        assert_eq!(
            settings.text.unwrap().tokenizer,
            Path::new("/models/embed/t.json")
        );
    }

    fn parse_err(text: &str) -> (String, String) {
        match parse(text).expect_err("config should be rejected") {
            Problem::Key(key, message) => (key, message),
            Problem::Missing(key) => (key, "is required".to_string()),
        }
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.rpc.endpoint, Endpoint::Unix("/tmp/s.sock".into()));
        assert_eq!(config.rpc.socket_mode(), 0o660);
        assert_eq!(
            config.model.as_ref().unwrap().uri.path,
            Path::new("/etc/flink/model.bin")
        );
        assert_eq!(config.health.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(config.shutdown.grace_period.0, Duration::from_secs(30));
        assert_eq!(config.gpu.mode, GpuMode::Auto);
        assert_eq!(config.gpu.device, DeviceOrdinal(0));
        assert_eq!(config.log.level, LogLevel::Info);
    }

    #[test]
    fn effective_config_is_printed_with_defaults() {
        let shown = parse(MINIMAL).unwrap().to_string();
        for line in [
            "sidecar.rpc.endpoint = \"unix:/tmp/s.sock\"",
            "sidecar.rpc.socket-mode = \"0660\"",
            "sidecar.rpc.max-message-size = \"64.0 MiB\"  # 67108864 bytes",
            "sidecar.model.uri = \"model.bin\"  # /etc/flink/model.bin",
            "sidecar.health.host = \"127.0.0.1\"",
            "sidecar.shutdown.grace-period = \"30s\"  # 30000 ms",
            "sidecar.gpu.mode = \"auto\"",
            "sidecar.gpu.device = 0",
            "sidecar.log.level = \"info\"",
        ] {
            assert!(
                shown.lines().any(|l| l == line),
                "{line:?} missing from:\n{shown}"
            );
        }
    }

    #[test]
    fn message_sizes_read_with_units_or_as_bytes() {
        let size = |value: &str| {
            parse(&MINIMAL.replace(
                "[sidecar.model]",
                &format!("max-message-size = {value}\n[sidecar.model]"),
            ))
            .map(|config| config.rpc.max_message_size())
        };
        assert_eq!(size("\"64 MiB\""), Ok(64 << 20));
        assert_eq!(size("\"512KiB\""), Ok(512 << 10));
        assert_eq!(size("\"100 MB\""), Ok(100_000_000));
        assert_eq!(size("4096"), Ok(4096));
        for bad in ["\"lots\"", "\"3 GiB\"", "10", "-5", "true"] {
            match size(bad) {
                Err(Problem::Key(key, message)) => {
                    assert_eq!(key, "sidecar.rpc.max-message-size", "{bad}: {message}");
                    assert!(message.contains("MiB"), "{bad}: {message}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn full_config_is_read() {
        let config = parse(
            r#"
            [sidecar.rpc]
            endpoint = "[::1]:50051"
            [sidecar.model]
            uri = "file:///models/m.bin"
            [sidecar.health]
            host = "0.0.0.0"
            port = 8558
            [sidecar.shutdown]
            grace-period = "2 min"
            [sidecar.gpu]
            mode = "required"
            device = 3
            [sidecar.log]
            level = "debug"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.rpc.endpoint,
            Endpoint::Tcp {
                host: "::1".into(),
                port: 50051
            }
        );
        assert_eq!(
            config.model.as_ref().unwrap().uri.path,
            Path::new("/models/m.bin")
        );
        assert_eq!(config.health.port, 8558);
        assert_eq!(config.shutdown.grace_period.0, Duration::from_secs(120));
        assert_eq!(config.gpu.mode, GpuMode::Required);
        assert_eq!(config.gpu.device, DeviceOrdinal(3));
        assert_eq!(config.log.level, LogLevel::Debug);
    }

    #[test]
    fn unknown_key_is_named() {
        let (key, message) = parse_err(&MINIMAL.replace("port = 0", "port = 0\nprot = 1"));
        assert!(key.contains("prot"), "{key}: {message}");
        assert!(message.contains("unknown field"), "{message}");
    }

    #[test]
    fn a_mistyped_required_key_is_named_as_unknown_not_missing() {
        let (key, message) = parse_err(&MINIMAL.replace("endpoint =", "endpont ="));
        assert_eq!(key, "sidecar.rpc.endpont", "{message}");
        assert!(
            message.contains("unknown field `endpont`") && message.contains("`endpoint`"),
            "{message}"
        );
    }

    #[test]
    fn text_settings_are_read_with_their_defaults_and_checked() {
        let config = parse(&format!(
            "{MINIMAL}\n[sidecar.model.text]\ntokenizer = \"tok/tokenizer.json\"\n"
        ))
        .unwrap();
        let text = config.model.as_ref().unwrap().text.as_ref().unwrap();
        assert_eq!(
            text.tokenizer,
            PathBuf::from("/etc/flink/tok/tokenizer.json")
        );
        assert_eq!(text.input, "text");
        assert_eq!((text.max_length, text.truncate), (None, true));
        assert_eq!(text.pooling, Pooling::Mean);
        assert!(text.normalized());
        assert_eq!(config.batching.delay_mode, DelayMode::Adaptive);
        assert_eq!(config.batching.max_batch_tokens, 16384);
        let shown = config.to_string();
        assert!(
            shown.contains("sidecar.model.text.pooling = \"mean\""),
            "{shown}"
        );
        assert!(
            shown.contains("sidecar.batching.delay-mode = \"adaptive\""),
            "{shown}"
        );

        let (key, message) = parse_err(&format!(
            "{MINIMAL}\n[sidecar.model.text]\ntokenizer = \"t.json\"\npooling = \"max\"\n"
        ));
        assert_eq!(key, "sidecar.model.text.pooling", "{message}");
        let (key, message) = parse_err(&format!(
            "{MINIMAL}\n[sidecar.model.text]\ntokenizer = \"t.json\"\npooling = \"none\"\nnormalize = true\n"
        ));
        assert_eq!(key, "sidecar.model.text.normalize", "{message}");
        let (key, message) = parse_err(&format!(
            "{MINIMAL}\n[sidecar.model.text]\ntokenizer = \"t.json\"\nmax-length = 0\n"
        ));
        assert_eq!(key, "sidecar.model.text.max-length", "{message}");
        let (key, message) = parse_err(&format!(
            "{MINIMAL}\n[sidecar.batching]\ndelay-mode = \"sometimes\"\n"
        ));
        assert_eq!(key, "sidecar.batching.delay-mode", "{message}");
        assert_eq!(config.batching.max_padding(true), 0.5);
        assert_eq!(config.batching.max_padding(false), 0.2);
        let capped = parse(&format!(
            "{MINIMAL}\n[sidecar.batching]\nmax-padding = 0.3\n"
        ))
        .unwrap();
        assert_eq!(capped.batching.max_padding(true), 0.3);
        let (key, message) = parse_err(&format!(
            "{MINIMAL}\n[sidecar.batching]\nmax-padding = 1.5\n"
        ));
        assert_eq!(key, "sidecar.batching.max-padding", "{message}");
    }

    #[test]
    fn unknown_table_is_named() {
        let (key, message) = parse_err(&format!("{MINIMAL}\n[sidecar.cache]\nsize = 1\n"));
        assert!(key.contains("cache"), "{key}: {message}");
    }

    #[test]
    fn wrong_type_is_named() {
        let (key, message) = parse_err(&MINIMAL.replace("port = 0", "port = \"8080\""));
        assert_eq!(key, "sidecar.health.port", "{message}");
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn out_of_range_port_is_named() {
        let (key, _) = parse_err(&MINIMAL.replace("port = 0", "port = 70000"));
        assert_eq!(key, "sidecar.health.port");
    }

    #[test]
    fn missing_required_key_is_named() {
        let missing = |text: &str| parse(text).expect_err("rejected");
        assert_eq!(
            missing(&MINIMAL.replace("port = 0", "")),
            Problem::Missing("sidecar.health.port".to_string())
        );
        assert_eq!(
            missing(""),
            Problem::Missing("sidecar.rpc.endpoint".to_string())
        );
        assert_eq!(
            missing("[sidecar.rpc]\nendpoint = \"unix:/tmp/s.sock\"\n"),
            Problem::Missing("sidecar.model.uri".to_string())
        );
        assert_eq!(
            missing("sidecar = 3"),
            Problem::Missing("sidecar.rpc.endpoint".to_string())
        );
    }

    #[test]
    fn model_and_batching_defaults_and_values() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.model.as_ref().unwrap().name(), "model");
        assert_eq!(config.runtime_library(), None);
        assert_eq!(config.batching.max_batch_size, 64);
        assert_eq!(config.batching.max_queue_delay, Duration::from_millis(1));
        assert_eq!(config.batching.max_queue_size, 1024);
        assert_eq!(config.batching.default_timeout, None);
        let config = parse(&MINIMAL.replace(
            "uri = \"model.bin\"",
            "uri = \"m.onnx\"\nname = \"mlp-v2\"\nruntime-library = \"lib/libonnxruntime.so\"\nintra-op-threads = 3\n[sidecar.batching]\nmax-batch-size = 0\nmax-queue-delay = \"0 ms\"\nmax-queue-size = 5\ndefault-timeout = \"2 s\"",
        ))
        .unwrap();
        assert_eq!(config.model.as_ref().unwrap().name(), "mlp-v2");
        assert_eq!(
            config.runtime_library(),
            Some(Path::new("/etc/flink/lib/libonnxruntime.so"))
        );
        assert_eq!(
            config.model.as_ref().unwrap().intra_op_threads,
            Some(ThreadCount(3))
        );
        assert_eq!(config.batching.max_batch_size, 0);
        assert_eq!(config.batching.max_queue_delay, Duration::ZERO);
        assert_eq!(config.batching.max_queue_size, 5);
        assert_eq!(
            config.batching.default_timeout,
            Some(Duration::from_secs(2))
        );
        let bare = parse(&MINIMAL.replace(
            "uri = \"model.bin\"",
            "uri = \"m.onnx\"\nruntime-library = \"libonnxruntime.so.1\"",
        ))
        .unwrap();
        assert_eq!(
            bare.runtime_library(),
            Some(Path::new("libonnxruntime.so.1"))
        );
        assert_eq!(bare.model.as_ref().unwrap().name(), "m");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            (
                "endpoint = \"unix:/tmp/s.sock\"",
                "endpoint = \"unix:rel.sock\"",
                "sidecar.rpc.endpoint",
            ),
            (
                "endpoint = \"unix:/tmp/s.sock\"",
                "endpoint = \"localhost\"",
                "sidecar.rpc.endpoint",
            ),
            (
                "uri = \"model.bin\"",
                "uri = \"s3://bucket/m\"",
                "sidecar.model.uri",
            ),
            (
                "uri = \"model.bin\"",
                "uri = \"file://remote/m\"",
                "sidecar.model.uri",
            ),
            (
                "port = 0",
                "port = 0\nhost = \"localhost\"",
                "sidecar.health.host",
            ),
            (
                "port = 0",
                "port = 0\n[sidecar.gpu]\nmode = \"maybe\"",
                "sidecar.gpu.mode",
            ),
            (
                "port = 0",
                "port = 0\n[sidecar.gpu]\ndevice = -1",
                "sidecar.gpu.device",
            ),
            (
                "port = 0",
                "port = 0\n[sidecar.log]\nlevel = \"loud\"",
                "sidecar.log.level",
            ),
            (
                "port = 0",
                "port = 0\n[sidecar.shutdown]\ngrace-period = \"soon\"",
                "sidecar.shutdown.grace-period",
            ),
            (
                "port = 0",
                "port = 0\n[sidecar.shutdown]\ngrace-period = \"0 s\"",
                "sidecar.shutdown.grace-period",
            ),
            (
                "port = 0",
                "port = 0\n[sidecar.shutdown]\ngrace-period = \"2 h\"",
                "sidecar.shutdown.grace-period",
            ),
            (
                "endpoint = \"unix:/tmp/s.sock\"",
                "endpoint = \"unix:/tmp/s.sock\"\nsocket-mode = \"0999\"",
                "sidecar.rpc.socket-mode",
            ),
            (
                "uri = \"model.bin\"",
                "uri = \"model.bin\"\nname = \"a b\"",
                "sidecar.model.name",
            ),
            (
                "uri = \"model.bin\"",
                "uri = \"model.bin\"\nintra-op-threads = 0",
                "sidecar.model.intra-op-threads",
            ),
            (
                "uri = \"model.bin\"",
                "uri = \"model.bin\"\nruntime-library = \"\"",
                "sidecar.model.runtime-library",
            ),
            (
                "port = 0",
                "port = 0\n[sidecar.batching]\nmax-batch-size = -1",
                "sidecar.batching.max-batch-size",
            ),
            (
                "port = 0",
                "port = 0\n[sidecar.batching]\nmax-queue-size = 0",
                "sidecar.batching.max-queue-size",
            ),
            (
                "port = 0",
                "port = 0\n[sidecar.batching]\nmax-queue-delay = \"a while\"",
                "sidecar.batching.max-queue-delay",
            ),
            (
                "port = 0",
                "port = 0\n[sidecar.batching]\ndefault-timeout = \"0 s\"",
                "sidecar.batching.default-timeout",
            ),
            (
                "port = 0",
                "port = 0\n[sidecar.batching]\nqueue = 1",
                "sidecar.batching.queue",
            ),
        ];
        for (from, to, key) in cases {
            let text = MINIMAL.replace(from, to);
            let (got_key, message) = parse_err(&text);
            assert_eq!(got_key, key, "for {to:?}: {message}");
        }
    }

    #[test]
    fn socket_mode_with_tcp_endpoint_is_rejected() {
        let text = MINIMAL.replace(
            "endpoint = \"unix:/tmp/s.sock\"",
            "endpoint = \"127.0.0.1:0\"\nsocket-mode = \"0600\"",
        );
        let (key, message) = parse_err(&text);
        assert_eq!(key, "sidecar.rpc.socket-mode");
        assert!(message.contains("unix"), "{message}");
    }

    #[test]
    fn rpc_and_health_on_one_port_are_rejected() {
        let text = MINIMAL
            .replace("unix:/tmp/s.sock", "0.0.0.0:8558")
            .replace("port = 0", "port = 8558");
        let (key, message) = parse_err(&text);
        assert_eq!(key, "sidecar.health.port");
        assert!(message.contains("8558"), "{message}");
    }

    #[test]
    fn malformed_toml_is_reported() {
        let (_, message) = parse_err("[sidecar.rpc\nendpoint = 1");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn endpoints_parse() {
        let unix = |p: &str| Ok(Endpoint::Unix(PathBuf::from(p)));
        let tcp = |h: &str, port| {
            Ok(Endpoint::Tcp {
                host: h.to_string(),
                port,
            })
        };
        assert_eq!("unix:/run/s.sock".parse(), unix("/run/s.sock"));
        assert_eq!("unix:///run/s.sock".parse(), unix("/run/s.sock"));
        assert_eq!("127.0.0.1:50051".parse(), tcp("127.0.0.1", 50051));
        assert_eq!("[::1]:0".parse(), tcp("::1", 0));
        assert_eq!("sidecar.local:9000".parse(), tcp("sidecar.local", 9000));
        assert_eq!("localhost:1".parse(), tcp("localhost", 1));
    }

    #[test]
    fn malformed_endpoints_are_rejected() {
        let long = format!("unix:/{}", "a".repeat(120));
        for bad in [
            "",
            "unix:",
            "unix:relative.sock",
            "unix://host/s.sock",
            "unix:/tmp/dir/",
            long.as_str(),
            "localhost",
            "localhost:",
            "localhost:99999",
            "localhost:-1",
            ":50051",
            "::1:50051",
            "[::1:50051",
            "[::1]50051",
            "[nothost]:1",
            "bad_host:1",
            "-host:1",
            "300.1.1.1:1",
            "http://localhost:1",
        ] {
            assert!(
                bad.parse::<Endpoint>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn endpoint_display_round_trips() {
        for s in ["unix:/a/b.sock", "127.0.0.1:5", "[::1]:7", "host:9"] {
            assert_eq!(s.parse::<Endpoint>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn durations_parse_flink_style() {
        let ok = |s: &str, d: Duration| assert_eq!(parse_duration(s), Ok(d), "{s}");
        ok("30 s", Duration::from_secs(30));
        ok("30s", Duration::from_secs(30));
        ok("500 ms", Duration::from_millis(500));
        ok("2 min", Duration::from_secs(120));
        ok("1 h", Duration::from_secs(3600));
        ok("1500", Duration::from_millis(1500));
        ok(" 10 seconds ", Duration::from_secs(10));
        for bad in [
            "",
            "s",
            "ten s",
            "30 parsecs",
            "-1 s",
            "99999999999999999999999",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn socket_modes_parse() {
        assert_eq!(
            SocketMode::try_from("0660".to_string()),
            Ok(SocketMode(0o660))
        );
        assert_eq!(
            SocketMode::try_from("600".to_string()),
            Ok(SocketMode(0o600))
        );
        assert_eq!(
            SocketMode::try_from("0o777".to_string()),
            Ok(SocketMode(0o777))
        );
        for bad in ["", "rw", "0999", "01777", "7777", "-1"] {
            assert!(SocketMode::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn model_uris_resolve() {
        let base = Path::new("/etc/flink");
        let path_of = |uri: &str| {
            let text = MINIMAL.replace("uri = \"model.bin\"", &format!("uri = {uri:?}"));
            Config::parse(&text, base)
                .map(|c| c.model.unwrap().uri.path)
                .map_err(|_| ())
        };
        assert_eq!(path_of("m/x.bin"), Ok(PathBuf::from("/etc/flink/m/x.bin")));
        assert_eq!(path_of("/abs/x.bin"), Ok(PathBuf::from("/abs/x.bin")));
        assert_eq!(
            path_of("file:///abs/x%20y.bin"),
            Ok(PathBuf::from("/abs/x y.bin"))
        );
        assert_eq!(
            path_of("file://localhost/abs/x.bin"),
            Ok(PathBuf::from("/abs/x.bin"))
        );
        assert!(path_of("").is_err());
        assert!(path_of("https://example.com/m.bin").is_err());
    }
}
