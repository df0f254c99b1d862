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

//! The effective configuration as the sidecar logs it at start and `--check-config` prints
//! it: one `key = value` line per key, defaults filled in.

use std::fmt;

use super::{
    BatchingConfig, Config, CudaOptions, Endpoint, Placement, RepositoryControl, TextConfig,
    ThreadCount,
};

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
        writeln!(
            f,
            "sidecar.rpc.completion-queues = {}{}",
            self.rpc.host_completion_queues(),
            if self.rpc.completion_queues_configured() {
                ""
            } else {
                "  # one per core, at most 4"
            }
        )?;
        writeln!(
            f,
            "sidecar.rpc.watch-unary-cancellation = {}",
            self.rpc.watch_unary_cancellation()
        )?;
        if let Some(tls) = &self.rpc.tls {
            writeln!(
                f,
                "sidecar.rpc.tls.cert-file = {:?}",
                tls.cert_file.display()
            )?;
            writeln!(f, "sidecar.rpc.tls.key-file = {:?}", tls.key_file.display())?;
            match &tls.client_ca_file {
                Some(path) => writeln!(
                    f,
                    "sidecar.rpc.tls.client-ca-file = {:?}  # client certificates required",
                    path.display()
                )?,
                None => writeln!(
                    f,
                    "# sidecar.rpc.tls.client-ca-file: unset (no client certificates asked for)"
                )?,
            }
        }
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
            write_cuda(f, "sidecar.model", &model.cuda())?;
            write_placement(f, "sidecar.model", &model.placement())?;
            writeln!(f, "sidecar.model.warmup = {}", model.warmup)?;
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
            write_cuda(f, &key, &table.cuda())?;
            write_placement(f, &key, &table.placement())?;
            writeln!(f, "{key}.warmup = {}", table.warmup)?;
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
            "sidecar.health.execution-timeout = \"{}\"",
            humantime::format_duration(self.health.execution_timeout)
        )?;
        writeln!(
            f,
            "sidecar.shutdown.grace-period = \"{}\"  # {} ms",
            humantime::format_duration(self.shutdown.grace_period.0),
            self.shutdown.grace_period.0.as_millis()
        )?;
        writeln!(f, "sidecar.gpu.mode = \"{}\"", self.gpu.mode)?;
        match &self.gpu.devices {
            Some(devices) => writeln!(f, "sidecar.gpu.devices = {devices}")?,
            None => writeln!(f, "sidecar.gpu.device = {}", self.gpu.device.0)?,
        }
        write!(
            f,
            "sidecar.log.level = \"{}\"",
            log::LevelFilter::from(self.log.level)
                .as_str()
                .to_lowercase()
        )
    }
}

/// The lines of a model's CUDA provider options, under `key`.
fn write_cuda(f: &mut fmt::Formatter<'_>, key: &str, cuda: &CudaOptions) -> fmt::Result {
    match cuda.gpu_memory_limit {
        Some(limit) => writeln!(
            f,
            "{key}.gpu-memory-limit = \"{}\"  # {limit} bytes, on a GPU",
            bytesize::ByteSize(limit)
        )?,
        None => writeln!(f, "# {key}.gpu-memory-limit: unset (no cap)")?,
    }
    writeln!(
        f,
        "{key}.arena-extend-strategy = \"{}\"  # on a GPU",
        cuda.arena_extend_strategy
    )?;
    writeln!(
        f,
        "{key}.cudnn-conv-algo-search = \"{}\"  # on a GPU",
        cuda.cudnn_conv_algo_search
    )
}

/// The lines of a model's devices and instances, under `key`.
fn write_placement(f: &mut fmt::Formatter<'_>, key: &str, placement: &Placement) -> fmt::Result {
    match &placement.devices {
        Some(devices) => writeln!(f, "{key}.devices = {devices:?}")?,
        None => writeln!(f, "# {key}.devices: unset (all of the sidecar's)")?,
    }
    writeln!(
        f,
        "{key}.instances = {}  # per device, or on the CPU without a GPU",
        placement.instances
    )
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
