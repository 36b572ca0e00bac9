//! `autoscaler local`: the policy driving agent child processes on one machine.
//!
//! Every `AUTOSCALER_INTERVAL_SECONDS`: replace children that died, read the queue and
//! Redis directly (the sidecar's probe), decide, then start agents or SIGTERM **idle** ones
//! (state read from each child's `worker:{id}` hash). A busy agent is never chosen; one
//! that turns busy between the read and the signal drains its task before exiting. On
//! SIGTERM/SIGINT every child gets SIGTERM and the loop waits for them all.

pub mod fleet;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use metrics_sidecar::probe::Probe;
use proto::Keys;
use redis::aio::ConnectionManager;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::config::LocalSettings;
use crate::decision_log::{self, Action};
use crate::policy::{self, Decision, Inputs, Sample};
use fleet::Fleet;

/// What the loop has done so far, for tests and status logging.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetView {
    /// Active children (id, pid), excluding those draining after SIGTERM.
    pub agents: Vec<(String, u32)>,
    pub desired: u32,
    pub decisions: u64,
    /// Every SIGTERM we sent for scale-in: (agent id, its state when chosen).
    pub stops: Vec<(String, String)>,
    /// Children that died on their own and were replaced.
    pub replaced: u64,
    pub last: Option<Decision>,
}

/// Runs the scaling loop over local agent processes until `shutdown` resolves, then stops
/// the fleet.
pub async fn run(
    settings: LocalSettings,
    view: watch::Sender<FleetView>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = runtime::lifecycle::cancel_on(shutdown);
    let mut redis = runtime::connect::redis(&settings.common.redis)?;
    let keys = Keys::new(settings.common.key_prefix.clone());
    let mut probe = Probe::new(
        &settings.common.rabbitmq,
        &settings.common.redis,
        proto::topology::Topology::new(settings.common.input_queue.clone(), settings.common.max_deliveries),
        redis.clone(),
        keys.clone(),
        settings.common.heartbeat_ttl,
    );
    let mut fleet = Fleet::new(&settings);
    let slots = settings.policy.slots(settings.interval);
    let mut last_logged = None;
    let mut history: VecDeque<Sample> = VecDeque::with_capacity(slots);
    let mut target = settings.policy.bounds.min;
    tracing::info!(
        agent_bin = %settings.agent_bin.display(),
        min = settings.policy.bounds.min,
        max = settings.policy.bounds.max,
        interval_s = settings.interval.as_secs(),
        window_s = settings.policy.window.as_secs(),
        "local autoscaler started"
    );
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let died = fleet.reap().await.into_iter().filter(|e| !e.expected).count() as u64;
        view.send_modify(|v| v.replaced += died);
        grow(&mut fleet, target);

        let reading = tokio::select! {
            () = shutdown.cancelled() => break,
            r = probe.read() => r,
        };
        history.push_back(Sample {
            ready: reading.ready.map(u64::from),
            in_flight: reading.agents.map(|a| a.running_tasks),
        });
        while history.len() > slots {
            history.pop_front();
        }
        let states = states(&mut redis, &keys, &fleet).await;
        let active: Vec<&fleet::Agent> = fleet.active().collect();
        // Busy slots: the tasks running across live agents, from the same presence read.
        let busy = reading.agents.map(|a| a.running_tasks);
        let current = u32::try_from(active.len()).unwrap_or(u32::MAX);
        let window: Vec<Sample> = history.iter().copied().collect();
        let inputs = Inputs { window: &window, current, busy_slots: busy, bounds: settings.policy.bounds };
        let decision = policy::decide(&inputs);
        let action = if decision.changes(current) { Action::Applied } else { Action::None };
        // Every interval's line at info would drown the log of an idle fleet: info when
        // something moved, debug when it is the same as last time.
        let now = (current, busy, decision.desired, decision.reason.as_str(), window.last().copied());
        decision_log::emit("local", &inputs, &decision, action, last_logged.as_ref() == Some(&now));
        last_logged = Some(now);
        target = decision.desired;

        let mut stops = Vec::new();
        if decision.desired < current {
            let idle: Vec<String> = active
                .iter()
                .filter(|a| states.as_ref().is_some_and(|s| s.get(&a.id).is_some_and(|st| st == "idle")))
                .map(|a| a.id.clone())
                .take((current - decision.desired) as usize)
                .collect();
            if idle.len() < (current - decision.desired) as usize {
                tracing::info!(
                    idle = idle.len(),
                    excess = current - decision.desired,
                    "not enough idle agents to stop yet"
                );
            }
            for id in idle {
                fleet.stop(&id).await;
                stops.push((id, "idle".to_owned()));
            }
        } else {
            grow(&mut fleet, target);
        }
        view.send_modify(|v| {
            v.agents = fleet.active().map(|a| (a.id.clone(), a.pid)).collect();
            v.desired = decision.desired;
            v.decisions += 1;
            v.stops.extend(stops);
            v.last = Some(decision);
        });
    }
    tracing::info!(agents = fleet.agents().len(), "stopping all agents");
    fleet.stop_all().await;
    probe.close().await;
    view.send_modify(|v| v.agents.clear());
    tracing::info!("local autoscaler stopped");
    Ok(())
}

/// Starts children until `target` are active.
fn grow(fleet: &mut Fleet, target: u32) {
    while fleet.active().count() < target as usize {
        if let Err(e) = fleet.spawn() {
            tracing::error!(error = %e, "cannot start an agent; retrying next interval");
            return;
        }
    }
}

/// Each child's `state` from its `worker:{id}` hash (absent until its first heartbeat);
/// `None` when Redis does not answer, which blocks scale-in for this interval.
async fn states(redis: &mut ConnectionManager, keys: &Keys, fleet: &Fleet) -> Option<HashMap<String, String>> {
    let ids: Vec<String> = fleet.agents().iter().map(|a| a.id.clone()).collect();
    if ids.is_empty() {
        return Some(HashMap::new());
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.hget(keys.worker(id), "state");
    }
    let read = pipe.query_async::<Vec<Option<String>>>(redis);
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(states)) => Some(ids.into_iter().zip(states).filter_map(|(id, s)| Some((id, s?))).collect()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read agent states");
            None
        }
        Err(_) => {
            tracing::warn!("reading agent states timed out");
            None
        }
    }
}
