-- Provenance: which image was made from which (engine/provenance.py).
--
-- edges: one row per pair of related images, pointing from the source to the image derived
-- from it. relation is what the derived image is to its source: 'near_duplicate' (a lesser copy:
-- resized, recompressed, recoloured, mirrored), 'crop' (a part of the source) or 'composite'
-- (the source, or a part of it, put into a larger picture with other content). Boxes are where
-- the shared part lies in each image, as fractions (x0, y0, x1, y1). The transform carries
-- source pixels onto derived pixels: p_derived = scale * R * F * p_source + (tx, ty), F a
-- left-right flip when mirrored, R a rotation when rotated. A pair has one edge, in one
-- direction (the unique index on the unordered pair), so the graph has no 2-cycles.
create table edges (
    source_id  bigint  not null references images (id) on delete cascade,
    derived_id bigint  not null references images (id) on delete cascade,
    relation   text    not null check (relation in ('near_duplicate', 'crop', 'composite')),
    score      smallint not null check (score between 0 and 100),
    source_box real[4] not null,
    derived_box real[4] not null,
    scale      real    not null check (scale > 0),
    tx         real    not null,
    ty         real    not null,
    mirrored   boolean not null,
    rotated    boolean not null,
    created    timestamptz not null default now(),
    primary key (source_id, derived_id),
    check (source_id <> derived_id)
);
create unique index edges_pair on edges (least(source_id, derived_id), greatest(source_id, derived_id));
create index edges_derived on edges (derived_id);

-- per image: when it was last matched against the collection (null or no row: pending;
-- link_pending resumes from here, relink resets it), and the encoding quality that orders
-- near-duplicates (an estimated JPEG quality 1-100, 100 for lossless formats, null when unknown),
-- kept so that relink needs no file
create table linked_images (
    image_id  bigint primary key references images (id) on delete cascade,
    quality   smallint,
    linked_at timestamptz
);
create index linked_images_pending on linked_images (image_id) where linked_at is null;

-- The edges a lineage shows: the transitive reduction of edges over triangles. When X -> Z -> Y
-- and also X -> Y, Y hangs under Z (X -> Y is hidden: a crop of a crop hangs under the crop)
-- unless lineage_keeps_long: Z is a mere copy of X (a crop is attributed to the best copy of its
-- source); or Z is a composite made from X and Y a crop of it (to the original rather than to a
-- collage showing it); or Z is a crop of X and Y a copy of X that merely shows Z's part as a
-- "picture" (a copy is not a collage). Then X -> Y is kept and Z -> Y hidden.
create function lineage_keeps_long(xz text, zy text, xy text) returns boolean
language sql immutable as $$
    select xz = 'near_duplicate' or (xz = 'composite' and zy = 'crop')
        or (xz = 'crop' and zy = 'composite' and xy = 'near_duplicate')
$$;

create view lineage_edges as
select e.* from edges e
where not exists (  -- e = X -> Y, hidden by X -> Z -> Y
    select 1 from edges a join edges b on b.source_id = a.derived_id and b.derived_id = e.derived_id
    where a.source_id = e.source_id and not lineage_keeps_long(a.relation, b.relation, e.relation))
  and not exists (  -- e = Z -> Y, hidden by X -> Z and X -> Y
    select 1 from edges a join edges c on c.source_id = a.source_id and c.derived_id = e.derived_id
    where a.derived_id = e.source_id and lineage_keeps_long(a.relation, e.relation, c.relation));
