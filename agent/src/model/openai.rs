//! The model on any OpenAI-compatible chat-completions API, through `async-openai`.
//!
//! Each call asks for one JSON object: with a strict JSON schema where the server supports
//! structured output (`LLM_RESPONSE_FORMAT=json_schema`, the default), plain JSON mode
//! (`json_object`) or prompt-only (`none`) for servers that do not. A reply that does not
//! parse gets one repair turn quoting what was wrong. Transport retries live in
//! [`super::http`]; what is left when they give up is classified here: worth a redelivery
//! (rate limit, outage) or not (credentials, unknown model), with an error text a user can
//! act on.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage, CreateChatCompletionRequest, ResponseFormat, ResponseFormatJsonSchema,
};
use async_trait::async_trait;
use proto::TaskResult;
use proto::config::{ConfigError, Env};
use secrecy::{ExposeSecret, SecretString};

use super::http::{RetryPolicy, RetryingTransport};
use super::{Decision, Model, ModelError, View, parse, prompt};
use crate::meter::{Meter, Usage};
use crate::text::clip;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    JsonSchema,
    JsonObject,
    PromptOnly,
}

#[derive(Debug, Clone)]
pub struct LlmSettings {
    pub api_key: SecretString,
    pub base_url: String,
    pub model: String,
    /// `local`: the deterministic local embedding instead of the API.
    pub embedding_model: String,
    pub timeout: Duration,
    pub max_retries: u32,
    pub response_mode: ResponseMode,
    pub temperature: Option<f32>,
}

impl LlmSettings {
    /// `None` when neither `OPENAI_API_KEY` nor `OPENAI_BASE_URL` is set: the offline model.
    /// A base URL alone is enough, because local servers (Ollama, vLLM, llama.cpp) take
    /// no key.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let key = env.opt_string("OPENAI_API_KEY");
        let base = env.opt_string("OPENAI_BASE_URL");
        if key.is_none() && base.is_none() {
            return Ok(None);
        }
        let base_url = base.unwrap_or_else(|| "https://api.openai.com/v1".to_owned()).trim_end_matches('/').to_owned();
        url::Url::parse(&base_url).map_err(|e| ConfigError::new("OPENAI_BASE_URL", format!("{base_url:?}: {e}")))?;
        let response_mode = match env.string("LLM_RESPONSE_FORMAT", "json_schema").as_str() {
            "json_schema" => ResponseMode::JsonSchema,
            "json_object" => ResponseMode::JsonObject,
            "none" => ResponseMode::PromptOnly,
            other => {
                return Err(ConfigError::new(
                    "LLM_RESPONSE_FORMAT",
                    format!("{other:?} is not json_schema, json_object or none"),
                ));
            }
        };
        let temperature = match env.raw("LLM_TEMPERATURE") {
            None => None,
            Some(_) => {
                let t: f32 = env.parse("LLM_TEMPERATURE", 0.0)?;
                if !(0.0..=2.0).contains(&t) {
                    return Err(ConfigError::new("LLM_TEMPERATURE", "must be between 0 and 2"));
                }
                Some(t)
            }
        };
        Ok(Some(Self {
            api_key: SecretString::from(key.unwrap_or_default()),
            base_url,
            model: env.string("LLM_MODEL", "gpt-4o-mini"),
            embedding_model: env.string("EMBEDDING_MODEL", "text-embedding-3-small"),
            timeout: env.seconds("LLM_TIMEOUT_SECONDS", 60)?,
            max_retries: env.ranged("LLM_MAX_RETRIES", 4, 0..=20)?,
            response_mode,
            temperature,
        }))
    }
}

pub struct OpenAiModel {
    client: Client<OpenAIConfig>,
    settings: LlmSettings,
}

/// What a call that the transport gave up on means for the task. The reason is what the
/// task's `error` says; the client's error stays attached as the cause, for the log.
pub fn classify(e: OpenAIError) -> ModelError {
    let classified = match &e {
        OpenAIError::ApiError(r) => {
            let status = r.status_code.as_u16();
            let quota =
                [r.api_error.r#type.as_deref(), r.api_error.code.as_deref()].contains(&Some("insufficient_quota"));
            let detail = clip(&r.api_error.message, 300);
            match status {
                429 if quota => {
                    ModelError::permanent("the model API account has no quota left (HTTP 429 insufficient_quota)")
                }
                408 | 429 | 500..=599 if status != 501 => {
                    ModelError::transient(format!("HTTP {status} after retries: {detail}"))
                }
                401 => ModelError::permanent("the model API rejected the credentials (HTTP 401): check OPENAI_API_KEY"),
                403 => ModelError::permanent(format!("the model API refused access (HTTP 403): {detail}")),
                404 => ModelError::permanent(format!(
                    "the model API has no such model or endpoint (HTTP 404): check LLM_MODEL and OPENAI_BASE_URL ({detail})"
                )),
                _ => ModelError::permanent(format!("the model API rejected the request (HTTP {status}): {detail}")),
            }
        }
        OpenAIError::Reqwest(r) if r.is_timeout() => ModelError::transient("the model API timed out after retries"),
        OpenAIError::Reqwest(r) if r.is_connect() || r.is_request() => {
            ModelError::transient("could not reach the model API after retries")
        }
        OpenAIError::JSONDeserialize(..) => ModelError::permanent(
            "the model API's reply was not a chat completion: is OPENAI_BASE_URL an OpenAI-compatible API?",
        ),
        other => ModelError::permanent(format!("the model API call failed: {}", clip(&other.to_string(), 300))),
    };
    classified.caused_by(e)
}

fn system() -> ChatCompletionRequestMessage {
    ChatCompletionRequestSystemMessage::from(prompt::SYSTEM).into()
}

fn user(text: String) -> ChatCompletionRequestMessage {
    ChatCompletionRequestUserMessage::from(text).into()
}

impl OpenAiModel {
    pub fn new(settings: LlmSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .build()?;
        let config =
            OpenAIConfig::new().with_api_base(&settings.base_url).with_api_key(settings.api_key.expose_secret());
        let client = Client::with_config(config)
            .with_http_client(http.clone())
            .with_http_service(RetryingTransport::new(http, RetryPolicy::new(settings.max_retries)));
        Ok(Self { client, settings })
    }

    /// The client, for embeddings through the same transport.
    pub fn client(&self) -> Client<OpenAIConfig> {
        self.client.clone()
    }

    pub fn settings(&self) -> &LlmSettings {
        &self.settings
    }

    fn response_format(&self, name: &str, schema: &serde_json::Value) -> Option<ResponseFormat> {
        match self.settings.response_mode {
            ResponseMode::JsonSchema => Some(ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    description: None,
                    name: name.to_owned(),
                    schema: schema.clone(),
                    strict: Some(true),
                },
            }),
            ResponseMode::JsonObject => Some(ResponseFormat::JsonObject),
            ResponseMode::PromptOnly => None,
        }
    }

    /// One chat completion; its usage goes to `meter` whatever the reply says.
    async fn complete(
        &self,
        messages: &[ChatCompletionRequestMessage],
        format: Option<ResponseFormat>,
        meter: &Meter,
    ) -> Result<String, ModelError> {
        let request = CreateChatCompletionRequest {
            model: self.settings.model.clone(),
            messages: messages.to_vec(),
            response_format: format,
            temperature: self.settings.temperature,
            ..Default::default()
        };
        let reply = self.client.chat().create(request).await.map_err(classify)?;
        let usage = reply.usage.as_ref();
        meter.add(Usage {
            prompt_tokens: usage.map_or(0, |u| u64::from(u.prompt_tokens)),
            completion_tokens: usage.map_or(0, |u| u64::from(u.completion_tokens)),
            total_tokens: usage.map_or(0, |u| u64::from(u.total_tokens)),
            model_calls: 1,
        });
        let Some(choice) = reply.choices.into_iter().next() else {
            return Ok(String::new());
        };
        if let (None, Some(refusal)) = (&choice.message.content, &choice.message.refusal) {
            return Ok(format!("(the model refused: {refusal})"));
        }
        Ok(choice.message.content.unwrap_or_default())
    }

    /// Asks, parses, and on a malformed reply asks once more with the reason.
    async fn ask<T>(
        &self,
        prompt_text: String,
        (name, schema): (&str, &serde_json::Value),
        parse: fn(&str) -> Result<T, String>,
        meter: &Meter,
    ) -> Result<T, ModelError> {
        let format = self.response_format(name, schema);
        let mut messages = vec![system(), user(prompt_text)];
        let first = self.complete(&messages, format.clone(), meter).await?;
        let reason = match parse(&first) {
            Ok(v) => return Ok(v),
            Err(reason) => reason,
        };
        tracing::warn!(%reason, "malformed model reply; asking for a repair");
        metrics::counter!("agent_model_repairs_total").increment(1);
        messages.push(ChatCompletionRequestAssistantMessage::from(first).into());
        messages.push(user(prompt::repair(&reason)));
        let second = self.complete(&messages, format, meter).await?;
        parse(&second).map_err(ModelError::Malformed)
    }
}

#[async_trait]
impl Model for OpenAiModel {
    fn name(&self) -> &str {
        &self.settings.model
    }

    async fn decide(&self, view: &View<'_>) -> Result<Decision, ModelError> {
        self.ask(prompt::tick(view), ("euglena_action", &prompt::ACTION_SCHEMA), parse::decision, view.meter).await
    }

    async fn synthesize(&self, view: &View<'_>) -> Result<TaskResult, ModelError> {
        self.ask(prompt::synthesis(view), ("euglena_result", &prompt::RESULT_SCHEMA), parse::result, view.meter).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_choose_the_client() {
        assert!(LlmSettings::from_env(&Env::default()).expect("ok").is_none(), "offline without key or base URL");
        let local = LlmSettings::from_env(&Env::default().with("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1/"))
            .expect("ok")
            .expect("configured");
        assert_eq!(local.base_url, "http://127.0.0.1:11434/v1");
        assert_eq!(local.response_mode, ResponseMode::JsonSchema);
        let bad = Env::default().with("OPENAI_API_KEY", "k").with("LLM_RESPONSE_FORMAT", "xml");
        assert_eq!(LlmSettings::from_env(&bad).expect_err("bad").var, "LLM_RESPONSE_FORMAT");
        let bad = Env::default().with("OPENAI_API_KEY", "k").with("LLM_TEMPERATURE", "3");
        assert_eq!(LlmSettings::from_env(&bad).expect_err("bad").var, "LLM_TEMPERATURE");
    }
}
