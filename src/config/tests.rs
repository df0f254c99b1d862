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

//! The configuration's unit tests: parsing, validation, display.

use std::net::{IpAddr, Ipv4Addr};

use super::*;

pub(super) const MINIMAL: &str = r#"
        [sidecar.rpc]
        endpoint = "unix:/tmp/s.sock"
        [sidecar.model]
        uri = "model.bin"
        [sidecar.health]
        port = 0
    "#;

pub(super) fn parse(text: &str) -> Result<Config, Problem> {
    Config::parse(text, Path::new("/etc/flink"))
}

#[test]
fn a_models_text_is_checked_against_its_own_batching() {
    let tables = MINIMAL.replace(
        "[sidecar.model]\n        uri = \"model.bin\"",
        "[[sidecar.models]]\nname = \"embed\"\nuri = \"m.onnx\"\n\
             [sidecar.models.text]\ntokenizer = \"t.json\"\nmax-length = 512\n\
             [sidecar.models.batching]\nmax-batch-tokens = 256\n",
    );
    let (key, message) = parse_err(&tables);
    assert_eq!(
        key, "sidecar.models[0].batching.max-batch-tokens",
        "{message}"
    );
    assert!(
        message.contains("sidecar.models[0].text.max-length"),
        "{message}"
    );
    let folder = Path::new("/models/embed");
    let (key, _) = ModelSettings::parse(
        "[text]\ntokenizer = \"t.json\"\nmax-length = 512\n",
        folder,
        &BatchingConfig {
            max_batch_tokens: 256,
            ..BatchingConfig::default()
        },
    )
    .unwrap_err();
    assert_eq!(key, "sidecar.batching.max-batch-tokens");
    let settings = ModelSettings::parse(
        "[text]\ntokenizer = \"t.json\"\n",
        folder,
        &BatchingConfig::default(),
    )
    .unwrap();
    assert_eq!(
        settings.text.unwrap().tokenizer,
        Path::new("/models/embed/t.json")
    );
}

pub(super) fn parse_err(text: &str) -> (String, String) {
    match parse(text).expect_err("config should be rejected") {
        Problem::Key(key, message) => (key, message),
        Problem::Missing(key) => (key, "is required".to_string()),
    }
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.rpc.endpoint, Endpoint::Unix("/tmp/s.sock".into()));
    assert_eq!(config.rpc.socket_mode(), 0o660);
    assert_eq!(
        config.model.as_ref().unwrap().uri.path,
        Path::new("/etc/flink/model.bin")
    );
    assert_eq!(config.health.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(config.shutdown.grace_period.0, Duration::from_secs(30));
    assert_eq!(config.gpu.mode, GpuMode::Auto);
    assert_eq!(config.gpu.device, DeviceOrdinal(0));
    assert_eq!(config.log.level, LogLevel::Info);
}

#[test]
fn effective_config_is_printed_with_defaults() {
    let shown = parse(MINIMAL).unwrap().to_string();
    for line in [
        "sidecar.rpc.endpoint = \"unix:/tmp/s.sock\"",
        "sidecar.rpc.socket-mode = \"0660\"",
        "sidecar.rpc.max-message-size = \"64.0 MiB\"  # 67108864 bytes",
        "sidecar.model.uri = \"model.bin\"  # /etc/flink/model.bin",
        "sidecar.health.host = \"127.0.0.1\"",
        "sidecar.shutdown.grace-period = \"30s\"  # 30000 ms",
        "sidecar.gpu.mode = \"auto\"",
        "sidecar.gpu.device = 0",
        "sidecar.log.level = \"info\"",
    ] {
        assert!(
            shown.lines().any(|l| l == line),
            "{line:?} missing from:\n{shown}"
        );
    }
}

#[test]
fn full_config_is_read() {
    let config = parse(
        r#"
            [sidecar.rpc]
            endpoint = "[::1]:50051"
            [sidecar.model]
            uri = "file:///models/m.bin"
            [sidecar.health]
            host = "0.0.0.0"
            port = 8558
            [sidecar.shutdown]
            grace-period = "2 min"
            [sidecar.gpu]
            mode = "required"
            device = 3
            [sidecar.log]
            level = "debug"
            "#,
    )
    .unwrap();
    assert_eq!(
        config.rpc.endpoint,
        Endpoint::Tcp {
            host: "::1".into(),
            port: 50051
        }
    );
    assert_eq!(
        config.model.as_ref().unwrap().uri.path,
        Path::new("/models/m.bin")
    );
    assert_eq!(config.health.port, 8558);
    assert_eq!(config.shutdown.grace_period.0, Duration::from_secs(120));
    assert_eq!(config.gpu.mode, GpuMode::Required);
    assert_eq!(config.gpu.device, DeviceOrdinal(3));
    assert_eq!(config.log.level, LogLevel::Debug);
}

#[test]
fn unknown_key_is_named() {
    let (key, message) = parse_err(&MINIMAL.replace("port = 0", "port = 0\nprot = 1"));
    assert!(key.contains("prot"), "{key}: {message}");
    assert!(message.contains("unknown field"), "{message}");
}

#[test]
fn a_mistyped_required_key_is_named_as_unknown_not_missing() {
    let (key, message) = parse_err(&MINIMAL.replace("endpoint =", "endpont ="));
    assert_eq!(key, "sidecar.rpc.endpont", "{message}");
    assert!(
        message.contains("unknown field `endpont`") && message.contains("`endpoint`"),
        "{message}"
    );
}

#[test]
fn text_settings_are_read_with_their_defaults_and_checked() {
    let config = parse(&format!(
        "{MINIMAL}\n[sidecar.model.text]\ntokenizer = \"tok/tokenizer.json\"\n"
    ))
    .unwrap();
    let text = config.model.as_ref().unwrap().text.as_ref().unwrap();
    assert_eq!(
        text.tokenizer,
        PathBuf::from("/etc/flink/tok/tokenizer.json")
    );
    assert_eq!(text.input, "text");
    assert_eq!((text.max_length, text.truncate), (None, true));
    assert_eq!(text.pooling, Pooling::Mean);
    assert!(text.normalized());
    assert_eq!(config.batching.delay_mode, DelayMode::Adaptive);
    assert_eq!(config.batching.max_batch_tokens, 16384);
    let shown = config.to_string();
    assert!(
        shown.contains("sidecar.model.text.pooling = \"mean\""),
        "{shown}"
    );
    assert!(
        shown.contains("sidecar.batching.delay-mode = \"adaptive\""),
        "{shown}"
    );

    let (key, message) = parse_err(&format!(
        "{MINIMAL}\n[sidecar.model.text]\ntokenizer = \"t.json\"\npooling = \"max\"\n"
    ));
    assert_eq!(key, "sidecar.model.text.pooling", "{message}");
    let (key, message) = parse_err(&format!(
            "{MINIMAL}\n[sidecar.model.text]\ntokenizer = \"t.json\"\npooling = \"none\"\nnormalize = true\n"
        ));
    assert_eq!(key, "sidecar.model.text.normalize", "{message}");
    let (key, message) = parse_err(&format!(
        "{MINIMAL}\n[sidecar.model.text]\ntokenizer = \"t.json\"\nmax-length = 0\n"
    ));
    assert_eq!(key, "sidecar.model.text.max-length", "{message}");
    let (key, message) = parse_err(&format!(
        "{MINIMAL}\n[sidecar.batching]\ndelay-mode = \"sometimes\"\n"
    ));
    assert_eq!(key, "sidecar.batching.delay-mode", "{message}");
    assert_eq!(config.batching.max_padding(true), 0.5);
    assert_eq!(config.batching.max_padding(false), 0.2);
    let capped = parse(&format!(
        "{MINIMAL}\n[sidecar.batching]\nmax-padding = 0.3\n"
    ))
    .unwrap();
    assert_eq!(capped.batching.max_padding(true), 0.3);
    let (key, message) = parse_err(&format!(
        "{MINIMAL}\n[sidecar.batching]\nmax-padding = 1.5\n"
    ));
    assert_eq!(key, "sidecar.batching.max-padding", "{message}");
}

#[test]
fn unknown_table_is_named() {
    let (key, message) = parse_err(&format!("{MINIMAL}\n[sidecar.cache]\nsize = 1\n"));
    assert!(key.contains("cache"), "{key}: {message}");
}

#[test]
fn wrong_type_is_named() {
    let (key, message) = parse_err(&MINIMAL.replace("port = 0", "port = \"8080\""));
    assert_eq!(key, "sidecar.health.port", "{message}");
    assert!(message.contains("invalid type"), "{message}");
}

#[test]
fn out_of_range_port_is_named() {
    let (key, _) = parse_err(&MINIMAL.replace("port = 0", "port = 70000"));
    assert_eq!(key, "sidecar.health.port");
}

#[test]
fn missing_required_key_is_named() {
    let missing = |text: &str| parse(text).expect_err("rejected");
    assert_eq!(
        missing(&MINIMAL.replace("port = 0", "")),
        Problem::Missing("sidecar.health.port".to_string())
    );
    assert_eq!(
        missing(""),
        Problem::Missing("sidecar.rpc.endpoint".to_string())
    );
    assert_eq!(
        missing("[sidecar.rpc]\nendpoint = \"unix:/tmp/s.sock\"\n"),
        Problem::Missing("sidecar.model.uri".to_string())
    );
    assert_eq!(
        missing("sidecar = 3"),
        Problem::Missing("sidecar.rpc.endpoint".to_string())
    );
}

#[test]
fn model_and_batching_defaults_and_values() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.model.as_ref().unwrap().name(), "model");
    assert_eq!(config.runtime_library(), None);
    assert_eq!(config.batching.max_batch_size, 64);
    assert_eq!(config.batching.max_queue_delay, Duration::from_millis(1));
    assert_eq!(config.batching.max_queue_size, 1024);
    assert_eq!(config.batching.default_timeout, None);
    let config = parse(&MINIMAL.replace(
            "uri = \"model.bin\"",
            "uri = \"m.onnx\"\nname = \"mlp-v2\"\nruntime-library = \"lib/libonnxruntime.so\"\nintra-op-threads = 3\n[sidecar.batching]\nmax-batch-size = 0\nmax-queue-delay = \"0 ms\"\nmax-queue-size = 5\ndefault-timeout = \"2 s\"",
        ))
        .unwrap();
    assert_eq!(config.model.as_ref().unwrap().name(), "mlp-v2");
    assert_eq!(
        config.runtime_library(),
        Some(Path::new("/etc/flink/lib/libonnxruntime.so"))
    );
    assert_eq!(
        config.model.as_ref().unwrap().intra_op_threads,
        Some(ThreadCount(3))
    );
    assert_eq!(config.batching.max_batch_size, 0);
    assert_eq!(config.batching.max_queue_delay, Duration::ZERO);
    assert_eq!(config.batching.max_queue_size, 5);
    assert_eq!(
        config.batching.default_timeout,
        Some(Duration::from_secs(2))
    );
    let bare = parse(&MINIMAL.replace(
        "uri = \"model.bin\"",
        "uri = \"m.onnx\"\nruntime-library = \"libonnxruntime.so.1\"",
    ))
    .unwrap();
    assert_eq!(
        bare.runtime_library(),
        Some(Path::new("libonnxruntime.so.1"))
    );
    assert_eq!(bare.model.as_ref().unwrap().name(), "m");
}

#[test]
fn bad_values_are_named() {
    let cases = [
        (
            "endpoint = \"unix:/tmp/s.sock\"",
            "endpoint = \"unix:rel.sock\"",
            "sidecar.rpc.endpoint",
        ),
        (
            "endpoint = \"unix:/tmp/s.sock\"",
            "endpoint = \"localhost\"",
            "sidecar.rpc.endpoint",
        ),
        (
            "uri = \"model.bin\"",
            "uri = \"s3://bucket/m\"",
            "sidecar.model.uri",
        ),
        (
            "uri = \"model.bin\"",
            "uri = \"file://remote/m\"",
            "sidecar.model.uri",
        ),
        (
            "port = 0",
            "port = 0\nhost = \"localhost\"",
            "sidecar.health.host",
        ),
        (
            "port = 0",
            "port = 0\n[sidecar.gpu]\nmode = \"maybe\"",
            "sidecar.gpu.mode",
        ),
        (
            "port = 0",
            "port = 0\n[sidecar.gpu]\ndevice = -1",
            "sidecar.gpu.device",
        ),
        (
            "port = 0",
            "port = 0\n[sidecar.log]\nlevel = \"loud\"",
            "sidecar.log.level",
        ),
        (
            "port = 0",
            "port = 0\n[sidecar.shutdown]\ngrace-period = \"soon\"",
            "sidecar.shutdown.grace-period",
        ),
        (
            "port = 0",
            "port = 0\n[sidecar.shutdown]\ngrace-period = \"0 s\"",
            "sidecar.shutdown.grace-period",
        ),
        (
            "port = 0",
            "port = 0\n[sidecar.shutdown]\ngrace-period = \"2 h\"",
            "sidecar.shutdown.grace-period",
        ),
        (
            "endpoint = \"unix:/tmp/s.sock\"",
            "endpoint = \"unix:/tmp/s.sock\"\nsocket-mode = \"0999\"",
            "sidecar.rpc.socket-mode",
        ),
        (
            "uri = \"model.bin\"",
            "uri = \"model.bin\"\nname = \"a b\"",
            "sidecar.model.name",
        ),
        (
            "uri = \"model.bin\"",
            "uri = \"model.bin\"\nintra-op-threads = 0",
            "sidecar.model.intra-op-threads",
        ),
        (
            "uri = \"model.bin\"",
            "uri = \"model.bin\"\nruntime-library = \"\"",
            "sidecar.model.runtime-library",
        ),
        (
            "port = 0",
            "port = 0\n[sidecar.batching]\nmax-batch-size = -1",
            "sidecar.batching.max-batch-size",
        ),
        (
            "port = 0",
            "port = 0\n[sidecar.batching]\nmax-queue-size = 0",
            "sidecar.batching.max-queue-size",
        ),
        (
            "port = 0",
            "port = 0\n[sidecar.batching]\nmax-queue-delay = \"a while\"",
            "sidecar.batching.max-queue-delay",
        ),
        (
            "port = 0",
            "port = 0\n[sidecar.batching]\ndefault-timeout = \"0 s\"",
            "sidecar.batching.default-timeout",
        ),
        (
            "port = 0",
            "port = 0\n[sidecar.batching]\nqueue = 1",
            "sidecar.batching.queue",
        ),
    ];
    for (from, to, key) in cases {
        let text = MINIMAL.replace(from, to);
        let (got_key, message) = parse_err(&text);
        assert_eq!(got_key, key, "for {to:?}: {message}");
    }
}

#[test]
fn socket_mode_with_tcp_endpoint_is_rejected() {
    let text = MINIMAL.replace(
        "endpoint = \"unix:/tmp/s.sock\"",
        "endpoint = \"127.0.0.1:0\"\nsocket-mode = \"0600\"",
    );
    let (key, message) = parse_err(&text);
    assert_eq!(key, "sidecar.rpc.socket-mode");
    assert!(message.contains("unix"), "{message}");
}

#[test]
fn rpc_and_health_on_one_port_are_rejected() {
    let text = MINIMAL
        .replace("unix:/tmp/s.sock", "0.0.0.0:8558")
        .replace("port = 0", "port = 8558");
    let (key, message) = parse_err(&text);
    assert_eq!(key, "sidecar.health.port");
    assert!(message.contains("8558"), "{message}");
}

#[test]
fn malformed_toml_is_reported() {
    let (_, message) = parse_err("[sidecar.rpc\nendpoint = 1");
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn endpoints_parse() {
    let unix = |p: &str| Ok(Endpoint::Unix(PathBuf::from(p)));
    let tcp = |h: &str, port| {
        Ok(Endpoint::Tcp {
            host: h.to_string(),
            port,
        })
    };
    assert_eq!("unix:/run/s.sock".parse(), unix("/run/s.sock"));
    assert_eq!("unix:///run/s.sock".parse(), unix("/run/s.sock"));
    assert_eq!("127.0.0.1:50051".parse(), tcp("127.0.0.1", 50051));
    assert_eq!("[::1]:0".parse(), tcp("::1", 0));
    assert_eq!("sidecar.local:9000".parse(), tcp("sidecar.local", 9000));
    assert_eq!("localhost:1".parse(), tcp("localhost", 1));
}

#[test]
fn malformed_endpoints_are_rejected() {
    let long = format!("unix:/{}", "a".repeat(120));
    for bad in [
        "",
        "unix:",
        "unix:relative.sock",
        "unix://host/s.sock",
        "unix:/tmp/dir/",
        long.as_str(),
        "localhost",
        "localhost:",
        "localhost:99999",
        "localhost:-1",
        ":50051",
        "::1:50051",
        "[::1:50051",
        "[::1]50051",
        "[nothost]:1",
        "bad_host:1",
        "-host:1",
        "300.1.1.1:1",
        "http://localhost:1",
    ] {
        assert!(
            bad.parse::<Endpoint>().is_err(),
            "{bad:?} should be rejected"
        );
    }
}

#[test]
fn endpoint_display_round_trips() {
    for s in ["unix:/a/b.sock", "127.0.0.1:5", "[::1]:7", "host:9"] {
        assert_eq!(s.parse::<Endpoint>().unwrap().to_string(), s);
    }
}

#[test]
fn durations_parse_flink_style() {
    let ok = |s: &str, d: Duration| assert_eq!(parse_duration(s), Ok(d), "{s}");
    ok("30 s", Duration::from_secs(30));
    ok("30s", Duration::from_secs(30));
    ok("500 ms", Duration::from_millis(500));
    ok("2 min", Duration::from_secs(120));
    ok("1 h", Duration::from_secs(3600));
    ok("1500", Duration::from_millis(1500));
    ok(" 10 seconds ", Duration::from_secs(10));
    for bad in [
        "",
        "s",
        "ten s",
        "30 parsecs",
        "-1 s",
        "99999999999999999999999",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn socket_modes_parse() {
    assert_eq!(
        SocketMode::try_from("0660".to_string()),
        Ok(SocketMode(0o660))
    );
    assert_eq!(
        SocketMode::try_from("600".to_string()),
        Ok(SocketMode(0o600))
    );
    assert_eq!(
        SocketMode::try_from("0o777".to_string()),
        Ok(SocketMode(0o777))
    );
    for bad in ["", "rw", "0999", "01777", "7777", "-1"] {
        assert!(SocketMode::try_from(bad.to_string()).is_err(), "{bad:?}");
    }
}

#[test]
fn model_uris_resolve() {
    let base = Path::new("/etc/flink");
    let path_of = |uri: &str| {
        let text = MINIMAL.replace("uri = \"model.bin\"", &format!("uri = {uri:?}"));
        Config::parse(&text, base)
            .map(|c| c.model.unwrap().uri.path)
            .map_err(|_| ())
    };
    assert_eq!(path_of("m/x.bin"), Ok(PathBuf::from("/etc/flink/m/x.bin")));
    assert_eq!(path_of("/abs/x.bin"), Ok(PathBuf::from("/abs/x.bin")));
    assert_eq!(
        path_of("file:///abs/x%20y.bin"),
        Ok(PathBuf::from("/abs/x y.bin"))
    );
    assert_eq!(
        path_of("file://localhost/abs/x.bin"),
        Ok(PathBuf::from("/abs/x.bin"))
    );
    assert!(path_of("").is_err());
    assert!(path_of("https://example.com/m.bin").is_err());
}
