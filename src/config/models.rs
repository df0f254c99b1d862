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

//! The models to serve: `[sidecar.model]` (the shorthand), `[[sidecar.models]]` tables, a
//! repository model's `model.toml`, the text stage's `[text]` tables, version policies,
//! repository control, and the names, thread counts and URIs they use; each resolved into a
//! [`ModelSpec`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::batching::BatchingConfig;
use super::cuda::{ArenaExtendStrategy, ConvAlgoSearch, CudaOptions, MemoryLimit};
use super::placement::{DeviceList, InstanceCount, Placement};
use super::values::parse_duration;
use super::warmup::Warmup;

/// The longest `max-length` accepted, in tokens.
const MAX_LENGTH_LIMIT: u32 = 1 << 20;

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
    /// ONNX Runtime's CUDA provider: the most device memory its arena takes.
    gpu_memory_limit: Option<MemoryLimit>,
    /// How the arena grows; default `same-as-requested`.
    arena_extend_strategy: Option<ArenaExtendStrategy>,
    /// How cuDNN picks convolution algorithms; default `exhaustive`.
    cudnn_conv_algo_search: Option<ConvAlgoSearch>,
    /// What its warm-up execution runs; default: zeros.
    #[serde(default)]
    pub warmup: Warmup,
    /// The devices it runs on; default: all of the sidecar's.
    devices: Option<DeviceList>,
    /// Instances per device (on the CPU without a GPU); default 1.
    instances: Option<InstanceCount>,
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
    /// ONNX Runtime's CUDA provider: the most device memory its arena takes.
    gpu_memory_limit: Option<MemoryLimit>,
    /// How the arena grows; default `same-as-requested`.
    arena_extend_strategy: Option<ArenaExtendStrategy>,
    /// How cuDNN picks convolution algorithms; default `exhaustive`.
    cudnn_conv_algo_search: Option<ConvAlgoSearch>,
    /// What its warm-up execution runs; default: zeros.
    #[serde(default)]
    pub warmup: Warmup,
    /// The devices it runs on; default: all of the sidecar's.
    devices: Option<DeviceList>,
    /// Instances per device (on the CPU without a GPU); default 1.
    instances: Option<InstanceCount>,
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
    /// ONNX Runtime's CUDA provider: the most device memory its arena takes.
    gpu_memory_limit: Option<MemoryLimit>,
    /// How the arena grows; default `same-as-requested`.
    arena_extend_strategy: Option<ArenaExtendStrategy>,
    /// How cuDNN picks convolution algorithms; default `exhaustive`.
    cudnn_conv_algo_search: Option<ConvAlgoSearch>,
    /// What its warm-up execution runs; default: zeros.
    #[serde(default)]
    pub warmup: Warmup,
    /// The devices it runs on; default: all of the sidecar's.
    devices: Option<DeviceList>,
    /// Instances per device (on the CPU without a GPU); default 1.
    instances: Option<InstanceCount>,
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
        settings.warmup.resolve(folder);
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
    /// Its CUDA provider options (used on a GPU).
    pub cuda: CudaOptions,
    /// Its devices and instances.
    pub placement: Placement,
    /// What its warm-up execution runs.
    pub warmup: Warmup,
}

/// A model table's CUDA provider options and placement, defaults filled in.
macro_rules! cuda_options {
    ($table:ty) => {
        impl $table {
            pub fn cuda(&self) -> CudaOptions {
                CudaOptions::from_keys(
                    self.gpu_memory_limit,
                    self.arena_extend_strategy,
                    self.cudnn_conv_algo_search,
                )
            }

            pub fn placement(&self) -> Placement {
                Placement::from_keys(self.devices.as_ref(), self.instances)
            }
        }
    };
}
cuda_options!(ModelConfig);
cuda_options!(ModelTable);
cuda_options!(ModelSettings);

/// Where a model's versions are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// One `.onnx` file, version 1.
    File(PathBuf),
    /// `<folder>/<version>/model.onnx`.
    Folder(PathBuf),
}

pub(super) fn default_poll_interval() -> Duration {
    Duration::from_secs(10)
}

pub(super) fn poll_interval<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
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
pub(super) fn validate_text(
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
