-- reconciliation_daily sums amounts over every order of a day, currency and provider: two
-- authorizations of 9223372036854775807 and 1 overflowed its bigint columns, and the view (and
-- `capture-worker report`) failed for that day. Its four amount columns (authorized_amount,
-- captured_amount, released_amount, declined_amount) are now numeric: exact integers, minor
-- units as before, that cannot overflow. Counts stay bigint. Same columns, same order, same
-- meaning; a column's type cannot change in place, so the view is dropped, created again and
-- granted again. The per-order views cannot overflow: what one order claims is bounded by its
-- authorization (orders_claim_within_authorization).

drop view reconciliation_daily;

create view reconciliation_daily as
select
    day,
    currency,
    provider,
    sum(authorized_amount) as authorized_amount,
    sum(authorization_count)::bigint as authorization_count,
    sum(captured_amount) as captured_amount,
    sum(capture_count)::bigint as capture_count,
    sum(released_amount) as released_amount,
    sum(release_count)::bigint as release_count,
    sum(declined_amount) as declined_amount,
    sum(decline_count)::bigint as decline_count,
    sum(provider_calls)::bigint as provider_calls,
    sum(calls_succeeded)::bigint as calls_succeeded,
    sum(calls_pending)::bigint as calls_pending,
    sum(calls_declined)::bigint as calls_declined,
    sum(calls_retryable)::bigint as calls_retryable,
    sum(calls_failed)::bigint as calls_failed,
    sum(calls_unknown)::bigint as calls_unknown
from (
    -- authorizations, current and superseded, by the day they were authorized
    select (a.authorized_at at time zone 'UTC')::date as day, a.currency, a.provider,
           sum(a.authorized_amount) as authorized_amount, count(*) as authorization_count,
           0 as captured_amount, 0 as capture_count, 0 as released_amount, 0 as release_count,
           0 as declined_amount, 0 as decline_count, 0 as provider_calls, 0 as calls_succeeded,
           0 as calls_pending, 0 as calls_declined, 0 as calls_retryable, 0 as calls_failed,
           0 as calls_unknown
    from (
        select o.authorized_at, o.currency, o.provider, o.authorized_amount from orders o
        union all
        select s.authorized_at, o.currency, s.provider, s.authorized_amount
        from superseded_authorizations s join orders o on o.order_id = s.order_id
    ) a
    group by 1, 2, 3
    union all
    -- captures succeeded or declined, by the day they completed
    select (c.completed_at at time zone 'UTC')::date, c.currency, c.provider, 0, 0,
           coalesce(sum(c.amount) filter (where c.status = 'succeeded'), 0),
           count(*) filter (where c.status = 'succeeded' and c.amount > 0),
           0, 0,
           coalesce(sum(c.amount) filter (where c.status = 'declined'), 0),
           count(*) filter (where c.status = 'declined'),
           0, 0, 0, 0, 0, 0, 0
    from captures c
    where c.kind = 'capture' and c.status in ('succeeded', 'declined') and c.completed_at is not null
    group by 1, 2, 3
    union all
    -- releases: the request that released the rest of an authorization (final capture,
    -- release or void) succeeded; it released the authorization less what was captured on it
    select (r.completed_at at time zone 'UTC')::date, r.currency, r.provider, 0, 0, 0, 0,
           sum(r.released), count(*) filter (where r.released > 0),
           0, 0, 0, 0, 0, 0, 0, 0, 0
    from (
        select c.completed_at, c.currency, c.provider,
               greatest(a.authorized_amount - coalesce(t.captured, 0), 0) as released
        from captures c
        join (
            select provider, authorization_id, authorized_amount from orders
            union all
            select provider, authorization_id, authorized_amount from superseded_authorizations
        ) a on a.provider = c.provider and a.authorization_id = c.authorization_id
        left join (
            select provider, authorization_id, sum(amount) as captured from captures
            where kind = 'capture' and status = 'succeeded'
            group by provider, authorization_id
        ) t on t.provider = c.provider and t.authorization_id = c.authorization_id
        where c.is_final and c.status = 'succeeded' and c.completed_at is not null
    ) r
    group by 1, 2, 3
    union all
    -- provider calls (captures and releases, not read-backs) by the day they started
    select (a.started_at at time zone 'UTC')::date, c.currency, c.provider, 0, 0, 0, 0, 0, 0,
           0, 0,
           count(*),
           count(*) filter (where a.outcome = 'succeeded'),
           count(*) filter (where a.outcome = 'pending'),
           count(*) filter (where a.outcome = 'declined'),
           count(*) filter (where a.outcome = 'retryable'),
           count(*) filter (where a.outcome = 'failed'),
           count(*) filter (where a.outcome = 'unknown')
    from capture_attempts a
    join captures c on c.capture_id = a.capture_id
    where a.operation in ('capture', 'release')
    group by 1, 2, 3
) facts
group by day, currency, provider;

select capture_grant_roles();
