-- imgsearch db distribute (engine/citus.py, docs/scale.md): turn a migrated imgsearch schema on
-- a Citus coordinator into distributed tables co-located by image id. The statements named
-- step_NN run in that order, in one transaction; not run here (Citus is not available on our
-- machines): tests/test_citus.py checks only what would be run.

-- name: citus_available
select exists (select 1 from pg_available_extensions where name = 'citus') as available;

-- name: add_coordinator
select citus_set_coordinator_host(%(host)s, %(port)s);

-- name: add_worker
select citus_add_node(%(host)s, %(port)s);

-- name: step_01_extension
create extension if not exists citus;

-- name: step_02_drop_foreign_keys_to_images
-- A distributed table's unique and foreign keys must contain its distribution column. The keys
-- from regions, keypoints, postings and URIs to images do (image_id = id, co-located): they stay.
-- edges (two images, on two workers) and linked_images lose theirs: on Citus, deleting an image
-- leaves its edges and link state behind until `imgsearch relink` (docs/scale.md, not done).
alter table edges drop constraint if exists edges_source_id_fkey, drop constraint if exists edges_derived_id_fkey;
alter table linked_images drop constraint if exists linked_images_image_id_fkey;

-- name: step_03_sha256_not_unique
-- unique (sha256) cannot hold across workers (it lacks the distribution column): it becomes a
-- plain index. Ingest skips bytes it finds stored; two concurrent runs storing the same new
-- bytes can make two images on Citus (docs/scale.md, not done).
alter table images drop constraint if exists images_sha256_key;
create index if not exists images_sha256 on images (sha256);

-- name: step_03b_word_frequencies
-- Citus runs no statement triggers with transition tables on a distributed table: the word
-- frequencies' triggers (migration 0008) go, and word_frequencies becomes a reference table
-- (a copy on every node), counted afresh with `select refresh_word_frequencies()` after each
-- ingest (docs/scale.md). Until then new images' words weigh as if rarer than they are.
drop trigger if exists keypoint_words_count_new on keypoint_words;
drop trigger if exists keypoint_words_count_deleted on keypoint_words;
drop trigger if exists keypoint_words_truncated on keypoint_words;
select create_reference_table('word_frequencies');

-- name: step_04_images
select create_distributed_table('images', 'id');

-- name: step_05_colocated
select create_distributed_table('image_uris', 'image_id', colocate_with => 'images');
select create_distributed_table('regions', 'image_id', colocate_with => 'images');
select create_distributed_table('image_keypoints', 'image_id', colocate_with => 'images');
select create_distributed_table('keypoint_words', 'image_id', colocate_with => 'images');
select create_distributed_table('image_embeddings', 'image_id', colocate_with => 'images');
select create_distributed_table('linked_images', 'image_id', colocate_with => 'images');

-- name: step_06_edges
-- edges stay on the coordinator (a row joins two images of two workers; the upsert needs its
-- unique pair index), known to Citus so that it joins them with the distributed tables
select citus_add_local_table_to_metadata('edges');
