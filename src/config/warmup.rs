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

//! `warmup`, a model's key (in `[sidecar.model]`, `[[sidecar.models]]` and `model.toml`):
//! what its warm-up execution runs before the version takes requests, as Triton's
//! `model_warmup` lets a model say. Plain values, checked as they are read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What a model's warm-up execution runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub enum Warmup {
    /// Zeros for numbers, `"0"` for strings (which parses as a number too).
    #[default]
    Zeros,
    /// Random numbers (integers 0 to 9, floats 0 to 1), random digits for strings.
    Random,
    /// Sample data per input name: a `.npy` file, or raw bytes as Triton's
    /// `input_data_file` (strings: each a 4-byte little-endian length, then its bytes); an
    /// input without a file gets zeros.
    Files(BTreeMap<String, PathBuf>),
}

impl TryFrom<toml::Value> for Warmup {
    type Error = String;

    fn try_from(value: toml::Value) -> Result<Self, Self::Error> {
        const USE: &str = "use \"zeros\", \"random\" or a table of files by input name, e.g. { INPUT0 = \"warmup/input0.npy\" }";
        match &value {
            toml::Value::String(s) if s == "zeros" => Ok(Warmup::Zeros),
            toml::Value::String(s) if s == "random" => Ok(Warmup::Random),
            toml::Value::Table(table) if !table.is_empty() => table
                .iter()
                .map(|(input, file)| match file {
                    toml::Value::String(path) if !path.is_empty() => {
                        Ok((input.clone(), PathBuf::from(path)))
                    }
                    _ => Err(format!(
                        "{file} is not a file for input {input:?}: give the path of an .npy file or of raw bytes"
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Warmup::Files),
            _ => Err(format!("{value} is not a warm-up: {USE}")),
        }
    }
}

impl Warmup {
    /// Resolves relative file paths against `base` (the config's folder, or the model's for
    /// a `model.toml`).
    pub fn resolve(&mut self, base: &Path) {
        if let Warmup::Files(files) = self {
            for path in files.values_mut() {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        }
    }
}

impl fmt::Display for Warmup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warmup::Zeros => f.write_str("\"zeros\""),
            Warmup::Random => f.write_str("\"random\""),
            Warmup::Files(files) => {
                let entries: Vec<String> = files
                    .iter()
                    .map(|(input, path)| format!("{input} = {:?}", path.display().to_string()))
                    .collect();
                write!(f, "{{ {} }}", entries.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warmup(text: &str) -> Result<Warmup, String> {
        let value: toml::Table = toml::from_str(&format!("v = {text}")).unwrap();
        Warmup::try_from(value["v"].clone())
    }

    #[test]
    fn a_warmup_is_zeros_random_or_a_file_per_input() {
        assert_eq!(warmup("\"zeros\""), Ok(Warmup::Zeros));
        assert_eq!(warmup("\"random\""), Ok(Warmup::Random));
        let mut files = warmup("{ INPUT0 = \"w/a.npy\" }").unwrap();
        files.resolve(Path::new("/models/simple"));
        assert_eq!(
            files,
            Warmup::Files(BTreeMap::from([(
                "INPUT0".to_string(),
                PathBuf::from("/models/simple/w/a.npy")
            )]))
        );
        assert!(warmup("\"ones\"")
            .unwrap_err()
            .contains("use \"zeros\", \"random\""));
        assert!(warmup("{ INPUT0 = 3 }")
            .unwrap_err()
            .contains("for input \"INPUT0\""));
    }
}
