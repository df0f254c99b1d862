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

//! A model's options for ONNX Runtime's CUDA execution provider, the ones users of a shared
//! device reach for: a cap on the memory its arena takes, how the arena grows, and how cuDNN
//! picks convolution algorithms. Keys of `[sidecar.model]`, a `[[sidecar.models]]` table
//! and a repository model's `model.toml`; used only when the model runs on a GPU.

use std::fmt;

use serde::Deserialize;

use super::values::byte_count;

/// The CUDA provider options of one model, with defaults filled in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CudaOptions {
    /// The most device memory the provider's arena takes (`gpu_mem_limit`); unset: no cap.
    pub gpu_memory_limit: Option<u64>,
    pub arena_extend_strategy: ArenaExtendStrategy,
    pub cudnn_conv_algo_search: ConvAlgoSearch,
}

/// How the arena grows when it needs more (`arena_extend_strategy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArenaExtendStrategy {
    /// By what is asked for: memory held follows what runs (the fix Triton's users found for
    /// arenas that only grow). The sidecar's default.
    #[default]
    SameAsRequested,
    /// By powers of two (ONNX Runtime's own default): fewer, larger allocations.
    NextPowerOfTwo,
}

/// How cuDNN picks a convolution algorithm (`cudnn_conv_algo_search`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConvAlgoSearch {
    /// Tries every algorithm on the first run of each shape (ONNX Runtime's default): the
    /// fastest, at the cost of a long first execution.
    #[default]
    Exhaustive,
    /// cuDNN's heuristics, without trying.
    Heuristic,
    /// The default algorithm, always.
    Default,
}

/// `gpu-memory-limit`: bytes with a unit ("8 GiB") or a number of bytes, at least 1 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct MemoryLimit(pub u64);

impl TryFrom<toml::Value> for MemoryLimit {
    type Error = String;

    fn try_from(value: toml::Value) -> Result<Self, Self::Error> {
        match byte_count(&value) {
            Some(n) if n >= 1 << 20 => Ok(MemoryLimit(n)),
            Some(n) => Err(format!(
                "{n} bytes is too little for a model: give at least 1 MiB, e.g. \"8 GiB\""
            )),
            None => Err(format!(
                "{value} is not a size: write bytes with a unit, e.g. \"8 GiB\", or a number of bytes"
            )),
        }
    }
}

impl fmt::Display for ArenaExtendStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArenaExtendStrategy::SameAsRequested => "same-as-requested",
            ArenaExtendStrategy::NextPowerOfTwo => "next-power-of-two",
        })
    }
}

impl fmt::Display for ConvAlgoSearch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConvAlgoSearch::Exhaustive => "exhaustive",
            ConvAlgoSearch::Heuristic => "heuristic",
            ConvAlgoSearch::Default => "default",
        })
    }
}

impl CudaOptions {
    /// The options of a model table's three keys, defaults filled in.
    pub fn from_keys(
        gpu_memory_limit: Option<MemoryLimit>,
        arena_extend_strategy: Option<ArenaExtendStrategy>,
        cudnn_conv_algo_search: Option<ConvAlgoSearch>,
    ) -> Self {
        CudaOptions {
            gpu_memory_limit: gpu_memory_limit.map(|m| m.0),
            arena_extend_strategy: arena_extend_strategy.unwrap_or_default(),
            cudnn_conv_algo_search: cudnn_conv_algo_search.unwrap_or_default(),
        }
    }

    /// As `key = value` pairs, under the keys' names.
    pub fn pairs(&self) -> [(&'static str, String); 3] {
        [
            (
                "gpu-memory-limit",
                self.gpu_memory_limit.map_or_else(
                    || "unset (no cap)".to_string(),
                    |b| bytesize::ByteSize(b).to_string(),
                ),
            ),
            (
                "arena-extend-strategy",
                self.arena_extend_strategy.to_string(),
            ),
            (
                "cudnn-conv-algo-search",
                self.cudnn_conv_algo_search.to_string(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::batching::BatchingConfig;
    use crate::config::models::ModelSettings;
    use crate::config::tests::{parse, parse_err, MINIMAL};

    #[test]
    fn a_models_cuda_options_are_read_with_their_defaults_and_checked() {
        let config = parse(&MINIMAL.replace(
            "uri = \"model.bin\"",
            "uri = \"model.bin\"\ngpu-memory-limit = \"2 GiB\"\narena-extend-strategy = \"next-power-of-two\"\ncudnn-conv-algo-search = \"heuristic\"",
        ))
        .unwrap();
        let cuda = config.model_specs()[0].cuda;
        assert_eq!(cuda.gpu_memory_limit, Some(2 << 30));
        assert_eq!(
            cuda.arena_extend_strategy,
            ArenaExtendStrategy::NextPowerOfTwo
        );
        assert_eq!(cuda.cudnn_conv_algo_search, ConvAlgoSearch::Heuristic);
        let shown = config.to_string();
        assert!(
            shown.contains("sidecar.model.gpu-memory-limit = \"2.0 GiB\""),
            "{shown}"
        );
        assert!(
            shown.contains("sidecar.model.arena-extend-strategy = \"next-power-of-two\""),
            "{shown}"
        );
        let defaults = parse(MINIMAL).unwrap().model_specs()[0].cuda;
        assert_eq!(defaults.gpu_memory_limit, None);
        assert_eq!(
            defaults.arena_extend_strategy,
            ArenaExtendStrategy::SameAsRequested
        );
        assert_eq!(defaults.cudnn_conv_algo_search, ConvAlgoSearch::Exhaustive);
        for (line, key) in [
            (
                "arena-extend-strategy = \"grow\"",
                "sidecar.model.arena-extend-strategy",
            ),
            (
                "gpu-memory-limit = \"10 KiB\"",
                "sidecar.model.gpu-memory-limit",
            ),
            (
                "cudnn-conv-algo-search = 3",
                "sidecar.model.cudnn-conv-algo-search",
            ),
        ] {
            let (found, message) = parse_err(&MINIMAL.replace(
                "uri = \"model.bin\"",
                &format!("uri = \"model.bin\"\n{line}"),
            ));
            assert_eq!(found, key, "{message}");
        }
        let settings = ModelSettings::parse(
            "arena-extend-strategy = \"next-power-of-two\"\n",
            Path::new("/models/m"),
            &BatchingConfig::default(),
        )
        .unwrap();
        assert_eq!(
            settings.cuda().arena_extend_strategy,
            ArenaExtendStrategy::NextPowerOfTwo
        );
    }
}
