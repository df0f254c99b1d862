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

//! What a run cost the spawned sidecar in CPU, read from `/proc` before and after it: in all
//! (the process's own count, which keeps the time of threads that ended), and by thread
//! group, by name: the gRPC threads (`grpc-*`: decoding, checking, encoding, sending), the
//! execution threads (`gpu-owner*`, `cpu-instance-*`: batching, joining inputs, ONNX
//! Runtime, splitting outputs) and the rest. Per request and per execution. Beside the CPU,
//! the threads' context switches (`/proc/.../status`, voluntary and not): how many times a
//! request put a thread to sleep and woke it, a count that the machine's noise does not blur
//! as it blurs CPU time.

use std::collections::BTreeMap;
use std::time::Duration;

/// `/proc`'s clock: Linux reports CPU time in USER_HZ, 100 ticks a second on every ABI.
const TICKS_PER_SECOND: u64 = 100;

/// What one thread has spent so far: its name, CPU ticks and context switches.
#[derive(Debug, Clone)]
struct ThreadSample {
    name: String,
    ticks: u64,
    switches: u64,
}

/// CPU ticks so far: the process's, and each live thread's by name.
#[derive(Debug, Clone)]
pub(crate) struct CpuSample {
    process: u64,
    threads: BTreeMap<u32, ThreadSample>,
}

/// CPU ticks (user + system) and the name of `/proc/.../stat`.
fn read_stat(path: &str) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // Fields 14 and 15 of stat(5), utime and stime; the first after the name is field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// A thread's context switches so far, voluntary (it waited) and not (it was preempted), from
/// its `status`.
fn read_switches(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let count = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.trim().parse::<u64>().ok())
    };
    Some(count("voluntary_ctxt_switches:")? + count("nonvoluntary_ctxt_switches:")?)
}

/// The CPU the process `pid` has spent so far; `None` when `/proc` does not tell.
pub(crate) fn sample(pid: u32) -> Option<CpuSample> {
    let (_, process) = read_stat(&format!("/proc/{pid}/stat"))?;
    let mut threads = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((name, ticks)) = read_stat(&format!("/proc/{pid}/task/{tid}/stat")) {
            let switches = read_switches(&format!("/proc/{pid}/task/{tid}/status")).unwrap_or(0);
            threads.insert(
                tid,
                ThreadSample {
                    name,
                    ticks,
                    switches,
                },
            );
        }
    }
    Some(CpuSample { process, threads })
}

/// The group a thread's name puts it in.
fn group(name: &str) -> &'static str {
    if name.starts_with("gpu-owner") || name.starts_with("cpu-instance") {
        "execution"
    } else if name.starts_with("grpc") {
        "grpc"
    } else {
        "other"
    }
}

/// The CPU a run took, in all and by group, and the context switches of the threads that
/// lived to its end, by group.
#[derive(Debug, Clone)]
pub(crate) struct CpuSpent {
    pub(crate) total: Duration,
    pub(crate) by_group: BTreeMap<&'static str, Duration>,
    pub(crate) switches_by_group: BTreeMap<&'static str, u64>,
}

impl CpuSpent {
    /// What was spent between `before` and `after`.
    pub(crate) fn between(before: &CpuSample, after: &CpuSample) -> Self {
        let ticks = |n: u64| Duration::from_micros(n * 1_000_000 / TICKS_PER_SECOND);
        let mut by_group: BTreeMap<&'static str, Duration> = BTreeMap::new();
        let mut switches_by_group: BTreeMap<&'static str, u64> =
            ["execution", "grpc", "other"].map(|g| (g, 0)).into();
        let mut grouped = 0;
        for (tid, now) in &after.threads {
            let then = before.threads.get(tid);
            let spent = now.ticks.saturating_sub(then.map_or(0, |t| t.ticks));
            let group = group(&now.name);
            *switches_by_group.entry(group).or_default() +=
                now.switches.saturating_sub(then.map_or(0, |t| t.switches));
            if group != "other" {
                grouped += spent;
                *by_group.entry(group).or_default() += ticks(spent);
            }
        }
        // The threads are read one by one, after the process: over a short run their ticks may
        // add up to more than its count; the total is then theirs.
        let total = after.process.saturating_sub(before.process).max(grouped);
        by_group.insert("other", ticks(total - grouped));
        CpuSpent {
            total: ticks(total),
            by_group,
            switches_by_group,
        }
    }

    /// Microseconds of CPU per one of `count` (requests, executions); `None` for none.
    pub(crate) fn per(&self, count: f64, group: Option<&str>) -> Option<f64> {
        let spent = match group {
            Some(group) => self.by_group.get(group).copied().unwrap_or_default(),
            None => self.total,
        };
        (count > 0.0).then(|| spent.as_secs_f64() * 1e6 / count)
    }

    /// Context switches per one of `count` (requests), in all or of `group`'s threads.
    pub(crate) fn switches_per(&self, count: f64, group: Option<&str>) -> Option<f64> {
        let switches: u64 = match group {
            Some(group) => self
                .switches_by_group
                .get(group)
                .copied()
                .unwrap_or_default(),
            None => self.switches_by_group.values().sum(),
        };
        (count > 0.0).then(|| switches as f64 / count)
    }

    /// The JSON of a run that made `requests` requests of `rows` rows in `executions`.
    pub(crate) fn json(
        &self,
        requests: f64,
        rows: f64,
        executions: Option<f64>,
    ) -> serde_json::Value {
        let per_request: BTreeMap<&str, Option<f64>> = self
            .by_group
            .keys()
            .map(|group| (*group, self.per(requests, Some(group))))
            .collect();
        let switches_per_request: BTreeMap<&str, Option<f64>> = self
            .switches_by_group
            .keys()
            .map(|group| (*group, self.switches_per(requests, Some(group))))
            .collect();
        serde_json::json!({
            "seconds": self.total.as_secs_f64(),
            "context_switches_per_request": self.switches_per(requests, None),
            "context_switches_per_request_by_threads": switches_per_request,
            "us_per_request": self.per(requests, None),
            "us_per_row": self.per(requests * rows, None),
            "us_per_request_by_threads": per_request,
            "execution_threads_us_per_execution":
                executions.and_then(|n| self.per(n, Some("execution"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_its_own_cpu_and_groups_threads_by_name() {
        let before = sample(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let after = sample(std::process::id()).unwrap();
        let spent = CpuSpent::between(&before, &after);
        assert!(spent.total >= spent.by_group["other"]);
        // Every thread that lived through it is counted: its switches never go down.
        assert_eq!(spent.switches_by_group.len(), 3);
        assert!(read_switches(&format!("/proc/{}/status", std::process::id())).is_some());
        // A thread that sleeps switches out each time (voluntarily).
        let before = sample(std::process::id()).unwrap();
        let sleeper = std::thread::Builder::new()
            .name("grpc-test".into())
            .spawn(|| {
                let started = sample(std::process::id()).unwrap();
                for _ in 0..20 {
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
                (started, sample(std::process::id()).unwrap())
            })
            .unwrap();
        let (started, after) = sleeper.join().unwrap();
        let spent = CpuSpent::between(&started, &after);
        assert!(spent.switches_by_group["grpc"] >= 20, "{spent:?}");
        assert!(spent.switches_per(20.0, Some("grpc")).unwrap() >= 1.0);
        assert!(
            CpuSpent::between(&before, &after)
                .switches_per(20.0, None)
                .unwrap()
                >= 1.0
        );
        assert_eq!(group("gpu-owner-1"), "execution");
        assert_eq!(group("cpu-instance-2"), "execution");
        assert_eq!(group("grpc-server-3"), "grpc");
        assert_eq!(group("health"), "other");
        assert_eq!(spent.per(0.0, None), None);
    }
}
