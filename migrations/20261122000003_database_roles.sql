-- Least-privilege database roles (DESIGN §1 finance, §6 security). All three are NOLOGIN group
-- roles; people and services log in as their own users, granted one of them:
--
--   capture_finance     SELECT on the reconciliation views only: no raw table, no write.
--   capture_worker_app  what `capture-worker run --no-migrate` needs and no more: no DDL, no
--                       DELETE or TRUNCATE anywhere, INSERT only on capture_attempts and
--                       capture_keys, no access to the views.
--   capture_operator    what the operator commands need (report, order show / resume, capture
--                       retry, dead-letter list / requeue, provider reconcile): read everything,
--                       write captures and orders, mark rejections requeued, and delete an
--                       inbox row of a refused message so that its requeued copy is processed
--                       afresh. Never capture_attempts.
--
-- Roles are cluster-wide but grants are per database, and tests migrate many databases at once:
-- creating a role tolerates another migration creating it at the same moment. When the migrating
-- user may not create roles, the migration still succeeds (with a notice) and
-- deploy/roles.sql, run later by an administrator, creates them and applies the grants below.
--
-- Migrations that add a table or a view must grant on it here too: add it to
-- capture_grant_roles() in a new migration (create or replace) and call it again.

create function capture_grant_roles() returns void language plpgsql as $$
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
    else
        raise notice 'role capture_worker_app does not exist: run deploy/roles.sql as an administrator';
    end if;

    if exists (select 1 from pg_roles where rolname = 'capture_operator') then
        grant select on orders, order_lines, inbox_messages, shipments, cancellations, captures,
            capture_keys, capture_attempts, rejected_messages, superseded_authorizations,
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

do $$
declare
    r text;
begin
    foreach r in array array['capture_finance', 'capture_worker_app', 'capture_operator'] loop
        if not exists (select 1 from pg_roles where rolname = r) then
            begin
                execute format('create role %I nologin', r);
            exception
                -- another database's migration created it at the same moment
                when duplicate_object or unique_violation then null;
                when insufficient_privilege then
                    raise notice 'cannot create role % (the migrating user lacks CREATEROLE); skipped: run deploy/roles.sql as an administrator', r;
            end;
        end if;
    end loop;
    perform capture_grant_roles();
end $$;
