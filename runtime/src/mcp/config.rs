//! `MCP_SERVERS` (or the file named by `MCP_SERVERS_FILE`): the MCP servers an operator
//! offers to tasks, by name. Only this configuration can add a server; a client chooses
//! among them per task. URLs may be private (internal tools are the point); header values
//! are secrets, kept as [`SecretString`] so no `Debug` prints them.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

use crate::config::{ConfigError, Env};

/// Whether a call needs its owner's approval before it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    Never,
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Approval {
    All(Policy),
    /// Per tool; tools not named need none.
    PerTool(BTreeMap<String, Policy>),
}

impl Default for Approval {
    fn default() -> Self {
        Self::All(Policy::Never)
    }
}

/// One configured server.
#[derive(Clone)]
pub struct McpServer {
    pub name: String,
    pub url: url::Url,
    pub headers: Vec<(String, SecretString)>,
    pub approval: Approval,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("McpServer")
            .field("name", &self.name)
            .field("url", &format_args!("{}://{}", self.url.scheme(), self.url.host_str().unwrap_or("")))
            .field("headers", &names)
            .field("approval", &self.approval)
            .finish()
    }
}

impl McpServer {
    pub fn needs_approval(&self, tool: &str) -> bool {
        match &self.approval {
            Approval::All(p) => *p == Policy::Always,
            Approval::PerTool(map) => map.get(tool) == Some(&Policy::Always),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    approval: Approval,
}

/// The configured servers, by name.
#[derive(Debug, Clone, Default)]
pub struct McpServers {
    servers: BTreeMap<String, McpServer>,
}

/// A server name: it prefixes tool names (`<server>/<tool>`) the model and clients write.
fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl McpServers {
    /// From `MCP_SERVERS` (JSON) or, when unset, the file `MCP_SERVERS_FILE` names; none
    /// configured when both are unset.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match (env.opt_string("MCP_SERVERS"), env.opt_string("MCP_SERVERS_FILE")) {
            (Some(_), Some(_)) => {
                Err(ConfigError::new("MCP_SERVERS_FILE", "set only one of MCP_SERVERS and MCP_SERVERS_FILE"))
            }
            (Some(json), None) => Self::parse(&json).map_err(|m| ConfigError::new("MCP_SERVERS", m)),
            (None, Some(path)) => {
                let json = std::fs::read_to_string(&path)
                    .map_err(|e| ConfigError::new("MCP_SERVERS_FILE", format!("cannot read {path}: {e}")))?;
                Self::parse(&json).map_err(|m| ConfigError::new("MCP_SERVERS_FILE", m))
            }
            (None, None) => Ok(Self::default()),
        }
    }

    /// The JSON object name → `{"url", "headers"?, "approval"?}`. Errors never quote a
    /// header value.
    pub fn parse(json: &str) -> Result<Self, String> {
        let raw: BTreeMap<String, RawServer> =
            serde_json::from_str(json).map_err(|e| format!("not a JSON object of servers: {e}"))?;
        let mut servers = BTreeMap::new();
        for (name, r) in raw {
            if !valid_name(&name) {
                return Err(format!("server name {name:?} must be 1-32 of [A-Za-z0-9_-]"));
            }
            let url = url::Url::parse(&r.url).map_err(|e| format!("server {name}: url: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("server {name}: url must be http or https"));
            }
            let mut headers = Vec::with_capacity(r.headers.len());
            for (h, v) in r.headers {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() || http::HeaderValue::from_str(&v).is_err() {
                    return Err(format!("server {name}: header {h:?} is not a valid HTTP header"));
                }
                headers.push((h, SecretString::from(v)));
            }
            servers.insert(name.clone(), McpServer { name, url, headers, approval: r.approval });
        }
        Ok(Self { servers })
    }

    pub fn get(&self, name: &str) -> Option<&McpServer> {
        self.servers.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &McpServer> {
        self.servers.values()
    }
}

/// A tool's full name, `<server>/<tool>`, split.
pub fn split_tool(full: &str) -> Option<(&str, &str)> {
    full.split_once('/').filter(|(s, t)| valid_name(s) && !t.is_empty())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn parses_servers_and_policies() {
        let s = McpServers::parse(
            r#"{"files": {"url": "http://10.0.0.5:9000/mcp", "headers": {"Authorization": "Bearer s3cret"},
                          "approval": {"delete": "always"}},
                "wiki": {"url": "https://wiki.example/mcp", "approval": "always"},
                "calc": {"url": "http://127.0.0.1:1/mcp"}}"#,
        )
        .expect("valid");
        let files = s.get("files").expect("files");
        assert!(files.needs_approval("delete") && !files.needs_approval("read"));
        assert!(s.get("wiki").expect("wiki").needs_approval("anything"));
        assert!(!s.get("calc").expect("calc").needs_approval("add"));
        assert_eq!(files.headers[0].1.expose_secret(), "Bearer s3cret");
        assert!(!format!("{files:?}").contains("s3cret"), "headers are secrets");
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for bad in [
            r#"[]"#,
            r#"{"a b": {"url": "http://x/"}}"#,
            r#"{"a": {"url": "ftp://x/"}}"#,
            r#"{"a": {"url": "http://x/", "approval": "sometimes"}}"#,
            r#"{"a": {"url": "http://x/", "extra": 1}}"#,
            r#"{"a": {"url": "http://x/", "headers": {"X": "line\nbreak"}}}"#,
        ] {
            assert!(McpServers::parse(bad).is_err(), "{bad}");
        }
        let err = McpServers::parse(r#"{"a": {"url": "http://x/", "headers": {"X": "s3cret\n"}}}"#).expect_err("bad");
        assert!(!err.contains("s3cret"));
    }

    #[test]
    fn tool_names_split_at_the_first_slash() {
        assert_eq!(split_tool("files/read"), Some(("files", "read")));
        assert_eq!(split_tool("files/a/b"), Some(("files", "a/b")));
        assert_eq!(split_tool("files/"), None);
        assert_eq!(split_tool("files"), None);
        assert_eq!(split_tool("bad name/x"), None);
    }
}
