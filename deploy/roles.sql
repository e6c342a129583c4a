-- Creates capture-worker's database roles and grants them on one database. Run it as a user
-- with CREATEROLE (or a superuser) in each capture-worker database, after `capture-worker
-- migrate`, when the migrating user could not create the roles itself (the migration then
-- printed "run deploy/roles.sql"):
--
--   psql "postgres://admin@db.example/capture_worker" -v ON_ERROR_STOP=1 -f deploy/roles.sql
--
-- Safe to run again. The roles and their privileges are described in
-- migrations/20261122000003_database_roles.sql and docs/finance.md. Then give people and
-- services their own login users, for example:
--
--   create role finance_alice login password '…' in role capture_finance;
--   create role capture_worker login password '…' in role capture_worker_app;
--   create role oncall_bob login password '…' in role capture_operator;

do $$
declare
    r text;
begin
    foreach r in array array['capture_finance', 'capture_worker_app', 'capture_operator'] loop
        if not exists (select 1 from pg_roles where rolname = r) then
            begin
                execute format('create role %I nologin', r);
            exception
                when duplicate_object or unique_violation then null;
            end;
        end if;
    end loop;
end $$;

select capture_grant_roles();
