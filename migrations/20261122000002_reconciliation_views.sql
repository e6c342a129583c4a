-- Finance's reconciliation views (DESIGN §3.3, docs/finance.md), the history of authorizations an
-- operator replaced when resuming a declined order, and the 'resume' cause for the captures such a
-- resume plans. Amounts are bigint minor units of the row's currency. The two contract views keep
-- every column they had, in the same order; new columns are only ever appended.
--
-- Thresholds of reconciliation_exceptions are session settings, so each reader picks their own:
--   set capture.stale_after = '30 minutes';      -- unsettled captures older than this (1 hour)
--   set capture.expiry_warning = '3 days';       -- authorizations expiring within this (2 days)
--   set capture.authorization_window = '7 days'; -- assumed life of an authorization without
--                                                -- expires_at (7 days, Stripe's default)

-- Authorizations an order had before `capture-worker order resume` gave it a new one. The orders
-- row always holds the current authorization; this table keeps the ones it replaced.
create table superseded_authorizations (
    provider                text not null,
    authorization_id        text not null,
    order_id                text not null references orders (order_id),
    authorized_amount       bigint not null check (authorized_amount >= 0),
    over_capture_allowance  bigint not null default 0 check (over_capture_allowance >= 0),
    authorized_at           timestamptz not null,
    expires_at              timestamptz,
    -- the decline that latched the order while this authorization was current
    declined_code           text,
    declined_at             timestamptz,
    superseded_at           timestamptz not null default now(),
    -- the authorization that replaced it
    superseded_by           text not null,
    primary key (provider, authorization_id)
);
create index superseded_authorizations_by_order on superseded_authorizations (order_id);

-- A capture planned by a resume carries the value of the declined and blocked captures it
-- replaces; its cause is the resume (cause_id = the new authorization id). The new check is a
-- superset of the old one, so existing rows pass; NOT VALID + VALIDATE keeps the lock short.
alter table captures drop constraint captures_cause_kind_check;
alter table captures add constraint captures_cause_kind_check
    check (cause_kind in ('shipment', 'cancellation', 'deadline', 'resume')) not valid;
alter table captures validate constraint captures_cause_kind_check;

-- One row per authorization, current or superseded, with what was captured on it.
create view reconciliation_authorizations as
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
    a.declined_at
from auth a
left join cap c
    on c.order_id = a.order_id and c.provider = a.provider and c.authorization_id = a.authorization_id;

-- The contract view, with released_amount now measured on the current authorization (an order
-- resumed after a decline has captures on two), and more columns appended.
create or replace view reconciliation_orders as
with cap as (
    select
        c.order_id,
        coalesce(sum(c.amount) filter (where c.kind = 'capture' and c.status = 'succeeded'), 0)::bigint as captured_amount,
        coalesce(sum(c.amount) filter (where c.kind = 'capture' and c.status in ('queued', 'in_flight', 'pending', 'retrying')), 0)::bigint as pending_amount,
        coalesce(sum(c.amount) filter (where c.kind = 'capture' and c.status = 'declined'), 0)::bigint as declined_amount,
        coalesce(sum(c.amount) filter (where c.kind = 'capture' and c.status = 'blocked'), 0)::bigint as blocked_amount,
        coalesce(sum(c.amount) filter (where c.kind = 'capture' and c.status = 'succeeded'
                                         and c.provider = o.provider and c.authorization_id = o.authorization_id), 0)::bigint as captured_current,
        count(*) filter (where c.kind = 'capture' and c.amount > 0) as capture_count,
        count(*) filter (where c.status in ('attention', 'failed')) as attention_count,
        -- the current authorization's remainder was released: by a final capture or a
        -- release/void that succeeded
        bool_or(c.status = 'succeeded' and c.is_final
                and c.provider = o.provider and c.authorization_id = o.authorization_id) as closed
    from captures c
    join orders o on o.order_id = c.order_id
    group by c.order_id
), shipped as (
    select order_id, coalesce(sum(shipped_value), 0)::bigint as shipped_amount
    from shipments group by order_id
), lines as (
    -- value of the units neither shipped nor cancelled, as they would be captured (§5:
    -- cumulative rounding half up)
    select order_id,
        sum(round(net_amount::numeric * (quantity - cancelled_quantity) / quantity)
            - round(net_amount::numeric * shipped_quantity / quantity)) as open_value,
        sum(quantity - shipped_quantity - cancelled_quantity) as open_units,
        sum(shipped_quantity) as shipped_units
    from order_lines group by order_id
), superseded as (
    select order_id, count(*) as superseded from superseded_authorizations group by order_id
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
         then greatest(o.authorized_amount - coalesce(c.captured_current, 0), 0)
         else 0 end::bigint as released_amount,
    coalesce(c.declined_amount, 0) as declined_amount,
    o.shortfall_amount,
    coalesce(c.capture_count, 0) as capture_count,
    case
        when o.phase = 'declined' then 'declined'
        when coalesce(c.attention_count, 0) > 0 then 'attention'
        when o.phase = 'completed' and coalesce(c.closed, false)
             and coalesce(c.captured_amount, 0) = 0 then 'cancelled'
        when o.phase = 'completed' and coalesce(c.closed, false) then 'completed'
        else 'open'
    end as status,
    o.authorization_expires_at,
    o.created_at,
    o.updated_at,
    -- appended by this migration
    coalesce(c.blocked_amount, 0) as blocked_amount,
    (case when coalesce(l.open_units, 0) > 0
          then l.open_value + case when l.shipped_units = 0 then o.shipping_amount else 0 end
          else 0 end)::bigint as unshipped_amount,
    o.authorized_at,
    case when o.phase = 'declined' then o.declined_code end as declined_code,
    case when o.phase = 'declined' then o.declined_at end as declined_at,
    coalesce(c.attention_count, 0) as attention_count,
    1 + coalesce(sup.superseded, 0) as authorization_count
from orders o
left join cap c on c.order_id = o.order_id
left join shipped s on s.order_id = o.order_id
left join lines l on l.order_id = o.order_id
left join superseded sup on sup.order_id = o.order_id;

-- The contract view, with the cause, the retry state and the last provider call appended.
create or replace view reconciliation_captures as
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
    c.completed_at,
    -- appended by this migration
    c.cause_kind,
    c.cause_id,
    c.shipping_amount,
    c.key_generation,
    c.next_attempt_at,
    c.first_attempt_at,
    c.updated_at,
    la.started_at as last_attempt_at,
    la.operation as last_operation,
    la.outcome as last_outcome,
    la.http_status as last_http_status,
    la.provider_code as last_provider_code,
    la.trace_id as last_trace_id
from captures c
left join lateral (
    select a.started_at, a.operation, a.outcome, a.http_status, a.provider_code, a.trace_id
    from capture_attempts a
    where a.capture_id = c.capture_id
    order by a.attempt_id desc
    limit 1
) la on true;

-- Money movements per UTC day × currency × provider: authorizations by the day they were
-- authorized, captures and declines by the day they completed, releases by the day the request
-- that released the rest succeeded, provider calls (captures and releases, not read-backs) by
-- the day they started, counted by outcome.
create view reconciliation_daily as
with authorizations as (
    select o.authorized_at, o.currency, o.provider, o.authorized_amount
    from orders o
    union all
    select s.authorized_at, o.currency, s.provider, s.authorized_amount
    from superseded_authorizations s
    join orders o on o.order_id = s.order_id
), facts as (
    select (a.authorized_at at time zone 'UTC')::date as day, a.currency, a.provider,
           a.authorized_amount, 1 as authorizations,
           0::bigint as captured, 0 as captures, 0::bigint as released, 0 as releases,
           0::bigint as declined, 0 as declines,
           0 as calls, 0 as calls_succeeded, 0 as calls_pending, 0 as calls_declined,
           0 as calls_retryable, 0 as calls_failed, 0 as calls_unknown
    from authorizations a
    union all
    select (c.completed_at at time zone 'UTC')::date, c.currency, c.provider, 0, 0,
           case when c.status = 'succeeded' then c.amount else 0 end,
           case when c.status = 'succeeded' and c.amount > 0 then 1 else 0 end,
           0, 0,
           case when c.status = 'declined' then c.amount else 0 end,
           case when c.status = 'declined' then 1 else 0 end,
           0, 0, 0, 0, 0, 0, 0
    from captures c
    where c.kind = 'capture' and c.status in ('succeeded', 'declined') and c.completed_at is not null
    union all
    select (c.completed_at at time zone 'UTC')::date, c.currency, c.provider, 0, 0, 0, 0,
           r.released, case when r.released > 0 then 1 else 0 end,
           0, 0, 0, 0, 0, 0, 0, 0, 0
    from captures c
    cross join lateral (
        select greatest(
                   coalesce((select o.authorized_amount from orders o
                             where o.order_id = c.order_id and o.provider = c.provider
                               and o.authorization_id = c.authorization_id),
                            (select s.authorized_amount from superseded_authorizations s
                             where s.provider = c.provider and s.authorization_id = c.authorization_id),
                            0)
                   - coalesce((select sum(x.amount) from captures x
                               where x.order_id = c.order_id and x.provider = c.provider
                                 and x.authorization_id = c.authorization_id
                                 and x.kind = 'capture' and x.status = 'succeeded'), 0),
                   0)::bigint as released
    ) r
    where c.is_final and c.status = 'succeeded' and c.completed_at is not null
    union all
    select (a.started_at at time zone 'UTC')::date, c.currency, c.provider, 0, 0, 0, 0, 0, 0, 0, 0,
           1,
           (a.outcome = 'succeeded')::int, (a.outcome = 'pending')::int,
           (a.outcome = 'declined')::int, (a.outcome = 'retryable')::int,
           (a.outcome = 'failed')::int, (a.outcome = 'unknown')::int
    from capture_attempts a
    join captures c on c.capture_id = a.capture_id
    where a.operation in ('capture', 'release')
)
select
    day,
    currency,
    provider,
    sum(authorized_amount)::bigint as authorized_amount,
    sum(authorizations)::bigint as authorization_count,
    sum(captured)::bigint as captured_amount,
    sum(captures)::bigint as capture_count,
    sum(released)::bigint as released_amount,
    sum(releases)::bigint as release_count,
    sum(declined)::bigint as declined_amount,
    sum(declines)::bigint as decline_count,
    sum(calls)::bigint as provider_calls,
    sum(calls_succeeded)::bigint as calls_succeeded,
    sum(calls_pending)::bigint as calls_pending,
    sum(calls_declined)::bigint as calls_declined,
    sum(calls_retryable)::bigint as calls_retryable,
    sum(calls_failed)::bigint as calls_failed,
    sum(calls_unknown)::bigint as calls_unknown
from facts
group by day, currency, provider;

-- One row per problem someone must look at, with a kind:
--   declined_latch          an order stopped by a decline (amount: declined + blocked value)
--   capture_attention       a capture that stopped and waits for an operator
--   outcome_pending         accepted by the provider, unconfirmed for longer than stale_after
--   outcome_unknown         queued, in flight or retrying for longer than stale_after
--   authorization_expiring  an open order whose authorization expires within expiry_warning (or
--                           has expired) with value still to ship (amount: that value)
--   shortfall               shipped value the authorization could not cover
--   over_shipment           a refused shipment or cancellation for more than was ordered, or
--                           after the order's final capture
--   conflict                a refused message that contradicts one already applied
--   dead_letter             any other refused message
-- Refused messages leave the list once `capture-worker dead-letter requeue` sent them back.
create view reconciliation_exceptions as
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
where r.requeued_at is null;
