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

//! TLS on the gRPC endpoint: the credentials gRPC core takes at each new connection's
//! handshake, and their reload. SIGHUP reads the files again on the main thread; a
//! handshake on one of gRPC's threads then picks up what was read, so new connections get
//! the new certificate while open ones (and their calls) go on undisturbed.

use std::error::Error as StdError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grpcio::{
    CertificateRequestType, ServerCredentials, ServerCredentialsBuilder, ServerCredentialsFetcher,
};

use crate::config::tls::{TlsConfig, TlsError, TlsFiles};
use crate::metrics::Metrics;

/// The endpoint's TLS files: those in use, and any read since for the next handshake.
pub struct TlsCredentials {
    config: TlsConfig,
    /// Files read and checked, not yet handed to gRPC core.
    pending: Mutex<Option<TlsFiles>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for TlsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCredentials")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TlsCredentials {
    /// Reads the files; their error names the config key at fault.
    pub fn load(config: &TlsConfig, metrics: Arc<Metrics>) -> Result<Arc<Self>, TlsError> {
        let files = config.load()?;
        warn_if_expiring(config, &files);
        metrics.set_tls_certificate_expiry(
            &config.cert_file.display().to_string(),
            files.not_after_unix,
        );
        Ok(Arc::new(TlsCredentials {
            config: config.clone(),
            pending: Mutex::new(Some(files)),
            metrics,
        }))
    }

    /// The server credentials that ask this for their files at each handshake.
    pub fn server_credentials(self: &Arc<Self>) -> ServerCredentials {
        let request = if self.config.requires_client_certificates() {
            CertificateRequestType::RequestAndRequireClientCertificateAndVerify
        } else {
            CertificateRequestType::DontRequestClientCertificate
        };
        ServerCredentials::with_fetcher(Box::new(Fetcher(Arc::clone(self))), request)
    }

    /// SIGHUP: reads the files again. Files that cannot be used are logged, and the
    /// certificate in use serves on.
    pub fn reload(&self) {
        match self.config.load() {
            Ok(files) => {
                log::info!(
                    "SIGHUP: TLS certificate {} and key {} read again; new connections get them, open ones go on",
                    self.config.cert_file.display(),
                    self.config.key_file.display()
                );
                warn_if_expiring(&self.config, &files);
                self.metrics.tls_reloaded(true);
                self.metrics.set_tls_certificate_expiry(
                    &self.config.cert_file.display().to_string(),
                    files.not_after_unix,
                );
                *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(files);
            }
            Err(error) => {
                self.metrics.tls_reloaded(false);
                log::error!(
                    "SIGHUP: TLS files not reloaded, the certificate in use serves on: {}: {error}",
                    error.key()
                );
            }
        }
    }
}

/// How soon before its end a certificate in use is worth a warning in the log.
const EXPIRY_NOTICE: Duration = Duration::from_secs(14 * 24 * 3600);

/// Logs a certificate that has expired (clients refuse every new connection) or expires
/// within [`EXPIRY_NOTICE`]; serving goes on either way, as a renewal may be on its way.
fn warn_if_expiring(config: &TlsConfig, files: &TlsFiles) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        });
    let left = files.not_after_unix.saturating_sub(now);
    if left <= 0 {
        log::error!(
            "TLS certificate {} (sidecar.rpc.tls.cert-file) has expired: clients refuse every new connection; write a renewed certificate and key over the files and send SIGHUP",
            config.cert_file.display()
        );
    } else if left < EXPIRY_NOTICE.as_secs() as i64 {
        log::warn!(
            "TLS certificate {} (sidecar.rpc.tls.cert-file) expires in {}: renew it, then send SIGHUP",
            config.cert_file.display(),
            humantime::format_duration(Duration::from_secs(left as u64 / 3600 * 3600))
        );
    }
}

/// What gRPC core calls at each handshake (on its own threads).
struct Fetcher(Arc<TlsCredentials>);

impl ServerCredentialsFetcher for Fetcher {
    fn fetch(&self) -> Result<Option<ServerCredentialsBuilder>, Box<dyn StdError>> {
        let files = self
            .0
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Ok(files.map(|files| {
            // NUL bytes were refused when the files were read, as these take C strings.
            let builder = ServerCredentialsBuilder::new().add_cert(files.cert_chain, files.key);
            match files.client_ca {
                Some(ca) => builder.root_cert(
                    ca,
                    CertificateRequestType::RequestAndRequireClientCertificateAndVerify,
                ),
                None => builder,
            }
        }))
    }
}
