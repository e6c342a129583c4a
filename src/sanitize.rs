//! The one boundary for text that came from outside (messages, provider answers,
//! notifications) before it is stored, logged, forwarded to the dead-letter queue or printed.
//! Domain-free: it knows text, not orders.
//!
//! [`text`] and [`bytes`] apply, in order:
//! 1. invalid UTF-8 and NUL (which PostgreSQL text cannot hold) become U+FFFD;
//! 2. the worker's own configured secrets are removed (provider API keys, webhook secrets,
//!    passwords in `database.url` and `amqp.url`): a provider or a proxy that echoes the
//!    credentials it received must not put them in the ledger or the logs;
//! 3. card numbers are masked (P9): any run of 13 to 19 digits (single spaces or dashes between
//!    digits allowed) that passes the Luhn check becomes `[card-number-masked]`;
//! 4. the result is capped at a number of characters, with [`TRUNCATED`] appended.
//!
//! The secrets are collected once at startup from the settings
//! ([`crate::config::Settings::secrets`]) into a process-wide registry with
//! [`register_secrets`]: the text boundary is reached from storage, queue, telemetry and the
//! operator commands, and threading the settings through each would put configuration where
//! only text belongs. The registry only grows (several workers with different settings may
//! share a test process); values shorter than [`MIN_SECRET_CHARS`] are not registered, as
//! they would match ordinary words.

use std::sync::{PoisonError, RwLock};

/// What replaces a removed secret.
pub const SECRET_REMOVED: &str = "[secret-removed]";
/// What replaces a card number.
pub const CARD_MASKED: &str = "[card-number-masked]";
/// Appended to text cut at its cap.
pub const TRUNCATED: &str = "…[truncated]";
/// Shortest value registered as a secret, in characters.
pub const MIN_SECRET_CHARS: usize = 8;

/// Cap for a short field: an error, a detail, a line's sku or name, a header.
pub const FIELD_CHARS: usize = 2_000;
/// Cap for a stored body (a refused message or a notification): the largest
/// `amqp.max_message_bytes` allowed, so a refused body under the limit is kept whole.
pub const BODY_CHARS: usize = 16 * 1024 * 1024;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds the worker's own secrets to the registry [`text`] removes them with.
pub fn register_secrets(secrets: impl IntoIterator<Item = String>) {
    let mut list = SECRETS.write().unwrap_or_else(PoisonError::into_inner);
    for s in secrets {
        if s.chars().count() >= MIN_SECRET_CHARS && !list.contains(&s) {
            list.push(s);
        }
    }
    // Longest first, so a secret containing another is removed whole.
    list.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// The password of a URL (`scheme://user:password@host/…`), as written and percent-decoded.
pub fn url_password(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let Some((_, password)) = userinfo.split_once(':') else {
        return Vec::new();
    };
    let mut out = vec![password.to_owned()];
    let decoded = percent_decode(password);
    if decoded != password {
        out.push(decoded);
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// `raw` made safe to keep: NUL replaced, secrets removed, card numbers masked, at most
/// `max_chars` characters (plus [`TRUNCATED`]).
pub fn text(raw: &str, max_chars: usize) -> String {
    let secrets = SECRETS.read().unwrap_or_else(PoisonError::into_inner);
    // Only a bounded prefix is examined: enough to find a secret or a card number that
    // starts before the cap.
    let margin = 64 + secrets.first().map_or(0, String::len);
    let (head, cut) = match raw.char_indices().nth(max_chars.saturating_add(margin)) {
        Some((at, _)) => (&raw[..at], true),
        None => (raw, false),
    };
    let mut out = head.replace('\0', "\u{FFFD}");
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), SECRET_REMOVED);
        }
    }
    drop(secrets);
    let mut out = mask_card_numbers(&out);
    if let Some((at, _)) = out.char_indices().nth(max_chars) {
        out.truncate(at);
        out.push_str(TRUNCATED);
    } else if cut {
        out.push_str(TRUNCATED);
    }
    out
}

/// [`text`] of bytes that may not be UTF-8 (invalid sequences become U+FFFD). Only the first
/// bytes that can make `max_chars` characters are read.
pub fn bytes(raw: &[u8], max_chars: usize) -> String {
    let margin = 64
        + SECRETS
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .first()
            .map_or(0, String::len);
    let limit = max_chars.saturating_add(margin).saturating_mul(4);
    if raw.len() > limit {
        let mut t = text(&String::from_utf8_lossy(&raw[..limit]), max_chars);
        if !t.ends_with(TRUNCATED) {
            t.push_str(TRUNCATED);
        }
        t
    } else {
        text(&String::from_utf8_lossy(raw), max_chars)
    }
}

/// Returns `text` with every card number masked: a Luhn-valid sequence of 13–19 digits, whole
/// groups of a run of digits joined by single spaces or dashes (`4111 1111 1111 1111`,
/// `4111-1111-1111-1111`, `4111111111111111`). A card number next to other digit groups
/// (`qty 2 4111 1111 1111 1111`) is found too: every span of whole groups is tried, the
/// longest first.
pub fn mask_card_numbers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The run: groups of digits joined by single separators, as (start, end) positions.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            groups.push((start, j));
            let joined = j + 1 < chars.len()
                && (chars[j] == ' ' || chars[j] == '-')
                && chars[j + 1].is_ascii_digit();
            if !joined {
                break;
            }
            j += 1;
        }
        let run_end = j;
        let mut cursor = i;
        let mut g = 0;
        while g < groups.len() {
            // The longest span of whole groups from `g` that is a card number; at most 19
            // digits, so at most 19 groups are looked at.
            let mut card = None;
            let mut digits: Vec<u8> = Vec::with_capacity(19);
            for (last, &(s, e)) in groups.iter().enumerate().skip(g) {
                digits.extend(chars[s..e].iter().map(|c| *c as u8 - b'0'));
                if digits.len() > 19 {
                    break;
                }
                if digits.len() >= 13 && luhn(&digits) {
                    card = Some(last);
                }
            }
            match card {
                Some(last) => {
                    out.extend(&chars[cursor..groups[g].0]);
                    out.push_str(CARD_MASKED);
                    cursor = groups[last].1;
                    g = last + 1;
                }
                None => g += 1,
            }
        }
        out.extend(&chars[cursor..run_end]);
        i = run_end;
    }
    out
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_luhn_valid_card_numbers_with_or_without_separators() {
        assert_eq!(
            mask_card_numbers(r#"{"note":"card 4242424242424242"}"#),
            r#"{"note":"card [card-number-masked]"}"#
        );
        assert_eq!(
            mask_card_numbers("pan 4111-1111-1111-1111 end"),
            "pan [card-number-masked] end"
        );
        assert_eq!(
            mask_card_numbers("5555 5555 5555 4444"),
            "[card-number-masked]"
        );
    }

    #[test]
    fn replaces_nul_and_invalid_utf8_removes_registered_secrets_and_caps() {
        register_secrets(["sanitize-test-secret-1".to_owned(), "short".to_owned()]);
        assert_eq!(
            text("a\0b 401 Bearer sanitize-test-secret-1 short", 100),
            "a\u{FFFD}b 401 Bearer [secret-removed] short"
        );
        assert_eq!(bytes(b"ok \xff\x00", 100), "ok \u{FFFD}\u{FFFD}");
        assert_eq!(text("abcdef", 3), format!("abc{TRUNCATED}"));
        let long = format!("{}4111111111111111", "x".repeat(10));
        assert_eq!(text(&long, 12), format!("xxxxxxxxxx[c{TRUNCATED}"));
        assert!(!bytes(long.repeat(1000).as_bytes(), 50).contains("4111111111111111"));
    }

    #[test]
    fn masks_a_card_number_next_to_other_digit_groups() {
        assert_eq!(
            mask_card_numbers("ref a2 4111 1111 1111 1111 qty 3"),
            "ref a2 [card-number-masked] qty 3"
        );
        assert_eq!(
            mask_card_numbers("4111 1111 1111 1111 4242 4242 4242 4242"),
            "[card-number-masked] [card-number-masked]"
        );
        assert_eq!(
            mask_card_numbers("3782-822463-10005"),
            "[card-number-masked]"
        );
    }

    #[test]
    fn finds_the_password_of_a_url() {
        assert_eq!(
            url_password("amqp://worker:s%40cret@rabbit:5672/%2f"),
            vec!["s%40cret", "s@cret"]
        );
        assert!(url_password("postgres://postgres@127.0.0.1/db").is_empty());
        assert!(url_password("not a url").is_empty());
    }

    #[test]
    fn leaves_amounts_ids_and_non_luhn_runs_alone() {
        let text = r#"{"unit_amount":1999,"order_id":"ORD-1234567890123","x":4242424242424241}"#;
        assert_eq!(mask_card_numbers(text), text);
    }
}
