//! Text embeddings for memory: from the model API (`EMBEDDING_MODEL`), or the
//! deterministic local embedding used in offline mode and with `EMBEDDING_MODEL=local`.
//!
//! The local embedding is feature hashing of words and character trigrams into
//! [`LOCAL_DIM`] dimensions, L2-normalised. It knows no synonyms, but texts that share
//! words land near each other, which is what a task's memory needs to find "what did I
//! read about X", and it is identical on every agent, so a resumed task's stored vectors
//! still match.

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::embeddings::{CreateEmbeddingRequest, EmbeddingInput};
use async_trait::async_trait;

use crate::meter::{Meter, Usage};

pub const LOCAL_DIM: usize = 256;
/// Texts per embedding request, and characters per text (well inside every model's limit).
const BATCH: usize = 64;
const TEXT_CHARS: usize = 6000;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding request failed")]
    Api(#[from] OpenAIError),
    #[error("embedding failed: asked for {asked} embeddings, got {got}")]
    Count { asked: usize, got: usize },
}

#[async_trait]
pub trait Embedder: Send + Sync {
    fn name(&self) -> &str;
    /// One vector per text, in order.
    async fn embed(&self, texts: &[String], meter: &Meter) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// FNV-1a: stable across processes and Rust versions, unlike the std hasher.
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn add_feature(v: &mut [f32], feature: &[u8], weight: f32) {
    let h = fnv(feature);
    let i = (h % LOCAL_DIM as u64) as usize;
    // A second hash bit picks the sign, so collisions cancel out on average.
    let sign = if (h >> 63) == 0 { 1.0 } else { -1.0 };
    v[i] += sign * weight;
}

/// The deterministic local embedding of `text`; the zero vector for text without words.
pub fn local_embedding(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; LOCAL_DIM];
    let lower = text.to_lowercase();
    for word in lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        add_feature(&mut v, word.as_bytes(), 1.0);
        let chars: Vec<char> = format!("^{word}$").chars().collect();
        for tri in chars.windows(3) {
            let s: String = tri.iter().collect();
            add_feature(&mut v, s.as_bytes(), 0.5);
        }
    }
    normalise(&mut v);
    v
}

pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity; 0 when either vector is zero or their lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na.sqrt() * nb.sqrt()) }
}

pub struct LocalEmbedder;

#[async_trait]
impl Embedder for LocalEmbedder {
    fn name(&self) -> &str {
        "local-hashing"
    }

    async fn embed(&self, texts: &[String], _meter: &Meter) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| local_embedding(t)).collect())
    }
}

/// Embeddings from the OpenAI-compatible API, through the model's client (same retries).
pub struct ApiEmbedder {
    client: Client<OpenAIConfig>,
    model: String,
}

impl ApiEmbedder {
    pub fn new(client: Client<OpenAIConfig>, model: String) -> Self {
        Self { client, model }
    }
}

#[async_trait]
impl Embedder for ApiEmbedder {
    fn name(&self) -> &str {
        &self.model
    }

    async fn embed(&self, texts: &[String], meter: &Meter) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            let input: Vec<String> = batch.iter().map(|t| t.chars().take(TEXT_CHARS).collect()).collect();
            let request = CreateEmbeddingRequest {
                model: self.model.clone(),
                input: EmbeddingInput::StringArray(input),
                ..Default::default()
            };
            let reply = crate::meter::counted(meter, self.client.embeddings().create(request)).await?;
            meter.add(Usage {
                prompt_tokens: u64::from(reply.usage.prompt_tokens),
                total_tokens: u64::from(reply.usage.total_tokens),
                ..Usage::default()
            });
            let mut data = reply.data;
            if data.len() != batch.len() {
                return Err(EmbedError::Count { asked: batch.len(), got: data.len() });
            }
            data.sort_by_key(|e| e.index);
            out.extend(data.into_iter().map(|e| e.embedding));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_embedding_is_deterministic_and_topical() {
        let a = local_embedding("Rust async runtimes: tokio and smol");
        assert_eq!(a, local_embedding("Rust async runtimes: tokio and smol"));
        assert!((a.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4, "unit length");
        let near = cosine(&a, &local_embedding("the tokio runtime for async Rust"));
        let far = cosine(&a, &local_embedding("baking sourdough bread at home"));
        assert!(near > far + 0.2, "near {near}, far {far}");
        assert!(local_embedding("  ...  ").iter().all(|x| *x == 0.0));
        assert_eq!(cosine(&[1.0, 0.0], &[1.0]), 0.0);
    }
}
