-- The capture ledger: orders and their lines, the messages we received, shipments,
-- cancellations, captures, every provider call, and rejected messages.
-- Money is bigint minor units with a char(3) ISO 4217 currency. States are text with a check
-- that mirrors the Rust enum. Constraints make P2, P3, P5 and P8 impossible to violate at commit.

-- Orders: one per order.authorized, with the authorization and the order's progress.
create table orders (
    order_id                  text primary key,
    currency                  char(3) not null,
    provider                  text not null,
    authorization_id          text not null,
    -- authorized amount in minor units
    authorized_amount         bigint not null check (authorized_amount >= 0),
    -- what the provider lets us capture above authorized_amount (configured per provider)
    over_capture_allowance    bigint not null default 0 check (over_capture_allowance >= 0),
    authorized_at             timestamptz not null,
    -- when the provider voids the authorization, if checkout sent it
    authorization_expires_at  timestamptz,
    shipping_amount           bigint not null check (shipping_amount >= 0),
    order_discount_amount     bigint not null check (order_discount_amount >= 0),
    -- Σ line net totals + shipping (DESIGN §5)
    order_total               bigint not null check (order_total >= 0),
    -- open | completed (final capture, release or void planned) | declined (latched, P4)
    phase                     text not null default 'open'
                              check (phase in ('open', 'completed', 'declined')),
    -- Σ amounts of captures not declined/blocked/failed: queued + in flight + pending + succeeded
    claimed_amount            bigint not null default 0 check (claimed_amount >= 0),
    -- shipping already planned into captures
    shipping_charged          bigint not null default 0 check (shipping_charged >= 0),
    -- value cut by the authorization cap: shipped but never to be captured
    shortfall_amount          bigint not null default 0 check (shortfall_amount >= 0),
    -- capture requests planned (including a zero-amount final capture)
    capture_count             integer not null default 0 check (capture_count >= 0),
    declined_code             text,
    declined_at               timestamptz,
    -- the order.authorized message and a hash of its data, for dedupe and conflicts
    message_id                text not null,
    payload_hash              text not null,
    created_at                timestamptz not null default now(),
    updated_at                timestamptz not null default now(),
    -- P2: never claim more than authorized plus the allowance
    constraint orders_claim_within_authorization
        check (claimed_amount <= authorized_amount + over_capture_allowance),
    constraint orders_authorization_unique unique (provider, authorization_id),
    constraint orders_currency_format check (currency ~ '^[A-Z]{3}$')
);

create table order_lines (
    order_id               text not null references orders (order_id),
    -- position in the order.authorized message (ties in allocation go to the earlier line)
    line_no                integer not null check (line_no >= 0),
    line_id                text not null,
    sku                    text not null,
    name                   text not null,
    quantity               integer not null check (quantity > 0),
    unit_amount            bigint not null check (unit_amount >= 0),
    -- tax and discount for the whole line
    tax_amount             bigint not null check (tax_amount >= 0),
    discount_amount        bigint not null check (discount_amount >= 0),
    -- this line's share of the order-level discount (largest remainder)
    order_discount_share   bigint not null check (order_discount_share >= 0),
    -- merchandise + tax − order discount share
    net_amount             bigint not null check (net_amount >= 0),
    shipped_quantity       integer not null default 0 check (shipped_quantity >= 0),
    cancelled_quantity     integer not null default 0 check (cancelled_quantity >= 0),
    -- units whose value has been planned into a capture (lags shipped while deferring)
    charged_quantity       integer not null default 0 check (charged_quantity >= 0),
    primary key (order_id, line_id),
    constraint order_lines_position_unique unique (order_id, line_no),
    constraint order_lines_no_over_shipment check (shipped_quantity + cancelled_quantity <= quantity),
    constraint order_lines_charged_within_shipped check (charged_quantity <= shipped_quantity)
);

-- Every message received, by message_id: the inbox that makes redelivery a no-op (P1) and
-- accounts for every message (P7).
create table inbox_messages (
    message_id        text primary key,
    message_type      text not null,
    order_id          text,
    -- sha-256 of the message body
    payload_hash      text not null,
    -- processed | parked (waiting for its order) | rejected (dead-lettered with a reason)
    status            text not null check (status in ('processed', 'parked', 'rejected')),
    reject_reason     text,
    -- kept while parked, so the message can be processed when its order arrives
    body              bytea,
    routing_key       text,
    -- W3C trace context of the message, to parent its later processing
    traceparent       text,
    tracestate        text,
    -- when a parked message gives up waiting and is dead-lettered as unknown_order
    park_expires_at   timestamptz,
    received_at       timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    constraint inbox_parked_has_body check (status <> 'parked' or (body is not null and park_expires_at is not null)),
    constraint inbox_rejected_has_reason check (status <> 'rejected' or reject_reason is not null)
);
create index inbox_messages_parked on inbox_messages (order_id) where status = 'parked';

create table shipments (
    order_id        text not null references orders (order_id),
    shipment_id     text not null,
    message_id      text not null,
    -- the shipped items as [{"line_id": .., "quantity": ..}], for dedupe by content
    items           jsonb not null,
    last_shipment   boolean not null,
    shipped_at      timestamptz not null,
    -- value of what this shipment shipped (DESIGN §5), before the authorization cap
    shipped_value   bigint not null check (shipped_value >= 0),
    -- the plan's decision: capture | nothing:<reason> | release | void
    decision        text not null,
    created_at      timestamptz not null default now(),
    primary key (order_id, shipment_id)
);

create table cancellations (
    order_id         text not null references orders (order_id),
    -- the order.lines_cancelled message id
    cancellation_id  text not null,
    items            jsonb not null,
    decision         text not null,
    created_at       timestamptz not null default now(),
    primary key (order_id, cancellation_id)
);

-- One row per provider request we intend to make: a capture, or the release / void of the
-- authorization's remainder. Amount, currency, final flag and the key are fixed at insert.
create table captures (
    capture_id          bigint generated always as identity primary key,
    order_id            text not null references orders (order_id),
    provider            text not null,
    authorization_id    text not null,
    -- 1, 2, 3… within the order; executed strictly in this order (P8)
    sequence            integer not null check (sequence >= 1),
    -- capture | release (cancel the remainder after earlier captures) | void (nothing captured)
    kind                text not null check (kind in ('capture', 'release', 'void')),
    -- what caused it: the shipment id, or the cancellation / deadline that completed the order
    cause_kind          text not null check (cause_kind in ('shipment', 'cancellation', 'deadline')),
    cause_id            text not null,
    amount              bigint not null check (amount >= 0),
    currency            char(3) not null,
    is_final            boolean not null,
    -- the provider has no final flag: cancel the remainder once this capture succeeds
    release_after       boolean not null default false,
    -- lines and shipping this capture carries, before the cap: [{"line_id","units","amount","sku","name"}]
    lines               jsonb not null default '[]',
    shipping_amount     bigint not null default 0 check (shipping_amount >= 0),
    shortfall_amount    bigint not null default 0 check (shortfall_amount >= 0),
    -- the current idempotency key; a new one only after the provider showed the old one captured nothing
    idempotency_key     text not null,
    key_generation      integer not null default 0 check (key_generation >= 0),
    status              text not null default 'queued'
                        check (status in ('queued', 'in_flight', 'pending', 'retrying', 'succeeded',
                                          'declined', 'failed', 'attention', 'blocked')),
    -- provider calls made for this capture
    attempts            integer not null default 0 check (attempts >= 0),
    -- when a retry or a status poll is due
    next_attempt_at     timestamptz,
    -- the provider's last answer left the outcome unknown: read the authorization back before
    -- any retry under a new key
    needs_lookup        boolean not null default false,
    -- which worker holds the capture and until when; an expired lease may be taken over
    lease_owner         text,
    lease_expires_at    timestamptz,
    provider_reference  text,
    decline_code        text,
    last_error          text,
    -- W3C traceparent of the trace that created the capture; retries link to it
    traceparent         text,
    first_attempt_at    timestamptz,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    completed_at        timestamptz,
    constraint captures_sequence_unique unique (order_id, sequence),
    -- P3: one key, one request
    constraint captures_idempotency_key_unique unique (idempotency_key),
    -- P1: one capture per cause
    constraint captures_cause_unique unique (order_id, cause_kind, cause_id, kind),
    constraint captures_currency_format check (currency ~ '^[A-Z]{3}$'),
    -- a capture moves money, a release or void does not
    constraint captures_amount_by_kind check (kind = 'capture' or amount = 0),
    -- a zero-amount capture exists only as the final release
    constraint captures_zero_only_final check (amount > 0 or is_final or kind <> 'capture'),
    constraint captures_lease_when_in_flight check (status <> 'in_flight' or lease_expires_at is not null)
);
-- P5: at most one final request per authorization
create unique index captures_one_final_per_authorization
    on captures (provider, authorization_id) where is_final;
-- P8: at most one request in flight per order
create unique index captures_one_in_flight_per_order
    on captures (order_id) where status = 'in_flight';
-- the executor and the sweeper look for work here
create index captures_due on captures (next_attempt_at)
    where status in ('queued', 'retrying', 'pending', 'in_flight');
create index captures_by_order on captures (order_id, sequence);

-- P3 in the schema: every key ever used, bound to one amount and final flag forever.
create table capture_keys (
    idempotency_key  text primary key,
    capture_id       bigint not null references captures (capture_id),
    key_generation   integer not null,
    amount           bigint not null,
    is_final         boolean not null,
    created_at       timestamptz not null default now(),
    constraint capture_keys_terms_unique unique (idempotency_key, amount, is_final)
);

-- Append-only: one row per provider call.
create table capture_attempts (
    attempt_id           bigint generated always as identity primary key,
    capture_id           bigint not null references captures (capture_id),
    attempt_no           integer not null check (attempt_no >= 1),
    -- capture | release | lookup
    operation            text not null check (operation in ('capture', 'release', 'lookup')),
    idempotency_key      text,
    amount               bigint not null,
    is_final             boolean not null,
    -- succeeded | pending | declined | retryable | failed | unknown | lookup outcomes
    outcome              text not null,
    http_status          integer,
    -- provider error type / code / decline code
    provider_code        text,
    provider_request_id  text,
    error                text,
    latency_ms           integer not null check (latency_ms >= 0),
    -- the trace of the attempt, to find it in the tracing backend
    trace_id             text,
    worker_id            text not null,
    started_at           timestamptz not null,
    finished_at          timestamptz not null default now(),
    -- a key is only ever sent with the amount and final flag it was created for (P3)
    constraint capture_attempts_key_terms
        foreign key (idempotency_key, amount, is_final)
        references capture_keys (idempotency_key, amount, is_final)
);
create index capture_attempts_by_capture on capture_attempts (capture_id, attempt_id);

create function capture_attempts_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'capture_attempts is append-only (% refused)', tg_op
        using errcode = 'insufficient_privilege';
end $$;
create trigger capture_attempts_append_only
    before update or delete on capture_attempts
    for each row execute function capture_attempts_append_only();

-- The terms of a capture never change: amount, currency, final flag, kind, order, sequence.
-- The key changes only to a new generation.
create function captures_terms_fixed() returns trigger language plpgsql as $$
begin
    if new.amount <> old.amount or new.currency <> old.currency or new.is_final <> old.is_final
       or new.kind <> old.kind or new.order_id <> old.order_id or new.sequence <> old.sequence
       or new.authorization_id <> old.authorization_id then
        raise exception 'capture % terms are immutable', old.capture_id
            using errcode = 'check_violation';
    end if;
    if new.idempotency_key <> old.idempotency_key and new.key_generation <= old.key_generation then
        raise exception 'capture % key may change only to a new generation', old.capture_id
            using errcode = 'check_violation';
    end if;
    return new;
end $$;
create trigger captures_terms_fixed
    before update on captures
    for each row execute function captures_terms_fixed();

-- Messages we refused, with a machine-readable reason. Bodies are kept with card-number-like
-- digit runs masked (P9).
create table rejected_messages (
    rejection_id   bigint generated always as identity primary key,
    -- message_id when readable, else 'sha256:<hash of the body>'; one row per message and reason
    rejection_key  text not null,
    message_id     text,
    message_type   text,
    order_id       text,
    reason         text not null,
    detail         text not null,
    routing_key    text,
    body           text,
    received_at    timestamptz not null default now(),
    -- when an operator sent it back to the queue
    requeued_at    timestamptz,
    constraint rejected_messages_key_unique unique (rejection_key)
);
create index rejected_messages_by_time on rejected_messages (received_at);

-- Finance's contract views (DESIGN §3.3). Amounts are bigint minor units.
create view reconciliation_captures as
select
    c.capture_id,
    c.order_id,
    case when c.cause_kind = 'shipment' then c.cause_id end as shipment_id,
    c.sequence,
    c.kind,
    c.amount,
    c.currency,
    c.is_final,
    c.status,
    c.idempotency_key,
    c.attempts,
    c.provider,
    c.authorization_id,
    c.provider_reference,
    c.decline_code,
    c.last_error,
    c.shortfall_amount,
    c.created_at,
    c.completed_at
from captures c;

create view reconciliation_orders as
with cap as (
    select
        order_id,
        coalesce(sum(amount) filter (where kind = 'capture' and status = 'succeeded'), 0)::bigint as captured_amount,
        coalesce(sum(amount) filter (where kind = 'capture' and status in ('queued', 'in_flight', 'pending', 'retrying')), 0)::bigint as pending_amount,
        coalesce(sum(amount) filter (where kind = 'capture' and status = 'declined'), 0)::bigint as declined_amount,
        count(*) filter (where kind = 'capture' and amount > 0) as capture_count,
        bool_or(status in ('attention', 'failed')) as needs_attention,
        -- the remainder was released: by a final capture or a release/void that succeeded
        bool_or(status = 'succeeded' and is_final) as closed
    from captures
    group by order_id
), shipped as (
    select order_id, coalesce(sum(shipped_value), 0)::bigint as shipped_amount
    from shipments group by order_id
)
select
    o.order_id,
    o.provider,
    o.authorization_id,
    o.currency,
    o.order_total,
    o.authorized_amount,
    coalesce(s.shipped_amount, 0) as shipped_amount,
    coalesce(c.captured_amount, 0) as captured_amount,
    coalesce(c.pending_amount, 0) as pending_amount,
    case when coalesce(c.closed, false)
         then greatest(o.authorized_amount - coalesce(c.captured_amount, 0), 0)
         else 0 end::bigint as released_amount,
    coalesce(c.declined_amount, 0) as declined_amount,
    o.shortfall_amount,
    coalesce(c.capture_count, 0) as capture_count,
    case
        when o.phase = 'declined' then 'declined'
        when coalesce(c.needs_attention, false) then 'attention'
        when o.phase = 'completed' and coalesce(c.closed, false)
             and coalesce(c.captured_amount, 0) = 0 then 'cancelled'
        when o.phase = 'completed' and coalesce(c.closed, false) then 'completed'
        else 'open'
    end as status,
    o.authorization_expires_at,
    o.created_at,
    o.updated_at
from orders o
left join cap c on c.order_id = o.order_id
left join shipped s on s.order_id = o.order_id;
