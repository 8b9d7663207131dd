-- Images and the places they were seen.
-- Hashes are bit strings: bit(64) for aHash/dHash/pHash, bit(256) for PDQ (Hamming distance
-- is bit_count(a # b)).
create extension if not exists vector;

create table images (
    id          bigint generated always as identity primary key,
    sha256      bytea not null unique check (length(sha256) = 32),
    width       integer not null check (width > 0),
    height      integer not null check (height > 0),
    format      text not null,
    file_size   bigint not null check (file_size >= 0),
    ahash       bit(64) not null,
    dhash       bit(64) not null,
    phash       bit(64) not null,
    pdq         bit(256) not null,
    pdq_quality smallint not null,
    thumbnail   bytea,
    metadata    jsonb not null default '{}'::jsonb,
    created_at  timestamptz not null default now()
);

-- every place an image was ingested from (TinEye's "backlinks")
create table image_uris (
    image_id   bigint not null references images (id) on delete cascade,
    uri        text not null,
    first_seen timestamptz not null default now(),
    primary key (image_id, uri)
);
create index image_uris_uri on image_uris (uri);
