//! Shared by the agent benches: environment knobs, CPU accounting from `/proc`, and the
//! pre-fill of a queue with persistent, confirmed envelopes (the gateway's properties).

#![allow(dead_code)]

use std::time::Duration;

use futures_util::StreamExt;
use lapin::Channel;
use lapin::options::BasicPublishOptions;

pub(crate) fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 on Linux).
pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU of a process in clock ticks (0 when it cannot be read).
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// `BENCH_CPU_PIDS` = `name=pid,name=pid` (e.g. `redis=123,rabbitmq=456`): server processes
/// whose CPU the benches report per message.
pub(crate) fn named_pids() -> Vec<(String, u32)> {
    std::env::var("BENCH_CPU_PIDS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.trim().to_owned(), v.trim().parse().ok()?)))
        .collect()
}

/// `name X us/op` for each (name, ticks before, ticks after).
pub(crate) fn cpu_report(parts: &[(String, u64, u64)], ops: u64) -> String {
    let hz = clock_ticks();
    let ops = ops.max(1) as f64;
    let mut total = 0.0;
    let mut out: Vec<String> = parts
        .iter()
        .map(|(name, before, after)| {
            let us = after.saturating_sub(*before) as f64 / hz * 1e6 / ops;
            total += us;
            format!("{name} {us:.1} us/op")
        })
        .collect();
    out.push(format!("total {total:.1} us/op"));
    out.join(", ")
}

/// Publishes persistent messages `(id, body)` on a confirm channel, `concurrency` in
/// flight, and waits for every confirm. Panics on a nack or a returned message.
pub(crate) async fn publish_all(channel: &Channel, queue: &str, messages: Vec<(String, Vec<u8>)>, concurrency: usize) {
    futures_util::stream::iter(messages)
        .map(|(id, body)| async move {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &body,
                    proto::envelope::properties(&id),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
            assert!(confirm.is_ack() && confirm.take_message().is_none(), "broker refused a pre-fill message");
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
}

pub(crate) fn seconds(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}
