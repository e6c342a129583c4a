//! When a capture call failed without a definite answer: send again under the same key, read
//! the payment back first, or ask an operator. Provider-independent (DESIGN §3, P3).
//!
//! A provider may store the first answer under an idempotency key, errors included, and
//! replay it for every later request with that key (Stripe and Gr4vy document it for 5xx;
//! where a provider's docs are silent it is assumed). Retrying such a key only fetches the
//! same error again, and the request behind it may or may not have captured. So the payment
//! is read back before anything else when
//!
//! - the provider marked the answer as a replay, or the adapter knows the key will only
//!   replay it (`key_spent`),
//! - the same server error came back [`SAME_ANSWERS_BEFORE_READ_BACK`] times in a row under
//!   the key,
//! - or the retry budget is about to run out.
//!
//! The read-back decides ([`after_read_back`]): the capture is there → succeeded; nothing was
//! captured → a new key generation when the old key is stuck, else the same key again; the
//! read-back failed or was unclear → read again after a backoff, and only after
//! [`FAILED_READ_BACKS_BEFORE_ATTENTION`] of those, attention. A provider that offers no
//! read-back goes to attention without one. Pure: the executor does the I/O.

/// Identical server-error answers under one key, in a row, after which the key is treated as
/// replaying a stored error: the first answer and two replays of it.
pub const SAME_ANSWERS_BEFORE_READ_BACK: usize = 3;

/// Failed or unclear read-backs in a row after which the capture goes to an operator.
pub const FAILED_READ_BACKS_BEFORE_ATTENTION: u32 = 5;

/// One failed answer under the current key: its HTTP status (none when no answer arrived)
/// and the provider's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub http_status: Option<u16>,
    pub provider_code: Option<String>,
}

impl Answer {
    fn server_error(&self) -> bool {
        self.http_status.is_some_and(|s| (500..600).contains(&s))
    }
}

/// How the latest call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not done; the provider allows the same key again (rate limit, same key in progress,
    /// connection refused, a server error).
    Retryable,
    /// May or may not have been applied. `key_spent`: the provider will only replay this
    /// answer under the key (a replay marker, or a saved error the adapter recognises).
    Ambiguous { key_spent: bool },
}

/// Whether the provider can be asked what it captured on an authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBack {
    Offered,
    /// Adyen's Checkout API, the orchestrator: outcomes only by notification or dashboard.
    NotOffered,
}

/// What the latest failure and the key's history come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHistory<'a> {
    pub failure: Failure,
    /// The failed answers under the current key, newest (this call's) first.
    pub answers: &'a [Answer],
    /// Calls still allowed by the retry budget after this one (0: it is spent).
    pub attempts_left: u32,
    pub read_back: ReadBack,
}

/// The next step after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Back off and send the same request under the same key.
    RetrySameKey,
    /// Back off and read the payment back before sending anything. `key_stuck`: the key will
    /// only replay its stored answer, so if nothing was captured a new key generation is due.
    ReadBackFirst { key_stuck: bool },
    /// Nothing more the worker can safely do: an operator decides.
    Attention,
}

/// Decides what follows a failed call (see the module documentation).
pub fn after_failure(h: &KeyHistory<'_>) -> NextStep {
    let key_stuck = match h.failure {
        Failure::Ambiguous { key_spent } => key_spent,
        Failure::Retryable => false,
    } || replays_stored_error(h.answers);
    let read_back_due = key_stuck || h.attempts_left <= 1;
    if !read_back_due {
        return NextStep::RetrySameKey;
    }
    match h.read_back {
        ReadBack::Offered => NextStep::ReadBackFirst { key_stuck },
        // Without a read-back a resend is only safe while the key protects it and budget is
        // left; a stuck key or a spent budget needs a person.
        ReadBack::NotOffered if !key_stuck && h.attempts_left > 0 => NextStep::RetrySameKey,
        ReadBack::NotOffered => NextStep::Attention,
    }
}

/// The same server error [`SAME_ANSWERS_BEFORE_READ_BACK`] times in a row, newest first.
fn replays_stored_error(answers: &[Answer]) -> bool {
    let Some(newest) = answers.first() else {
        return false;
    };
    newest.server_error()
        && answers.len() >= SAME_ANSWERS_BEFORE_READ_BACK
        && answers[..SAME_ANSWERS_BEFORE_READ_BACK]
            .iter()
            .all(|a| a == newest)
}

/// What a read-back showed about the capture under the current key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// The provider's captured total includes this capture.
    Captured,
    /// The provider's captured total is what was captured before this capture.
    NothingCaptured,
    /// The read-back failed in a way worth asking again, or showed something neither (still
    /// processing).
    Unclear,
}

/// What follows a read-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReadBack {
    /// Record the capture as succeeded; it is never sent again.
    RecordSucceeded,
    /// Send again under the same key (the key is not stuck and the budget's age allows it).
    SendSameKey,
    /// Move to a new key generation and send (P3: the provider showed the old key captured
    /// nothing).
    SendNewKey,
    /// Back off and read again.
    ReadAgain,
    /// Nothing captured and the budget's age is spent, or the read-back keeps failing.
    Attention,
}

/// Decides what follows a read-back. `within_age`: the capture is younger than the retry
/// budget's age limit (once its attempts are used up, every further send is preceded by a
/// read-back, until that age). `failed_read_backs` counts the unclear read-backs in a row
/// before this one.
pub fn after_read_back(
    finding: Finding,
    key_stuck: bool,
    within_age: bool,
    failed_read_backs: u32,
) -> AfterReadBack {
    match finding {
        Finding::Captured => AfterReadBack::RecordSucceeded,
        Finding::NothingCaptured if key_stuck => AfterReadBack::SendNewKey,
        // The key's request may still be running (its answer was lost, not refused): only
        // the same key is safe, which the provider executes once or answers from its store.
        Finding::NothingCaptured if within_age => AfterReadBack::SendSameKey,
        Finding::NothingCaptured => AfterReadBack::Attention,
        Finding::Unclear if failed_read_backs + 1 < FAILED_READ_BACKS_BEFORE_ATTENTION => {
            AfterReadBack::ReadAgain
        }
        Finding::Unclear => AfterReadBack::Attention,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: &str) -> Answer {
        Answer {
            http_status: Some(status),
            provider_code: Some(code.to_owned()),
        }
    }

    fn history(failure: Failure, answers: &[Answer], attempts_left: u32) -> KeyHistory<'_> {
        KeyHistory {
            failure,
            answers,
            attempts_left,
            read_back: ReadBack::Offered,
        }
    }

    #[test]
    fn a_first_server_error_is_retried_under_the_same_key() {
        let answers = [answer(500, "server_error")];
        assert_eq!(
            after_failure(&history(Failure::Retryable, &answers, 10)),
            NextStep::RetrySameKey
        );
    }

    #[test]
    fn the_same_server_error_three_times_is_a_stored_error_read_back_first() {
        let same = vec![answer(500, "server_error"); 3];
        assert_eq!(
            after_failure(&history(Failure::Retryable, &same, 10)),
            NextStep::ReadBackFirst { key_stuck: true }
        );
        // Two in a row is not yet evidence.
        assert_eq!(
            after_failure(&history(Failure::Retryable, &same[..2], 10)),
            NextStep::RetrySameKey
        );
        // Different answers are not a replay.
        let mixed = [
            answer(500, "server_error"),
            answer(503, "server_error"),
            answer(500, "server_error"),
        ];
        assert_eq!(
            after_failure(&history(Failure::Retryable, &mixed, 10)),
            NextStep::RetrySameKey
        );
    }

    #[test]
    fn repeated_refusals_before_processing_never_spend_the_key() {
        // A key in progress or a rate limit: the request was not processed under it, or is
        // still being processed; a new key could capture twice.
        let busy = vec![answer(409, "concurrent_request"); 5];
        assert_eq!(
            after_failure(&history(Failure::Retryable, &busy, 10)),
            NextStep::RetrySameKey
        );
        assert_eq!(
            after_failure(&history(Failure::Retryable, &busy, 1)),
            NextStep::ReadBackFirst { key_stuck: false }
        );
    }

    #[test]
    fn a_replay_marker_reads_back_at_once() {
        let one = [answer(500, "api_error")];
        assert_eq!(
            after_failure(&history(Failure::Ambiguous { key_spent: true }, &one, 10)),
            NextStep::ReadBackFirst { key_stuck: true }
        );
    }

    #[test]
    fn an_ambiguous_call_is_retried_until_the_budget_nears_its_end() {
        let lost = [Answer {
            http_status: None,
            provider_code: None,
        }];
        let ambiguous = Failure::Ambiguous { key_spent: false };
        assert_eq!(
            after_failure(&history(ambiguous, &lost, 5)),
            NextStep::RetrySameKey
        );
        assert_eq!(
            after_failure(&history(ambiguous, &lost, 1)),
            NextStep::ReadBackFirst { key_stuck: false }
        );
        assert_eq!(
            after_failure(&history(ambiguous, &lost, 0)),
            NextStep::ReadBackFirst { key_stuck: false }
        );
    }

    #[test]
    fn without_a_read_back_a_stuck_key_or_a_spent_budget_needs_a_person() {
        let same = vec![answer(500, "server_error"); 3];
        let none = |failure, answers, attempts_left| KeyHistory {
            failure,
            answers,
            attempts_left,
            read_back: ReadBack::NotOffered,
        };
        assert_eq!(
            after_failure(&none(Failure::Retryable, &same, 10)),
            NextStep::Attention
        );
        assert_eq!(
            after_failure(&none(Failure::Retryable, &same[..1], 1)),
            NextStep::RetrySameKey
        );
        assert_eq!(
            after_failure(&none(Failure::Retryable, &same[..1], 0)),
            NextStep::Attention
        );
    }

    #[test]
    fn the_read_back_decides() {
        assert_eq!(
            after_read_back(Finding::Captured, true, false, 0),
            AfterReadBack::RecordSucceeded
        );
        assert_eq!(
            after_read_back(Finding::NothingCaptured, true, false, 0),
            AfterReadBack::SendNewKey
        );
        assert_eq!(
            after_read_back(Finding::NothingCaptured, false, true, 0),
            AfterReadBack::SendSameKey
        );
        assert_eq!(
            after_read_back(Finding::NothingCaptured, false, false, 0),
            AfterReadBack::Attention
        );
        for failed in 0..FAILED_READ_BACKS_BEFORE_ATTENTION - 1 {
            assert_eq!(
                after_read_back(Finding::Unclear, true, true, failed),
                AfterReadBack::ReadAgain
            );
        }
        assert_eq!(
            after_read_back(
                Finding::Unclear,
                true,
                true,
                FAILED_READ_BACKS_BEFORE_ATTENTION - 1
            ),
            AfterReadBack::Attention
        );
    }
}
