//! Group commit: concurrent callers' small writes go to Redis as one script call per
//! batch instead of one call each.
//!
//! Under load a submission's Redis cost was mostly per call, not per write: the script
//! invocation, the round trip and its two syscalls on each side. A worker takes whatever
//! is queued (up to `max_batch`), runs it as one call, and answers each caller. Up to
//! `max_in_flight` calls run at once, so a caller never waits for a whole batch ahead of it
//! unless that many are already out; only then does the next batch gather. A quiet gateway
//! pays one round trip as before, a busy one one per batch. Each item keeps its own
//! outcome; a failure of the whole call is every caller's error.
//!
//! A caller that goes away does not cancel its item: it is already part of a batch, and the
//! write it asked for still happens (the callers here run on tasks of their own anyway).
//!
//! The worker and its calls belong to a [`Stage`]: when it stops, new items are refused
//! (the caller gets an error, as when a call fails), the items already queued still run,
//! and the stage waits for the calls in flight.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::lifecycle::Stage;

use proto::store::StoreError;

type Reply<O> = oneshot::Sender<Result<O, StoreError>>;

pub struct GroupCommit<I, O> {
    tx: mpsc::Sender<(I, Reply<O>)>,
}

impl<I: Send + 'static, O: Send + 'static> GroupCommit<I, O> {
    /// Spawns the worker on `stage`. `run` gets the items in arrival order and returns one
    /// outcome per item, in the same order.
    pub fn spawn<F, Fut>(max_batch: usize, max_in_flight: usize, stage: &Stage, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<Result<O, StoreError>>, StoreError>> + Send + 'static,
    {
        let max_batch = max_batch.max(1);
        let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
        let (tx, mut rx) = mpsc::channel::<(I, Reply<O>)>(max_batch * 4);
        let (stop, calls) = (stage.token(), stage.clone());
        stage.spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    next = rx.recv() => next,
                    () = stop.cancelled(), if !rx.is_closed() => {
                        // Refuse new items; what is queued still runs, then recv ends.
                        rx.close();
                        continue;
                    }
                };
                let Some((item, reply)) = next else { return };
                // Wait for a free slot before gathering: what queues meanwhile joins this batch.
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let mut items = vec![item];
                let mut replies = vec![reply];
                while items.len() < max_batch
                    && let Ok((item, reply)) = rx.try_recv()
                {
                    items.push(item);
                    replies.push(reply);
                }
                metrics::histogram!("redis_group_commit_batch_size").record(items.len() as f64);
                let call = run(items);
                calls.spawn(async move {
                    answer(replies, call.await);
                    drop(permit);
                });
            }
        });
        Self { tx }
    }

    /// Queues one item and waits for its outcome.
    pub async fn call(&self, item: I) -> Result<O, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let gone = || StoreError::Reply("group commit worker stopped".into());
        self.tx.send((item, reply)).await.map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

fn answer<O>(replies: Vec<Reply<O>>, result: Result<Vec<Result<O, StoreError>>, StoreError>) {
    let n = replies.len();
    match result {
        Ok(outcomes) if outcomes.len() == n => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Ok(outcomes) => {
            let short = format!("{} outcomes for {n} items", outcomes.len());
            for reply in replies {
                let _ = reply.send(Err(StoreError::Reply(short.clone())));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.duplicate()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::lifecycle::Background;

    fn stage() -> (Background, Stage) {
        let mut bg = Background::new();
        let stage = bg.stage("group commit", Duration::from_secs(5));
        (bg, stage)
    }

    #[tokio::test]
    async fn concurrent_callers_share_calls_and_each_gets_its_own_outcome() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let (_bg, stage) = stage();
        let gc = Arc::new(GroupCommit::spawn(16, 2, &stage, move |items: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(items
                    .into_iter()
                    .map(|i| if i % 2 == 0 { Ok(i * 10) } else { Err(StoreError::Reply(format!("odd {i}"))) })
                    .collect())
            }
        }));
        let joins: Vec<_> = (0..40u32)
            .map(|i| {
                let gc = gc.clone();
                tokio::spawn(async move { (i, gc.call(i).await) })
            })
            .collect();
        for j in joins {
            let (i, out) = j.await.unwrap();
            match out {
                Ok(v) => assert_eq!(v, i * 10),
                Err(e) => assert_eq!(e.to_string(), format!("unexpected script reply: odd {i}")),
            }
        }
        let n = calls.load(Ordering::SeqCst);
        assert!((3..40).contains(&n), "40 concurrent items took {n} calls");
    }

    #[tokio::test]
    async fn a_failed_call_fails_every_item_in_it_and_the_worker_goes_on() {
        let (_bg, stage) = stage();
        let gc = GroupCommit::spawn(8, 2, &stage, |items: Vec<u32>| async move {
            if items.contains(&0) {
                Err(StoreError::Reply("down".into()))
            } else {
                Ok(items.into_iter().map(Ok).collect())
            }
        });
        assert!(gc.call(0).await.is_err());
        assert_eq!(gc.call(7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_short_reply_is_an_error_not_a_hang() {
        let (_bg, stage) = stage();
        let gc =
            GroupCommit::spawn(
                8,
                2,
                &stage,
                |_items: Vec<u32>| async move { Ok(Vec::<Result<u32, StoreError>>::new()) },
            );
        assert!(gc.call(1).await.is_err());
    }

    #[tokio::test]
    async fn stopping_refuses_new_items_and_waits_for_the_calls_in_flight() {
        let (bg, stage) = stage();
        let done = Arc::new(AtomicUsize::new(0));
        let counted = done.clone();
        let gc = Arc::new(GroupCommit::spawn(8, 2, &stage, move |items: Vec<u32>| {
            let counted = counted.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                counted.fetch_add(items.len(), Ordering::SeqCst);
                Ok(items.into_iter().map(Ok).collect())
            }
        }));
        let first = tokio::spawn({
            let gc = gc.clone();
            async move { gc.call(1).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        bg.stop().await;
        assert_eq!(done.load(Ordering::SeqCst), 1, "the call in flight finished before stop returned");
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert!(gc.call(2).await.is_err(), "refused after the stop");
    }
}
