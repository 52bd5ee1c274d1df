//! YAML configuration files, for users coming from Google's test-server.
//!
//! A `.yml` or `.yaml` config has the same fields as the TOML one (Ouli's
//! field names follow test-server's: `target_host`, `target_port`,
//! `source_port`, `target_type`, `source_type`, `redact_request_headers`),
//! so a test-server config such as
//!
//! ```yaml
//! endpoints:
//!   - target_host: api.example.com
//!     target_type: http
//!     target_port: 80
//!     source_type: http
//!     source_port: 1443
//!     redact_request_headers:
//!       - Authorization
//! ```
//!
//! is read as it is. The test-server fields Ouli does not implement
//! (`health` and `response_header_replacements` in an endpoint) are
//! ignored with a warning; any other unknown field is an error, as in TOML.
//! A key with no value (`redact_request_headers:` followed by nothing) is
//! the same as an absent key.

use crate::config::{Config, ConfigError};

/// test-server endpoint fields that Ouli accepts and ignores.
pub const IGNORED_TEST_SERVER_FIELDS: &[&str] = &["health", "response_header_replacements"];

impl Config {
    /// Parses and checks a YAML configuration; `file_name` is only used in
    /// error messages. YAML syntax errors carry their line and column; the
    /// other errors name the field.
    pub fn from_yaml_str(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        let yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            ConfigError::Parse {
                file: file_name.to_string(),
                line,
                column,
                message: e.to_string(),
            }
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            file: file_name.to_string(),
            message,
        };
        let mut value = match to_toml(yaml, "") {
            Ok(Some(v)) => v,
            Ok(None) => toml::Value::Table(toml::Table::new()),
            Err(message) => return Err(invalid(message)),
        };
        let toml::Value::Table(table) = &mut value else {
            return Err(invalid(
                "the YAML document must be a mapping of fields".into(),
            ));
        };
        if let Some(toml::Value::Array(endpoints)) = table.get_mut("endpoints") {
            for (i, ep) in endpoints.iter_mut().enumerate() {
                if let toml::Value::Table(ep) = ep {
                    for field in IGNORED_TEST_SERVER_FIELDS {
                        if ep.remove(*field).is_some() {
                            tracing::warn!(
                                file = file_name,
                                "endpoints[{i}].{field} is a test-server field Ouli does not \
                                 implement; ignored"
                            );
                        }
                    }
                }
            }
        }
        let toml_text = toml::to_string(&value)
            .map_err(|e| invalid(format!("cannot convert the YAML document: {e}")))?;
        Config::from_toml_str(&toml_text, file_name).map_err(|e| match e {
            // Positions would point into the converted text: keep the message only.
            ConfigError::Parse { message, .. } => invalid(message),
            ConfigError::Invalid { message, .. } => invalid(strip_position(&message).to_owned()),
            other => other,
        })
    }
}

/// Drops the `line L, column C: ` a TOML check puts before its message.
fn strip_position(message: &str) -> &str {
    if message.starts_with("line ") {
        if let Some((_, rest)) = message.split_once(": ") {
            return rest;
        }
    }
    message
}

/// YAML to TOML values; `None` for null. `at` names the field in errors.
fn to_toml(v: serde_yaml::Value, at: &str) -> Result<Option<toml::Value>, String> {
    use serde_yaml::Value as Y;
    let here = |at: &str| {
        if at.is_empty() {
            "the document".to_owned()
        } else {
            at.to_owned()
        }
    };
    Ok(Some(match v {
        Y::Null => return Ok(None),
        Y::Bool(b) => toml::Value::Boolean(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                toml::Value::Integer(i)
            } else if let Some(f) = n.as_f64().filter(|_| !n.is_u64()) {
                toml::Value::Float(f)
            } else {
                return Err(format!("{}: the number {n} is out of range", here(at)));
            }
        }
        Y::String(s) => toml::Value::String(s),
        Y::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let name = format!("{at}[{i}]");
                match to_toml(item, &name)? {
                    Some(v) => out.push(v),
                    None => return Err(format!("{name}: a list item must not be empty")),
                }
            }
            toml::Value::Array(out)
        }
        Y::Mapping(map) => {
            let mut table = toml::Table::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    other => {
                        return Err(format!(
                            "{}: field names must be strings, not {other:?}",
                            here(at)
                        ))
                    }
                };
                let name = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                if let Some(v) = to_toml(v, &name)? {
                    table.insert(key, v);
                }
            }
            toml::Value::Table(table)
        }
        Y::Tagged(t) => return to_toml(t.value, at),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_SERVER: &str = r#"
endpoints:
  - target_host: generativelanguage.googleapis.com
    target_type: http
    target_port: 80
    source_type: http
    source_port: 1443
    health: /healthz
    redact_request_headers:
      - X-Goog-Api-Key
      - Authorization
  - target_host: us-central1-aiplatform.googleapis.com
    target_port: 80
    source_port: 1444
    redact_request_headers:
"#;

    #[test]
    fn reads_a_test_server_config() {
        let c = Config::from_yaml_str(TEST_SERVER, "test-server.yml").unwrap();
        assert_eq!(c.endpoints.len(), 2);
        let e = &c.endpoints[0];
        assert_eq!(e.target_host, "generativelanguage.googleapis.com");
        assert_eq!((e.source_port, e.target_port), (1443, 80));
        assert_eq!(
            e.redact_request_headers,
            ["X-Goog-Api-Key", "Authorization"]
        );
        assert_eq!(
            e.policy.redact_request_headers,
            ["X-Goog-Api-Key", "Authorization"]
        );
        assert!(c.endpoints[1].redact_request_headers.is_empty());
    }

    #[test]
    fn ouli_fields_work_in_yaml() {
        let c = Config::from_yaml_str(
            r#"
max_connections: 7
endpoints:
  - source_port: 0
    target_host: a
    target_port: 1
    match_body: json
    ignore_json_fields: ["/id"]
    paths:
      - prefix: /v1/chat
        on_repeat: cycle
"#,
            "x.yaml",
        )
        .unwrap();
        assert_eq!(c.max_connections, 7);
        let p = &c.endpoints[0].policy;
        assert_eq!(p.match_body, ouli_core::engine::BodyMatch::Json);
        assert_eq!(p.paths[0].prefix, "/v1/chat");
    }

    #[test]
    fn yaml_errors_name_the_field_or_position() {
        let e = Config::from_yaml_str(
            &TEST_SERVER.replace(
                "target_port: 80\n    source_type",
                "target_prot: 80\n    source_type",
            ),
            "t.yml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("target_prot"), "{e}");
        let e = Config::from_yaml_str("endpoints: [\n", "t.yml").unwrap_err();
        assert!(matches!(e, ConfigError::Parse { line: 2, .. }), "{e:?}");
        let e = Config::from_yaml_str(
            "endpoints:\n  - source_port: 0\n    target_host: a\n    target_port: 1\n    match_body: xml\n",
            "t.yml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("t.yml: endpoints[0].match_body: \"xml\" is not supported"),
            "{e}"
        );
        let e = Config::from_yaml_str("- 1\n", "t.yml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mapping"), "{e}");
    }

    #[test]
    fn load_picks_the_format_by_extension() {
        let dir = std::env::temp_dir().join(format!("ouli-yaml-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let yml = dir.join("c.yml");
        std::fs::write(&yml, TEST_SERVER).unwrap();
        assert_eq!(Config::load(&yml).unwrap().endpoints.len(), 2);
        let toml_file = dir.join("c.toml");
        std::fs::write(&toml_file, TEST_SERVER).unwrap();
        assert!(Config::load(&toml_file).is_err(), "YAML text is not TOML");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
