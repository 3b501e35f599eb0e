-- The read-only PostgreSQL role for Grafana (dashboards/README.md).
--
-- Grafana does not check what SQL it sends: anyone who can edit a panel or open Explore can run any
-- query this role may run, and the hub audits none of it. So the role gets exactly what the dashboards
-- read and nothing else:
--   * SELECT on some columns of `episode`, `incident`, `incident_addendum` and `alert`, none of which
--     identifies a child:
--     no `pupil_id`, no episode or alert `data` (JSON), no incident `record` (JSON), no staff names
--     (`recorded_by`, `reviewed_by`, `closed_by`, `parent_copy_withheld_by`), no reason for withholding
--     the parents' copy;
--   * nothing at all on `pupil`, `incident_staff`, `api_token`, `audit`, `event` or any other table;
--   * no writes: no INSERT/UPDATE/DELETE grant anywhere, and every transaction read-only by default;
--   * a statement timeout, so that a heavy panel cannot hold up the hub's own database work.
--
-- Run it after the hub has created its tables (its first start, or `seclusion-hub migrate`), as the
-- database owner, with psql. Run it again after every upgrade of the hub: it is idempotent, it first
-- revokes everything, and a column added later is not readable until this file grants it.
--
--   set -a; . ./.env; set +a       # GRAFANA_DB_USER and GRAFANA_DB_PASSWORD
--   docker compose exec -T -e GRAFANA_DB_USER -e GRAFANA_DB_PASSWORD postgres \
--       psql -U seclusion -d seclusion -f - < deploy/postgres/grafana-readonly.sql
--
-- The role's name and password come from the psql variables `grafana_user` and `grafana_password`
-- (psql -v grafana_user=... -v grafana_password=...) or else from the environment variables
-- GRAFANA_DB_USER and GRAFANA_DB_PASSWORD; the name defaults to grafana_reader. Without a password the
-- role cannot log in with one (set it later with psql's \password).

\set ON_ERROR_STOP on

\if :{?grafana_user}
\else
  \getenv grafana_user GRAFANA_DB_USER
\endif
\if :{?grafana_user}
\else
  \set grafana_user grafana_reader
\endif
\if :{?grafana_password}
\else
  \getenv grafana_password GRAFANA_DB_PASSWORD
\endif

BEGIN;

SELECT format('CREATE ROLE %I LOGIN', :'grafana_user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'grafana_user') \gexec

ALTER ROLE :"grafana_user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
  CONNECTION LIMIT 10;
ALTER ROLE :"grafana_user" SET default_transaction_read_only = on;
ALTER ROLE :"grafana_user" SET statement_timeout = '30s';

\if :{?grafana_password}
ALTER ROLE :"grafana_user" PASSWORD :'grafana_password';
\else
\echo 'note: no grafana_password and no GRAFANA_DB_PASSWORD: the role has no password yet'
\endif

-- Start from nothing: whatever an earlier version of this file granted goes.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM :"grafana_user";
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM :"grafana_user";
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM :"grafana_user";

GRANT CONNECT ON DATABASE :"DBNAME" TO :"grafana_user";
GRANT USAGE ON SCHEMA public TO :"grafana_user";

-- Episodes: when, where, how long, how supervised. Not `pupil_id`, not `data`.
GRANT SELECT (
  id, site, room, number, started_at, ended_at, start_uncertain, end_uncertain, locked, manual, test,
  incident_id, elapsed_s, duration_s, supervised_s, unsupervised_s, unknown_s, longest_lapse_s, saved_at
) ON TABLE episode TO :"grafana_user";

-- Incident records: where each one is in its workflow and its deadlines. Not `pupil_id`, not the
-- `record` itself, not who did what, not why the parents' copy was withheld.
GRANT SELECT (
  id, episode_id, site, room, status, opened_at, updated_at, classification, ended_at,
  record_due_at, parent_notice_due_at, parent_copy_due_at, authority_notice_due_at,
  recorded_at, parent_notified_at, parent_copy_sent_at, parent_copy_method, parent_copy_withheld_at,
  authority_notified_at, reviewed_at, closed_at
) ON TABLE incident TO :"grafana_user";

-- Addenda: only which record has a dated correction of which field, so that a record whose
-- classification an addendum corrects counts as seclusion, as the hub's review counts it. Not the
-- text, not the author, not when.
GRANT SELECT (incident_id, field) ON TABLE incident_addendum TO :"grafana_user";

-- Alerts: kind, severity, when, whether still active. Not `data`.
GRANT SELECT (
  id, site, room, episode_id, kind, severity, active, raised_at, resolved_at, updated_at
) ON TABLE alert TO :"grafana_user";

COMMIT;
