//! One owner of a process's background tasks: [`Background`] stops them in the order their
//! [`Stage`]s were declared, each awaited for at most its grace, and logs either way.
//!
//! Every entry point (`gateway::run`, `agent::run`, `metrics_sidecar::run`,
//! `autoscaler::local::run`) takes a shutdown *future* last, as `main` passes
//! [`crate::shutdown::signal`] and a test its own trigger; inside, [`cancel_on`] turns it
//! into the token the loops select on.
//!
//! Guarantees: a stage is cancelled only after every stage declared before it has stopped
//! (or used up its grace); `stop` returns within the sum of the graces; tasks spawned on a
//! stage while it is stopping (e.g. an undo started by a publish it is waiting for) are
//! waited for too.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// The background tasks of a process, by stage.
#[derive(Default)]
pub struct Background {
    stages: Vec<Stage>,
}

/// A group of background tasks stopped together: its token is cancelled, then its tasks
/// are awaited for up to `grace`. Cheap to clone; the clones share the tasks.
#[derive(Clone)]
pub struct Stage {
    name: &'static str,
    stop: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
}

impl Background {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares the next stage: stages stop in the order they are declared.
    pub fn stage(&mut self, name: &'static str, grace: Duration) -> Stage {
        let stage = Stage { name, stop: CancellationToken::new(), tasks: TaskTracker::new(), grace };
        self.stages.push(stage.clone());
        stage
    }

    /// Stops every stage in order, each awaited for at most its grace.
    pub async fn stop(self) {
        for stage in self.stages {
            stage.stop().await;
        }
    }
}

impl Stage {
    /// Cancelled when this stage stops; a task of the stage ends when it sees it.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs `task` as part of this stage, in the current span.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Boxed first: a large future (a submission's publish) is then moved as a pointer, not
        // copied whole at each wrapper on its way into the task (callgrind, issue 25).
        self.tasks.spawn(Box::pin(task).in_current_span());
    }

    /// Makes a task spawned elsewhere part of this stage: stopping waits for it.
    pub fn track<T: Send + 'static>(&self, handle: JoinHandle<T>) {
        self.tasks.spawn(async move {
            let _ = handle.await;
        });
    }

    async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(self.grace, self.tasks.wait()).await {
            Ok(()) => {
                let ms = started.elapsed().as_millis() as u64;
                tracing::info!(stage = self.name, ms, "background tasks stopped");
            }
            Err(_) => tracing::warn!(
                stage = self.name,
                grace_ms = self.grace.as_millis() as u64,
                left = self.tasks.len(),
                "background tasks did not stop within their grace; leaving them"
            ),
        }
    }
}

/// A token cancelled when `shutdown` resolves.
pub fn cancel_on(shutdown: impl Future<Output = ()> + Send + 'static) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(
        async move {
            shutdown.await;
            cancel.cancel();
        }
        .in_current_span(),
    );
    token
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stages_stop_in_declared_order_each_within_its_grace() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut bg = Background::new();
        for (name, linger) in [("first", 1), ("stuck", 3600), ("last", 0)] {
            let stage = bg.stage(name, Duration::from_secs(5));
            let (stop, order) = (stage.token(), order.clone());
            stage.spawn(async move {
                stop.cancelled().await;
                tokio::time::sleep(Duration::from_secs(linger)).await;
                order.lock().unwrap().push(name);
            });
        }
        let started = tokio::time::Instant::now();
        bg.stop().await;
        // "stuck" used up its 5 s grace and was left; "last" was cancelled only after it.
        assert_eq!(*order.lock().unwrap(), ["first", "last"]);
        assert_eq!(started.elapsed().as_secs(), 1 + 5);
    }

    #[tokio::test]
    async fn a_tracked_handle_is_awaited_and_a_future_cancels_its_token() {
        let mut bg = Background::new();
        let stage = bg.stage("tracked", Duration::from_secs(5));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let token = cancel_on(async move {
            let _ = rx.await;
        });
        let done = Arc::new(Mutex::new(false));
        let flag = done.clone();
        stage.track(tokio::spawn(async move {
            token.cancelled().await;
            *flag.lock().unwrap() = true;
        }));
        tx.send(()).unwrap();
        bg.stop().await;
        assert!(*done.lock().unwrap());
    }
}
