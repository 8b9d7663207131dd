-- word_frequencies takes ~30,000 upserts per stored batch (one per distinct word of its 64
-- images' postings, migration 0008's trigger). With full pages each one wrote a new row version
-- on another page and a new entry in the primary key; with room left on every page PostgreSQL
-- keeps the new version on the same page and leaves the index alone (a HOT update). At 1M stored
-- images (6.4M words) the writer's store_batch went from 116 to 150-154 images/s and its WAL from
-- 1.06 to 0.66-0.73 MB an image (docs/benchmarks.md, "Ingest"). Pages written from now on keep
-- half of their room; existing ones get it as they are rewritten (VACUUM FULL does it at once).
-- A sharded coordinator's word_frequencies is a view over the shards' tables (engine/shards.py):
-- only a table is altered.
do $$
begin
    if exists (select 1 from pg_class
               where oid = to_regclass('word_frequencies') and relkind in ('r', 'p')) then
        alter table word_frequencies set (fillfactor = 50);
    end if;
end
$$;
