//! Several nodes behind one setting: `RABBITMQ_URL` may list the nodes of a cluster,
//! comma-separated, and a connect tries them in an order drawn afresh for every attempt,
//! nodes that failed within [`FAILED_RECENTLY`] last. Every process draws its own order, so a
//! fleet that lost a node spreads over the others instead of stampeding the first in the
//! list; a node that just refused is tried again only after the others.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a node that failed to connect is tried after the others.
pub const FAILED_RECENTLY: Duration = Duration::from_secs(30);

/// The URLs of a comma-separated list, each trimmed, empty entries dropped. A comma is a
/// separator only where a new URL (a `scheme://`) follows it, so a password with a raw
/// comma (allowed in a URI's userinfo) stays in its URL.
pub fn split_urls(raw: &str) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for piece in raw.split(',') {
        match urls.last_mut() {
            Some(last) if !starts_with_scheme(piece.trim()) => {
                last.push(',');
                last.push_str(piece);
            }
            _ if piece.trim().is_empty() => {}
            _ => urls.push(piece.trim_start().to_owned()),
        }
    }
    // A URL ends in its host, port or path, never in white space or a comma: what is left
    // there is the separator's (a trailing comma, the spaces before the next entry).
    for url in &mut urls {
        let end = url.trim_end_matches(|c: char| c == ',' || c.is_whitespace()).len();
        url.truncate(end);
    }
    urls
}

fn starts_with_scheme(s: &str) -> bool {
    match s.split_once("://") {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

/// The order to try `n` nodes in: a uniform shuffle, then (stably) the nodes for which
/// `failed` is true moved to the end.
pub fn connect_order(n: usize, failed: impl Fn(usize) -> bool, rng: &mut fastrand::Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let (mut fresh, stale): (Vec<usize>, Vec<usize>) = order.into_iter().partition(|&i| !failed(i));
    fresh.extend(stale);
    fresh
}

/// The nodes of one endpoint and when each last failed to connect (shared by the clones of
/// an [`crate::connect::Endpoint`], so every connection of a process learns from the others).
#[derive(Debug)]
pub struct Nodes {
    urls: Vec<String>,
    failed_at: Mutex<Vec<Option<Instant>>>,
}

impl Nodes {
    pub fn new(urls: Vec<String>) -> Self {
        let failed_at = Mutex::new(vec![None; urls.len()]);
        Self { urls, failed_at }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// This attempt's order (see [`connect_order`]).
    pub fn order(&self) -> Vec<usize> {
        let failed = self.failed_at.lock().map(|f| f.clone()).unwrap_or_default();
        let recent = |i: usize| failed.get(i).copied().flatten().is_some_and(|t| t.elapsed() < FAILED_RECENTLY);
        connect_order(self.urls.len(), recent, &mut fastrand::Rng::new())
    }

    pub fn failed(&self, i: usize) {
        if let Ok(mut f) = self.failed_at.lock()
            && let Some(slot) = f.get_mut(i)
        {
            *slot = Some(Instant::now());
        }
    }

    pub fn connected(&self, i: usize) {
        if let Ok(mut f) = self.failed_at.lock()
            && let Some(slot) = f.get_mut(i)
        {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_a_list_and_keeps_a_single_url() {
        assert_eq!(split_urls("amqp://a:5672/%2f"), vec!["amqp://a:5672/%2f"]);
        assert_eq!(
            split_urls(" amqp://u:p@a:5672/%2f , amqp://u:p@b:5673/%2f,amqp://u:p@c/%2f,"),
            vec!["amqp://u:p@a:5672/%2f", "amqp://u:p@b:5673/%2f", "amqp://u:p@c/%2f"]
        );
        assert_eq!(split_urls("amqp://u:p,w@a/%2f,amqp://b"), vec!["amqp://u:p,w@a/%2f", "amqp://b"]);
        assert!(split_urls(" , ").is_empty());
    }

    #[test]
    fn failed_nodes_go_last_in_shuffled_order() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..100 {
            let order = connect_order(4, |i| i == 1 || i == 2, &mut rng);
            let tail: std::collections::HashSet<_> = order[2..].iter().copied().collect();
            assert_eq!(tail, [1, 2].into_iter().collect());
        }
        let nodes = Nodes::new(vec!["amqp://a".into(), "amqp://b".into()]);
        nodes.failed(0);
        assert_eq!(nodes.order(), vec![1, 0]);
        nodes.connected(0);
        assert_eq!(nodes.order().len(), 2);
    }

    /// A fleet spreads: over many processes each node is tried first about as often.
    #[test]
    fn every_node_is_first_about_equally_often() {
        let mut rng = fastrand::Rng::with_seed(42);
        let mut first = [0u32; 3];
        for _ in 0..3000 {
            first[connect_order(3, |_| false, &mut rng)[0]] += 1;
        }
        assert!(first.iter().all(|&c| (850..=1150).contains(&c)), "{first:?}");
    }

    fn url() -> impl Strategy<Value = String> {
        // Passwords may hold commas and spaces; hosts and paths are plain.
        ("amqps?", "[a-z]{1,8}", "[a-zA-Z0-9, !$&'()*+;=]{0,12}", "[a-z0-9.-]{1,12}", 1u16.., "(/%2f)?")
            .prop_map(|(scheme, user, pass, host, port, path)| format!("{scheme}://{user}:{pass}@{host}:{port}{path}"))
    }

    proptest! {
        #[test]
        fn joining_then_splitting_gives_the_list_back(urls in proptest::collection::vec(url(), 1..6), sep in "(,|, | ,)") {
            let joined = urls.join(&sep);
            prop_assert_eq!(split_urls(&joined), urls.iter().map(|u| u.trim().to_owned()).collect::<Vec<_>>());
        }

        #[test]
        fn the_order_is_a_permutation_with_failed_nodes_last(n in 0usize..12, failed in proptest::collection::vec(any::<bool>(), 12), seed in any::<u64>()) {
            let order = connect_order(n, |i| failed[i], &mut fastrand::Rng::with_seed(seed));
            let mut sorted = order.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..n).collect::<Vec<_>>());
            let first_failed = order.iter().position(|&i| failed[i]).unwrap_or(n);
            prop_assert!(order[first_failed..].iter().all(|&i| failed[i]));
        }
    }
}
