//! The lexical half of hybrid recall: tokens, BM25, reciprocal-rank fusion, and the sparse
//! vectors Qdrant scores the same way. Pure functions, so both stores rank by one
//! definition and the properties are tested without a store.
//!
//! Embeddings place texts by their gist; they blur exact rare strings (a name, a part number
//! like `K-7731`), and the local hashing embedding dilutes one such token among a text's
//! common words. BM25 weights a term by its rarity among the task's memories, so the one
//! memory that holds it ranks first lexically. Fusing *ranks* rather than scores needs no
//! calibration between a cosine in [-1, 1] and an unbounded BM25 sum.

use std::collections::{BTreeMap, HashSet};

use crate::embedding::fnv;

/// BM25's term-frequency saturation and length normalisation (the usual Lucene values).
pub const K1: f32 = 1.2;
pub const B: f32 = 0.75;
/// The RRF constant of Cormack et al.: a rank's weight is `1 / (RRF_K + rank)`, so the top
/// few ranks of either list matter and neither list's tail can outvote the other's head.
pub const RRF_K: f32 = 60.0;
/// Qdrant keeps no average document length for sparse vectors, so their length
/// normalisation is against a typical memory (a page passage or a short fact), in tokens.
pub const TYPICAL_TOKENS: f32 = 100.0;

/// Lower-cased runs of letters and digits: `"Part K-7731."` is `["part", "k", "7731"]`, the
/// same split the local embedding makes, so a query and a memory tokenise alike.
pub fn tokens(text: &str) -> Vec<String> {
    text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

/// BM25's weight of a term seen `tf` times in a document of `len` tokens.
fn saturated(tf: f32, len: f32, average: f32) -> f32 {
    let norm = if average > 0.0 { 1.0 - B + B * len / average } else { 1.0 };
    tf * (K1 + 1.0) / (tf + K1 * norm)
}

/// The BM25 score of each of `docs` (token lists) for `query`; 0 for a document without a
/// query term. Repeated query terms count once: the recall query is prose, and a word it
/// happens to repeat is not worth more. IDF is Lucene's `ln(1 + (N - df + 0.5) / (df + 0.5))`,
/// positive even for a term in every document, so a match never lowers a score.
pub fn bm25(docs: &[Vec<String>], query: &[String]) -> Vec<f32> {
    let terms: Vec<&str> = {
        let mut seen = HashSet::new();
        query.iter().map(String::as_str).filter(|t| seen.insert(*t)).collect()
    };
    let n = docs.len() as f32;
    let average = docs.iter().map(Vec::len).sum::<usize>() as f32 / n.max(1.0);
    let counts: Vec<Vec<f32>> = docs
        .iter()
        .map(|d| terms.iter().map(|t| d.iter().filter(|w| w.as_str() == *t).count() as f32).collect())
        .collect();
    let idf: Vec<f32> = (0..terms.len())
        .map(|j| {
            let df = counts.iter().filter(|c| c[j] > 0.0).count() as f32;
            (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
        })
        .collect();
    docs.iter()
        .zip(&counts)
        .map(|(d, c)| {
            let len = d.len() as f32;
            c.iter().zip(&idf).filter(|(tf, _)| **tf > 0.0).map(|(tf, w)| w * saturated(*tf, len, average)).sum()
        })
        .collect()
}

/// 1-based ranks of `scores`, best first; equal scores share the better rank, so the order
/// in which tied items arrive cannot change their fused score. `None` (not retrieved by
/// this list) and NaN stay unranked.
pub fn ranks(scores: &[Option<f32>]) -> Vec<Option<usize>> {
    let mut sorted: Vec<f32> = scores.iter().flatten().copied().filter(|s| !s.is_nan()).collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    scores.iter().map(|s| s.filter(|s| !s.is_nan()).map(|s| sorted.partition_point(|x| *x > s) + 1)).collect()
}

/// Reciprocal-rank fusion of several rankings of the same `n` items (each list a score per
/// item, `None` where it does not rank the item): `Σ 1 / (RRF_K + rank)` per item, 0 for
/// an item no list ranks. Always finite and non-negative.
pub fn rrf(lists: &[Vec<Option<f32>>], n: usize) -> Vec<f32> {
    let mut fused = vec![0.0f32; n];
    for list in lists {
        for (f, r) in fused.iter_mut().zip(ranks(list)) {
            if let Some(r) = r {
                *f += 1.0 / (RRF_K + r as f32);
            }
        }
    }
    fused
}

/// A token's dimension in the sparse vectors: a stable hash, the same on every agent.
fn dimension(token: &str) -> u32 {
    let h = fnv(token.as_bytes());
    (h ^ (h >> 32)) as u32
}

/// Term frequency per dimension, tokens that hash alike merged (Qdrant refuses a sparse
/// vector with a repeated index), in index order.
fn term_counts(text: &str) -> (BTreeMap<u32, f32>, usize) {
    let words = tokens(text);
    let mut counts = BTreeMap::new();
    for w in &words {
        *counts.entry(dimension(w)).or_insert(0.0) += 1.0;
    }
    (counts, words.len())
}

/// A memory's sparse vector for Qdrant: BM25's term-frequency part per token. The
/// collection's `Modifier::Idf` multiplies in the IDF at query time, over the whole
/// collection (not one task's memories: Qdrant has no per-filter statistics).
pub fn sparse_document(text: &str) -> Vec<(u32, f32)> {
    let (counts, len) = term_counts(text);
    counts.into_iter().map(|(i, tf)| (i, saturated(tf, len as f32, TYPICAL_TOKENS))).collect()
}

/// A query's sparse vector: weight 1 per distinct token, so the dot product with a memory
/// is the sum of its BM25 term weights (times Qdrant's IDF).
pub fn sparse_query(text: &str) -> Vec<(u32, f32)> {
    term_counts(text).0.into_keys().map(|i| (i, 1.0)).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn docs(texts: &[&str]) -> Vec<Vec<String>> {
        texts.iter().map(|t| tokens(t)).collect()
    }

    #[test]
    fn tokens_are_lowercase_alphanumeric_runs() {
        assert_eq!(tokens("Part K-7731, shipped."), vec!["part", "k", "7731", "shipped"]);
        assert_eq!(tokens("Zürich -- ÉTÉ"), vec!["zürich", "été"]);
        assert!(tokens(" ,;- ").is_empty());
    }

    #[test]
    fn a_rare_term_outranks_common_ones() {
        let d = docs(&["the shipment left the port", "the shipment is late", "crate K-7731 is in the shipment"]);
        let s = bm25(&d, &tokens("shipment K-7731"));
        assert!(s[2] > s[0] && s[2] > s[1], "{s:?}");
        assert_eq!(bm25(&d, &tokens("unrelated words")), vec![0.0; 3]);
        assert!(bm25(&[], &tokens("x")).is_empty());
        assert_eq!(bm25(&docs(&["", ""]), &tokens("x")), vec![0.0, 0.0]);
    }

    #[test]
    fn ties_share_a_rank_and_unranked_items_get_nothing() {
        assert_eq!(
            ranks(&[Some(0.5), Some(0.9), Some(0.5), None, Some(f32::NAN)]),
            vec![Some(2), Some(1), Some(2), None, None]
        );
        let fused = rrf(&[vec![Some(0.9), Some(0.1), None], vec![None, Some(3.0), None]], 3);
        assert_eq!(fused, vec![1.0 / 61.0, 1.0 / 62.0 + 1.0 / 61.0, 0.0]);
    }

    #[test]
    fn sparse_vectors_have_unique_sorted_indices() {
        let d = sparse_document("K-7731 k 7731 K");
        assert_eq!(d.len(), 2, "two distinct tokens: {d:?}");
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0));
        let k = d.iter().find(|(i, _)| *i == dimension("k")).expect("k").1;
        let n = d.iter().find(|(i, _)| *i == dimension("7731")).expect("7731").1;
        assert!(k > n, "three k's weigh more than one 7731: {d:?}");
        assert_eq!(sparse_query("7731 7731 k"), {
            let mut q = vec![(dimension("7731"), 1.0), (dimension("k"), 1.0)];
            q.sort_by_key(|(i, _)| *i);
            q
        });
        assert!(sparse_document("").is_empty());
    }

    fn score() -> impl Strategy<Value = Option<f32>> {
        prop_oneof![Just(None), any::<f32>().prop_map(Some), (0u8..4).prop_map(|x| Some(f32::from(x)))]
    }

    proptest! {
        #[test]
        fn bm25_never_nan_nor_negative(texts in prop::collection::vec(".{0,40}", 0..12), query in ".{0,30}") {
            let d: Vec<Vec<String>> = texts.iter().map(|t| tokens(t)).collect();
            for s in bm25(&d, &tokens(&query)) {
                prop_assert!(s.is_finite() && s >= 0.0, "{s}");
            }
        }

        /// Turning one of a document's other words into a query term (same length, so the
        /// length normalisation is unchanged) always raises its score.
        #[test]
        fn bm25_rises_with_term_frequency(
            doc in prop::collection::vec(0usize..6, 1..20),
            others in prop::collection::vec(prop::collection::vec(0usize..6, 0..20), 0..8),
            pick in any::<prop::sample::Index>(),
            term in 0usize..3,
        ) {
            // Words 0..3 are query terms, 3..6 are not.
            let words = |ids: &Vec<usize>| ids.iter().map(|i| format!("w{i}")).collect::<Vec<_>>();
            let query: Vec<String> = (0..3).map(|i| format!("w{i}")).collect();
            let fillers: Vec<usize> = (0..doc.len()).filter(|i| doc[*i] >= 3).collect();
            prop_assume!(!fillers.is_empty());
            let mut raised = doc.clone();
            raised[fillers[pick.index(fillers.len())]] = term;
            let mut before: Vec<Vec<String>> = others.iter().map(words).collect();
            let mut after = before.clone();
            before.push(words(&doc));
            after.push(words(&raised));
            let (b, a) = (bm25(&before, &query), bm25(&after, &query));
            prop_assert!(a[a.len() - 1] > b[b.len() - 1], "{b:?} -> {a:?}");
        }

        #[test]
        fn rrf_is_finite_and_independent_of_list_and_item_order(
            lists in prop::collection::vec(prop::collection::vec(score(), 6), 1..4),
            shuffle in Just((0..6usize).collect::<Vec<_>>()).prop_shuffle(),
        ) {
            let fused = rrf(&lists, 6);
            prop_assert!(fused.iter().all(|f| f.is_finite() && *f >= 0.0), "{fused:?}");
            // Reversing the lists changes only the order of the additions.
            let reversed: Vec<_> = lists.iter().rev().cloned().collect();
            for (x, y) in fused.iter().zip(rrf(&reversed, 6)) {
                prop_assert!((x - y).abs() < 1e-6);
            }
            // Permuting the items (tied ones included) permutes their fused scores exactly.
            let permuted: Vec<Vec<Option<f32>>> =
                lists.iter().map(|l| shuffle.iter().map(|&i| l[i]).collect()).collect();
            let again = rrf(&permuted, 6);
            for (j, &i) in shuffle.iter().enumerate() {
                prop_assert_eq!(again[j], fused[i]);
            }
            // An item tied with another in every list has the same fused score.
            for i in 0..6 {
                for j in 0..6 {
                    // NaN ranks nowhere, like an item the list does not retrieve.
                    let ranked = |x: Option<f32>| x.filter(|v| !v.is_nan());
                    let tied = lists.iter().all(|l| ranked(l[i]) == ranked(l[j]));
                    if tied {
                        prop_assert_eq!(fused[i], fused[j]);
                    }
                }
            }
        }

        #[test]
        fn sparse_weights_are_positive_and_finite(text in ".{0,200}") {
            for (_, w) in sparse_document(&text).into_iter().chain(sparse_query(&text)) {
                prop_assert!(w.is_finite() && w > 0.0);
            }
        }
    }
}
