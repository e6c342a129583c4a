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
    else
        raise notice 'role capture_worker_app does not exist: run deploy/roles.sql as an administrator';
    end if;

    if exists (select 1 from pg_roles where rolname = 'capture_operator') then
        grant select on orders, order_lines, inbox_messages, shipments, cancellations, captures,
            capture_keys, capture_attempts, rejected_messages, superseded_authorizations,
            webhook_events, webhook_rejections, lifecycle_actions,
            reconciliation_orders, reconciliation_captures, reconciliation_authorizations,
            reconciliation_daily, reconciliation_exceptions
            to capture_operator;
        grant insert, update on orders, order_lines, captures to capture_operator;
        grant insert on capture_keys, superseded_authorizations to capture_operator;
        grant update on rejected_messages to capture_operator;
        grant delete on inbox_messages to capture_operator;
    else
        raise notice 'role capture_operator does not exist: run deploy/roles.sql as an administrator';
    end if;
end $$;

revoke all on function capture_grant_roles() from public;

select capture_grant_roles();
