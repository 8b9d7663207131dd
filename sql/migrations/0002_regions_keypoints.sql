-- Region hashes, exact Hamming search by multi-index hashing, and local features.
--
-- regions: every 64-bit pHash we look up by Hamming distance: the image's global pHash
-- (region 0, kind 'global', box = whole image) and its content-aligned regions (faces, pictures
-- inside the picture, icon shapes). h is the hash as a bigint; c0..c2 are its chunks of 22, 21
-- and 21 bits (most significant first) for exact multi-index hashing (engine/hamming.py): a
-- hash within r bits of a query has some chunk within t_i bits of the query's chunk, so probing
-- the three covering btrees finds every match, index-only. docs/bench-index.md has the numbers.
create table regions (
    image_id  bigint   not null references images (id) on delete cascade,
    region_no smallint not null,
    kind      text     not null,
    x0        real     not null,
    y0        real     not null,
    x1        real     not null,
    y1        real     not null,
    hash      bit(64)  not null,
    h  bigint  generated always as (hash::bigint) stored,
    c0 integer generated always as (((hash::bigint) >> 42) & 4194303) stored,
    c1 integer generated always as (((hash::bigint) >> 21) & 2097151) stored,
    c2 integer generated always as ((hash::bigint) & 2097151) stored,
    primary key (image_id, region_no)
);
create index regions_mih_c0 on regions (c0) include (h, image_id, region_no);
create index regions_mih_c1 on regions (c1) include (h, image_id, region_no);
create index regions_mih_c2 on regions (c2) include (h, image_id, region_no);

-- The global pHash once more, per image, for the wider radius that near-duplicates need:
-- searching 8 rotations/flips at r = 10 against one row per image costs a fraction of doing it
-- against every region.
alter table images
    add column gh bigint  generated always as (phash::bigint) stored,
    add column g0 integer generated always as (((phash::bigint) >> 42) & 4194303) stored,
    add column g1 integer generated always as (((phash::bigint) >> 21) & 2097151) stored,
    add column g2 integer generated always as ((phash::bigint) & 2097151) stored;
create index images_mih_g0 on images (g0) include (gh, id);
create index images_mih_g1 on images (g1) include (gh, id);
create index images_mih_g2 on images (g2) include (gh, id);

-- local features (ORB): the keypoints of an image, packed (see engine.keypoints.to_bytes),
-- read back to verify a candidate geometrically
create table image_keypoints (
    image_id bigint primary key references images (id) on delete cascade,
    data     bytea not null
);

-- inverted lists: one row per stored keypoint, with its visual word, angle (0..255 for 0..360
-- degrees) and pyramid level (engine.keypoints.postings). A query scores candidates by weak
-- geometric consistency: shared words whose angle and level differences fall in one bin.
create table keypoint_words (
    word     integer  not null,
    image_id bigint   not null references images (id) on delete cascade,
    angle    smallint not null,
    level    smallint not null
);
create index keypoint_words_word on keypoint_words (word) include (image_id, angle, level);
create index keypoint_words_image on keypoint_words (image_id);
