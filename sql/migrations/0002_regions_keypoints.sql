-- Region hashes and local features.
--
-- regions: every 64-bit pHash we can look up by Hamming distance: the image's global pHash
-- (kind 'global', box = whole image) and its content-aligned regions (faces, pictures
-- inside the picture, icon shapes). c0..c3 are the hash's four 16-bit chunks for exact
-- multi-index hashing: a hash within r bits of a query has some chunk within floor(r/4)
-- bits of the query's chunk (pigeonhole), so probing the chunk indexes finds every match.
create table regions (
    image_id  bigint   not null references images (id) on delete cascade,
    region_no smallint not null,
    kind      text     not null,
    x0        real     not null,
    y0        real     not null,
    x1        real     not null,
    y1        real     not null,
    hash      bit(64)  not null,
    c0 integer generated always as (substring(hash from 1 for 16)::bit(16)::integer) stored,
    c1 integer generated always as (substring(hash from 17 for 16)::bit(16)::integer) stored,
    c2 integer generated always as (substring(hash from 33 for 16)::bit(16)::integer) stored,
    c3 integer generated always as (substring(hash from 49 for 16)::bit(16)::integer) stored,
    primary key (image_id, region_no)
);

-- local features (ORB): the keypoints of an image, packed (see engine.keypoints.to_bytes),
-- read back to verify a candidate geometrically
create table image_keypoints (
    image_id bigint primary key references images (id) on delete cascade,
    data     bytea not null
);

-- inverted lists: which images have a keypoint quantised to a visual word
create table keypoint_words (
    word     integer not null,
    image_id bigint  not null references images (id) on delete cascade,
    hits     smallint not null default 1,
    primary key (word, image_id)
);
create index keypoint_words_image on keypoint_words (image_id);
