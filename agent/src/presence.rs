//! This agent's presence: the set of tasks it runs, its state, and the heartbeat that
//! publishes both to Redis every `AGENT_HEARTBEAT_SECONDS` and at once on every change,
//! so `/agents/count` shows busy agents without waiting for the next beat.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use proto::TaskId;
use proto::presence::{Heartbeat, WorkerState};
use proto::store::TaskStore;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Settings, hostname};

#[derive(Default)]
pub struct Registry {
    /// Runs per task: a task can briefly run twice here (an old run of a lost channel
    /// finishing while its redelivery starts), and the first to end must not mark it idle.
    running: Mutex<BTreeMap<TaskId, usize>>,
    draining: AtomicBool,
    changed: Notify,
    /// Whether any task runs; scale-in protection follows it.
    busy: watch::Sender<bool>,
}

impl Registry {
    pub fn start(&self, id: TaskId) {
        if let Ok(mut r) = self.running.lock() {
            *r.entry(id).or_default() += 1;
            metrics::gauge!("agent_running_tasks").set(r.len() as f64);
            self.set_busy(!r.is_empty());
        }
        self.changed.notify_one();
    }

    pub fn finish(&self, id: TaskId) {
        if let Ok(mut r) = self.running.lock() {
            if let Some(n) = r.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    r.remove(&id);
                }
            }
            metrics::gauge!("agent_running_tasks").set(r.len() as f64);
            self.set_busy(!r.is_empty());
        }
        self.changed.notify_one();
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// Follows busy (≥ 1 running task) and idle; a receiver sees only real changes.
    pub fn watch_busy(&self) -> watch::Receiver<bool> {
        self.busy.subscribe()
    }

    fn set_busy(&self, busy: bool) {
        self.busy.send_if_modified(|b| std::mem::replace(b, busy) != busy);
    }

    pub fn running(&self) -> Vec<TaskId> {
        self.running.lock().map(|r| r.keys().copied().collect()).unwrap_or_default()
    }

    pub fn state(&self) -> WorkerState {
        if self.draining.load(Ordering::SeqCst) {
            WorkerState::Draining
        } else if self.running().is_empty() {
            WorkerState::Idle
        } else {
            WorkerState::Busy
        }
    }
}

/// Heartbeats `registry` until `stop`, then removes this agent from the registry in Redis.
pub async fn heartbeat(registry: &Registry, store: &TaskStore, s: &Settings, stop: CancellationToken) {
    let mut conn = store.connection();
    let started_at = proto::time::rfc3339(chrono::Utc::now());
    let host = hostname();
    let mut interval = tokio::time::interval(s.heartbeat_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hb = Heartbeat {
            worker_id: s.worker_id.clone(),
            state: registry.state(),
            tasks: registry.running(),
            slots: u32::from(s.concurrency),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            host: host.clone(),
            started_at: started_at.clone(),
        };
        if let Err(e) = proto::presence::beat(&mut conn, store.keys(), &hb, s.common.heartbeat_ttl).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        tokio::select! {
            _ = interval.tick() => {}
            () = registry.changed.notified() => {}
            () = stop.cancelled() => break,
        }
    }
    match proto::presence::deregister(&mut conn, store.keys(), &s.worker_id).await {
        Ok(()) => tracing::info!("deregistered"),
        Err(e) => tracing::warn!(error = %e, "could not deregister; the entry expires with its TTL"),
    }
}
