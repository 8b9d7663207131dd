-- Scale out (docs/scale.md): the shards this database is the coordinator of. Empty on a single
-- server, which is the default and stays exactly as before. `imgsearch db shards add URL` adds a
-- row and (re)builds the partitioned tables over postgres_fdw (engine/shards.py). position is
-- the shard's hash remainder: images with hashint8(id) mod count = position live on it.
create table shards (
    name     text primary key check (name ~ '^[a-z][a-z0-9_]{0,30}$'),
    url      text not null unique,
    position integer not null unique check (position >= 0),
    added_at timestamptz not null default now()
);
