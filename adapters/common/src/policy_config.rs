//! The matching and redaction fields of an `[[endpoints]]` table and its
//! `[[endpoints.paths]]` overrides, turned into the core's
//! [`MatchPolicy`].
//!
//! ```toml
//! [[endpoints]]
//! # ... source_port, target_host, target_port ...
//! redact_request_headers = ["Authorization"]
//! match_request_headers = ["Accept"]
//! ignore_request_headers = []
//! ignore_query_params = ["_", "cache_buster"]
//! match_body = "json"                 # exact (default) | json | form | multipart
//! ignore_json_fields = ["/request_id", "/metadata/sent_at"]
//! on_repeat = "in_order"              # in_order (default) | repeat_last | cycle | first
//! redact_response_headers = ["Set-Cookie"]
//! redact_query_params = ["api_key"]
//! redact_json_fields = ["/password", "/session/token"]
//!
//! [[endpoints.paths]]
//! prefix = "/v1/chat"                 # the longest matching prefix wins
//! match_body = "json"
//! ignore_json_fields = ["/user"]
//! ```
//!
//! In a path override every field is optional: matching fields replace the
//! endpoint's, redaction lists are added to the endpoint's.

use ouli_core::engine::{BodyMatch, MatchPolicy, OnRepeat, PolicyOverride};
use ouli_core::matching::JsonPointer;
use serde::Deserialize;
use std::ops::Range;
use toml::Spanned;

/// One `[[endpoints.paths]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPathOverride {
    prefix: Spanned<String>,
    #[serde(default)]
    redact_request_headers: Vec<Spanned<String>>,
    match_request_headers: Option<Vec<Spanned<String>>>,
    ignore_request_headers: Option<Vec<Spanned<String>>>,
    ignore_query_params: Option<Vec<Spanned<String>>>,
    match_body: Option<Spanned<String>>,
    ignore_json_fields: Option<Vec<Spanned<String>>>,
    on_repeat: Option<Spanned<String>>,
    #[serde(default)]
    redact_response_headers: Vec<Spanned<String>>,
    #[serde(default)]
    redact_query_params: Vec<Spanned<String>>,
    #[serde(default)]
    redact_json_fields: Vec<Spanned<String>>,
}

/// The endpoint-level matching fields as written (the two header lists that
/// predate this module are checked by the config itself).
pub(crate) struct RawMatching {
    pub(crate) redact_request_headers: Vec<String>,
    pub(crate) match_request_headers: Vec<String>,
    pub(crate) ignore_request_headers: Vec<Spanned<String>>,
    pub(crate) ignore_query_params: Vec<Spanned<String>>,
    pub(crate) match_body: Option<Spanned<String>>,
    pub(crate) ignore_json_fields: Vec<Spanned<String>>,
    pub(crate) on_repeat: Option<Spanned<String>>,
    pub(crate) redact_response_headers: Vec<Spanned<String>>,
    pub(crate) redact_query_params: Vec<Spanned<String>>,
    pub(crate) redact_json_fields: Vec<Spanned<String>>,
    pub(crate) paths: Vec<Spanned<RawPathOverride>>,
}

/// Builds an error at a span with a message.
pub(crate) type Invalid<'a, E> = &'a dyn Fn(Option<Range<usize>>, String) -> E;

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

struct Build<'a, E> {
    field_prefix: String,
    invalid: Invalid<'a, E>,
}

impl<E> Build<'_, E> {
    fn err(&self, span: Range<usize>, field: &str, msg: impl std::fmt::Display) -> E {
        (self.invalid)(Some(span), format!("{}.{field}: {msg}", self.field_prefix))
    }

    fn headers(&self, field: &str, names: Vec<Spanned<String>>) -> Result<Vec<String>, E> {
        names
            .into_iter()
            .map(|n| {
                let span = n.span();
                let name = n.into_inner();
                if name.is_empty() || !name.bytes().all(is_tchar) {
                    Err(self.err(
                        span,
                        field,
                        format_args!("{name:?} is not a valid header name"),
                    ))
                } else {
                    Ok(name)
                }
            })
            .collect()
    }

    fn params(&self, field: &str, names: Vec<Spanned<String>>) -> Result<Vec<String>, E> {
        names
            .into_iter()
            .map(|n| {
                let span = n.span();
                let name = n.into_inner();
                if name.is_empty() {
                    Err(self.err(span, field, "a parameter name must not be empty"))
                } else {
                    Ok(name)
                }
            })
            .collect()
    }

    fn pointers(&self, field: &str, list: Vec<Spanned<String>>) -> Result<Vec<JsonPointer>, E> {
        list.into_iter()
            .map(|p| {
                let span = p.span();
                JsonPointer::parse(p.get_ref()).map_err(|e| self.err(span, field, e))
            })
            .collect()
    }

    fn body(&self, v: Option<Spanned<String>>) -> Result<Option<BodyMatch>, E> {
        v.map(|v| {
            BodyMatch::parse(v.get_ref()).ok_or_else(|| {
                self.err(
                    v.span(),
                    "match_body",
                    format_args!(
                        "{:?} is not supported (allowed: {})",
                        v.get_ref(),
                        allowed(BodyMatch::ALLOWED)
                    ),
                )
            })
        })
        .transpose()
    }

    fn repeat(&self, v: Option<Spanned<String>>) -> Result<Option<OnRepeat>, E> {
        v.map(|v| {
            OnRepeat::parse(v.get_ref()).ok_or_else(|| {
                self.err(
                    v.span(),
                    "on_repeat",
                    format_args!(
                        "{:?} is not supported (allowed: {})",
                        v.get_ref(),
                        allowed(OnRepeat::ALLOWED)
                    ),
                )
            })
        })
        .transpose()
    }
}

fn allowed(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks the matching fields of `endpoints[index]` and builds its policy.
pub(crate) fn build_policy<E>(
    index: usize,
    raw: RawMatching,
    invalid: Invalid<'_, E>,
) -> Result<MatchPolicy, E> {
    let b = Build {
        field_prefix: format!("endpoints[{index}]"),
        invalid,
    };
    let mut policy = MatchPolicy {
        redact_request_headers: raw.redact_request_headers,
        match_request_headers: raw.match_request_headers,
        ignore_request_headers: b.headers("ignore_request_headers", raw.ignore_request_headers)?,
        ignore_query_params: b.params("ignore_query_params", raw.ignore_query_params)?,
        match_body: b.body(raw.match_body)?.unwrap_or_default(),
        ignore_json_fields: b.pointers("ignore_json_fields", raw.ignore_json_fields)?,
        on_repeat: b.repeat(raw.on_repeat)?.unwrap_or_default(),
        redact_response_headers: b
            .headers("redact_response_headers", raw.redact_response_headers)?,
        redact_query_params: b.params("redact_query_params", raw.redact_query_params)?,
        redact_json_fields: b.pointers("redact_json_fields", raw.redact_json_fields)?,
        paths: Vec::new(),
    };
    let mut prefixes: Vec<String> = Vec::new();
    for (n, p) in raw.paths.into_iter().enumerate() {
        let p = p.into_inner();
        let b = Build {
            field_prefix: format!("endpoints[{index}].paths[{n}]"),
            invalid,
        };
        let prefix_span = p.prefix.span();
        let prefix = p.prefix.into_inner();
        if !prefix.starts_with('/') {
            return Err(b.err(
                prefix_span,
                "prefix",
                format_args!("{prefix:?} must start with '/'"),
            ));
        }
        if prefixes.contains(&prefix) {
            return Err(b.err(
                prefix_span,
                "prefix",
                format_args!("{prefix:?} appears twice in this endpoint"),
            ));
        }
        prefixes.push(prefix.clone());
        let o = PolicyOverride {
            redact_request_headers: b
                .headers("redact_request_headers", p.redact_request_headers)?,
            match_request_headers: p
                .match_request_headers
                .map(|v| b.headers("match_request_headers", v))
                .transpose()?,
            ignore_request_headers: p
                .ignore_request_headers
                .map(|v| b.headers("ignore_request_headers", v))
                .transpose()?,
            ignore_query_params: p
                .ignore_query_params
                .map(|v| b.params("ignore_query_params", v))
                .transpose()?,
            match_body: b.body(p.match_body)?,
            ignore_json_fields: p
                .ignore_json_fields
                .map(|v| b.pointers("ignore_json_fields", v))
                .transpose()?,
            on_repeat: b.repeat(p.on_repeat)?,
            redact_response_headers: b
                .headers("redact_response_headers", p.redact_response_headers)?,
            redact_query_params: b.params("redact_query_params", p.redact_query_params)?,
            redact_json_fields: b.pointers("redact_json_fields", p.redact_json_fields)?,
        };
        policy.add_path(prefix, &o);
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use ouli_core::engine::{BodyMatch, OnRepeat};

    const BASE: &str = "[[endpoints]]\nsource_port = 0\ntarget_host = \"a\"\ntarget_port = 1\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::from_toml_str(&format!("{BASE}{extra}"), "ouli.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn every_field_reaches_the_policy() {
        let c = parse(
            r#"redact_request_headers = ["Authorization"]
match_request_headers = ["Accept"]
ignore_request_headers = ["X-Request-Id"]
ignore_query_params = ["_"]
match_body = "form"
ignore_json_fields = ["/id"]
on_repeat = "repeat_last"
redact_response_headers = ["Set-Cookie"]
redact_query_params = ["key"]
redact_json_fields = ["/password"]

[[endpoints.paths]]
prefix = "/v1/chat"
match_body = "json"
redact_json_fields = ["/token"]
on_repeat = "cycle"

[[endpoints.paths]]
prefix = "/upload"
match_body = "multipart"
match_request_headers = []
"#,
        )
        .unwrap();
        let p = &c.endpoints[0].policy;
        assert_eq!(p.redact_request_headers, ["Authorization"]);
        assert_eq!(p.match_request_headers, ["Accept"]);
        assert_eq!(p.ignore_request_headers, ["X-Request-Id"]);
        assert_eq!(p.ignore_query_params, ["_"]);
        assert_eq!(p.match_body, BodyMatch::Form);
        assert_eq!(p.ignore_json_fields[0].as_str(), "/id");
        assert_eq!(p.on_repeat, OnRepeat::RepeatLast);
        assert_eq!(p.redact_response_headers, ["Set-Cookie"]);
        assert_eq!(p.redact_query_params, ["key"]);
        assert_eq!(p.redact_json_fields[0].as_str(), "/password");
        let chat = p.for_target(b"/v1/chat/completions");
        assert_eq!(chat.match_body, BodyMatch::Json);
        assert_eq!(chat.on_repeat, OnRepeat::Cycle);
        let redacted: Vec<&str> = chat.redact_json_fields.iter().map(|p| p.as_str()).collect();
        assert_eq!(redacted, ["/password", "/token"]);
        assert_eq!(chat.match_request_headers, ["Accept"]);
        let upload = p.for_target(b"/upload/x");
        assert_eq!(upload.match_body, BodyMatch::Multipart);
        assert!(upload.match_request_headers.is_empty());
        assert_eq!(p.for_target(b"/other").match_body, BodyMatch::Form);
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        for (extra, expected) in [
            ("match_body = \"xml\"\n", "line 5, column 14: endpoints[0].match_body: \"xml\" is not supported (allowed: \"exact\", \"json\", \"form\", \"multipart\")"),
            ("on_repeat = \"loop\"\n", "endpoints[0].on_repeat: \"loop\" is not supported"),
            ("ignore_json_fields = [\"id\"]\n", "endpoints[0].ignore_json_fields: JSON pointer \"id\" must be empty or start with '/'"),
            ("redact_json_fields = [\"/a~2\"]\n", "endpoints[0].redact_json_fields: JSON pointer \"/a~2\""),
            ("redact_response_headers = [\"Set Cookie\"]\n", "endpoints[0].redact_response_headers: \"Set Cookie\" is not a valid header name"),
            ("ignore_query_params = [\"\"]\n", "endpoints[0].ignore_query_params: a parameter name must not be empty"),
            ("[[endpoints.paths]]\nprefix = \"v1\"\n", "endpoints[0].paths[0].prefix: \"v1\" must start with '/'"),
            ("[[endpoints.paths]]\nprefix = \"/a\"\n[[endpoints.paths]]\nprefix = \"/a\"\n", "paths[1].prefix: \"/a\" appears twice"),
            ("[[endpoints.paths]]\nprefix = \"/a\"\nmatch_body = \"yaml\"\n", "endpoints[0].paths[0].match_body: \"yaml\""),
        ] {
            let e = parse(extra).unwrap_err();
            assert!(e.contains(expected), "{extra}: {e}");
        }
        let e =
            parse("[[endpoints.paths]]\nprefix = \"/a\"\nmatch_bodie = \"json\"\n").unwrap_err();
        assert!(e.contains("unknown field `match_bodie`"), "{e}");
    }
}
