-- The HTTP API lists images filtered by metadata (GET /api/images?meta.KEY=VALUE): a containment
-- query (metadata @> '{"KEY": "VALUE"}'), which this index answers without reading every image.
create index images_metadata on images using gin (metadata jsonb_path_ops);
