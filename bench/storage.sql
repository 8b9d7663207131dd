-- Bytes per image of each table (with its indexes and TOAST), as in docs/benchmarks.md.
-- psql "$DATABASE_URL" -f bench/storage.sql
-- embedded server: psql "postgresql://postgres@/imgsearch?host=$IMGSEARCH_HOME/run" -f bench/storage.sql
select count(*) as images,
       avg(length(thumbnail))::int as thumbnail_bytes,
       pg_total_relation_size('images') / count(*) as images_bytes,
       pg_total_relation_size('regions') / count(*) as regions_bytes,
       (select count(*) from regions)::float / count(*) as regions_per_image,
       pg_total_relation_size('image_keypoints') / count(*) as keypoints_bytes,
       pg_total_relation_size('keypoint_words') / count(*) as postings_bytes,
       (select count(*) from keypoint_words)::float / count(*) as postings_per_image
from images;
