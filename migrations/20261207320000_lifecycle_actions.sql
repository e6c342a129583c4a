-- The authorization lifecycle sweep (src/app/lifecycle.rs) extends and increments holds
-- where the provider documents it. Each action is one row, planned before the provider is
-- called and finished with its answer: the idempotency key is stored first, so a worker
-- killed mid-call resends the same key and the provider applies the action once.

create table lifecycle_actions (
    action_id               bigserial primary key,
    order_id                text not null references orders (order_id),
    -- 1, 2, 3… per order: names the action in the provider's reference (`order/extend-1`)
    sequence                integer not null check (sequence >= 1),
    provider                text not null,
    -- the authorization the call was made on
    authorization_id        text not null,
    -- extend | increment
    action                  text not null check (action in ('extend', 'increment')),
    -- the policy's reason (src/domain/lifecycle.rs `Reason::label`)
    reason                  text not null,
    currency                char(3) not null,
    -- the authorized amount before the call, and the increase asked (0 for an extension)
    authorized_before       bigint not null check (authorized_before >= 0),
    increase                bigint not null default 0 check (increase >= 0),
    idempotency_key         text not null unique,
    -- planned | succeeded | pending | declined | failed | unknown
    status                  text not null default 'planned'
                            check (status in ('planned', 'succeeded', 'pending', 'declined',
                                              'failed', 'unknown')),
    -- what the answer said: the provider's reference, the hold afterwards
    provider_reference      text,
    provider_code           text,
    http_status             integer,
    new_authorization_id    text,
    new_amount              bigint check (new_amount >= 0),
    new_expires_at          timestamptz,
    error                   text,
    planned_at              timestamptz not null,
    finished_at             timestamptz,
    constraint lifecycle_actions_sequence_unique unique (order_id, sequence)
);

create index lifecycle_actions_order on lifecycle_actions (order_id, sequence);

-- Finance sees each authorization's extensions and increments (appended columns: the view's
-- earlier columns are unchanged).
create or replace view reconciliation_authorizations as
with auth as (
    select o.order_id, o.provider, o.authorization_id, o.currency, o.authorized_amount,
           o.over_capture_allowance, o.authorized_at, o.authorization_expires_at as expires_at,
           true as is_current, null::timestamptz as superseded_at, null::text as superseded_by,
           case when o.phase = 'declined' then o.declined_code end as declined_code,
           case when o.phase = 'declined' then o.declined_at end as declined_at
    from orders o
    union all
    select s.order_id, s.provider, s.authorization_id, o.currency, s.authorized_amount,
           s.over_capture_allowance, s.authorized_at, s.expires_at,
           false, s.superseded_at, s.superseded_by, s.declined_code, s.declined_at
    from superseded_authorizations s
    join orders o on o.order_id = s.order_id
), cap as (
    select order_id, provider, authorization_id,
        coalesce(sum(amount) filter (where kind = 'capture' and status = 'succeeded'), 0)::bigint as captured_amount,
        coalesce(sum(amount) filter (where kind = 'capture' and status in ('queued', 'in_flight', 'pending', 'retrying')), 0)::bigint as pending_amount,
        coalesce(sum(amount) filter (where kind = 'capture' and status = 'declined'), 0)::bigint as declined_amount,
        coalesce(sum(amount) filter (where kind = 'capture' and status = 'blocked'), 0)::bigint as blocked_amount,
        count(*) filter (where kind = 'capture' and status = 'succeeded' and amount > 0) as succeeded_count,
        -- the request that released the rest (final capture, release or void) succeeded
        min(completed_at) filter (where is_final and status = 'succeeded') as closed_at
    from captures
    group by order_id, provider, authorization_id
), life as (
    select order_id, provider, authorization_id,
        count(*) filter (where action = 'extend' and status = 'succeeded') as extensions,
        count(*) filter (where action = 'increment' and status = 'succeeded') as increments,
        coalesce(sum(increase) filter (where action = 'increment' and status = 'succeeded'), 0)::bigint
            as incremented_amount,
        max(finished_at) filter (where status = 'succeeded') as last_lifecycle_at,
        count(*) filter (where status in ('declined', 'failed', 'unknown')) as lifecycle_failures
    from lifecycle_actions
    group by order_id, provider, authorization_id
)
select
    a.order_id,
    a.provider,
    a.authorization_id,
    a.currency,
    a.authorized_amount,
    a.over_capture_allowance,
    a.authorized_at,
    a.expires_at,
    coalesce(c.captured_amount, 0) as captured_amount,
    coalesce(c.pending_amount, 0) as pending_amount,
    coalesce(c.declined_amount, 0) as declined_amount,
    coalesce(c.blocked_amount, 0) as blocked_amount,
    case when c.closed_at is not null
         then greatest(a.authorized_amount - c.captured_amount, 0)
         else 0 end::bigint as released_amount,
    coalesce(c.succeeded_count, 0) as succeeded_count,
    c.closed_at,
    case
        when not a.is_current then 'superseded'
        when a.declined_at is not null then 'declined'
        when c.closed_at is not null then 'closed'
        else 'open'
    end as status,
    a.is_current,
    a.superseded_at,
    a.superseded_by,
    a.declined_code,
    a.declined_at,
    coalesce(l.extensions, 0) as extensions,
    coalesce(l.increments, 0) as increments,
    coalesce(l.incremented_amount, 0) as incremented_amount,
    l.last_lifecycle_at,
    coalesce(l.lifecycle_failures, 0) as lifecycle_failures
from auth a
left join cap c
    on c.order_id = a.order_id and c.provider = a.provider and c.authorization_id = a.authorization_id
left join life l
    on l.order_id = a.order_id and l.provider = a.provider and l.authorization_id = a.authorization_id;

-- A hold the lifecycle policy releases (nobody used it, or it is old with nothing left to
-- ship) is a release or void row with cause_kind 'lifecycle', never silent: it is a row of
-- reconciliation_exceptions (`authorization_released`).
alter table captures drop constraint captures_cause_kind_check;
alter table captures add constraint captures_cause_kind_check
    check (cause_kind in ('shipment', 'cancellation', 'deadline', 'resume', 'lifecycle')) not valid;
alter table captures validate constraint captures_cause_kind_check;

create or replace view reconciliation_exceptions as
with settings as (
    select
        coalesce(nullif(current_setting('capture.stale_after', true), ''), '1 hour')::interval as stale_after,
        coalesce(nullif(current_setting('capture.expiry_warning', true), ''), '2 days')::interval as expiry_warning,
        coalesce(nullif(current_setting('capture.authorization_window', true), ''), '7 days')::interval as authorization_window
)
select
    'declined_latch'::text as kind,
    o.order_id,
    null::bigint as capture_id,
    null::bigint as rejection_id,
    o.provider,
    o.authorization_id,
    o.currency,
    coalesce((select sum(c.amount) from captures c
              where c.order_id = o.order_id and c.provider = o.provider
                and c.authorization_id = o.authorization_id
                and c.kind = 'capture' and c.status in ('declined', 'blocked')), 0)::bigint as amount,
    o.declined_at as since,
    o.declined_code as reason,
    'a capture was declined: later captures are blocked and later shipments refused until an operator resumes the order with a new authorization'::text as detail
from orders o
where o.phase = 'declined'
union all
select 'capture_attention', c.order_id, c.capture_id, null, c.provider, c.authorization_id,
       c.currency, c.amount, c.updated_at, c.status, coalesce(c.last_error, '')
from captures c
where c.status in ('attention', 'failed')
union all
select 'outcome_pending', c.order_id, c.capture_id, null, c.provider, c.authorization_id,
       c.currency, c.amount, coalesce(c.first_attempt_at, c.created_at), c.status,
       'the provider accepted the capture but has not confirmed it'
from captures c, settings s
where c.status = 'pending' and coalesce(c.first_attempt_at, c.created_at) < now() - s.stale_after
union all
select 'outcome_unknown', c.order_id, c.capture_id, null, c.provider, c.authorization_id,
       c.currency, c.amount, c.created_at, c.status,
       case when c.needs_lookup
            then 'no answer from the provider: the worker reads the payment back before any retry'
            else 'not settled: ' || coalesce(c.last_error, 'waiting to be sent') end
from captures c, settings s
where c.status in ('queued', 'in_flight', 'retrying') and c.created_at < now() - s.stale_after
union all
select 'authorization_expiring', r.order_id, null, null, r.provider, r.authorization_id,
       r.currency, r.unshipped_amount,
       coalesce(r.authorization_expires_at, r.authorized_at + s.authorization_window),
       case when coalesce(r.authorization_expires_at, r.authorized_at + s.authorization_window) <= now()
            then 'expired' else 'expiring' end,
       'the authorization ends with value still to ship'
from reconciliation_orders r, settings s
where r.status in ('open', 'attention') and r.unshipped_amount > 0
  and coalesce(r.authorization_expires_at, r.authorized_at + s.authorization_window) < now() + s.expiry_warning
union all
select 'shortfall', o.order_id, null, null, o.provider, o.authorization_id, o.currency,
       o.shortfall_amount,
       coalesce((select min(c.created_at) from captures c
                 where c.order_id = o.order_id and c.shortfall_amount > 0), o.updated_at),
       'authorization_exhausted',
       'shipped value the authorization could not cover; it is never captured'
from orders o
where o.shortfall_amount > 0
union all
select
    case
        when r.reason in ('over_shipment', 'over_cancellation', 'after_final') then 'over_shipment'
        when r.reason in ('shipment_conflict', 'message_conflict', 'order_conflict', 'authorization_conflict') then 'conflict'
        else 'dead_letter'
    end,
    r.order_id, null, r.rejection_id, o.provider, o.authorization_id, o.currency, null,
    r.received_at, r.reason, r.detail
from rejected_messages r
left join orders o on o.order_id = r.order_id
where r.requeued_at is null
union all
select 'authorization_released', c.order_id, c.capture_id, null, c.provider, c.authorization_id,
       c.currency,
       greatest(o.authorized_amount - coalesce((select sum(x.amount) from captures x
                 where x.order_id = c.order_id and x.authorization_id = c.authorization_id
                   and x.kind = 'capture' and x.status = 'succeeded'), 0), 0)::bigint,
       c.created_at, c.cause_id,
       case when c.cause_id like 'untouched%'
            then 'the worker released a hold nothing was shipped or captured on for the configured time'
            else 'the worker released what was left of an old hold with nothing left to ship' end
from captures c
join orders o on o.order_id = c.order_id
where c.cause_kind = 'lifecycle';

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
        -- the lifecycle sweep: its actions, and the authorization a PayPal reauthorization
        -- replaces
        grant select, insert, update on lifecycle_actions to capture_worker_app;
        grant usage on sequence lifecycle_actions_action_id_seq to capture_worker_app;
        grant insert on superseded_authorizations to capture_worker_app;
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
            webhook_events, webhook_rejections, lifecycle_actions, outcome_events,
            outcome_sequences, expiry_warnings,
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
