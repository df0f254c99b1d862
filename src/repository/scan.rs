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

//! Reading a model repository from disk, in Triton's layout: `DIR/<name>/<version>/model.onnx`
//! with an optional `DIR/<name>/model.toml` of the model's settings. Plain file reads, on the
//! repository thread (and the main thread for `--check-config`).
//!
//! A version folder whose `model.onnx` is not there yet is skipped (and seen at the next scan):
//! a version published by writing it elsewhere and renaming it into place is picked up whole.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{BatchingConfig, ModelName, ModelSettings, ModelSource, ModelSpec};

/// The file each version folder holds.
pub const MODEL_FILE: &str = "model.onnx";
/// The optional settings file of a model folder.
pub const SETTINGS_FILE: &str = "model.toml";

/// What a scan found of one model.
#[derive(Debug, Clone)]
pub struct Found {
    pub spec: ModelSpec,
    /// Its versions with their model file, ascending.
    pub versions: BTreeMap<u64, PathBuf>,
}

/// A model folder that cannot be served as it stands, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub name: String,
    pub reason: String,
}

/// What one scan of a repository found.
#[derive(Debug, Default)]
pub struct Scan {
    pub models: BTreeMap<String, Found>,
    pub unreadable: Vec<Unreadable>,
}

/// Scans the repository `dir`; a model without `model.toml` gets `batching` and the default
/// settings. Fails only when `dir` itself cannot be read.
pub fn scan(dir: &Path, batching: &BatchingConfig) -> Result<Scan, std::io::Error> {
    let mut scan = Scan::default();
    let mut entries: Vec<_> = fs::read_dir(dir)?.filter_map(Result::ok).collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let folder = entry.path();
        if !folder.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        // Hidden folders (editors', version control's, a copy in progress) are not models.
        if name.starts_with('.') {
            continue;
        }
        match read_model(&folder, &name, batching) {
            Ok(found) => {
                scan.models.insert(name, found);
            }
            Err(reason) => scan.unreadable.push(Unreadable { name, reason }),
        }
    }
    Ok(scan)
}

/// Reads one model folder: its settings and its versions.
fn read_model(folder: &Path, name: &str, batching: &BatchingConfig) -> Result<Found, String> {
    ModelName::try_from(name.to_string())?;
    let settings_path = folder.join(SETTINGS_FILE);
    let settings = match fs::read_to_string(&settings_path) {
        Ok(text) => ModelSettings::parse(&text, folder, batching)
            .map_err(|(key, message)| format!("{}: `{key}`: {message}", settings_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ModelSettings::default(),
        Err(e) => return Err(format!("cannot read {}: {e}", settings_path.display())),
    };
    let cuda = settings.cuda();
    let placement = settings.placement();
    Ok(Found {
        versions: versions(folder),
        spec: ModelSpec {
            name: name.to_string(),
            source: ModelSource::Folder(folder.to_path_buf()),
            intra_op_threads: settings.intra_op_threads,
            text: settings.text,
            batching: settings.batching.unwrap_or_else(|| batching.clone()),
            cuda,
            placement,
            warmup: settings.warmup,
            version_policy: settings.version_policy,
        },
    })
}

/// The numbered version folders of `folder` that hold a model file.
pub fn versions(folder: &Path) -> BTreeMap<u64, PathBuf> {
    let Ok(entries) = fs::read_dir(folder) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let version: u64 = name.to_str()?.parse().ok().filter(|&v| v > 0)?;
            let file = entry.path().join(MODEL_FILE);
            file.is_file().then_some((version, file))
        })
        .collect()
}

/// What a model file looked like when it was read: a changed file is a new attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    pub fn of(path: &Path) -> Option<FileStamp> {
        let metadata = fs::metadata(path).ok()?;
        Some(FileStamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_finds_versions_with_a_model_file_and_reads_settings() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("scorer");
        for version in ["1", "2", "3", "x"] {
            fs::create_dir_all(model.join(version)).unwrap();
        }
        fs::write(model.join("1").join(MODEL_FILE), b"one").unwrap();
        fs::write(model.join("3").join(MODEL_FILE), b"three").unwrap();
        fs::write(model.join("x").join(MODEL_FILE), b"not a version").unwrap();
        fs::write(
            model.join(SETTINGS_FILE),
            "version-policy = { latest = 2 }\n[batching]\nmax-batch-size = 8\n",
        )
        .unwrap();
        let broken = dir.path().join("broken");
        fs::create_dir_all(&broken).unwrap();
        fs::write(broken.join(SETTINGS_FILE), "version-policy = \"some\"\n").unwrap();
        fs::create_dir_all(dir.path().join(".hidden")).unwrap();
        let scan = scan(dir.path(), &BatchingConfig::default()).unwrap();
        let found = &scan.models["scorer"];
        assert_eq!(found.versions.keys().copied().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(found.spec.batching.max_batch_size, 8);
        assert_eq!(found.spec.version_policy.select(&[1, 3]), [1, 3]);
        assert_eq!(scan.unreadable.len(), 1);
        assert_eq!(scan.unreadable[0].name, "broken");
        assert!(
            scan.unreadable[0].reason.contains("version-policy"),
            "{}",
            scan.unreadable[0].reason
        );
        assert!(!scan.models.contains_key(".hidden"));
    }
}
