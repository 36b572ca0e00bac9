//! The model on any OpenAI-compatible chat-completions API, through `async-openai`.
//!
//! Each call asks for one JSON object: with a strict JSON schema where the server supports
//! structured output (`LLM_RESPONSE_FORMAT=json_schema`, the default), plain JSON mode
//! (`json_object`) or prompt-only (`none`) for servers that do not. Every call carries
//! `max_tokens` (`LLM_ACTION_MAX_TOKENS` for a tick's action, `LLM_MAX_TOKENS` for the
//! synthesis) and the schemas bound every string and list, since constrained decoding forces
//! a reply's shape but not its length. A reply cut off at the limit (`finish_reason:
//! length`, or JSON that ends mid-way) is asked for again, shorter, in a fresh turn; a reply
//! that does not parse gets one repair turn quoting what was wrong. Transport retries live in
//! [`super::http`]; what is left when they give up is classified here: worth a redelivery
//! (rate limit, outage) or not (credentials, unknown model), with an error text a user can
//! act on.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage, CreateChatCompletionRequest, FinishReason, ResponseFormat,
    ResponseFormatJsonSchema,
};
use async_trait::async_trait;
use proto::TaskResult;
use runtime::config::{ConfigError, Env};
use secrecy::{ExposeSecret, SecretString};

use super::http::{RetryPolicy, RetryingTransport};
use super::prompt::Dialect;
use super::{Decision, Model, ModelError, View, parse, prompt};
use crate::meter::counted;
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
    /// `LLM_MAX_TOKENS`: the longest reply, sent on every call (the synthesis's bound).
    pub max_tokens: u32,
    /// `LLM_ACTION_MAX_TOKENS`: a tick's action is a few short fields.
    pub action_max_tokens: u32,
    /// `LLM_SCHEMA_DIALECT`: which schema keywords the server accepts.
    pub dialect: Dialect,
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
        let max_tokens = env.ranged("LLM_MAX_TOKENS", 1024, 64..=32_768)?;
        let dialect = match env.string("LLM_SCHEMA_DIALECT", "auto").as_str() {
            "auto" if is_openai(&base_url) => Dialect::OpenAi,
            "auto" | "full" => Dialect::Full,
            "openai" => Dialect::OpenAi,
            other => {
                return Err(ConfigError::new("LLM_SCHEMA_DIALECT", format!("{other:?} is not auto, full or openai")));
            }
        };
        Ok(Some(Self {
            max_tokens,
            action_max_tokens: env.ranged("LLM_ACTION_MAX_TOKENS", 512.min(max_tokens), 32..=max_tokens)?,
            dialect,
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

/// OpenAI itself (and Azure's OpenAI service) runs strict mode, which refuses `maxLength`.
fn is_openai(base_url: &str) -> bool {
    url::Url::parse(base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .is_some_and(|h| h == "api.openai.com" || h.ends_with(".openai.azure.com"))
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

fn system(text: &str) -> ChatCompletionRequestMessage {
    ChatCompletionRequestSystemMessage::from(text.to_owned()).into()
}

/// One reply: its text, and whether the server cut it off at `max_tokens`.
struct Reply {
    text: String,
    cut_off: bool,
}

/// What one call is for: its schema, its length bound and its parser.
struct Ask<'a, T> {
    name: &'a str,
    schema: serde_json::Value,
    max_tokens: u32,
    parse: &'a (dyn Fn(&str) -> Result<T, String> + Sync),
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
            .with_http_service(RetryingTransport::new(http, RetryPolicy::new(settings.max_retries), settings.timeout));
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

    /// One chat completion. Its usage goes to `meter` whatever the reply says, and every
    /// request the transport sent for it counts, failed ones included.
    async fn complete(
        &self,
        messages: &[ChatCompletionRequestMessage],
        format: Option<ResponseFormat>,
        max_tokens: u32,
        meter: &Meter,
    ) -> Result<Reply, ModelError> {
        meter.admit().map_err(|_| ModelError::OverBudget)?;
        #[allow(deprecated)]
        let request = CreateChatCompletionRequest {
            model: self.settings.model.clone(),
            messages: messages.to_vec(),
            response_format: format,
            temperature: self.settings.temperature,
            // `max_tokens`, not `max_completion_tokens`: every OpenAI-compatible server we
            // target (llama.cpp, vLLM, Ollama, OpenAI's chat models) reads it.
            max_tokens: Some(max_tokens),
            ..Default::default()
        };
        let reply = counted(meter, self.client.chat().create(request)).await.map_err(classify)?;
        if let Some(u) = reply.usage.as_ref() {
            meter.add(Usage {
                prompt_tokens: u64::from(u.prompt_tokens),
                completion_tokens: u64::from(u.completion_tokens),
                total_tokens: u64::from(u.total_tokens),
                ..Usage::default()
            });
        }
        let Some(choice) = reply.choices.into_iter().next() else {
            return Ok(Reply { text: String::new(), cut_off: false });
        };
        let cut_off = choice.finish_reason == Some(FinishReason::Length);
        // On the `model.call` span this request belongs to (the last request of a repaired
        // call wins).
        if let Some(reason) = &choice.finish_reason {
            tracing::Span::current().record("finish_reason", format!("{reason:?}").to_lowercase());
        }
        if let (None, Some(refusal)) = (&choice.message.content, &choice.message.refusal) {
            return Ok(Reply { text: format!("(the model refused: {refusal})"), cut_off });
        }
        Ok(Reply { text: choice.message.content.unwrap_or_default(), cut_off })
    }

    /// Asks, parses, and when the reply cannot be used asks once more: afresh with a note to
    /// be brief when it was cut off (the cut-off text is no help to repair), otherwise with
    /// the reply and what was wrong with it.
    async fn ask<T>(&self, prompt_text: String, view: &View<'_>, ask: Ask<'_, T>) -> Result<T, ModelError> {
        let (meter, system_text) = (view.meter, prompt::system(view.search, !view.tools.tools.is_empty()));
        let format = self.response_format(ask.name, &ask.schema);
        let mut messages = vec![system(&system_text), user(prompt_text.clone())];
        let first = self.complete(&messages, format.clone(), ask.max_tokens, meter).await?;
        let problem = match (first.cut_off, (ask.parse)(&first.text)) {
            (false, Ok(v)) => return Ok(v),
            (true, _) => Problem::Truncated,
            (false, Err(reason)) if parse::cut_off(&first.text) => {
                tracing::debug!(%reason, "the reply ends mid-JSON");
                Problem::Truncated
            }
            (false, Err(reason)) => Problem::Malformed(reason),
        };
        let second = match problem {
            Problem::Truncated => {
                tracing::warn!(
                    max_tokens = ask.max_tokens,
                    "model reply cut off at the length limit; asking again, shorter"
                );
                metrics::counter!("agent_model_truncations_total").increment(1);
                let messages =
                    vec![system(&system_text), user(format!("{prompt_text}\n\n{}", prompt::shorter(ask.max_tokens)))];
                self.complete(&messages, format, ask.max_tokens, meter).await?
            }
            Problem::Malformed(reason) => {
                tracing::warn!(%reason, "malformed model reply; asking for a repair");
                metrics::counter!("agent_model_repairs_total").increment(1);
                messages.push(ChatCompletionRequestAssistantMessage::from(first.text).into());
                messages.push(user(prompt::repair(&reason)));
                self.complete(&messages, format, ask.max_tokens, meter).await?
            }
        };
        if second.cut_off {
            return Err(ModelError::Malformed(format!(
                "the reply was cut off at the length limit ({} tokens) twice",
                ask.max_tokens
            )));
        }
        (ask.parse)(&second.text).map_err(ModelError::Malformed)
    }
}

enum Problem {
    Truncated,
    Malformed(String),
}

#[async_trait]
impl Model for OpenAiModel {
    fn name(&self) -> &str {
        &self.settings.model
    }

    async fn decide(&self, view: &View<'_>) -> Result<Decision, ModelError> {
        let parse = |text: &str| parse::decision(text, view.search, view.tools);
        let ask = Ask {
            name: "euglena_action",
            schema: prompt::action_schema(view.search, view.tools, self.settings.dialect),
            max_tokens: self.settings.action_max_tokens,
            parse: &parse,
        };
        self.ask(prompt::tick(view), view, ask).await
    }

    async fn synthesize(&self, view: &View<'_>) -> Result<TaskResult, ModelError> {
        let ask = Ask {
            name: "euglena_result",
            schema: prompt::result_schema(self.settings.dialect),
            max_tokens: self.settings.max_tokens,
            parse: &parse::result,
        };
        self.ask(prompt::synthesis(view), view, ask).await
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

    #[test]
    fn replies_are_bounded_and_the_dialect_follows_the_server() {
        let local = LlmSettings::from_env(&Env::default().with("OPENAI_BASE_URL", "http://127.0.0.1:8090/v1"))
            .expect("ok")
            .expect("configured");
        assert_eq!((local.max_tokens, local.action_max_tokens, local.dialect), (1024, 512, Dialect::Full));
        let openai =
            LlmSettings::from_env(&Env::default().with("OPENAI_API_KEY", "k")).expect("ok").expect("configured");
        assert_eq!(openai.dialect, Dialect::OpenAi);
        let small = Env::default().with("OPENAI_API_KEY", "k").with("LLM_MAX_TOKENS", "256");
        let small = LlmSettings::from_env(&small).expect("ok").expect("configured");
        assert_eq!((small.max_tokens, small.action_max_tokens), (256, 256), "the action bound never exceeds the whole");
        let bad = Env::default().with("OPENAI_API_KEY", "k").with("LLM_ACTION_MAX_TOKENS", "2000");
        assert_eq!(LlmSettings::from_env(&bad).expect_err("bad").var, "LLM_ACTION_MAX_TOKENS");
        let bad = Env::default().with("OPENAI_API_KEY", "k").with("LLM_SCHEMA_DIALECT", "xml");
        assert_eq!(LlmSettings::from_env(&bad).expect_err("bad").var, "LLM_SCHEMA_DIALECT");
    }
}
