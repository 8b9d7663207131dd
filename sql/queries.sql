-- Named queries used by the engine. Each block starts with "-- name: NAME".
-- Parameters are bound by psycopg (%(name)s), never formatted into the text.

-- name: server_versions
select current_setting('server_version') as server_version,
       (select extversion from pg_extension where extname = 'vector') as pgvector_version,
       current_database() as database;

-- name: available_pgvector
select default_version from pg_available_extensions where name = 'vector';

-- name: schema_version
select coalesce(max(version), 0) as version from schema_migrations;

-- name: applied_migrations
select version from schema_migrations order by version;

-- name: record_migration
insert into schema_migrations (version, name) values (%(version)s, %(name)s);

-- name: create_migrations_table
create table if not exists schema_migrations (
    version    integer primary key,
    name       text not null,
    applied_at timestamptz not null default now()
);

-- name: migration_lock
select pg_advisory_lock(7240918231);

-- name: migration_unlock
select pg_advisory_unlock(7240918231);

-- name: table_counts
select (select count(*) from images) as images,
       (select count(*) from image_uris) as uris;
