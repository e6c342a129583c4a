//! The ledger's unit of work: one transaction, and the operations the use cases run in it.
//!
//! [`Store::begin`] opens a [`LedgerTx`]; the use cases (intake, the expiry sweep, `order
//! resume`) call its methods and [`LedgerTx::commit`] it. Dropped without a commit, it rolls
//! back. The statements themselves live in [`ledger`], [`captures`] and [`operator`]; this
//! type only carries the transaction to them, so nothing outside `storage` names `sqlx`.

use std::collections::{HashMap, HashSet};

use sqlx::{Postgres, Transaction};

use crate::domain::{
    AuthorizationId, Cancellation, EventId, Order, OrderId, OrderState, ProviderName, Shipment,
    ShipmentId,
};

use super::captures::{self, ClaimedCapture};
use super::ledger::{
    self, InboxRecord, IntakeBatch, NewCapture, NewRejection, ParkedMessage, StoredOrder,
};
use super::operator::{self, CarriedCapture, NewAuthorization};
use super::{StorageError, Store};

/// One ledger transaction. Rolls back when dropped without [`LedgerTx::commit`].
pub struct LedgerTx {
    tx: Transaction<'static, Postgres>,
}

impl Store {
    /// Starts a ledger transaction; `context` says what it is for (it names a failure).
    pub async fn begin(&self, context: &'static str) -> Result<LedgerTx, StorageError> {
        let tx = self
            .pool()
            .begin()
            .await
            .map_err(|e| StorageError::classify(context, e))?;
        Ok(LedgerTx { tx })
    }
}

impl LedgerTx {
    /// Commits everything done in this transaction; `context` names a failure.
    pub async fn commit(self, context: &'static str) -> Result<(), StorageError> {
        self.tx
            .commit()
            .await
            .map_err(|e| StorageError::classify(context, e))
    }

    /// [`ledger::lock_order_key`] in this transaction.
    pub async fn lock_order_key(&mut self, order_id: &OrderId) -> Result<(), StorageError> {
        ledger::lock_order_key(&mut self.tx, order_id).await
    }

    /// [`ledger::increment_unfinished`] in this transaction.
    pub async fn increment_unfinished(&mut self, order_id: &OrderId) -> Result<bool, StorageError> {
        ledger::increment_unfinished(&mut self.tx, order_id).await
    }

    /// [`ledger::inbox_get`] in this transaction.
    pub async fn inbox_get(
        &mut self,
        message_id: &str,
    ) -> Result<Option<InboxRecord>, StorageError> {
        ledger::inbox_get(&mut self.tx, message_id).await
    }

    /// [`ledger::parked_for_order`] in this transaction.
    pub async fn parked_for_order(
        &mut self,
        order_id: &str,
    ) -> Result<Vec<ParkedMessage>, StorageError> {
        ledger::parked_for_order(&mut self.tx, order_id).await
    }

    /// [`ledger::owe_dead_letter`] in this transaction.
    pub async fn owe_dead_letter(
        &mut self,
        message_id: &str,
        body: &[u8],
    ) -> Result<(), StorageError> {
        ledger::owe_dead_letter(&mut self.tx, message_id, body).await
    }

    /// [`ledger::order_payload_hash`] in this transaction.
    pub async fn order_payload_hash(
        &mut self,
        order_id: &OrderId,
    ) -> Result<Option<String>, StorageError> {
        ledger::order_payload_hash(&mut self.tx, order_id).await
    }

    /// [`ledger::authorization_taken`] in this transaction.
    pub async fn authorization_taken(
        &mut self,
        provider: &ProviderName,
        authorization_id: &AuthorizationId,
    ) -> Result<bool, StorageError> {
        ledger::authorization_taken(&mut self.tx, provider, authorization_id).await
    }

    /// [`ledger::load_order`] in this transaction.
    pub async fn load_order(
        &mut self,
        order_id: &OrderId,
        lock: bool,
    ) -> Result<Option<StoredOrder>, StorageError> {
        ledger::load_order(&mut self.tx, order_id, lock).await
    }

    /// [`ledger::load_shipment`] in this transaction.
    pub async fn load_shipment(
        &mut self,
        order_id: &OrderId,
        shipment_id: &ShipmentId,
    ) -> Result<Option<Shipment>, StorageError> {
        ledger::load_shipment(&mut self.tx, order_id, shipment_id).await
    }

    /// [`ledger::load_cancellation`] in this transaction.
    pub async fn load_cancellation(
        &mut self,
        order_id: &OrderId,
        cancellation_id: &EventId,
    ) -> Result<Option<Cancellation>, StorageError> {
        ledger::load_cancellation(&mut self.tx, order_id, cancellation_id).await
    }

    /// [`ledger::save_progress`] in this transaction.
    pub async fn save_progress(
        &mut self,
        order: &Order,
        state: &OrderState,
    ) -> Result<(), StorageError> {
        ledger::save_progress(&mut self.tx, order, state).await
    }

    /// [`ledger::insert_capture`] in this transaction.
    pub async fn insert_capture(&mut self, c: &NewCapture<'_>) -> Result<i64, StorageError> {
        ledger::insert_capture(&mut self.tx, c).await
    }

    /// [`ledger::insert_rejection`] in this transaction.
    pub async fn insert_rejection(&mut self, r: &NewRejection<'_>) -> Result<(), StorageError> {
        ledger::insert_rejection(&mut self.tx, r).await
    }

    /// [`ledger::lock_order_keys`] in this transaction.
    pub async fn lock_order_keys(&mut self, sorted_order_ids: &[&str]) -> Result<(), StorageError> {
        ledger::lock_order_keys(&mut self.tx, sorted_order_ids).await
    }

    /// [`ledger::inbox_get_many`] in this transaction.
    pub async fn inbox_get_many(
        &mut self,
        message_ids: &[&str],
    ) -> Result<HashMap<String, InboxRecord>, StorageError> {
        ledger::inbox_get_many(&mut self.tx, message_ids).await
    }

    /// [`ledger::load_orders_for_update`] in this transaction.
    pub async fn load_orders_for_update(
        &mut self,
        order_ids: &[&str],
    ) -> Result<HashMap<String, StoredOrder>, StorageError> {
        ledger::load_orders_for_update(&mut self.tx, order_ids).await
    }

    /// [`ledger::orders_with_parked`] in this transaction.
    pub async fn orders_with_parked(
        &mut self,
        order_ids: &[&str],
    ) -> Result<HashSet<String>, StorageError> {
        ledger::orders_with_parked(&mut self.tx, order_ids).await
    }

    /// [`ledger::existing_shipments`] in this transaction.
    pub async fn existing_shipments(
        &mut self,
        order_ids: &[&str],
        shipment_ids: &[&str],
    ) -> Result<HashSet<(String, String)>, StorageError> {
        ledger::existing_shipments(&mut self.tx, order_ids, shipment_ids).await
    }

    /// [`ledger::store_intake_batch`] in this transaction: the captures it inserted in flight
    /// for [`IntakeBatch::claim_for`].
    pub async fn store_intake_batch(
        &mut self,
        batch: &IntakeBatch<'_>,
    ) -> Result<Vec<ClaimedCapture>, StorageError> {
        ledger::store_intake_batch(&mut self.tx, batch).await
    }

    /// [`captures::claim_many`] in this transaction: the orders' head captures, claimed for
    /// `worker`.
    pub async fn claim_many(
        &mut self,
        sorted_order_ids: &[&str],
        worker: &str,
        lease_seconds: f64,
    ) -> Result<Vec<ClaimedCapture>, StorageError> {
        captures::claim_many(&mut *self.tx, sorted_order_ids, worker, lease_seconds).await
    }

    /// [`operator::authorization_owner`] in this transaction.
    pub async fn authorization_owner(
        &mut self,
        provider: &str,
        authorization_id: &str,
    ) -> Result<Option<String>, StorageError> {
        operator::authorization_owner(&mut self.tx, provider, authorization_id).await
    }

    /// [`operator::carried_captures`] in this transaction.
    pub async fn carried_captures(
        &mut self,
        order_id: &str,
        provider: &str,
        authorization_id: &str,
    ) -> Result<Vec<CarriedCapture>, StorageError> {
        operator::carried_captures(&mut self.tx, order_id, provider, authorization_id).await
    }

    /// [`operator::replace_authorization`] in this transaction.
    pub async fn replace_authorization(
        &mut self,
        order_id: &str,
        new: &NewAuthorization<'_>,
    ) -> Result<(), StorageError> {
        operator::replace_authorization(&mut self.tx, order_id, new).await
    }

    /// [`operator::refused_while_latched`] in this transaction.
    pub async fn refused_while_latched(&mut self, order_id: &OrderId) -> Result<i64, StorageError> {
        operator::refused_while_latched(&mut self.tx, order_id).await
    }
}
