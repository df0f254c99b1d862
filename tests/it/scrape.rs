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

//! `/metrics` scrapes, parsed for the tests' assertions.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::util::http;

/// A scrape of `/metrics`, parsed: each sample by its series (`name{label="v",...}`), and each
/// family's declared type.
#[derive(Debug)]
pub struct Scrape {
    pub samples: BTreeMap<String, f64>,
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// Fetches and parses `/metrics`; panics on anything that is not the Prometheus text
    /// format (a sample line `series value`, `# HELP name text`, `# TYPE name type`).
    pub fn fetch(addr: SocketAddr) -> Self {
        let (status, body) = http(addr, "GET", "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        Self::parse(&body)
    }

    pub fn parse(text: &str) -> Self {
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(comment) = line.strip_prefix("# ") {
                let mut words = comment.splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("HELP"), Some(_), Some(_)) => {}
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        assert!(
                            ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                            "bad type in {line:?}"
                        );
                        types.insert(name.to_string(), kind.to_string());
                    }
                    _ => panic!("bad comment line {line:?}"),
                }
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let name_end = series.find('{').unwrap_or(series.len());
            let name = &series[..name_end];
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {line:?}"
            );
            if name_end < series.len() {
                assert!(series.ends_with('}'), "bad labels in {line:?}");
            }
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                other => other
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            assert!(
                samples.insert(series.to_string(), value).is_none(),
                "series {series} twice"
            );
        }
        Scrape { samples, types }
    }

    /// The sum of the series of `series`'s name that carry (at least) its labels, as
    /// PromQL's `sum(name{labels})`: `inference_requests_total{outcome="ok"}` counts every
    /// model's; panics if none matches.
    pub fn get(&self, series: &str) -> f64 {
        let (name, wanted) = split_series(series);
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|(sample, _)| {
                let (sample_name, labels) = split_series(sample);
                sample_name == name && wanted.iter().all(|label| labels.contains(label))
            })
            .map(|(_, &value)| value)
            .collect();
        assert!(
            !matching.is_empty(),
            "no series {series} in {:#?}",
            self.samples
        );
        matching.iter().sum()
    }

    /// Whether any series of family `prefix` exists.
    pub fn has_family(&self, prefix: &str) -> bool {
        self.samples.keys().any(|series| series.starts_with(prefix))
    }
}

/// A series' name and its labels (`key="value"` each).
fn split_series(series: &str) -> (&str, Vec<&str>) {
    match series.split_once('{') {
        Some((name, labels)) => (
            name,
            labels
                .trim_end_matches('}')
                .split(',')
                .filter(|label| !label.is_empty())
                .collect(),
        ),
        None => (series, Vec::new()),
    }
}
