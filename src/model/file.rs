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

//! Reading the model file into host memory, with its SHA-256, and finding its external data
//! files (ONNX external data: the weights of models over 2 GB live beside the graph), which
//! are checked and hashed into the same SHA-256, the version's identity, but left for ONNX
//! Runtime to read. Runs where a model is loaded or checked; knows nothing of CUDA.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// Read size; between chunks the reader checks whether shutdown was requested.
const CHUNK_BYTES: usize = 8 << 20;

/// A model file that cannot be loaded; exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file does not exist.
    #[error("model file {} does not exist (sidecar.model.uri)", path.display())]
    Missing { path: PathBuf },
    /// The file exists but cannot be read.
    #[error("cannot read model file {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    /// The file is empty: no model to serve.
    #[error("model file {} is empty", path.display())]
    Empty { path: PathBuf },
    /// Host memory for the model's bytes could not be had.
    #[error("cannot hold model file {} in host memory: {bytes} bytes could not be allocated", path.display())]
    NoHostMemory { path: PathBuf, bytes: u64 },
    /// Shutdown was requested while the file was being read.
    #[error("loading the model was interrupted by shutdown")]
    Interrupted,
    /// An external data file the model names is missing or cannot be read.
    #[error("model {} keeps its weights in {}, which {why}: put the model's data files beside it, as its exporter wrote them", model.display(), file.display())]
    DataFile {
        model: PathBuf,
        file: PathBuf,
        why: String,
    },
    /// An external data file the model names lies outside its folder.
    #[error("model {} names the external data file {location:?}, outside the model's folder: ONNX Runtime reads data files only from the model's folder and below", model.display())]
    DataFileOutside { model: PathBuf, location: String },
}

impl ModelError {
    /// Whether the file is there but holds no model (it is empty). A missing or unreadable
    /// file may yet appear (a mount, a copy in progress): it is not counted here.
    pub fn is_not_a_model(&self) -> bool {
        matches!(
            self,
            ModelError::Empty { .. } | ModelError::DataFileOutside { .. }
        )
    }
}

/// A model's bytes in host memory.
#[derive(Debug)]
pub struct ModelBytes {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Its external data files, if it has any.
    pub data_files: Vec<DataFile>,
    /// Lower-case hex SHA-256 of `bytes`, then of each data file's bytes in order.
    pub sha256: String,
}

impl ModelBytes {
    /// The model's size with its data files.
    pub fn total_size(&self) -> u64 {
        self.bytes.len() as u64 + self.data_files.iter().map(|f| f.size).sum::<u64>()
    }
}

/// One external data file of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// As the model names it, relative to its folder.
    pub location: String,
    pub path: PathBuf,
    pub size: u64,
}

/// The external data files that the model at `path` names, each checked to be inside its
/// folder, there and readable. Reads the model as a stream (weights held inline are skipped);
/// a file that is not a protobuf message names none (ONNX Runtime then says what it is).
pub fn data_files(path: &Path) -> Result<Vec<DataFile>, ModelError> {
    let mut file = File::open(path).map_err(|source| ModelError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = io::BufReader::new(&mut file);
    let locations = crate::backend::external::locations(&mut reader).unwrap_or_default();
    let folder = path.parent().unwrap_or(Path::new("."));
    locations
        .into_iter()
        .map(|location| {
            let relative = Path::new(&location);
            let inside = relative.is_relative()
                && relative.components().all(|c| {
                    matches!(
                        c,
                        std::path::Component::Normal(_) | std::path::Component::CurDir
                    )
                });
            if !inside {
                return Err(ModelError::DataFileOutside {
                    model: path.to_path_buf(),
                    location,
                });
            }
            let data = folder.join(relative);
            let unusable = |why: String| ModelError::DataFile {
                model: path.to_path_buf(),
                file: data.clone(),
                why,
            };
            let metadata = std::fs::metadata(&data).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => unusable("does not exist".to_string()),
                _ => unusable(format!("cannot be read: {e}")),
            })?;
            if !metadata.is_file() {
                return Err(unusable("is not a file".to_string()));
            }
            File::open(&data).map_err(|e| unusable(format!("cannot be read: {e}")))?;
            Ok(DataFile {
                location,
                path: data,
                size: metadata.len(),
            })
        })
        .collect()
}

/// Shared between the GPU-owner thread, which reads the model, and the main thread, which
/// reports progress to the service manager and may ask the read to stop.
#[derive(Debug, Default)]
pub struct LoadControl {
    stop: AtomicBool,
    bytes_read: AtomicU64,
    /// The file's size when it tells one (a regular file), else 0.
    size_hint: AtomicU64,
}

impl LoadControl {
    /// Asks the read to stop at the next chunk.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// The size of the model file, if known.
    pub fn size_hint(&self) -> Option<u64> {
        Some(self.size_hint.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }
}

/// Checks that `path` is a model file that can be opened, and its external data files are
/// there, without loading it; returns the data files. Fails like [`read_model`] does for a
/// missing or unreadable file, or a folder.
pub fn check_model_file(path: &Path) -> Result<Vec<DataFile>, ModelError> {
    let metadata = std::fs::metadata(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ModelError::Missing {
            path: path.to_path_buf(),
        },
        _ => ModelError::Unreadable {
            path: path.to_path_buf(),
            source,
        },
    })?;
    if metadata.is_dir() {
        return Err(ModelError::Unreadable {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "it is a directory"),
        });
    }
    if !metadata.is_file() {
        // A pipe or a device is read once, by the load.
        return Ok(Vec::new());
    }
    data_files(path)
}

/// Reads the whole file at `path`, counting progress in `control` and stopping early if it
/// asks to. Fails if the file is missing, unreadable or empty.
pub fn read_model(path: &Path, control: &LoadControl) -> Result<ModelBytes, ModelError> {
    let unreadable = |source: io::Error| ModelError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ModelError::Missing {
            path: path.to_path_buf(),
        },
        _ => unreadable(source),
    })?;
    let metadata = file.metadata().map_err(unreadable)?;
    if metadata.is_dir() {
        return Err(unreadable(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a directory",
        )));
    }
    // Regular files tell their size up front; pipes and devices are read to the end. Memory
    // is reserved fallibly: a model too large for the host is an error, not an abort.
    let mut bytes = Vec::new();
    reserve(&mut bytes, metadata.len(), path)?;
    if metadata.is_file() {
        control.size_hint.store(metadata.len(), Ordering::Relaxed);
    }
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; CHUNK_BYTES];
    loop {
        if control.stop_requested() {
            return Err(ModelError::Interrupted);
        }
        let read = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(unreadable(e)),
        };
        hasher.update(&chunk[..read]);
        reserve(&mut bytes, read as u64, path)?;
        bytes.extend_from_slice(&chunk[..read]);
        control.bytes_read.fetch_add(read as u64, Ordering::Relaxed);
    }
    if bytes.is_empty() {
        return Err(ModelError::Empty {
            path: path.to_path_buf(),
        });
    }
    let data_files = if metadata.is_file() {
        data_files(path)?
    } else {
        Vec::new()
    };
    for data in &data_files {
        control.size_hint.fetch_add(data.size, Ordering::Relaxed);
        hash_file(&data.path, &mut hasher, &mut chunk, control).map_err(|e| match e {
            ModelError::Unreadable { source, .. } => ModelError::DataFile {
                model: path.to_path_buf(),
                file: data.path.clone(),
                why: format!("cannot be read: {source}"),
            },
            other => other,
        })?;
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(ModelBytes {
        path: path.to_path_buf(),
        bytes,
        data_files,
        sha256,
    })
}

/// Feeds the file at `path` into `hasher`, counting progress in `control`.
fn hash_file(
    path: &Path,
    hasher: &mut Sha256,
    chunk: &mut [u8],
    control: &LoadControl,
) -> Result<(), ModelError> {
    let unreadable = |source: io::Error| ModelError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(unreadable)?;
    loop {
        if control.stop_requested() {
            return Err(ModelError::Interrupted);
        }
        let read = match file.read(chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(unreadable(e)),
        };
        hasher.update(&chunk[..read]);
        control.bytes_read.fetch_add(read as u64, Ordering::Relaxed);
    }
}

/// Makes room for `additional` more bytes in `bytes`, or fails with `NoHostMemory`.
fn reserve(bytes: &mut Vec<u8>, additional: u64, path: &Path) -> Result<(), ModelError> {
    let wanted = (bytes.len() as u64).saturating_add(additional);
    let too_large = || ModelError::NoHostMemory {
        path: path.to_path_buf(),
        bytes: wanted,
    };
    let additional = usize::try_from(additional).map_err(|_| too_large())?;
    bytes.try_reserve(additional).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn reads_bytes_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        fs::write(&path, b"abc").unwrap();
        let control = LoadControl::default();
        let model = read_model(&path, &control).unwrap();
        assert_eq!(model.bytes, b"abc");
        assert_eq!(control.bytes_read(), 3);
        assert_eq!(control.size_hint(), Some(3));
        assert_eq!(
            model.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn memory_that_cannot_be_had_is_an_error_not_an_abort() {
        let mut bytes = vec![1u8];
        let err = reserve(&mut bytes, u64::MAX, Path::new("/m.bin")).unwrap_err();
        assert!(matches!(err, ModelError::NoHostMemory { .. }), "{err}");
        assert!(err.to_string().contains("/m.bin"), "{err}");
        reserve(&mut bytes, 10, Path::new("/m.bin")).unwrap();
        assert!(bytes.capacity() >= 11);
    }

    #[test]
    fn missing_empty_directory_and_interrupted_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let not_stopped = LoadControl::default();
        let missing = read_model(&dir.path().join("none"), &not_stopped).unwrap_err();
        assert!(matches!(missing, ModelError::Missing { .. }), "{missing}");
        let empty = dir.path().join("empty");
        fs::write(&empty, b"").unwrap();
        let err = read_model(&empty, &not_stopped).unwrap_err();
        assert!(matches!(err, ModelError::Empty { .. }), "{err}");
        let err = read_model(dir.path(), &not_stopped).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
        fs::write(&empty, b"x").unwrap();
        let stopped = LoadControl::default();
        stopped.request_stop();
        let err = read_model(&empty, &stopped).unwrap_err();
        assert!(matches!(err, ModelError::Interrupted), "{err}");
    }

    /// The protobuf bytes of a model with one initializer whose data is external, at
    /// `location`: field 7 (graph) → 5 (initializer) → 8 (name), 14 (data_location = 1),
    /// 13 (external_data: key 1 "location", value 2 `location`).
    fn model_naming(location: &str) -> Vec<u8> {
        fn field(number: u8, payload: &[u8]) -> Vec<u8> {
            let mut out = vec![(number << 3) | 2, payload.len() as u8];
            out.extend_from_slice(payload);
            out
        }
        let mut entry = field(1, b"location");
        entry.extend(field(2, location.as_bytes()));
        let mut tensor = field(8, b"w");
        tensor.extend([14 << 3, 1]);
        tensor.extend(field(13, &entry));
        field(7, &field(5, &tensor))
    }

    #[test]
    fn external_data_files_are_found_beside_the_model_and_never_outside_it() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        fs::write(&model, model_naming("weights/m.bin")).unwrap();
        let err = data_files(&model).unwrap_err();
        assert!(err.to_string().contains("which does not exist"), "{err}");
        fs::create_dir(dir.path().join("weights")).unwrap();
        fs::write(dir.path().join("weights/m.bin"), [0u8; 12]).unwrap();
        let found = data_files(&model).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].location, "weights/m.bin");
        assert_eq!(found[0].size, 12);
        let control = LoadControl::default();
        let read = read_model(&model, &control).unwrap();
        assert_eq!(read.total_size(), read.bytes.len() as u64 + 12);
        assert_eq!(control.bytes_read(), read.total_size());
        fs::write(&model, model_naming("../outside.bin")).unwrap();
        let err = data_files(&model).unwrap_err();
        assert!(matches!(err, ModelError::DataFileOutside { .. }), "{err}");
        assert!(err.is_not_a_model());
    }
}
