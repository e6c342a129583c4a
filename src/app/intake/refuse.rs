//! Refusals: a message that cannot be processed is recorded with its reason (and, when it
//! was read, marked in the inbox) and dead-lettered; it never reaches the provider.

use sha2::{Digest, Sha256};

use crate::queue::consumer::IncomingMessage;
use crate::queue::wire::{self, Parsed};
use crate::storage::ledger::{IntakeBatch, NewRejection};
use crate::storage::{LedgerTx, StorageError};
use crate::telemetry::events::{self, Emit};

use super::rows::{Entry, inbox_row};
use super::{Intake, IntakeOutcome, UNSTORABLE};

/// A refusal decided without the ledger's state.
pub(super) struct Unread {
    pub(super) reason: &'static str,
    pub(super) detail: String,
    pub(super) message_id: Option<String>,
    pub(super) message_type: Option<String>,
    pub(super) order_id: Option<String>,
}

/// A refusal decided inside a transaction.
pub(super) struct Refusal {
    pub(super) reason: String,
    pub(super) detail: String,
}

impl Intake {
    /// Records a message the ledger cannot store as refused (`unstorable`), with the database's
    /// reason, in a transaction of its own.
    pub(super) async fn refuse_unstorable(
        &self,
        message: &IncomingMessage,
        error: &StorageError,
    ) -> Result<IntakeOutcome, StorageError> {
        let body_hash = hex::encode(Sha256::digest(&message.body));
        let parsed = wire::parse(&message.body, Some(&message.routing_key)).ok();
        let envelope = parsed.as_ref().map(|p| &p.envelope);
        let unread = Unread {
            reason: UNSTORABLE,
            detail: format!(
                "the ledger cannot store this message ({error}); it is refused, not retried. Remove control characters or out-of-range values and publish it again with a new message_id"
            ),
            message_id: envelope.map(|e| e.message_id.as_str().to_owned()),
            message_type: envelope.map(|e| e.message_type.as_str().to_owned()),
            order_id: parsed
                .as_ref()
                .map(|p| p.command.order_id().as_str().to_owned()),
        };
        let body = String::from_utf8_lossy(&message.body);
        self.refuse_unread(message, &body_hash, unread, &body).await
    }

    /// Records a refusal decided without the ledger (the body could not be read, or was too
    /// large, or the ledger cannot store it), in a transaction of its own.
    pub(super) async fn refuse_unread(
        &self,
        message: &IncomingMessage,
        body_hash: &str,
        unread: Unread,
        body: &str,
    ) -> Result<IntakeOutcome, StorageError> {
        let mut tx = self.store.begin("starting intake").await?;
        tx.insert_rejection(&NewRejection {
            message_id: unread.message_id.as_deref(),
            message_type: unread.message_type.as_deref(),
            order_id: unread.order_id.as_deref(),
            reason: unread.reason,
            detail: &unread.detail,
            routing_key: Some(&message.routing_key),
            body: Some(body),
            body_hash,
        })
        .await?;
        tx.commit("committing intake").await?;
        events::MessageRejected {
            reason: unread.reason,
            message_id: unread.message_id.as_deref().unwrap_or_default(),
            order_id: unread.order_id.as_deref().unwrap_or_default(),
            detail: &unread.detail,
        }
        .emit();
        Ok(IntakeOutcome::Rejected {
            reason: unread.reason.to_owned(),
            detail: unread.detail,
            message_id: unread.message_id,
        })
    }

    /// Records a refusal; with `inbox`, the write set of the message, also marks the message
    /// id as rejected there, so a redelivery is refused the same way.
    pub(super) async fn refuse<'a>(
        &self,
        tx: &mut LedgerTx,
        inbox: Option<&mut IntakeBatch<'a>>,
        message: &'a IncomingMessage,
        parsed: &'a Parsed,
        body_hash: &'a str,
        refusal: Refusal,
    ) -> Result<IntakeOutcome, StorageError> {
        // Stored through the text boundary (storage).
        let body = String::from_utf8_lossy(&message.body);
        tx.insert_rejection(&NewRejection {
            message_id: Some(parsed.envelope.message_id.as_str()),
            message_type: Some(parsed.envelope.message_type.as_str()),
            order_id: Some(parsed.command.order_id().as_str()),
            reason: &refusal.reason,
            detail: &refusal.detail,
            routing_key: Some(&message.routing_key),
            body: Some(&body),
            body_hash,
        })
        .await?;
        if let Some(writes) = inbox {
            let entry = Entry::Rejected(refusal.reason.clone());
            writes
                .inbox
                .push(inbox_row(message, parsed, body_hash, entry));
        }
        events::MessageRejected {
            reason: &refusal.reason,
            message_id: parsed.envelope.message_id.as_str(),
            order_id: parsed.command.order_id().as_str(),
            detail: &refusal.detail,
        }
        .emit();
        Ok(IntakeOutcome::Rejected {
            reason: refusal.reason,
            detail: refusal.detail,
            message_id: Some(parsed.envelope.message_id.as_str().to_owned()),
        })
    }
}
