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

//! `[sidecar.rpc.tls]`: TLS on a TCP endpoint (the server's certificate chain and key, and
//! the CA that client certificates must chain to when one is required), and the reading and
//! checking of its files: at config time, and again on each SIGHUP reload (on the main
//! thread). Plain data and checks; no thread of its own.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use openssl::pkey::PKey;
use openssl::x509::X509;
use serde::Deserialize;

pub const CERT_FILE_KEY: &str = "sidecar.rpc.tls.cert-file";
pub const KEY_FILE_KEY: &str = "sidecar.rpc.tls.key-file";
pub const CLIENT_CA_FILE_KEY: &str = "sidecar.rpc.tls.client-ca-file";

/// `[sidecar.rpc.tls]`. Relative paths resolve against the config file's folder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsConfig {
    /// The server's certificate, then any intermediates, PEM.
    pub cert_file: PathBuf,
    /// The certificate's private key, PEM (PKCS#8, RSA or EC), unencrypted.
    pub key_file: PathBuf,
    /// When set, clients must present a certificate that chains to one of these, PEM.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// The contents of the files, checked: what gRPC core is given.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert_chain: Vec<u8>,
    pub key: Vec<u8>,
    pub client_ca: Option<Vec<u8>>,
    /// When the server's certificate stops being valid, seconds since the Unix epoch.
    pub not_after_unix: i64,
}

impl fmt::Debug for TlsFiles {
    // Never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert_chain_bytes", &self.cert_chain.len())
            .field("client_ca", &self.client_ca.is_some())
            .field("not_after_unix", &self.not_after_unix)
            .finish_non_exhaustive()
    }
}

/// A TLS file that cannot be used; [`TlsError::key`] names its config key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{} is not the private key of the certificate in {} ({CERT_FILE_KEY}): give the key the certificate was issued for",
        key_path.display(),
        cert_path.display()
    )]
    Mismatch {
        key_path: PathBuf,
        cert_path: PathBuf,
    },
}

impl TlsError {
    /// The config key of the file at fault.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { key, .. } | TlsError::Invalid { key, .. } => key,
            TlsError::Mismatch { .. } => KEY_FILE_KEY,
        }
    }
}

impl TlsConfig {
    /// Makes relative paths absolute against `base`, the config file's folder.
    pub(super) fn resolve(&mut self, base: &Path) {
        for path in [&mut self.cert_file, &mut self.key_file]
            .into_iter()
            .chain(self.client_ca_file.as_mut())
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.client_ca_file.is_some()
    }

    /// Reads the files and checks them: PEM certificates, a PEM private key that is the
    /// certificate's, a CA file of PEM certificates.
    pub fn load(&self) -> Result<TlsFiles, TlsError> {
        let cert_chain = read(CERT_FILE_KEY, &self.cert_file)?;
        let chain = certificates(CERT_FILE_KEY, &self.cert_file, &cert_chain)?;
        let key = read(KEY_FILE_KEY, &self.key_file)?;
        let private_key = PKey::private_key_from_pem(&key).map_err(|_| TlsError::Invalid {
            key: KEY_FILE_KEY,
            path: self.key_file.clone(),
            reason: "holds no unencrypted PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC)"
                .to_string(),
        })?;
        let leaf = &chain[0];
        let matches = leaf
            .public_key()
            .is_ok_and(|public| public.public_eq(&private_key));
        if !matches {
            return Err(TlsError::Mismatch {
                key_path: self.key_file.clone(),
                cert_path: self.cert_file.clone(),
            });
        }
        let client_ca = match &self.client_ca_file {
            Some(path) => {
                let ca = read(CLIENT_CA_FILE_KEY, path)?;
                certificates(CLIENT_CA_FILE_KEY, path, &ca)?;
                Some(ca)
            }
            None => None,
        };
        let epoch = openssl::asn1::Asn1Time::from_unix(0).map_err(|e| TlsError::Invalid {
            key: CERT_FILE_KEY,
            path: self.cert_file.clone(),
            reason: e.to_string(),
        })?;
        let not_after_unix = epoch
            .diff(leaf.not_after())
            .map(|diff| i64::from(diff.days) * 86_400 + i64::from(diff.secs))
            .unwrap_or(0);
        Ok(TlsFiles {
            cert_chain,
            key,
            client_ca,
            not_after_unix,
        })
    }
}

/// A file's bytes; gRPC core takes them as C strings, so a NUL byte is refused here.
fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.contains(&0) {
        return Err(TlsError::Invalid {
            key,
            path: path.to_path_buf(),
            reason: "holds a NUL byte: not a PEM file".to_string(),
        });
    }
    Ok(bytes)
}

/// The PEM certificates in a file, at least one.
fn certificates(key: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<X509>, TlsError> {
    match X509::stack_from_pem(pem) {
        Ok(certificates) if !certificates.is_empty() => Ok(certificates),
        _ => Err(TlsError::Invalid {
            key,
            path: path.to_path_buf(),
            reason: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_string(),
        }),
    }
}
