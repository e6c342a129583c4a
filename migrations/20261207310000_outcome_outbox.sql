-- Outcome events: what the ledger decided, told back to the systems that sent the shipments
-- (docs/subscribers.md, contract/v1/events/). Every event is written as a row of
-- outcome_events by a trigger on the ledger transition it reports, so it commits in the same
-- transaction as the transition or not at all; the worker's relay publishes the rows to the
-- outcomes exchange and marks them published after the broker's confirm.
--
-- Why triggers: the transitions are made in many places (the executor's single and batched
-- outcome writes, notifications, the decline latch, intake's refusals, the expiry sweep, the
-- operator commands). A trigger on the row that changes cannot be forgotten by a new code path,
-- and "one transition, one event, same transaction" then holds by construction.
--
--   captures.status -> succeeded   capture.succeeded (kind capture), authorization.released
--                                  (kind release), authorization.voided (kind void); and when
--                                  the request is the authorization's final one, then
--                                  order.completed
--   captures.status -> declined    capture.declined (kind capture), capture.needs_attention
--                                  (a release or void refused)
--   captures.status -> attention   capture.needs_attention
--   orders.phase -> declined       order.capture_stopped (the decline latch)
--   insert rejected_messages       message.rejected
--   insert expiry_warnings         authorization.expiring (the expiry sweep, once per
--                                  authorization and deadline)
--
-- Per order, events are numbered 1, 2, 3… without gaps in commit order: the number comes from
-- the order's row in outcome_sequences, updated in the same transaction, whose row lock makes
-- a second writer for the same order wait until the first commits (or rolls back, taking its
-- number back with it).

create table outcome_sequences (
    -- an order id as the ledger or a refused message names it (no foreign key: a refused
    -- message may name an order the worker never registered)
    order_id       text primary key,
    last_sequence  bigint not null check (last_sequence >= 1)
);

create table outcome_events (
    outcome_event_id  bigint generated always as identity primary key,
    -- the message_id it is published under, stable across re-publication
    event_id          uuid not null default gen_random_uuid() unique,
    -- null only for message.rejected of a message whose order could not be read
    order_id          text,
    -- 1, 2, 3… per order in commit order; null when order_id is null
    sequence          bigint,
    event_type        text not null
                      check (event_type in ('capture.succeeded', 'capture.declined',
                                            'capture.needs_attention', 'order.capture_stopped',
                                            'order.completed', 'authorization.released',
                                            'authorization.voided', 'authorization.expiring',
                                            'message.rejected')),
    occurred_at       timestamptz not null default now(),
    -- the event's `data` object (contract/v1/events/<type>.schema.json)
    data              jsonb not null,
    -- W3C traceparent of the capture's (or message's) trace: the relay's publish joins it
    traceparent       text,
    -- set once the broker confirmed the publish
    published_at      timestamptz,
    -- failed publishes of this row, and the last failure, for on-call
    publish_failures  integer not null default 0,
    last_error        text,
    constraint outcome_events_sequence_unique unique (order_id, sequence),
    constraint outcome_events_sequence_with_order check ((order_id is null) = (sequence is null))
);
-- the relay's claim: the unpublished head of each order
create index outcome_events_unpublished on outcome_events (order_id, sequence)
    where published_at is null;
create index outcome_events_unpublished_age on outcome_events (outcome_event_id)
    where published_at is null;
-- retention pruning
create index outcome_events_published on outcome_events (published_at)
    where published_at is not null;

-- The expiry sweep's warnings: one authorization.expiring per authorization and deadline.
create table expiry_warnings (
    provider          text not null,
    authorization_id  text not null,
    deadline          timestamptz not null,
    order_id          text not null references orders (order_id),
    warned_at         timestamptz not null default now(),
    primary key (provider, authorization_id, deadline)
);

-- Appends one event; numbers it within its order.
create function outcome_emit(p_order_id text, p_type text, p_data jsonb, p_traceparent text)
    returns void language plpgsql as $$
declare
    seq bigint;
begin
    if p_order_id is not null then
        insert into outcome_sequences as s (order_id, last_sequence) values (p_order_id, 1)
        on conflict (order_id) do update set last_sequence = s.last_sequence + 1
        returning s.last_sequence into seq;
    end if;
    insert into outcome_events (order_id, sequence, event_type, data, traceparent)
    values (p_order_id, seq, p_type, p_data, p_traceparent);
end $$;

create function outcome_capture_settled() returns trigger language plpgsql as $$
declare
    shipment_ids jsonb;
    captured bigint;
    authorized bigint;
    released bigint;
begin
    if new.kind = 'capture' and new.status in ('succeeded', 'declined') then
        -- the shipment that caused the capture and the earlier ones whose value it carries
        -- (deferred or coalesced shipments planned no capture of their own)
        select coalesce(jsonb_agg(s.shipment_id order by s.shipped_at, s.shipment_id), '[]'::jsonb)
          into shipment_ids
          from shipments s
         where s.order_id = new.order_id
           and (s.shipment_id = new.cause_id and new.cause_kind = 'shipment'
                or (s.decision like 'nothing:%'
                    and s.created_at <= (select coalesce(max(x.created_at), 'infinity')
                                           from shipments x
                                          where x.order_id = new.order_id
                                            and x.shipment_id = new.cause_id
                                            and new.cause_kind = 'shipment')
                    and not exists (select 1 from captures p
                                     where p.order_id = new.order_id and p.kind = 'capture'
                                       and p.sequence < new.sequence and p.cause_kind = 'shipment'
                                       and p.created_at >= s.created_at)));
        perform outcome_emit(new.order_id,
            case new.status when 'succeeded' then 'capture.succeeded' else 'capture.declined' end,
            jsonb_build_object(
                'capture_id', new.capture_id::text,
                'provider', new.provider,
                'authorization_id', new.authorization_id,
                'amount', new.amount,
                'currency', new.currency::text,
                'is_final', new.is_final,
                'shipment_ids', shipment_ids,
                'provider_reference', new.provider_reference)
            || case when new.status = 'declined'
                    then jsonb_build_object('decline_code', coalesce(new.decline_code, 'unknown'))
                    else '{}'::jsonb end,
            new.traceparent);
    elsif new.status in ('declined', 'attention') then
        perform outcome_emit(new.order_id, 'capture.needs_attention',
            jsonb_build_object(
                'capture_id', new.capture_id::text,
                'kind', new.kind,
                'provider', new.provider,
                'authorization_id', new.authorization_id,
                'reason', coalesce(new.last_error, new.decline_code,
                                   'the provider refused to ' || new.kind)),
            new.traceparent);
    elsif new.status = 'succeeded' then
        -- a release or void: the authorization's remainder is let go
        select coalesce(sum(c.amount), 0)::bigint into captured
          from captures c
         where c.provider = new.provider and c.authorization_id = new.authorization_id
           and c.kind = 'capture' and c.status = 'succeeded';
        select o.authorized_amount into authorized from orders o
         where o.order_id = new.order_id and o.provider = new.provider
           and o.authorization_id = new.authorization_id;
        released := greatest(coalesce(authorized, 0) - captured, 0);
        perform outcome_emit(new.order_id,
            case new.kind when 'void' then 'authorization.voided' else 'authorization.released' end,
            jsonb_build_object(
                'capture_id', new.capture_id::text,
                'provider', new.provider,
                'authorization_id', new.authorization_id,
                'amount', released,
                'currency', new.currency::text,
                'cause', new.cause_kind),
            new.traceparent);
    end if;

    if new.status = 'succeeded' and new.is_final then
        -- the authorization's final request succeeded: nothing more will be captured
        select coalesce(sum(c.amount), 0)::bigint into captured
          from captures c
         where c.order_id = new.order_id and c.kind = 'capture' and c.status = 'succeeded';
        select greatest(o.authorized_amount - coalesce((
                   select sum(c.amount) from captures c
                    where c.provider = new.provider and c.authorization_id = new.authorization_id
                      and c.kind = 'capture' and c.status = 'succeeded'), 0), 0)::bigint
          into released
          from orders o where o.order_id = new.order_id;
        perform outcome_emit(new.order_id, 'order.completed',
            jsonb_build_object(
                'provider', new.provider,
                'authorization_id', new.authorization_id,
                'captured_amount', captured,
                'released_amount', coalesce(released, 0),
                'currency', new.currency::text),
            new.traceparent);
    end if;
    return null;
end $$;

create trigger outcome_capture_settled
    after update of status on captures
    for each row
    when (new.status is distinct from old.status
          and new.status in ('succeeded', 'declined', 'attention'))
    execute function outcome_capture_settled();

create function outcome_order_latched() returns trigger language plpgsql as $$
declare
    declined record;
begin
    select c.capture_id, c.traceparent into declined
      from captures c
     where c.order_id = new.order_id and c.status = 'declined'
     order by c.sequence desc limit 1;
    perform outcome_emit(new.order_id, 'order.capture_stopped',
        jsonb_build_object(
            'provider', new.provider,
            'authorization_id', new.authorization_id,
            'decline_code', coalesce(new.declined_code, 'unknown'),
            'declined_capture_id', declined.capture_id::text),
        declined.traceparent);
    return null;
end $$;

create trigger outcome_order_latched
    after update of phase on orders
    for each row
    when (new.phase = 'declined' and old.phase is distinct from 'declined')
    execute function outcome_order_latched();

create function outcome_message_rejected() returns trigger language plpgsql as $$
declare
    tp text;
begin
    if new.message_id is not null then
        select i.traceparent into tp from inbox_messages i where i.message_id = new.message_id;
    end if;
    perform outcome_emit(new.order_id, 'message.rejected',
        jsonb_build_object(
            'message_id', new.message_id,
            'message_type', new.message_type,
            'routing_key', new.routing_key,
            'reason', new.reason),
        tp);
    return null;
end $$;

create trigger outcome_message_rejected
    after insert on rejected_messages
    for each row execute function outcome_message_rejected();

create function outcome_authorization_expiring() returns trigger language plpgsql as $$
declare
    o record;
    unshipped jsonb;
begin
    select * into o from orders where order_id = new.order_id;
    select coalesce(jsonb_agg(jsonb_build_object(
               'line_id', l.line_id,
               'sku', l.sku,
               'quantity', l.quantity - l.shipped_quantity - l.cancelled_quantity)
               order by l.line_no), '[]'::jsonb)
      into unshipped
      from order_lines l
     where l.order_id = new.order_id
       and l.quantity - l.shipped_quantity - l.cancelled_quantity > 0;
    perform outcome_emit(new.order_id, 'authorization.expiring',
        jsonb_build_object(
            'provider', new.provider,
            'authorization_id', new.authorization_id,
            'expires_at', to_char(new.deadline at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            'unclaimed_amount', greatest(o.authorized_amount - o.claimed_amount, 0),
            'currency', o.currency::text,
            'unshipped_lines', unshipped),
        (select c.traceparent from captures c where c.order_id = new.order_id
          order by c.sequence desc limit 1));
    return null;
end $$;

create trigger outcome_authorization_expiring
    after insert on expiry_warnings
    for each row execute function outcome_authorization_expiring();

-- Grants: as 20261207200000, plus
--   capture_worker_app  outcome_events: insert (the triggers), select and update (the relay
--                       claims rows and marks them published), delete (retention pruning);
--                       outcome_sequences: select, insert, update (numbering);
--                       expiry_warnings: select, insert (the expiry sweep).
--   capture_operator    reads the three (`order show` lists an order's events); insert and
--                       update on outcome_events and outcome_sequences, since its commands
--                       may settle a capture and so emit an event.
--   capture_finance     unchanged.
create or replace function capture_grant_roles() returns void language plpgsql as $$
begin
    if exists (select 1 from pg_roles where rolname = 'capture_finance') then
        grant select on reconciliation_orders, reconciliation_captures,
            reconciliation_authorizations, reconciliation_daily, reconciliation_exceptions
            to capture_finance;
    else
        raise notice 'role capture_finance does not exist: run deploy/roles.sql as an administrator';
    end if;

    if exists (select 1 from pg_roles where rolname = 'capture_worker_app') then
        grant select, insert, update on orders, order_lines, inbox_messages, captures
            to capture_worker_app;
        -- select: intake reads earlier shipments and cancellations back for dedupe, and
        -- INSERT … ON CONFLICT on rejected_messages needs it for the conflict target
        grant select, insert on shipments, cancellations, rejected_messages to capture_worker_app;
        grant insert on capture_keys, capture_attempts to capture_worker_app;
        -- what follows a failed call is decided from the capture's earlier answers: the
        -- outcome columns only, never the recorded error text
        grant select (attempt_id, capture_id, operation, idempotency_key, outcome, http_status,
            provider_code) on capture_attempts to capture_worker_app;
        -- notifications: deduplicated by reading webhook_events back; refusals are write-only
        grant select, insert on webhook_events to capture_worker_app;
        grant insert on webhook_rejections to capture_worker_app;
        -- outcome events: written by the triggers, published and pruned by the relay
        grant select, insert, update, delete on outcome_events to capture_worker_app;
        grant select, insert, update on outcome_sequences to capture_worker_app;
        grant select, insert on expiry_warnings to capture_worker_app;
    else
        raise notice 'role capture_worker_app does not exist: run deploy/roles.sql as an administrator';
    end if;

    if exists (select 1 from pg_roles where rolname = 'capture_operator') then
        grant select on orders, order_lines, inbox_messages, shipments, cancellations, captures,
            capture_keys, capture_attempts, rejected_messages, superseded_authorizations,
            webhook_events, webhook_rejections, outcome_events, outcome_sequences,
            expiry_warnings,
            reconciliation_orders, reconciliation_captures, reconciliation_authorizations,
            reconciliation_daily, reconciliation_exceptions
            to capture_operator;
        grant insert, update on orders, order_lines, captures to capture_operator;
        grant insert on capture_keys, superseded_authorizations to capture_operator;
        grant update on rejected_messages to capture_operator;
        grant delete on inbox_messages to capture_operator;
        grant insert on outcome_events to capture_operator;
        grant insert, update on outcome_sequences to capture_operator;
    else
        raise notice 'role capture_operator does not exist: run deploy/roles.sql as an administrator';
    end if;
end $$;

revoke all on function capture_grant_roles() from public;

select capture_grant_roles();
