//! HTTP plumbing the JSON adapters share: base URLs, the client, sensitive header values,
//! sending one call and timing it, and the outcome of a call that got no answer.
//!
//! Owns nothing provider-specific: every status and body is routed by the adapter that
//! understands it. Imports `domain` and the provider boundary only. A credential handed to
//! [`sensitive`] is marked so that `Debug` of the header prints nothing of it, and no error
//! built here ever contains one.

use std::error::Error as _;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, RequestBuilder, StatusCode, Url};

use crate::domain::ProviderName;
use crate::provider::{CallResult, Outcome};

/// Longest wait a `Retry-After` may ask for.
pub(crate) const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// Upper bound of the connect timeout: connecting is quick when the provider is reachable,
/// and a connect failure is safe to retry (nothing was sent).
const CONNECT_TIMEOUT_CAP: Duration = Duration::from_secs(5);

/// Longest provider message copied into an outcome or a reason.
pub(crate) const MESSAGE_LIMIT: usize = 500;

/// Why an adapter could not be built. Never contains a credential.
#[derive(Debug, thiserror::Error)]
pub enum ProviderSetupError {
    #[error(
        "provider {name}: base URL {base_url:?} is not usable: {problem}; expected an absolute http(s) URL such as {example}"
    )]
    BaseUrl {
        name: ProviderName,
        base_url: String,
        problem: String,
        example: &'static str,
    },
    #[error(
        "provider {name}: the {what} cannot be sent in a header (it is empty or contains whitespace or control characters); check the configured value"
    )]
    Credential {
        name: ProviderName,
        what: &'static str,
    },
    #[error("provider {name}: {setting} is required: {hint}")]
    MissingSetting {
        name: ProviderName,
        setting: &'static str,
        hint: &'static str,
    },
    #[error("provider {name}: {setting} is not usable: {problem}")]
    BadSetting {
        name: ProviderName,
        setting: &'static str,
        problem: String,
    },
    #[error("provider {name}: the request timeout must be longer than zero")]
    ZeroTimeout { name: ProviderName },
    #[error("provider {name}: building the HTTP client failed: {source}")]
    Client {
        name: ProviderName,
        source: reqwest::Error,
    },
}

/// Parses and checks a base URL: http(s), no user info (a credential would leak into logs),
/// no query or fragment. A path is kept (`https://checkout-test.adyen.com/v71`).
pub(crate) fn parse_base_url(
    name: &ProviderName,
    base_url: String,
    example: &'static str,
) -> Result<Url, ProviderSetupError> {
    let bad = |base_url: String, problem: String| ProviderSetupError::BaseUrl {
        name: name.clone(),
        base_url,
        problem,
        example,
    };
    let url = match Url::parse(&base_url) {
        Ok(url) => url,
        Err(error) => return Err(bad(base_url, error.to_string())),
    };
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(bad(base_url, "the scheme must be http or https".to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Do not echo it: the user-info part may hold a credential.
        let shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
        return Err(bad(
            shown,
            "it carries user credentials; secrets go in api_key instead".to_owned(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            base_url,
            "it has a query or fragment; give the API root only".to_owned(),
        ));
    }
    Ok(url)
}

/// The one HTTP client of an adapter. `timeout` bounds a whole call, from connecting until
/// the body is read; the connect timeout is half of it, at most 5 s. Redirects are not
/// followed: replaying a capture to another host is never wanted.
pub(crate) fn client(name: &ProviderName, timeout: Duration) -> Result<Client, ProviderSetupError> {
    if timeout.is_zero() {
        return Err(ProviderSetupError::ZeroTimeout { name: name.clone() });
    }
    Client::builder()
        .timeout(timeout)
        .connect_timeout((timeout / 2).min(CONNECT_TIMEOUT_CAP))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("capture-worker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| ProviderSetupError::Client {
            name: name.clone(),
            source,
        })
}

/// `value` as a sensitive header value, or `None` when it is empty or holds whitespace or
/// control characters in `token` (the credential part, checked before any prefix is added).
pub(crate) fn sensitive(token: &str, value: String) -> Option<HeaderValue> {
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let mut header = HeaderValue::try_from(value).ok()?;
    header.set_sensitive(true);
    Some(header)
}

/// `base` with `segments` appended, each percent-encoded as one path segment (ids may hold
/// `/` or `#`). Refuses `.` and `..`, which `Url` would drop or resolve, turning the call into
/// one on another resource.
pub(crate) fn url_with(base: &Url, segments: &[&str]) -> Result<Url, String> {
    if let Some(bad) = segments.iter().find(|s| matches!(**s, "." | ".." | "")) {
        return Err(format!("{bad:?} cannot be used as a URL path segment"));
    }
    let mut url = base.clone();
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| format!("base URL {base} cannot take a path"))?;
        path.pop_if_empty().extend(segments);
    }
    Ok(url)
}

/// A response whose status and headers arrived; the body may still have failed to arrive.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Result<Vec<u8>, reqwest::Error>,
}

/// One call as it happened on the wire.
pub(crate) struct Exchange {
    pub(crate) latency: Duration,
    pub(crate) result: Result<Answer, reqwest::Error>,
}

/// Sends one request and reads the whole answer, timing it.
pub(crate) async fn exchange(builder: RequestBuilder) -> Exchange {
    let started = Instant::now();
    let response = match builder.send().await {
        Ok(response) => response,
        Err(error) => {
            return Exchange {
                latency: started.elapsed(),
                result: Err(error),
            };
        }
    };
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map(|b| b.to_vec());
    Exchange {
        latency: started.elapsed(),
        result: Ok(Answer {
            status,
            headers,
            body,
        }),
    }
}

/// How safe it is to send the same call again after an answer was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// The provider stores the first answer under the idempotency key: sending again with
    /// the same key cannot apply the call twice.
    Idempotent,
    /// No idempotency key: a second send may apply the call twice, so an unknown outcome is
    /// resolved by reading the provider's state back before anything is sent again.
    Unprotected,
}

impl Replay {
    /// `key_spent` for an outcome that may or may not have been applied.
    pub(crate) fn key_spent(self) -> bool {
        match self {
            Replay::Idempotent => false,
            Replay::Unprotected => true,
        }
    }
}

/// Turns an exchange into a call result: transport failures here, answers by `route`
/// (status, headers, body → outcome and the provider's code). `request_id_header` names the
/// provider's request id header, recorded for support tickets.
pub(crate) fn finish(
    exchange: Exchange,
    what: &str,
    timeout: Duration,
    replay: Replay,
    request_id_header: &str,
    route: impl FnOnce(StatusCode, &HeaderMap, &[u8]) -> (Outcome, Option<String>),
) -> CallResult {
    let answer = match exchange.result {
        Ok(answer) => answer,
        Err(error) => {
            let result = CallResult {
                outcome: transport_outcome(what, &error, timeout, replay),
                http_status: None,
                provider_code: None,
                provider_request_id: None,
                latency: exchange.latency,
            };
            record(&result);
            return result;
        }
    };
    let status = answer.status.as_u16();
    let request_id = header_text(&answer.headers, request_id_header);
    let (outcome, provider_code) = match answer.body {
        Ok(body) => route(answer.status, &answer.headers, &body),
        Err(error) if answer.status.is_success() => (
            Outcome::Unknown {
                reason: format!(
                    "{what}: HTTP {status} arrived but its body did not ({}); the call may have succeeded",
                    error_chain(&error)
                ),
                key_spent: replay.key_spent(),
            },
            None,
        ),
        // An error status without its body: route on the status and headers alone.
        Err(_) => route(answer.status, &answer.headers, &[]),
    };
    let result = CallResult {
        outcome,
        http_status: Some(status),
        provider_code,
        provider_request_id: request_id,
        latency: exchange.latency,
    };
    record(&result);
    result
}

/// The outcome of a call that got no HTTP answer.
pub(crate) fn transport_outcome(
    what: &str,
    error: &reqwest::Error,
    timeout: Duration,
    replay: Replay,
) -> Outcome {
    let detail = error_chain(error);
    if error.is_builder() {
        // Never sent, and sending it again would fail the same way.
        Outcome::Failed {
            reason: format!("{what}: the request could not be built: {detail}"),
        }
    } else if error.is_connect() {
        // Checked before the timeout: a connect timeout is also a timeout, but nothing left.
        Outcome::Retryable {
            after: None,
            reason: format!("{what}: connecting failed, nothing was sent: {detail}"),
        }
    } else if error.is_timeout() {
        Outcome::Unknown {
            reason: format!(
                "{what}: no answer within {timeout:?} after the request was sent; it may have been applied: {detail}"
            ),
            key_spent: replay.key_spent(),
        }
    } else {
        Outcome::Unknown {
            reason: format!(
                "{what}: the connection failed after the request was sent; it may have been applied: {detail}"
            ),
            key_spent: replay.key_spent(),
        }
    }
}

/// A call that could not be addressed; nothing was sent.
pub(crate) fn unsendable(what: &str, problem: String) -> CallResult {
    let result = CallResult {
        outcome: Outcome::Failed {
            reason: format!("{what}: {problem}"),
        },
        http_status: None,
        provider_code: None,
        provider_request_id: None,
        latency: Duration::ZERO,
    };
    record(&result);
    result
}

/// `Retry-After` in whole seconds, capped at [`RETRY_AFTER_CAP`]; the HTTP-date form is
/// ignored.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    header_text(headers, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs).min(RETRY_AFTER_CAP))
}

pub(crate) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Records what was learned on the current call span (fields declared by the adapter's
/// `#[instrument]`; recording an undeclared field is a no-op).
pub(crate) fn record(result: &CallResult) {
    let span = tracing::Span::current();
    span.record("outcome", result.outcome.label());
    if let Some(status) = result.http_status {
        span.record("http_status", status);
    }
    if let Some(id) = &result.provider_request_id {
        span.record("provider_request_id", id.as_str());
    }
    if let Some(code) = &result.provider_code {
        span.record("provider_code", code.as_str());
    }
}

/// An error and its sources, `: `-separated; reqwest's own message is often just "error
/// sending request".
pub(crate) fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// At most `limit` characters of `text` (never splitting a character).
pub(crate) fn clip(text: &str, limit: usize) -> String {
    text.chars().take(limit).collect()
}

/// `order/cause`, the reference every adapter sends so a capture can be matched to the
/// shipment (or cancellation) that caused it, clipped to the provider's limit. A slash, not a
/// colon: Adyen joins notification fields with colons to sign them.
pub(crate) fn capture_reference(order_id: &str, cause: &str, limit: usize) -> String {
    clip(&format!("{order_id}/{cause}"), limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_segments_are_escaped_and_dot_segments_refused() {
        let base = Url::parse("https://api.example.com/v71/").unwrap();
        assert_eq!(
            url_with(&base, &["payments", "a/b#c", "captures"])
                .unwrap()
                .as_str(),
            "https://api.example.com/v71/payments/a%2Fb%23c/captures"
        );
        assert!(url_with(&base, &["payments", ".."]).is_err());
        assert!(url_with(&base, &["payments", ""]).is_err());
    }

    #[test]
    fn sensitive_values_refuse_blank_or_spaced_tokens() {
        assert!(sensitive("", "Bearer ".to_owned()).is_none());
        assert!(sensitive("a b", "Bearer a b".to_owned()).is_none());
        assert!(sensitive("k\n", "k\n".to_owned()).is_none());
        let value = sensitive("key", "Bearer key".to_owned()).unwrap();
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("key"));
    }

    #[test]
    fn references_are_clipped_on_character_boundaries() {
        assert_eq!(capture_reference("ORD-1", "SHP-9", 80), "ORD-1/SHP-9");
        assert_eq!(capture_reference("ÄÖÜ", "x", 2), "ÄÖ");
    }
}
