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

//! Where the sidecar listens: `[sidecar.rpc]` (the gRPC endpoint, its socket's mode, the
//! message size limit, TLS) and `[sidecar.health]`, with the parsing of `unix:` and TCP endpoints.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::tls::TlsConfig;
use super::values::byte_count;

/// The longest path a Unix socket address can hold (`sun_path` is 108 bytes with its NUL).
const MAX_UNIX_SOCKET_PATH: usize = 107;
const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// `[sidecar.rpc]`: where the gRPC server listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RpcConfig {
    pub endpoint: Endpoint,
    /// Permissions of the socket file; only for `unix:` endpoints. Default 0660.
    pub(super) socket_mode: Option<SocketMode>,
    /// The largest message taken or sent, in bytes. Default 64 MiB.
    max_message_size: Option<MessageSize>,
    /// Whether a unary `ModelInfer` call whose caller cancels or goes away before it runs is
    /// dropped. Default true; false answers unary calls in one batch instead of two (fewer
    /// wake-ups), and only their deadlines keep them from running late.
    #[serde(default = "watch_unary_cancellation_default")]
    watch_unary_cancellation: bool,
    /// gRPC's completion queues, each with its own thread. Default: one per core, at most 4.
    completion_queues: Option<CompletionQueues>,
    /// `[sidecar.rpc.tls]`: TLS on a TCP endpoint.
    pub tls: Option<TlsConfig>,
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

    /// How many completion queues (and threads) gRPC runs: as configured, or one per core of
    /// `cores`, at most [`MAX_DEFAULT_COMPLETION_QUEUES`]. Each queue's thread is woken for
    /// the calls on it: one queue wakes the fewest threads per request, more serve more calls
    /// at once and keep serving while one handler takes long.
    pub fn completion_queues(&self, cores: usize) -> usize {
        self.completion_queues.map_or_else(
            || cores.clamp(1, MAX_DEFAULT_COMPLETION_QUEUES),
            |queues| queues.0,
        )
    }

    /// Whether a unary call's caller is watched while its request waits (see the field).
    pub fn watch_unary_cancellation(&self) -> bool {
        self.watch_unary_cancellation
    }

    /// How many completion queues gRPC runs on this host: [`Self::completion_queues`] of its
    /// cores (2 when it cannot tell).
    pub fn host_completion_queues(&self) -> usize {
        self.completion_queues(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Whether `completion-queues` was set, rather than derived from the cores.
    pub fn completion_queues_configured(&self) -> bool {
        self.completion_queues.is_some()
    }

    /// The most bytes gRPC itself takes in for one message: the limit and a margin, so that a
    /// request a little over the limit is still read and refused by the sidecar (naming the
    /// key, its stream open), and one far over it is refused by gRPC as soon as it has
    /// arrived, never parsed.
    pub fn receive_limit(&self) -> usize {
        let limit = self.max_message_size();
        limit
            .saturating_add((limit / 4).max(RECEIVE_MARGIN))
            .min(i32::MAX as usize)
    }
}

fn watch_unary_cancellation_default() -> bool {
    true
}

/// The most completion queues the default gives a host with many cores.
pub const MAX_DEFAULT_COMPLETION_QUEUES: usize = 4;
/// The most completion queues that may be configured (a typo guard).
const MAX_COMPLETION_QUEUES: i64 = 64;

/// `sidecar.rpc.completion-queues`: 1 to 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct CompletionQueues(usize);

impl TryFrom<i64> for CompletionQueues {
    type Error = String;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        match value {
            1..=MAX_COMPLETION_QUEUES => Ok(CompletionQueues(value as usize)),
            _ => Err(format!(
                "{value} is out of range: give 1 to {MAX_COMPLETION_QUEUES}, or leave it out for one per core, at most {MAX_DEFAULT_COMPLETION_QUEUES} (one queue wakes the fewest threads per request, but a slow handler then holds every call)"
            )),
        }
    }
}

/// The least a request may be over `max-message-size` and still be read whole, to be refused
/// by the sidecar itself.
const RECEIVE_MARGIN: usize = 4 << 20;

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
        match byte_count(&value) {
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

/// `[sidecar.health]`: the HTTP health endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthConfig {
    #[serde(default = "default_health_host")]
    pub host: IpAddr,
    /// 0 picks a free port; the bound address is logged.
    pub port: u16,
    /// How long one execution may run before the GPU-owner thread counts as hung (NOT_LIVE,
    /// the watchdog no longer fed): long enough for any real execution.
    #[serde(default = "default_execution_timeout", with = "execution_timeout")]
    pub execution_timeout: Duration,
}

/// The default `sidecar.health.execution-timeout`: no sane execution takes ten minutes.
pub const DEFAULT_EXECUTION_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest `execution-timeout` accepted (a typo guard: a day).
const MAX_EXECUTION_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

fn default_execution_timeout() -> Duration {
    DEFAULT_EXECUTION_TIMEOUT
}

/// `sidecar.health.execution-timeout`: a Flink-style duration, more than 0, at most a day.
mod execution_timeout {
    use std::time::Duration;

    use serde::Deserialize;

    use crate::config::endpoints::MAX_EXECUTION_TIMEOUT;
    use crate::config::values::parse_duration;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        let timeout = parse_duration(&text).map_err(serde::de::Error::custom)?;
        if timeout.is_zero() || timeout > MAX_EXECUTION_TIMEOUT {
            return Err(serde::de::Error::custom(format!(
                "{text:?} is out of range: give more than 0 and at most \"{} h\" (a day), e.g. \"10 min\"",
                MAX_EXECUTION_TIMEOUT.as_secs() / 3600
            )));
        }
        Ok(timeout)
    }
}

fn default_health_host() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
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

#[cfg(test)]
mod tests {
    use crate::config::tests::{parse, MINIMAL};
    use crate::config::Problem;

    #[test]
    fn unary_calls_are_watched_unless_told_not_to() {
        let config = parse(MINIMAL).unwrap();
        assert!(config.rpc.watch_unary_cancellation());
        assert!(config
            .to_string()
            .lines()
            .any(|l| l == "sidecar.rpc.watch-unary-cancellation = true"));
        let set = |value: &str| {
            parse(&MINIMAL.replace(
                "[sidecar.model]",
                &format!("watch-unary-cancellation = {value}\n[sidecar.model]"),
            ))
            .map(|config| config.rpc.watch_unary_cancellation())
        };
        assert_eq!(set("false"), Ok(false));
        match set("\"no\"") {
            Err(Problem::Key(key, _)) => assert_eq!(key, "sidecar.rpc.watch-unary-cancellation"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn completion_queues_default_to_the_cores_and_can_be_set() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.rpc.completion_queues(1), 1);
        assert_eq!(config.rpc.completion_queues(2), 2);
        assert_eq!(config.rpc.completion_queues(64), 4);
        let queues = |value: &str| {
            parse(&MINIMAL.replace(
                "[sidecar.model]",
                &format!("completion-queues = {value}\n[sidecar.model]"),
            ))
            .map(|config| config.rpc.completion_queues(64))
        };
        assert_eq!(queues("1"), Ok(1));
        assert_eq!(queues("8"), Ok(8));
        for bad in ["0", "65", "-1", "\"two\"", "1.5"] {
            match queues(bad) {
                Err(Problem::Key(key, message)) => {
                    assert_eq!(key, "sidecar.rpc.completion-queues", "{bad}: {message}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        let shown =
            parse(&MINIMAL.replace("[sidecar.model]", "completion-queues = 1\n[sidecar.model]"))
                .unwrap()
                .to_string();
        assert!(
            shown
                .lines()
                .any(|l| l == "sidecar.rpc.completion-queues = 1"),
            "{shown}"
        );
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
}
