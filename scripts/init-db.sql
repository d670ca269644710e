-- Runs once, when the timescaledb container starts on an empty volume
-- (mounted in /docker-entrypoint-initdb.d by docker-compose.dev.yml), as the postgres superuser.
-- Creates the application's user and database and the timescaledb extension in it: the app
-- runs as `qb`, which owns its tables but is no superuser, so it cannot create extensions.
\set ON_ERROR_STOP on

-- The password comes from the container's environment (QB_DB_PASSWORD), never from this file.
\set qb_password ''
\getenv qb_password QB_DB_PASSWORD
SELECT :'qb_password' = '' AS qb_password_missing \gset
\if :qb_password_missing
  DO $$ BEGIN RAISE EXCEPTION 'QB_DB_PASSWORD is not set in the timescaledb container'; END $$;
\endif

SELECT format('CREATE ROLE qb LOGIN PASSWORD %L', :'qb_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'qb') \gexec

SELECT 'CREATE DATABASE qb OWNER qb'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'qb') \gexec

\connect qb
CREATE EXTENSION IF NOT EXISTS timescaledb;
-- Migrations create tables in the public schema (PostgreSQL 15 no longer lets every user do that).
GRANT ALL ON SCHEMA public TO qb;
