-- Similar images (engine/embedding.py, engine/similar.py): one embedding per image, when the
-- optional 'semantic' extra is installed. The vector is ImageNet MobileNetV2's 1280 pooled
-- features, centred with a stored mean and L2-normalised, so cosine distance (<=>) ranks images
-- of the same kind of thing first. Images stored before the extra was enabled have no row:
-- `imgsearch embed --backfill` fills them. model names the network and mean that made the vector
-- (vectors of different models are not comparable).
create table image_embeddings (
    image_id  bigint primary key references images (id) on delete cascade,
    model     text not null,
    embedding vector(1280) not null
);
-- approximate nearest neighbours by cosine distance (pgvector's defaults: m = 16,
-- ef_construction = 64; hnsw.ef_search is set per query)
create index image_embeddings_hnsw on image_embeddings using hnsw (embedding vector_cosine_ops);
