//! The checker: the promises P1–P9 (DESIGN §2) as queries over the worker's ledger, the
//! sandbox's request ledger, and the oracle's expected totals. Every violation is a line of
//! text; the counters feed the summary.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use anyhow::Context;
use capture_worker::sandbox::{LedgerEntry, LedgerOutcome, Sandbox};
use sqlx::{PgPool, Row};

use crate::oracle::{self, Step};
use crate::workload::{Expect, OrderSpec, PLANTED_PAN, ShipSpec, Workload};

/// A copy found in the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Our reason header, or `broker:<x-death reason>` when the broker dead-lettered it.
    pub reason: String,
    /// Our detail header (empty when the broker dead-lettered it).
    pub detail: String,
    pub body: Vec<u8>,
}

/// What the checker looks at.
pub struct Evidence<'a> {
    pub workload: &'a Workload,
    pub sandbox: &'a Sandbox,
    pub pool: &'a PgPool,
    pub dead_letters: &'a [DeadLetter],
    pub logs: &'a [PathBuf],
    /// Secrets that must never appear in a log (API key, database password).
    pub canaries: &'a [String],
}

#[derive(Debug, Default, Clone)]
pub struct Findings {
    pub messages: usize,
    pub provider_captures: usize,
    pub provider_requests: usize,
    pub replays: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub over_captured: usize,
    pub key_conflicts: usize,
    pub stuck: usize,
    pub declined_orders: usize,
    pub completed_orders: usize,
    pub dead_lettered: BTreeMap<String, usize>,
    pub violations: Vec<String>,
}

impl Findings {
    fn violation(&mut self, promise: &str, text: String) {
        self.violations.push(format!("{promise}: {text}"));
    }
}

#[derive(Debug, Clone)]
struct CaptureRow {
    capture_id: i64,
    order_id: String,
    sequence: i32,
    kind: String,
    cause_kind: String,
    cause_id: String,
    amount: i64,
    is_final: bool,
    status: String,
}

struct Db {
    inbox: HashMap<String, (String, Option<String>)>,
    /// (rejection_key, message_id, reason, body)
    rejected: Vec<(String, Option<String>, String, Option<String>)>,
    captures: Vec<CaptureRow>,
    /// key → (capture_id, amount, is_final)
    keys: HashMap<String, (i64, i64, bool)>,
    /// order → [(shipment_id, decision)]
    shipments: HashMap<String, Vec<(String, String)>>,
    /// order → phase
    phases: HashMap<String, String>,
    /// The lifecycle sweep's extensions and increments, as recorded.
    actions: Vec<ActionRow>,
}

/// One row of `lifecycle_actions`.
#[derive(Debug, Clone)]
struct ActionRow {
    order_id: String,
    action: String,
    status: String,
    increase: i64,
    key: String,
}

async fn load(pool: &PgPool) -> anyhow::Result<Db> {
    let inbox = sqlx::query("select message_id, status, reject_reason from inbox_messages")
        .fetch_all(pool)
        .await
        .context("reading the inbox")?
        .into_iter()
        .map(|r| {
            (
                r.get::<String, _>(0),
                (r.get::<String, _>(1), r.get::<Option<String>, _>(2)),
            )
        })
        .collect();
    let rejected =
        sqlx::query("select rejection_key, message_id, reason, body from rejected_messages")
            .fetch_all(pool)
            .await
            .context("reading rejected messages")?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
    let captures = sqlx::query(
        "select capture_id, order_id, sequence, kind, cause_kind, cause_id, amount, is_final, status
         from captures order by order_id, sequence",
    )
    .fetch_all(pool)
    .await
    .context("reading captures")?
    .into_iter()
    .map(|r| CaptureRow {
        capture_id: r.get(0),
        order_id: r.get(1),
        sequence: r.get(2),
        kind: r.get(3),
        cause_kind: r.get(4),
        cause_id: r.get(5),
        amount: r.get(6),
        is_final: r.get(7),
        status: r.get(8),
    })
    .collect();
    let keys =
        sqlx::query("select idempotency_key, capture_id, amount, is_final from capture_keys")
            .fetch_all(pool)
            .await
            .context("reading capture keys")?
            .into_iter()
            .map(|r| (r.get::<String, _>(0), (r.get(1), r.get(2), r.get(3))))
            .collect();
    let mut shipments: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for r in sqlx::query("select order_id, shipment_id, decision from shipments")
        .fetch_all(pool)
        .await
        .context("reading shipments")?
    {
        shipments
            .entry(r.get::<String, _>(0))
            .or_default()
            .push((r.get(1), r.get(2)));
    }
    let phases = sqlx::query("select order_id, phase from orders")
        .fetch_all(pool)
        .await
        .context("reading orders")?
        .into_iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
        .collect();
    let actions = sqlx::query(
        "select order_id, action, status, increase, idempotency_key from lifecycle_actions
         order by order_id, sequence",
    )
    .fetch_all(pool)
    .await
    .context("reading lifecycle actions")?
    .into_iter()
    .map(|r| ActionRow {
        order_id: r.get(0),
        action: r.get(1),
        status: r.get(2),
        increase: r.get(3),
        key: r.get(4),
    })
    .collect();
    Ok(Db {
        inbox,
        rejected,
        captures,
        keys,
        shipments,
        phases,
        actions,
    })
}

/// A capture (Stripe's and Gr4vy's `/capture`, Checkout.com's `/captures`), cancel or void.
fn is_mutation(e: &LedgerEntry) -> bool {
    e.method == "POST"
        && (is_capture(e)
            || e.path.ends_with("/cancel")
            || e.path.ends_with("/void")
            || e.path.ends_with("/voids"))
}

fn is_capture(e: &LedgerEntry) -> bool {
    e.path.ends_with("/capture") || e.path.ends_with("/captures")
}

/// An increment or extension of a hold: Stripe's `increment_authorization`, Checkout.com's
/// incremental authorization, Adyen's amount update, PayPal's reauthorization.
pub fn is_lifecycle(e: &LedgerEntry) -> bool {
    e.method == "POST"
        && (e.path.ends_with("/increment_authorization")
            || e.path.ends_with("/authorizations")
            || e.path.ends_with("/amountUpdates")
            || e.path.ends_with("/reauthorize"))
}

/// Runs every check.
pub async fn check(ev: &Evidence<'_>) -> anyhow::Result<Findings> {
    let db = load(ev.pool).await?;
    let ledger = ev.sandbox.ledger();
    let mut f = Findings {
        messages: ev.workload.messages.len(),
        ..Findings::default()
    };
    let holds: HashMap<String, i64> = ev
        .workload
        .orders
        .iter()
        .filter_map(|o| {
            ev.sandbox
                .authorization(&o.auth_id)
                .map(|a| (o.auth_id.clone(), a.amount))
        })
        .collect();
    check_lifecycle(ev.workload, &db, &ledger, &holds, &mut f);
    // The oracle learns the increments the worker recorded: every later check judges an
    // order against its hold as raised (never above the order total: checked above).
    let raised = raised(&db);
    let adjusted;
    let workload = if raised.is_empty() {
        ev.workload
    } else {
        adjusted = with_raised(ev.workload, &raised);
        &adjusted
    };
    let ev = &Evidence {
        workload,
        sandbox: ev.sandbox,
        pool: ev.pool,
        dead_letters: ev.dead_letters,
        logs: ev.logs,
        canaries: ev.canaries,
    };
    check_messages(ev, &db, &mut f);
    check_ledger(&db, &ledger, &mut f);
    check_orders(ev, &db, &ledger, &mut f);
    check_dead_letters(ev, &db, &mut f);
    check_logs(ev, &mut f);
    check_database_text(ev, &mut f).await?;
    Ok(f)
}

/// Per order, what the worker recorded as added to its hold: Σ increments that succeeded.
fn raised(db: &Db) -> HashMap<String, i64> {
    let mut raised: HashMap<String, i64> = HashMap::new();
    for a in &db.actions {
        if a.action == "increment" && a.status == "succeeded" && a.increase > 0 {
            *raised.entry(a.order_id.clone()).or_default() += a.increase;
        }
    }
    raised
}

/// The workload with each order's authorized amount raised by its recorded increments.
fn with_raised(w: &Workload, raised: &HashMap<String, i64>) -> Workload {
    let mut w = w.clone();
    for o in &mut w.orders {
        if let Some(r) = raised.get(&o.order_id) {
            o.authorized = o.authorized.saturating_add(*r);
        }
    }
    w
}

/// LIFECYCLE: every extension or increment the provider saw went under a key the worker
/// stored before the call, and was applied at most once per key; what each authorization
/// holds at the provider is checkout's amount plus the increments the worker recorded (an
/// increment applied twice, or applied and not recorded, shows here); no hold was raised above
/// its order's total; no action was left unfinished.
fn check_lifecycle(
    w: &Workload,
    db: &Db,
    ledger: &[LedgerEntry],
    holds: &HashMap<String, i64>,
    f: &mut Findings,
) {
    let stored: HashSet<&str> = db.actions.iter().map(|a| a.key.as_str()).collect();
    let mut applied: BTreeMap<&str, usize> = BTreeMap::new();
    for e in ledger.iter().filter(|e| is_lifecycle(e)) {
        let Some(key) = e.idempotency_key.as_deref() else {
            f.key_conflicts += 1;
            f.violation(
                "P3",
                format!(
                    "lifecycle request #{} was sent without an idempotency key",
                    e.seq
                ),
            );
            continue;
        };
        if !stored.contains(key) {
            f.key_conflicts += 1;
            f.violation(
                "P3",
                format!("lifecycle key {key} was sent but never stored before the call"),
            );
        }
        if e.outcome == LedgerOutcome::Adjusted && !e.replayed {
            *applied.entry(key).or_default() += 1;
        }
    }
    for (key, n) in applied {
        if n > 1 {
            f.duplicated += 1;
            f.violation(
                "LIFECYCLE",
                format!("key {key} was applied {n} times by the provider"),
            );
        }
    }
    let raised = raised(db);
    for o in &w.orders {
        let r = raised.get(&o.order_id).copied().unwrap_or(0);
        if let Some(held) = holds.get(&o.auth_id)
            && *held != o.authorized + r
        {
            f.violation(
                "LIFECYCLE",
                format!(
                    "{}: the provider holds {held}; checkout authorized {} and the worker recorded increments of {r}",
                    o.order_id, o.authorized
                ),
            );
        }
        let ceiling = o.authorized.max(oracle::order_total(o));
        if r > 0 && o.authorized + r > ceiling {
            f.violation(
                "P2",
                format!(
                    "{}: the hold was raised to {}, above the order total {}",
                    o.order_id,
                    o.authorized + r,
                    oracle::order_total(o)
                ),
            );
        }
    }
    for a in &db.actions {
        if matches!(a.status.as_str(), "planned" | "unknown" | "pending") {
            f.stuck += 1;
            f.violation(
                "P7",
                format!(
                    "the {} of {} under key {} ended {}",
                    a.action, a.order_id, a.key, a.status
                ),
            );
        }
    }
}

/// Where `text` breaks P9: the planted card number, any card-number-like digit run, or one of
/// the worker's own secrets.
fn p9_breach(ev: &Evidence<'_>, text: &str) -> Option<String> {
    if contains_pan(text) {
        return Some("the planted card number".into());
    }
    if let Some(hit) = text.lines().find_map(find_card_number) {
        return Some(format!(
            "a card-number-like digit run ({} digits)",
            hit.chars().filter(char::is_ascii_digit).count()
        ));
    }
    ev.canaries
        .iter()
        .any(|c| !c.is_empty() && text.contains(c.as_str()))
        .then(|| "a secret of the worker".into())
}

/// P9 on PostgreSQL: no card number and no secret of the worker in any text column of any
/// table or view (bodies of parked messages are bytea, kept only until their order arrives).
async fn check_database_text(ev: &Evidence<'_>, f: &mut Findings) -> anyhow::Result<()> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "select c.table_name::text, c.column_name::text from information_schema.columns c
         where c.table_schema = 'public'
           and c.data_type in ('text', 'character varying', 'character', 'jsonb', 'json')
         order by 1, 2",
    )
    .fetch_all(ev.pool)
    .await
    .context("listing the ledger's text columns")?;
    for (table, column) in columns {
        let sql =
            format!("select coalesce(string_agg(\"{column}\"::text, E'\\n'), '') from \"{table}\"");
        let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(ev.pool)
            .await
            .with_context(|| format!("reading {table}.{column}"))?;
        if let Some(what) = p9_breach(ev, &text) {
            f.violation("P9", format!("{what} is stored in {table}.{column}"));
        }
    }
    Ok(())
}

/// P7: every published message ends processed, or rejected with the reason it deserves.
fn check_messages(ev: &Evidence<'_>, db: &Db, f: &mut Findings) {
    let by_id: HashMap<&str, Vec<&str>> =
        db.rejected
            .iter()
            .fold(HashMap::new(), |mut m, (_, id, reason, _)| {
                if let Some(id) = id {
                    m.entry(id.as_str()).or_default().push(reason.as_str());
                }
                m
            });
    let by_hash: HashMap<&str, Vec<&str>> =
        db.rejected
            .iter()
            .fold(HashMap::new(), |mut m, (key, _, reason, _)| {
                if let Some(rest) = key.strip_prefix("sha256:")
                    && let Some((hash, _)) = rest.split_once(':')
                {
                    m.entry(hash).or_default().push(reason.as_str());
                }
                m
            });
    let mut seen = HashSet::new();
    for m in &ev.workload.messages {
        let key = m.message_id.clone().unwrap_or_else(|| m.body_hash());
        if !seen.insert(key.clone()) {
            continue; // the same message published twice
        }
        match &m.expect {
            Expect::Bad { reasons } => {
                let found = match &m.message_id {
                    Some(id) => by_id.get(id.as_str()),
                    None => by_hash.get(m.body_hash().as_str()),
                };
                match found {
                    None => {
                        f.lost += 1;
                        f.violation(
                            "P7",
                            format!("bad message {key} was never recorded as rejected"),
                        );
                    }
                    Some(rs) if !rs.iter().any(|r| reasons.contains(r)) => f.violation(
                        "P7",
                        format!(
                            "bad message {key} rejected as {rs:?}, expected one of {reasons:?}"
                        ),
                    ),
                    Some(_) => {}
                }
            }
            Expect::Order(o) | Expect::Shipment { order: o, .. } => {
                let order = &ev.workload.orders[*o];
                let id = m.message_id.clone().unwrap_or_default();
                match db.inbox.get(&id) {
                    None => {
                        f.lost += 1;
                        f.violation("P7", format!("message {id} was never received"));
                    }
                    Some((status, _)) if status == "parked" => {
                        f.stuck += 1;
                        f.violation("P7", format!("message {id} is still parked"));
                    }
                    Some((status, reason)) if status == "rejected" => {
                        let reason = reason.clone().unwrap_or_default();
                        let allowed = matches!(m.expect, Expect::Shipment { .. })
                            && ((reason == "order_declined" && order.decline_on.is_some())
                                || (reason == "after_final" && order.has_last_flag));
                        if !allowed {
                            f.violation(
                                "P7",
                                format!(
                                    "valid message {id} of {} was refused as {reason}",
                                    order.order_id
                                ),
                            );
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

/// P1, P3, P4, P5, P8 on the provider's request ledger.
fn check_ledger(db: &Db, ledger: &[LedgerEntry], f: &mut Findings) {
    let rows: HashMap<i64, &CaptureRow> = db.captures.iter().map(|c| (c.capture_id, c)).collect();
    let mut rows_by_order: HashMap<&str, Vec<&CaptureRow>> = HashMap::new();
    for c in &db.captures {
        rows_by_order
            .entry(c.order_id.as_str())
            .or_default()
            .push(c);
    }
    let mut terms: HashMap<&str, (Option<i64>, Option<bool>)> = HashMap::new();
    let mut moved_per_key: HashMap<&str, usize> = HashMap::new();
    let mut moved_per_capture: HashMap<i64, usize> = HashMap::new();
    let mut by_auth: BTreeMap<&str, Vec<&LedgerEntry>> = BTreeMap::new();
    for e in ledger {
        if e.replayed {
            f.replays += 1;
        }
        if !is_mutation(e) {
            continue;
        }
        f.provider_requests += 1;
        if let Some(a) = e.authorization_id.as_deref() {
            by_auth.entry(a).or_default().push(e);
        }
        let Some(key) = e.idempotency_key.as_deref() else {
            f.key_conflicts += 1;
            f.violation(
                "P3",
                format!("request #{} was sent without an idempotency key", e.seq),
            );
            continue;
        };
        let t = (e.amount_to_capture, e.final_capture);
        match terms.get(key) {
            Some(prev) if *prev != t => {
                f.key_conflicts += 1;
                f.violation("P3", format!("key {key} sent with {t:?} after {prev:?}"));
            }
            Some(_) => {}
            None => {
                terms.insert(key, t);
            }
        }
        match db.keys.get(key) {
            None => {
                f.key_conflicts += 1;
                f.violation(
                    "P3",
                    format!("key {key} was sent but never stored before the call"),
                );
            }
            Some((_, amount, is_final)) if is_capture(e) => {
                // Adyen's capture has no final flag (the worker releases the rest by a cancel).
                let final_sent = if e.path.starts_with("/adyen/") {
                    e.final_capture.is_none()
                } else {
                    e.final_capture == Some(*is_final)
                };
                if e.amount_to_capture != Some(*amount) || !final_sent {
                    f.key_conflicts += 1;
                    f.violation(
                        "P3",
                        format!(
                            "key {key} stored for ({amount}, final={is_final}) but sent as {:?}",
                            (e.amount_to_capture, e.final_capture)
                        ),
                    );
                }
            }
            Some(_) => {}
        }
        if e.captured_amount > 0 {
            f.provider_captures += 1;
            *moved_per_key.entry(key).or_default() += 1;
            if let Some((capture_id, _, _)) = db.keys.get(key) {
                *moved_per_capture.entry(*capture_id).or_default() += 1;
            }
        }
    }
    // One count per capture that moved money more than once (under one key or several).
    for (key, n) in &moved_per_key {
        if *n > 1 {
            if !db.keys.contains_key(*key) {
                f.duplicated += 1;
            }
            f.violation("P1", format!("key {key} moved money {n} times"));
        }
    }
    for (capture_id, n) in &moved_per_capture {
        if *n > 1 {
            f.duplicated += 1;
            f.violation("P1", format!("capture {capture_id} moved money {n} times"));
        }
    }

    for (auth, entries) in &by_auth {
        let capture_of = |e: &LedgerEntry| -> Option<&CaptureRow> {
            let key = e.idempotency_key.as_deref()?;
            let (id, _, _) = db.keys.get(key)?;
            rows.get(id).copied()
        };
        // P4: after the first decline, no request under a key not sent before it.
        if let Some(pos) = entries
            .iter()
            .position(|e| e.outcome == LedgerOutcome::Declined)
        {
            let before: HashSet<&str> = entries[..pos]
                .iter()
                .filter_map(|e| e.idempotency_key.as_deref())
                .chain(entries[pos].idempotency_key.as_deref())
                .collect();
            for e in &entries[pos + 1..] {
                if let Some(k) = e.idempotency_key.as_deref()
                    && !before.contains(k)
                {
                    f.violation(
                        "P4",
                        format!(
                            "{auth}: request #{} under a new key after the decline",
                            e.seq
                        ),
                    );
                }
            }
        }
        // P5: one final; nothing new after it.
        let finals: HashSet<&str> = entries
            .iter()
            .filter(|e| {
                (e.captured_amount > 0 && e.final_capture == Some(true))
                    || e.outcome == LedgerOutcome::Released
            })
            .filter_map(|e| e.idempotency_key.as_deref())
            .collect();
        if finals.len() > 1 {
            f.violation(
                "P5",
                format!("{auth}: {} final requests took effect", finals.len()),
            );
        }
        if let Some(pos) = entries.iter().position(|e| {
            (e.captured_amount > 0 && e.final_capture == Some(true))
                || e.outcome == LedgerOutcome::Released
        }) {
            let known: HashSet<&str> = entries[..=pos]
                .iter()
                .filter_map(|e| e.idempotency_key.as_deref())
                .collect();
            for e in &entries[pos + 1..] {
                if let Some(k) = e.idempotency_key.as_deref()
                    && !known.contains(k)
                {
                    f.violation(
                        "P5",
                        format!(
                            "{auth}: request #{} under a new key after the final one",
                            e.seq
                        ),
                    );
                }
            }
        }
        // P8: captures of one authorization go one at a time, in sequence: a request for
        // capture n comes only after every earlier capture that succeeded has moved its money.
        let mut settled: HashSet<i64> = HashSet::new();
        let mut highest = 0;
        for e in entries {
            let Some(row) = capture_of(e) else { continue };
            if row.sequence < highest {
                f.violation(
                    "P8",
                    format!(
                        "{auth}: request #{} for capture {} after a request for capture {highest}",
                        e.seq, row.sequence
                    ),
                );
            }
            highest = highest.max(row.sequence);
            for earlier in rows_by_order
                .get(row.order_id.as_str())
                .into_iter()
                .flatten()
                .filter(|c| c.sequence < row.sequence)
            {
                if earlier.status == "succeeded" && !settled.contains(&earlier.capture_id) {
                    f.violation(
                        "P8",
                        format!(
                            "{auth}: request #{} for capture {} before capture {} had settled",
                            e.seq, row.sequence, earlier.sequence
                        ),
                    );
                }
            }
            if e.captured_amount > 0
                || matches!(e.outcome, LedgerOutcome::Released | LedgerOutcome::Declined)
            {
                settled.insert(row.capture_id);
            }
        }
    }
}

/// The order in which the worker applied an order's parcels: non-final captures by sequence,
/// then parcels that moved nothing (after the authorization ran out), then the final one.
fn applied_order<'a>(o: &'a OrderSpec, db: &Db, rows: &[&CaptureRow]) -> Vec<&'a ShipSpec> {
    let spec = |id: &str| o.shipments.iter().find(|s| s.shipment_id == id);
    let mut ordered: Vec<&ShipSpec> = Vec::new();
    let mut last: Option<&ShipSpec> = None;
    let mut with_rows: HashSet<&str> = HashSet::new();
    for r in rows.iter().filter(|r| r.cause_kind == "shipment") {
        with_rows.insert(r.cause_id.as_str());
        let Some(s) = spec(&r.cause_id) else { continue };
        if r.is_final || r.kind != "capture" {
            last = Some(s);
        } else if !ordered.iter().any(|x| x.shipment_id == s.shipment_id) {
            ordered.push(s);
        }
    }
    if let Some(applied) = db.shipments.get(&o.order_id) {
        for (id, _) in applied {
            if !with_rows.contains(id.as_str())
                && let Some(s) = spec(id)
            {
                ordered.push(s);
            }
        }
    }
    ordered.extend(last);
    ordered
}

/// P1, P2, P5, P6 and P7 per order: the provider's books against the oracle and our ledger.
fn check_orders(ev: &Evidence<'_>, db: &Db, ledger: &[LedgerEntry], f: &mut Findings) {
    let mut rows_by_order: HashMap<&str, Vec<&CaptureRow>> = HashMap::new();
    for c in &db.captures {
        rows_by_order
            .entry(c.order_id.as_str())
            .or_default()
            .push(c);
        if !matches!(c.status.as_str(), "succeeded" | "declined" | "blocked") {
            f.stuck += 1;
            f.violation(
                "P7",
                format!(
                    "capture {} of {} ended {}",
                    c.sequence, c.order_id, c.status
                ),
            );
        }
    }
    let mut moved: HashMap<&str, i64> = HashMap::new();
    for e in ledger {
        if let Some(a) = e.authorization_id.as_deref() {
            let sum = moved.entry(a).or_default();
            *sum += e.captured_amount;
        }
    }
    for o in &ev.workload.orders {
        let rows = rows_by_order
            .get(o.order_id.as_str())
            .cloned()
            .unwrap_or_default();
        let Some(auth) = ev.sandbox.authorization(&o.auth_id) else {
            f.violation(
                "harness",
                format!("authorization {} missing in the sandbox", o.auth_id),
            );
            continue;
        };
        let received = auth.amount_received;
        // P2: never more than authorized.
        if received > o.authorized
            || moved.get(o.auth_id.as_str()).copied().unwrap_or(0) > o.authorized
        {
            f.over_captured += 1;
            f.violation(
                "P2",
                format!(
                    "{}: {received} captured of {} authorized",
                    o.order_id, o.authorized
                ),
            );
        }
        // Books match: what the provider holds is what we recorded as succeeded.
        let ours: i64 = rows
            .iter()
            .filter(|r| r.kind == "capture" && r.status == "succeeded")
            .map(|r| r.amount)
            .sum();
        if ours != received {
            f.violation(
                "P1",
                format!(
                    "{}: the provider captured {received}, the ledger says {ours}",
                    o.order_id
                ),
            );
        }
        let phase = db.phases.get(&o.order_id).map(String::as_str).unwrap_or("");
        if phase.is_empty() {
            f.lost += 1;
            f.violation("P7", format!("order {} was never registered", o.order_id));
            continue;
        }
        let applied = applied_order(o, db, &rows);
        // P6: each capture is what the oracle computes for the parcels in the order applied.
        let steps = oracle::replay(o, &applied);
        for (s, step) in applied.iter().zip(&steps) {
            let row = rows
                .iter()
                .find(|r| r.cause_kind == "shipment" && r.cause_id == s.shipment_id);
            let ok = match (step, row) {
                (Step::Capture { amount, is_final }, Some(r)) => {
                    r.kind == "capture" && r.amount == *amount && r.is_final == *is_final
                }
                (Step::Release, Some(r)) => r.kind == "release" && r.is_final,
                (Step::Void, Some(r)) => r.kind == "void",
                (Step::Nothing, None) => true,
                _ => false,
            };
            if !ok {
                f.violation(
                    "P6",
                    format!(
                        "{} parcel {}: the oracle expects {step:?}, the ledger has {:?}",
                        o.order_id,
                        s.shipment_id,
                        row.map(|r| (&r.kind, r.amount, r.is_final))
                    ),
                );
            }
        }
        if phase == "declined" {
            f.declined_orders += 1;
            if o.decline_on.is_none() {
                f.violation(
                    "P4",
                    format!(
                        "{} declined though the sandbox never declines it",
                        o.order_id
                    ),
                );
            }
            let Some(d) = rows.iter().find(|r| r.status == "declined") else {
                f.violation(
                    "P4",
                    format!("{} is latched without a declined capture", o.order_id),
                );
                continue;
            };
            for r in &rows {
                let want = if r.sequence < d.sequence {
                    "succeeded"
                } else if r.sequence > d.sequence {
                    "blocked"
                } else {
                    "declined"
                };
                if r.status != want {
                    f.violation(
                        "P4",
                        format!(
                            "{} capture {} is {} around the decline of capture {}",
                            o.order_id, r.sequence, r.status, d.sequence
                        ),
                    );
                }
            }
            continue;
        }
        // P1 and P6 by order: what the provider holds equals the oracle's total for what
        // shipped, independent of the order of arrival.
        let expected = oracle::expected_total(o, &applied);
        if received < expected {
            f.lost += 1;
            f.violation(
                "P1",
                format!(
                    "{}: {received} captured, {expected} expected (lost {})",
                    o.order_id,
                    expected - received
                ),
            );
        } else if received > expected {
            f.over_captured += 1;
            f.violation(
                "P6",
                format!(
                    "{}: {received} captured, {expected} expected (over by {})",
                    o.order_id,
                    received - expected
                ),
            );
        }
        let all_applied = applied.len() == o.shipments.len();
        if all_applied && !o.has_last_flag && expected != oracle::order_total(o).min(o.authorized) {
            f.violation("harness", format!("{}: oracle totals disagree", o.order_id));
        }
        if phase == "completed" {
            f.completed_orders += 1;
            // P5: the final request released the rest of the authorization.
            if auth.amount_capturable != 0 {
                f.violation(
                    "P5",
                    format!(
                        "{}: completed but {} still capturable",
                        o.order_id, auth.amount_capturable
                    ),
                );
            }
        } else if all_applied || (o.has_last_flag && applied.iter().any(|s| s.last_shipment)) {
            f.violation(
                "P5",
                format!(
                    "{}: every parcel applied but the order is {phase}",
                    o.order_id
                ),
            );
        }
    }
}

/// P7 and P9 on the dead-letter queue: a copy with our reason for every rejection, none from
/// the broker giving up, and no card number in clear.
fn check_dead_letters(ev: &Evidence<'_>, db: &Db, f: &mut Findings) {
    let mut ours: BTreeMap<String, HashSet<&[u8]>> = BTreeMap::new();
    for d in ev.dead_letters {
        if d.reason.starts_with("broker:") {
            f.violation(
                "P7",
                format!("the broker dead-lettered a message ({})", d.reason),
            );
        }
        ours.entry(d.reason.clone()).or_default().insert(&d.body);
        if let Some(what) = p9_breach(ev, &String::from_utf8_lossy(&d.body)) {
            f.violation("P9", format!("a dead-letter copy holds {what}"));
        }
        if let Some(what) = p9_breach(ev, &d.detail) {
            f.violation(
                "P9",
                format!("a dead-letter copy's detail header holds {what}"),
            );
        }
    }
    let mut recorded: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, reason, body) in &db.rejected {
        *recorded.entry(reason.clone()).or_default() += 1;
        if body.as_deref().is_some_and(contains_pan) {
            f.violation(
                "P9",
                "a stored rejection holds the card number in clear".into(),
            );
        }
    }
    for (reason, n) in &recorded {
        let copies = ours.get(reason).map_or(0, HashSet::len);
        if copies < *n {
            f.violation(
                "P7",
                format!("{n} messages rejected as {reason} but {copies} dead-letter copies carry that reason"),
            );
        }
    }
    f.dead_lettered = recorded;
}

fn contains_pan(text: &str) -> bool {
    let digits: String = PLANTED_PAN.chars().filter(char::is_ascii_digit).collect();
    text.contains(PLANTED_PAN) || text.contains(&digits)
}

/// A Luhn-valid run of 13–19 digits (single spaces or dashes allowed between digits), not
/// glued to letters (hex keys and request ids are not card numbers) and not part of a decimal
/// number.
pub fn find_card_number(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        // Not glued to letters (hex keys, request ids) and not the fraction of a decimal
        // number (durations in logs).
        let after_point = i > 1 && chars[i - 1] == '.' && chars[i - 2].is_ascii_digit();
        if !chars[i].is_ascii_digit()
            || (i > 0 && chars[i - 1].is_ascii_alphanumeric())
            || after_point
        {
            i += 1;
            continue;
        }
        let mut digits = Vec::new();
        // Lengths of the digit groups between separators: printed card numbers are grouped
        // 4-4-4-4(-3) or 4-6-5 (Amex); other grouped digit runs (ids, dates) are not cards.
        let mut groups = vec![0usize];
        let mut j = i;
        let mut end = i;
        while j < chars.len() {
            let c = chars[j];
            if let Some(d) = c.to_digit(10) {
                digits.push(d);
                if let Some(g) = groups.last_mut() {
                    *g += 1;
                }
                end = j + 1;
                j += 1;
            } else if (c == ' ' || c == '-') && chars.get(j + 1).is_some_and(char::is_ascii_digit) {
                groups.push(0);
                j += 1;
            } else {
                break;
            }
        }
        let card_grouping = groups.len() == 1
            || groups == [4, 6, 5]
            || groups[..groups.len() - 1].iter().all(|&g| g == 4);
        let glued = chars.get(end).is_some_and(|c| c.is_ascii_alphabetic())
            || (chars.get(end) == Some(&'.')
                && chars.get(end + 1).is_some_and(char::is_ascii_digit));
        if (13..=19).contains(&digits.len()) && card_grouping && !glued && luhn(&digits) {
            return Some(chars[i..end].iter().collect());
        }
        i = end.max(i + 1);
    }
    None
}

/// A log line with the values of its trace and span id fields blanked: they are random hex, and
/// one made only of digits can pass the Luhn check by chance.
fn without_trace_ids(line: &str) -> String {
    let mut out = line.to_owned();
    for key in ["\"trace_id\":\"", "\"span_id\":\"", "\"parent_span_id\":\""] {
        let mut from = 0;
        while let Some(at) = out[from..].find(key) {
            let start = from + at + key.len();
            let end = out[start..].find('"').map_or(out.len(), |e| start + e);
            if out[start..end].bytes().all(|b| b.is_ascii_hexdigit()) {
                out.replace_range(start..end, &"x".repeat(end - start));
            }
            from = end.min(out.len());
        }
    }
    out
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| {
            if k % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// P9 on the workers' logs: no secret, no card number.
fn check_logs(ev: &Evidence<'_>, f: &mut Findings) {
    for path in ev.logs {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for c in ev.canaries {
            if !c.is_empty() && text.contains(c.as_str()) {
                f.violation("P9", format!("a secret appears in {}", path.display()));
            }
        }
        if contains_pan(&text) {
            f.violation(
                "P9",
                format!("the planted card number appears in {}", path.display()),
            );
        }
        if let Some(hit) = text
            .lines()
            .map(without_trace_ids)
            .find_map(|l| find_card_number(&l))
        {
            f.violation(
                "P9",
                format!(
                    "a card-number-like digit run ({} digits) appears in {}",
                    hit.chars().filter(char::is_ascii_digit).count(),
                    path.display()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use capture_worker::sandbox::SandboxOptions;

    #[test]
    fn card_numbers_are_found_and_hex_ids_are_not() {
        assert!(find_card_number("note: 4111 1111 1111 1111 end").is_some());
        assert!(find_card_number("4111-1111-1111-1111").is_some());
        assert!(find_card_number("amex 3782 822463 10005").is_some());
        assert!(
            find_card_number(&without_trace_ids(r#"{"span_id":"9644940951663873"}"#)).is_none(),
            "a span id made of digits is not a card number"
        );
        assert!(find_card_number(&without_trace_ids(r#"{"note":"4111111111111111"}"#)).is_some());
        assert!(
            find_card_number(r#""worker_id":"24772-66768843""#).is_none(),
            "a grouped id is not a card number"
        );
        assert!(find_card_number("key cw1-ab4111111111111111").is_none());
        assert!(find_card_number("ts 2026-11-22T01:02:03Z").is_none());
        assert!(
            find_card_number(r#""acquired_after_secs":2.7977905119999997,"#).is_none(),
            "the fraction of a decimal number"
        );
        assert!(find_card_number("4111111111111111.5").is_none());
        assert!(
            find_card_number("4111 1111 1111 1112").is_none(),
            "not Luhn-valid"
        );
    }

    fn row(capture_id: i64, sequence: i32, status: &str) -> CaptureRow {
        CaptureRow {
            capture_id,
            order_id: "ORD-1".into(),
            sequence,
            kind: "capture".into(),
            cause_kind: "shipment".into(),
            cause_id: format!("S{sequence}"),
            amount: 100,
            is_final: sequence == 2,
            status: status.into(),
        }
    }

    /// Two captures of one order, keys k1 (100, not final) and k2 (100, final).
    fn db() -> Db {
        Db {
            inbox: HashMap::new(),
            rejected: Vec::new(),
            captures: vec![row(1, 1, "succeeded"), row(2, 2, "succeeded")],
            keys: [
                ("k1".to_owned(), (1, 100, false)),
                ("k2".to_owned(), (2, 100, true)),
            ]
            .into_iter()
            .collect(),
            shipments: HashMap::new(),
            phases: HashMap::new(),
            actions: Vec::new(),
        }
    }

    fn req(
        seq: u64,
        key: &str,
        amount: i64,
        is_final: bool,
        outcome: LedgerOutcome,
    ) -> LedgerEntry {
        LedgerEntry {
            seq,
            at: chrono::Utc::now(),
            method: "POST".into(),
            path: "/v1/payment_intents/pi_1/capture".into(),
            authorization_id: Some("pi_1".into()),
            idempotency_key: Some(key.into()),
            amount_to_capture: Some(amount),
            final_capture: Some(is_final),
            http_status: if outcome == LedgerOutcome::Declined {
                402
            } else {
                200
            },
            outcome,
            replayed: outcome == LedgerOutcome::Replayed,
            captured_amount: if outcome == LedgerOutcome::Captured {
                amount
            } else {
                0
            },
        }
    }

    fn ledger_findings(ledger: &[LedgerEntry]) -> Findings {
        let mut f = Findings::default();
        check_ledger(&db(), ledger, &mut f);
        f
    }

    fn has(f: &Findings, promise: &str) -> bool {
        f.violations.iter().any(|v| v.starts_with(promise))
    }

    #[test]
    fn a_sound_ledger_passes() {
        let f = ledger_findings(&[
            req(1, "k1", 100, false, LedgerOutcome::Captured),
            req(2, "k1", 100, false, LedgerOutcome::Replayed),
            req(3, "k2", 100, true, LedgerOutcome::Captured),
        ]);
        assert!(f.violations.is_empty(), "{:?}", f.violations);
        assert_eq!((f.provider_captures, f.replays), (2, 1));
    }

    #[test]
    fn money_moved_twice_under_one_key_is_a_duplicate() {
        let f = ledger_findings(&[
            req(1, "k1", 100, false, LedgerOutcome::Captured),
            req(2, "k1", 100, false, LedgerOutcome::Captured),
        ]);
        assert_eq!(f.duplicated, 1);
        assert!(has(&f, "P1"));
    }

    #[test]
    fn a_key_sent_with_other_terms_or_never_stored_is_a_key_conflict() {
        let f = ledger_findings(&[
            req(1, "k1", 100, false, LedgerOutcome::Error),
            req(2, "k1", 150, false, LedgerOutcome::Captured),
            req(3, "k9", 100, false, LedgerOutcome::Error),
        ]);
        assert!(f.key_conflicts >= 3, "{:?}", f.violations);
        assert!(has(&f, "P3"));
    }

    #[test]
    fn a_new_key_after_a_decline_breaks_the_latch() {
        let f = ledger_findings(&[
            req(1, "k1", 100, false, LedgerOutcome::Declined),
            req(2, "k2", 100, true, LedgerOutcome::Captured),
        ]);
        assert!(has(&f, "P4"), "{:?}", f.violations);
    }

    #[test]
    fn a_request_after_the_final_capture_breaks_one_final_last() {
        let f = ledger_findings(&[
            req(1, "k2", 100, true, LedgerOutcome::Captured),
            req(2, "k1", 100, false, LedgerOutcome::Captured),
        ]);
        assert!(has(&f, "P5"), "{:?}", f.violations);
        assert!(
            has(&f, "P8"),
            "capture 1 sent after capture 2: {:?}",
            f.violations
        );
    }

    #[test]
    fn a_capture_sent_before_the_previous_one_settled_breaks_one_in_flight() {
        let f = ledger_findings(&[
            req(1, "k1", 100, false, LedgerOutcome::Error),
            req(2, "k2", 100, true, LedgerOutcome::Captured),
            req(3, "k1", 100, false, LedgerOutcome::Captured),
        ]);
        assert!(has(&f, "P8"), "{:?}", f.violations);
    }

    /// A Checkout.com incremental authorization of `pay_1` under `key`.
    fn increment(seq: u64, key: &str, outcome: LedgerOutcome) -> LedgerEntry {
        LedgerEntry {
            path: "/checkout/payments/pay_1/authorizations".into(),
            authorization_id: Some("pay_1".into()),
            amount_to_capture: None,
            final_capture: None,
            captured_amount: 0,
            replayed: outcome == LedgerOutcome::Replayed,
            ..req(seq, key, 0, false, outcome)
        }
    }

    /// One order of 1,000 authorized for 750 at `pay_1`, and a succeeded increment of
    /// `increase` under key `i1`.
    fn lifecycle_case(increase: i64) -> (Workload, Db) {
        let line = crate::workload::LineSpec {
            line_id: "L1".into(),
            quantity: 1,
            unit: 1_000,
            tax: 0,
            discount: 0,
        };
        let order = OrderSpec {
            order_id: "ORD-1".into(),
            auth_id: "pay_1".into(),
            currency: "USD",
            lines: vec![line],
            shipping: 0,
            order_discount: 0,
            authorized: 750,
            shipments: Vec::new(),
            decline_on: None,
            has_last_flag: false,
        };
        let mut d = db();
        d.actions.push(ActionRow {
            order_id: "ORD-1".into(),
            action: "increment".into(),
            status: "succeeded".into(),
            increase,
            key: "i1".into(),
        });
        let w = Workload {
            orders: vec![order],
            messages: Vec::new(),
        };
        (w, d)
    }

    fn lifecycle_findings(w: &Workload, d: &Db, ledger: &[LedgerEntry], held: i64) -> Findings {
        let holds = [("pay_1".to_owned(), held)].into_iter().collect();
        let mut f = Findings::default();
        check_lifecycle(w, d, ledger, &holds, &mut f);
        f
    }

    #[test]
    fn an_increment_applied_once_and_replayed_passes_and_raises_the_oracles_hold() {
        let (w, d) = lifecycle_case(250);
        let f = lifecycle_findings(
            &w,
            &d,
            &[
                increment(1, "i1", LedgerOutcome::Adjusted),
                increment(2, "i1", LedgerOutcome::Replayed),
            ],
            1_000,
        );
        assert!(f.violations.is_empty(), "{:?}", f.violations);
        let raised = with_raised(&w, &raised(&d));
        assert_eq!(raised.orders[0].authorized, 1_000);
    }

    #[test]
    fn an_increment_applied_twice_is_a_duplicate_and_the_hold_disagrees() {
        let (w, d) = lifecycle_case(250);
        let f = lifecycle_findings(
            &w,
            &d,
            &[
                increment(1, "i1", LedgerOutcome::Adjusted),
                increment(2, "i1", LedgerOutcome::Adjusted),
            ],
            1_250,
        );
        assert_eq!(f.duplicated, 1, "{:?}", f.violations);
        assert!(
            f.violations
                .iter()
                .any(|v| v.contains("the provider holds 1250")),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn an_unstored_lifecycle_key_a_raise_above_the_total_and_an_unfinished_action_are_reported() {
        let (w, mut d) = lifecycle_case(400);
        d.actions.push(ActionRow {
            order_id: "ORD-1".into(),
            action: "extend".into(),
            status: "planned".into(),
            increase: 0,
            key: "e2".into(),
        });
        let f = lifecycle_findings(
            &w,
            &d,
            &[
                increment(1, "i1", LedgerOutcome::Adjusted),
                increment(2, "x9", LedgerOutcome::Error),
            ],
            1_150,
        );
        assert!(has(&f, "P3"), "{:?}", f.violations);
        assert!(
            f.violations
                .iter()
                .any(|v| v.contains("above the order total")),
            "{:?}",
            f.violations
        );
        assert_eq!(f.stuck, 1, "{:?}", f.violations);
    }

    #[tokio::test]
    async fn a_message_never_received_is_lost_and_a_wrong_reason_is_reported() {
        use crate::workload::{Message, Mix, generate};
        let mut rng = crate::rng::Rng::fork(7, "t");
        let mut w = generate(&mut rng, "t", &Mix::standard(2, 4));
        w.messages.push(Message {
            message_id: Some("bad-1".into()),
            routing_key: "shipment.shipped".into(),
            body: b"{}".to_vec(),
            expect: Expect::Bad {
                reasons: &["invalid_schema"],
            },
        });
        let mut d = db();
        // Everything arrived except the first message; the bad one has the wrong reason.
        for m in w.messages.iter().skip(1) {
            if let Some(id) = &m.message_id {
                d.inbox.insert(id.clone(), ("processed".into(), None));
            }
        }
        d.rejected.push((
            "bad-1:malformed".into(),
            Some("bad-1".into()),
            "malformed".into(),
            None,
        ));
        let sandbox = Sandbox::new(SandboxOptions::default());
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let ev = Evidence {
            workload: &w,
            sandbox: &sandbox,
            pool: &pool,
            dead_letters: &[],
            logs: &[],
            canaries: &[],
        };
        let mut f = Findings::default();
        check_messages(&ev, &d, &mut f);
        assert!(f.lost >= 1, "{:?}", f.violations);
        assert!(
            f.violations.iter().any(|v| v.contains("expected one of")),
            "{:?}",
            f.violations
        );
    }
}
