-- After a failed provider call the worker decides what follows (same key, read the payment
-- back, new key) from the capture's earlier answers under its key (storage::captures::
-- key_history). capture_worker_app may now read those outcome columns of capture_attempts;
-- the table stays append-only for it, and the recorded error text stays unreadable.

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
    else
        raise notice 'role capture_worker_app does not exist: run deploy/roles.sql as an administrator';
    end if;

    if exists (select 1 from pg_roles where rolname = 'capture_operator') then
        grant select on orders, order_lines, inbox_messages, shipments, cancellations, captures,
            capture_keys, capture_attempts, rejected_messages, superseded_authorizations,
            webhook_events, webhook_rejections,
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
