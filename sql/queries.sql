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
       (select count(*) from image_uris) as uris,
       (select count(*) from regions) as regions,
       (select count(*) from image_keypoints) as images_with_keypoints,
       -- hundreds per image: the planner's estimate, not a count that would read them all
       (select greatest(reltuples, 0)::bigint from pg_class
        where oid = 'keypoint_words'::regclass) as word_postings_estimate;

-- name: insert_image
insert into images (sha256, width, height, format, file_size, ahash, dhash, phash, pdq, pdq_quality,
                    thumbnail, metadata)
values (%(sha256)s, %(width)s, %(height)s, %(format)s, %(file_size)s, %(ahash)s::bit(64), %(dhash)s::bit(64),
        %(phash)s::bit(64), %(pdq)s::bit(256), %(pdq_quality)s, %(thumbnail)s, %(metadata)s)
on conflict do nothing
returning id;

-- name: image_id_by_sha256
select id from images where sha256 = %(sha256)s;

-- name: insert_uri
insert into image_uris (image_id, uri) values (%(image_id)s, %(uri)s)
on conflict do nothing;

-- name: insert_region
insert into regions (image_id, region_no, kind, x0, y0, x1, y1, hash)
values (%s, %s, %s, %s, %s, %s, %s, %s::bit(64));

-- name: insert_keypoints
insert into image_keypoints (image_id, data) values (%(image_id)s, %(data)s);

-- name: insert_postings
insert into keypoint_words (word, image_id, angle, level)
select w, %(image_id)s, a, l from unnest(%(words)s::int4[], %(angles)s::int2[], %(levels)s::int2[]) as t(w, a, l);

-- name: analyze_tables
analyze images, regions, keypoint_words;

-- name: delete_image
delete from images where id = %(id)s returning id;

-- name: lookup
-- One round trip per query image. Exact multi-index hashing (engine/hamming.py): query hashes
-- probe the chunk indexes of regions (every region hash, radius per hash in rrr) and of images
-- (global pHashes only, a wider radius per hash in grr); every candidate's full distance is checked
-- here. Also: images sharing visual words with the query's keypoints, and an exact copy by SHA-256.
with hits as (
    select p.j, r.image_id, r.region_no, bit_count((r.h # p.qh)::bit(64))::int as d
    from unnest(%(rv0)b::int4[], %(rj0)b::int4[], %(rq0)b::int8[]) as p(v, j, qh)
    join regions r on r.c0 = p.v
    where bit_count((r.h # p.qh)::bit(64)) <= (%(rrr)b::int4[])[p.j + 1] and r.c0 = any(%(ru0)b::int4[])
    union
    select p.j, r.image_id, r.region_no, bit_count((r.h # p.qh)::bit(64))::int as d
    from unnest(%(rv1)b::int4[], %(rj1)b::int4[], %(rq1)b::int8[]) as p(v, j, qh)
    join regions r on r.c1 = p.v
    where bit_count((r.h # p.qh)::bit(64)) <= (%(rrr)b::int4[])[p.j + 1] and r.c1 = any(%(ru1)b::int4[])
    union
    select p.j, r.image_id, r.region_no, bit_count((r.h # p.qh)::bit(64))::int as d
    from unnest(%(rv2)b::int4[], %(rj2)b::int4[], %(rq2)b::int8[]) as p(v, j, qh)
    join regions r on r.c2 = p.v
    where bit_count((r.h # p.qh)::bit(64)) <= (%(rrr)b::int4[])[p.j + 1] and r.c2 = any(%(ru2)b::int4[])
    union
    select p.j, i.id as image_id, 0::smallint as region_no, bit_count((i.gh # p.qh)::bit(64))::int as d
    from unnest(%(gv0)b::int4[], %(gj0)b::int4[], %(gq0)b::int8[]) as p(v, j, qh)
    join images i on i.g0 = p.v
    where bit_count((i.gh # p.qh)::bit(64)) <= (%(grr)b::int4[])[p.j + 1] and i.g0 = any(%(gu0)b::int4[])
    union
    select p.j, i.id as image_id, 0::smallint as region_no, bit_count((i.gh # p.qh)::bit(64))::int as d
    from unnest(%(gv1)b::int4[], %(gj1)b::int4[], %(gq1)b::int8[]) as p(v, j, qh)
    join images i on i.g1 = p.v
    where bit_count((i.gh # p.qh)::bit(64)) <= (%(grr)b::int4[])[p.j + 1] and i.g1 = any(%(gu1)b::int4[])
    union
    select p.j, i.id as image_id, 0::smallint as region_no, bit_count((i.gh # p.qh)::bit(64))::int as d
    from unnest(%(gv2)b::int4[], %(gj2)b::int4[], %(gq2)b::int8[]) as p(v, j, qh)
    join images i on i.g2 = p.v
    where bit_count((i.gh # p.qh)::bit(64)) <= (%(grr)b::int4[])[p.j + 1] and i.g2 = any(%(gu2)b::int4[])
),
-- Visual words: the postings of the query's words, for weak geometric consistency voting in
-- engine/wordvotes.py (each shared word votes, weighted by its idf, for the rotation and scale
-- change between the query's keypoint and the stored one). Grouping ~80k votes here cost ~220 ms
-- at 100k images (sorts planned for 20 rows); numpy does it in a few ms from two arrays.
-- Document frequencies come from word_frequencies (migration 0008), one probe per query word.
df as (
    select f.word, f.postings as df from word_frequencies f where f.word = any(%(words)s::int4[])
),
-- the number of images: the planner's estimate (a count before the first ANALYZE)
n as (
    select case when c.reltuples > 0 then c.reltuples else greatest((select count(*) from images), 1)::real end
           as images
    from pg_class c where c.oid = 'images'::regclass
),
-- the query's rarest words first, as long as their postings fit the budget: postings read and
-- votes cast stay bounded as the collection grows (common words carry little idf anyway);
-- words in more than stop_share of the images (at least stop_min), or in df_cap postings or
-- more, are skipped outright
kept as (
    select word, df from (
        select df.word, df.df, sum(df.df) over (order by df.df, df.word) as running
        from df cross join n
        where df.df <= greatest(%(stop_share)s * n.images, %(stop_min)s) and df.df < %(df_cap)s
    ) ranked
    where running <= %(word_postings)s
),
-- every posting of the kept words: its word, and (image_id, angle, level) packed in one bigint,
-- image_id << 24 | angle << 16 | (level + 32768) (engine/wordvotes.py unpacks it)
postings as (
    select array_send(coalesce(array_agg(k.word), '{}')) as words,
           array_send(coalesce(array_agg((k.image_id << 24) | (k.angle::int8 << 16) | (k.level::int8 + 32768)),
                               '{}')) as keys
    from keypoint_words k
    where k.word = any(array(select word from kept))
)
select 'hash' as source, h.j as qno, h.image_id, h.region_no, r.kind, r.x0, r.y0, r.x1, r.y1, h.d as distance,
       null::real as images, null::bytea as kept_words, null::bytea as kept_df,
       null::bytea as posting_words, null::bytea as posting_keys
from hits h join regions r on r.image_id = h.image_id and r.region_no = h.region_no
union all
select 'sha', null, i.id, null, null, null, null, null, null, 0, null, null, null, null, null
from images i where i.sha256 = %(sha256)s
union all
select 'postings', null, null, null, null, null, null, null, null, null,
       (select images from n),
       (select array_send(coalesce(array_agg(word order by word), '{}')) from kept),
       (select array_send(coalesce(array_agg(df::int4 order by word), '{}')) from kept),
       postings.words, postings.keys
from postings;

-- name: candidate_details
select i.id, i.width, i.height, i.format, i.file_size, i.sha256, i.pdq::text as pdq, k.data as keypoints,
       coalesce((select array_agg(u.uri order by u.first_seen, u.uri) from image_uris u
                 where u.image_id = i.id), '{}') as uris
from images i left join image_keypoints k on k.image_id = i.id
where i.id = any(%(ids)s::bigint[]);

-- --- the HTTP API (engine/web) ----------------------------------------------------------------

-- name: ping
select 1 as ok;

-- name: image_record
-- One stored image for GET /api/images/{id} and for searching with a stored image.
select i.id, i.sha256, i.width, i.height, i.format, i.file_size, i.ahash::text as ahash, i.dhash::text as dhash,
       i.phash::text as phash, i.pdq::text as pdq, i.pdq_quality, i.metadata, i.created_at,
       i.thumbnail is not null as has_thumbnail, k.data as keypoints
from images i left join image_keypoints k on k.image_id = i.id
where i.id = %(id)s;

-- name: image_uri_list
select uri, first_seen from image_uris where image_id = %(id)s order by first_seen, uri;

-- name: image_region_list
select region_no, kind, x0, y0, x1, y1, hash::text as hash from regions
where image_id = %(id)s and region_no > 0 order by region_no;

-- name: image_thumbnail
select thumbnail, sha256 from images where id = %(id)s;

-- name: list_images
-- A page of images in id order, after the cursor %(after)s.
select i.id, i.sha256, i.width, i.height, i.format, i.file_size, i.metadata, i.created_at,
       (select u.uri from image_uris u where u.image_id = i.id order by u.first_seen, u.uri limit 1) as uri
from images i
where i.id > %(after)s
order by i.id
limit %(limit)s;

-- name: list_images_by_metadata
-- The same page, only images whose metadata contains %(metadata)s (jsonb containment, GIN index).
select i.id, i.sha256, i.width, i.height, i.format, i.file_size, i.metadata, i.created_at,
       (select u.uri from image_uris u where u.image_id = i.id order by u.first_seen, u.uri limit 1) as uri
from images i
where i.id > %(after)s and i.metadata @> %(metadata)s
order by i.id
limit %(limit)s;

-- name: random_image
-- A random stored image with a thumbnail: the first at or after a random id (cheap at any size).
select id from images
where id >= (select min(id) + floor(random() * (max(id) - min(id) + 1))::bigint from images)
  and thumbnail is not null
order by id limit 1;

-- name: first_image
select id from images where thumbnail is not null order by id limit 1;

-- name: set_statement_timeout
-- Per pooled connection of the HTTP server: no statement outlives a request's time limit.
select set_config('statement_timeout', %(ms)s, false);

-- name: provenance_image
-- A stored image's fingerprint, read back to match it against the collection.
select i.id, i.sha256, i.width, i.height, i.format, i.file_size, i.ahash::text as ahash, i.dhash::text as dhash,
       i.phash::text as phash, i.pdq::text as pdq, i.pdq_quality, i.thumbnail, k.data as keypoints,
       coalesce((select array_agg(r.kind order by r.region_no) from regions r
                 where r.image_id = i.id and r.region_no > 0), '{}') as region_kinds,
       coalesce((select array_agg(array[r.x0, r.y0, r.x1, r.y1] order by r.region_no) from regions r
                 where r.image_id = i.id and r.region_no > 0), '{}') as region_boxes,
       coalesce((select array_agg(r.hash::text order by r.region_no) from regions r
                 where r.image_id = i.id and r.region_no > 0), '{}') as region_hashes
from images i left join image_keypoints k on k.image_id = i.id
where i.id = %(id)s;

-- name: provenance_infos
-- What orders two related images: size, encoding quality (cached in linked_images), ingest
-- order, and the pictures found inside each (composites, frames, pastes).
select i.id, i.width, i.height, i.format, i.file_size, i.metadata, l.quality, l.image_id is not null as known,
       coalesce((select array_agg(u.uri order by u.first_seen, u.uri) from image_uris u
                 where u.image_id = i.id), '{}') as uris,
       coalesce((select array_agg(array[r.x0, r.y0, r.x1, r.y1] order by r.region_no) from regions r
                 where r.image_id = i.id and r.kind = 'picture'), '{}') as pictures
from images i left join linked_images l on l.image_id = i.id
where i.id = any(%(ids)s::bigint[]);

-- name: save_quality
insert into linked_images (image_id, quality) values (%(id)s, %(quality)s)
on conflict (image_id) do update set quality = excluded.quality;

-- name: upsert_edge
-- One edge per pair of images: seen again (from the other image, or by relink), the better
-- scored reading wins.
insert into edges (source_id, derived_id, relation, score, source_box, derived_box, scale, tx, ty, mirrored, rotated)
values (%(source_id)s, %(derived_id)s, %(relation)s, %(score)s, %(source_box)s, %(derived_box)s, %(scale)s,
        %(tx)s, %(ty)s, %(mirrored)s, %(rotated)s)
on conflict (least(source_id, derived_id), greatest(source_id, derived_id)) do update
set source_id = excluded.source_id, derived_id = excluded.derived_id, relation = excluded.relation,
    score = excluded.score, source_box = excluded.source_box, derived_box = excluded.derived_box,
    scale = excluded.scale, tx = excluded.tx, ty = excluded.ty, mirrored = excluded.mirrored,
    rotated = excluded.rotated, created = now()
where excluded.score > edges.score;

-- name: mark_linked
insert into linked_images (image_id, quality, linked_at) values (%(id)s, %(quality)s, now())
on conflict (image_id) do update set quality = excluded.quality, linked_at = excluded.linked_at;

-- name: pending_links
-- Images never matched against the collection (or reset by relink), in ingest order.
select i.id from images i
where i.id > %(after)s
  and not exists (select 1 from linked_images l where l.image_id = i.id and l.linked_at is not null)
order by i.id
limit %(limit)s;

-- name: reset_links
-- relink: forget every edge; every image is pending again (its cached quality is kept).
delete from edges;
update linked_images set linked_at = null;

-- name: image_header
select i.id, (select u.uri from image_uris u where u.image_id = i.id order by u.first_seen, u.uri limit 1) as uri
from images i where i.id = %(id)s;

-- name: lineage_ancestors
-- What an image came from, up to depth generations; one row per path (a source reached by two
-- paths appears under each). path runs from the image to the row's source.
with recursive up as (
    select 1 as depth, e.*, array[e.derived_id, e.source_id] as path
    from lineage_edges e where e.derived_id = %(id)s
    union all
    select up.depth + 1, e.*, up.path || e.source_id
    from up join lineage_edges e on e.derived_id = up.source_id
    where up.depth < %(depth)s and e.source_id <> all(up.path)
)
select up.*, up.source_id as id,
       (select u.uri from image_uris u where u.image_id = up.source_id order by u.first_seen, u.uri limit 1) as uri
from up order by up.path;

-- name: lineage_descendants
-- What was made from an image, down to depth generations; path runs from the image to the row's
-- derived image.
with recursive down as (
    select 1 as depth, e.*, array[e.source_id, e.derived_id] as path
    from lineage_edges e where e.source_id = %(id)s
    union all
    select down.depth + 1, e.*, down.path || e.derived_id
    from down join lineage_edges e on e.source_id = down.derived_id
    where down.depth < %(depth)s and e.derived_id <> all(down.path)
)
select down.*, down.derived_id as id,
       (select u.uri from image_uris u where u.image_id = down.derived_id order by u.first_seen, u.uri limit 1) as uri
from down order by down.path;

-- name: edges_among
select * from edges where source_id = any(%(ids)s::bigint[]) and derived_id = any(%(ids)s::bigint[]);

-- name: keypoints_of
select image_id, data from image_keypoints where image_id = any(%(ids)s::bigint[]);

-- name: image_ids_by_uri
select image_id, uri from image_uris where uri = any(%(uris)s::text[]);

-- name: image_count_estimate
-- The planner's image count (-1 before the first ANALYZE): what search's word idf is computed from.
select greatest(reltuples, 0)::bigint as images from pg_class where oid = 'images'::regclass;

-- name: pending_count
select count(*) as pending from images i
where not exists (select 1 from linked_images l where l.image_id = i.id and l.linked_at is not null);

-- name: backend_pid
select pg_backend_pid() as pid;

-- name: insert_images_batch
-- Many images in one statement (an ingest batch); bytes already stored are skipped, and the
-- ids of the rows inserted now come back. Rows go in sha256 order, so that concurrent runs
-- storing the same images wait for each other instead of deadlocking.
-- `on conflict do nothing` names no target: sha256 is the only key a new row can conflict on
-- here, and on a database scaled out over shards (docs/scale.md) the partitioned images has no
-- unique index to name (the coordinator's image_digests trigger skips bytes stored already).
insert into images (sha256, width, height, format, file_size, ahash, dhash, phash, pdq, pdq_quality,
                    thumbnail, metadata)
select t.sha256, t.width, t.height, t.format, t.file_size, t.ahash::bit(64), t.dhash::bit(64), t.phash::bit(64),
       t.pdq::bit(256), t.pdq_quality, t.thumbnail, t.metadata::jsonb
from unnest(%(sha256)s::bytea[], %(width)s::int4[], %(height)s::int4[], %(format)s::text[], %(file_size)s::int8[],
            %(ahash)s::text[], %(dhash)s::text[], %(phash)s::text[], %(pdq)s::text[], %(pdq_quality)s::int2[],
            %(thumbnail)s::bytea[], %(metadata)s::text[])
     as t(sha256, width, height, format, file_size, ahash, dhash, phash, pdq, pdq_quality, thumbnail, metadata)
order by t.sha256
on conflict do nothing
returning id, sha256;

-- name: image_ids_by_sha256
select id, sha256 from images where sha256 = any(%(sha256)s::bytea[]);

-- name: insert_uris_batch
insert into image_uris (image_id, uri)
select * from unnest(%(image_ids)s::int8[], %(uris)s::text[]) as t(image_id, uri)
order by 1, 2
on conflict do nothing;

-- name: merge_metadata_batch
-- Metadata that comes with bytes already stored joins the image's; keys it has already keep their values.
update images i set metadata = t.metadata::jsonb || i.metadata
from unnest(%(image_ids)s::int8[], %(metadata)s::text[]) as t(id, metadata)
where i.id = t.id;

-- name: copy_regions
copy regions (image_id, region_no, kind, x0, y0, x1, y1, hash) from stdin;

-- name: copy_keypoints
copy image_keypoints (image_id, data) from stdin;

-- name: copy_postings_binary
copy keypoint_words (word, image_id, angle, level) from stdin with (format binary);

-- name: recorded_uris
-- Which of these URIs are recorded already (a resumed ingest skips them without reading them).
select uri from image_uris where uri = any(%(uris)s::text[]);

-- name: stats_counts
select (select count(*) from images) as images,
       (select count(*) from regions) as regions,
       (select count(*) from image_uris) as uris,
       (select count(*) from image_keypoints) as images_with_keypoints,
       (select greatest(reltuples, 0)::bigint from pg_class
        where oid = 'keypoint_words'::regclass) as word_postings_estimate,
       pg_database_size(current_database()) as database_bytes;

-- name: stats_relations
-- Size of every table (heap + TOAST) and index of the engine's schema.
select c.relname as name, case when c.relkind = 'i' then 'index' else 'table' end as kind,
       t.relname as table_name,
       case when c.relkind = 'i' then pg_relation_size(c.oid) else pg_table_size(c.oid) end as bytes
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
left join pg_index x on x.indexrelid = c.oid
left join pg_class t on t.oid = coalesce(x.indrelid, c.oid)
where n.nspname = current_schema() and c.relkind in ('r', 'i')
order by kind desc, bytes desc, name;

-- name: export_images
-- Every image with its URIs and region hashes, in id order (read through a server-side cursor).
select i.id, i.sha256, i.width, i.height, i.format, i.file_size, i.ahash::text as ahash, i.dhash::text as dhash,
       i.phash::text as phash, i.pdq::text as pdq, i.pdq_quality, i.metadata, i.created_at,
       coalesce((select array_agg(u.uri order by u.first_seen, u.uri) from image_uris u where u.image_id = i.id),
                '{}') as uris,
       coalesce((select jsonb_agg(jsonb_build_array(r.kind, r.x0, r.y0, r.x1, r.y1, r.hash::text) order by r.region_no)
                 from regions r where r.image_id = i.id and r.region_no > 0), '[]'::jsonb) as regions
from images i
where i.id > %(after_id)s
order by i.id;

-- name: images_brief
select i.id, i.width, i.height, i.format, i.file_size, i.phash::text as phash,
       coalesce((select array_agg(u.uri order by u.first_seen, u.uri) from image_uris u where u.image_id = i.id),
                '{}') as uris
from images i where i.id = any(%(ids)s::int8[]);

-- name: delete_images
delete from images where id = any(%(ids)s::int8[]) returning id;

-- name: dupe_pairs
-- Pairs of near-duplicate images in the whole collection: global pHashes within %(radius)s bits
-- and PDQs within %(pdq_bits)s. Exact multi-index hashing over the images' chunk indexes
-- (g0..g2, engine/hamming.py): each image probes every chunk value within t_i bits of its own
-- (the XOR masks m0..m2; an empty array when a chunk needs no probe), so the self-join costs
-- images x probes index look-ups, never images x images. A pair is kept from its lower id.
with pairs as (
    select a.id as a, b.id as b
    from images a cross join unnest(%(m0)s::int4[]) as m(x)
    join images b on b.g0 = (a.g0 # m.x)
    where b.id > a.id and bit_count((a.gh # b.gh)::bit(64)) <= %(radius)s
    union
    select a.id, b.id
    from images a cross join unnest(%(m1)s::int4[]) as m(x)
    join images b on b.g1 = (a.g1 # m.x)
    where b.id > a.id and bit_count((a.gh # b.gh)::bit(64)) <= %(radius)s
    union
    select a.id, b.id
    from images a cross join unnest(%(m2)s::int4[]) as m(x)
    join images b on b.g2 = (a.g2 # m.x)
    where b.id > a.id and bit_count((a.gh # b.gh)::bit(64)) <= %(radius)s
)
select p.a, p.b
from pairs p join images i on i.id = p.a join images j on j.id = p.b
where bit_count(i.pdq # j.pdq) <= %(pdq_bits)s;

-- name: lock_images_by_sha256
-- Images already stored with these bytes, locked against deletion until the URIs are recorded.
select id, sha256 from images where sha256 = any(%(sha256)s::bytea[]) for key share;

-- --- TinEye-compatible API

-- name: tineye_match_details
-- Format, file size and every URI (with when it was first seen) of the matched images: TinEye's backlinks.
select i.id, i.format, i.file_size, u.uri, u.first_seen
from images i left join image_uris u on u.image_id = i.id
where i.id = any(%(ids)s::int8[])
order by i.id, u.first_seen, u.uri;

-- --- similar images (engine/similar.py; the optional 'semantic' extra) -------------------------

-- name: copy_embeddings
copy image_embeddings (image_id, model, embedding) from stdin;

-- name: set_ef_search
-- HNSW candidates kept per query (this transaction only): at least the number of neighbours asked for.
select set_config('hnsw.ef_search', %(ef)s, true);

-- name: similar_images
-- The stored images nearest to %(embedding)s by cosine distance (the HNSW index), with what a
-- result shows; similarity = 1 - distance.
with nearest as (
    select e.image_id, e.embedding <=> %(embedding)s::vector as distance
    from image_embeddings e
    order by e.embedding <=> %(embedding)s::vector
    limit %(limit)s
)
select n.image_id as id, n.distance, i.width, i.height, i.format,
       coalesce((select array_agg(u.uri order by u.first_seen, u.uri) from image_uris u
                 where u.image_id = i.id), '{}') as uris
from nearest n join images i on i.id = n.image_id
order by n.distance, n.image_id;

-- name: stored_embedding
select i.id, i.thumbnail, e.embedding::text as embedding, e.model
from images i left join image_embeddings e on e.image_id = i.id
where i.id = %(id)s;

-- name: images_to_embed
-- The ids of the images with a thumbnail and no embedding of %(model)s: what `imgsearch embed
-- --backfill` fills (worker processes read the thumbnails by id, a batch at a time).
select i.id
from images i left join image_embeddings e on e.image_id = i.id
where i.thumbnail is not null and (e.image_id is null or e.model <> %(model)s)
order by i.id;

-- name: thumbnails_by_id
select id, thumbnail from images where id = any(%(ids)s::bigint[]) and thumbnail is not null order by id;

-- name: count_to_embed
select count(*) as n,
       (select count(*) from images where thumbnail is null) as without_thumbnail
from images i left join image_embeddings e on e.image_id = i.id
where i.thumbnail is not null and (e.image_id is null or e.model <> %(model)s);

-- name: upsert_embeddings
-- Embeddings of existing images (backfill); an image deleted meanwhile is skipped.
insert into image_embeddings (image_id, model, embedding)
select t.image_id, %(model)s, t.embedding::vector
from unnest(%(image_ids)s::int8[], %(embeddings)s::text[]) as t(image_id, embedding)
where exists (select 1 from images i where i.id = t.image_id)
order by t.image_id
on conflict (image_id) do update set model = excluded.model, embedding = excluded.embedding;

-- name: embedding_counts
select (select count(*) from images) as images, (select count(*) from image_embeddings) as embedded;
