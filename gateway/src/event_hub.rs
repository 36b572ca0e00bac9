//! One Redis reader for every followed task: however many clients follow task streams, the
//! gateway blocks on them with **one** dedicated connection (a blocking `XREAD` would stall
//! every other command on the shared multiplexed connection).
//!
//! The hub only *notifies*: a follower registers the position it has read up to, and the
//! hub bumps that task's [`watch`] counter whenever the stream grows past what the hub has
//! seen; the follower then reads the new entries itself (`XRANGE` on the shared connection).
//! Registration is race-free: the follower's receiver exists before the hub looks at the
//! stream, and the hub's position for a new key is the follower's own, so every entry after
//! it bumps the counter.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamReadOptions, StreamReadReply};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use runtime::backoff::Backoff;
use runtime::lifecycle::Stage;

/// How long one `XREAD` blocks; a new follower's key joins the read after at most this.
pub const BLOCK: Duration = Duration::from_millis(500);

struct Registration {
    key: String,
    after: String,
    notify: watch::Sender<u64>,
}

struct Followed {
    after: String,
    notify: watch::Sender<u64>,
}

/// The handle the routes use.
#[derive(Clone)]
pub struct EventHub {
    register: mpsc::UnboundedSender<Registration>,
}

impl EventHub {
    /// Starts the reader on its own connection (`conn` must not be shared: it blocks).
    /// Runs the reader on `stage` until it stops.
    pub fn spawn(conn: ConnectionManager, stage: &Stage) -> Self {
        let (register, rx) = mpsc::unbounded_channel();
        stage.spawn(run(conn, rx, stage.token()));
        Self { register }
    }

    /// Follows stream `key` from entry id `after` (exclusive; `0-0` for the start). The
    /// receiver changes whenever the stream may have entries past what was last read.
    pub fn follow(&self, key: String, after: String) -> watch::Receiver<u64> {
        let (notify, rx) = watch::channel(0);
        // A send only fails after shutdown; the follower then ends at its own check.
        let _ = self.register.send(Registration { key, after, notify });
        rx
    }
}

async fn run(
    mut conn: ConnectionManager,
    mut register: mpsc::UnboundedReceiver<Registration>,
    stop: CancellationToken,
) {
    let mut followed: HashMap<String, Vec<Followed>> = HashMap::new();
    let mut backoff = Backoff::reconnect();
    loop {
        // Forget followers that hung up; keys nobody follows leave the read.
        followed.retain(|_, fs| {
            fs.retain(|f| !f.notify.is_closed());
            !fs.is_empty()
        });
        metrics::gauge!("gateway_sse_followed_tasks").set(followed.len() as f64);
        if followed.is_empty() {
            tokio::select! {
                r = register.recv() => match r {
                    Some(r) => add(&mut followed, r),
                    None => return,
                },
                () = stop.cancelled() => return,
            }
        }
        while let Ok(r) = register.try_recv() {
            add(&mut followed, r);
        }
        let keys: Vec<&String> = followed.keys().collect();
        // The hub reads from the lowest position any follower of a key registered with.
        let ids: Vec<String> = keys.iter().map(|k| lowest(&followed[*k])).collect();
        let opts = StreamReadOptions::default().block(BLOCK.as_millis() as usize).count(100);
        let read = tokio::select! {
            r = redis::AsyncCommands::xread_options::<_, _, Option<StreamReadReply>>(&mut conn, &keys, &ids, &opts) => r,
            () = stop.cancelled() => return,
        };
        match read {
            Ok(reply) => {
                backoff = Backoff::reconnect();
                for stream in reply.map(|r| r.keys).unwrap_or_default() {
                    let Some(last) = stream.ids.last().map(|e| e.id.clone()) else { continue };
                    if let Some(fs) = followed.get_mut(&stream.key) {
                        for f in fs.iter_mut() {
                            if newer(&last, &f.after) {
                                f.after = last.clone();
                                f.notify.send_modify(|n| *n += 1);
                            }
                        }
                    }
                }
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "event stream read failed");
                // Wake followers so they re-read on their own and see the outage themselves.
                for f in followed.values().flatten() {
                    f.notify.send_modify(|n| *n += 1);
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

fn add(followed: &mut HashMap<String, Vec<Followed>>, r: Registration) {
    followed.entry(r.key).or_default().push(Followed { after: r.after, notify: r.notify });
}

fn lowest(fs: &[Followed]) -> String {
    fs.iter().map(|f| f.after.as_str()).min_by(|a, b| cmp_ids(a, b)).unwrap_or("0-0").to_owned()
}

/// Stream ids `{ms}-{seq}` in stream order.
pub fn cmp_ids(a: &str, b: &str) -> std::cmp::Ordering {
    parse_id(a).cmp(&parse_id(b))
}

fn newer(a: &str, b: &str) -> bool {
    cmp_ids(a, b) == std::cmp::Ordering::Greater
}

/// A stream entry id, or `None` if `s` is not one.
pub fn parse_id(s: &str) -> Option<(u64, u64)> {
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_numerically() {
        assert!(newer("10-0", "9-5"));
        assert!(newer("10-10", "10-9"));
        assert!(!newer("10-1", "10-1"));
        assert_eq!(parse_id("1733000000000-3"), Some((1_733_000_000_000, 3)));
        for bad in ["", "12", "a-1", "1-b", "-1", "1-"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }
}
