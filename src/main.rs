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

//! The `gpu-sidecar` command: parse the arguments, load the configuration, set up logging,
//! run, and turn the outcome into an exit code (0 clean, 1 runtime failure, 2 bad config or
//! usage).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use gpu_sidecar::config::Config;
use gpu_sidecar::{init_logging, preflight, run, Error, EXIT_USAGE};

/// A GPU-owning gRPC sidecar for Apache Flink TaskManagers.
///
/// Exit codes: 0 clean shutdown, 1 runtime failure (bind, GPU, model, a thread died),
/// 2 bad configuration or usage; 128+N when a second signal N ends it at once.
#[derive(Debug, Parser)]
#[command(name = "gpu-sidecar", version, about, long_about)]
struct Args {
    /// The TOML configuration file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: PathBuf,

    /// Validate the configuration, check that the model file and ONNX Runtime's library are
    /// there (without opening the model), print it, and exit (0 when all is well, 2 when not).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    // Test builds only: FAILPOINTS=name=action;... makes chosen code paths fail.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => return fail(&Error::from(e)),
    };
    if args.check_config {
        // A config that names a missing model or runtime is as unusable as a malformed one.
        return match preflight(&config) {
            Ok(runtime) => {
                println!("# {}: valid; {runtime}", args.config.display());
                println!("{config}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gpu-sidecar: error: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        };
    }
    if let Err(e) = init_logging(config.log.level.into()) {
        return fail(&e);
    }
    // A panic is logged like everything else, with its thread's name; the thread's owner
    // then turns it into an orderly shutdown.
    std::panic::set_hook(Box::new(|info| log::error!("{info}")));
    match run(&config) {
        Ok(()) => {
            log::info!("exiting with code 0");
            ExitCode::SUCCESS
        }
        // `run` has logged the error already.
        Err(e) => {
            log::error!("exiting with code {}", e.exit_code());
            ExitCode::from(e.exit_code())
        }
    }
}

/// Reports an error that happened before logging was set up.
fn fail(error: &Error) -> ExitCode {
    eprintln!("gpu-sidecar: error: {error}");
    ExitCode::from(error.exit_code())
}
