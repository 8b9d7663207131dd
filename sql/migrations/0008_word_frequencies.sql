-- The document frequency of every visual word: how many postings (rows of keypoint_words) carry
-- it. A query's look-up reads the frequencies of its ~2,000 words to weigh them (idf) and to
-- choose the rarest within its postings budget (sql/queries.sql, lookup). Counting them on the
-- word index at query time cost ~90 ms at 100k images (one index descent and up to 400 entries
-- per word); one primary-key probe per word here costs ~17 ms (docs/benchmarks.md).
--
-- Kept exact by statement-level triggers on keypoint_words: every insert (COPY included), every
-- delete (also the cascade from images) and a truncate. Words are upserted in word order, so two
-- writers that share words lock them in the same order and wait for each other instead of
-- deadlocking: a write transaction holds its words' rows until it commits, and another writer
-- sharing a word waits until then (the engine commits every batch and every HTTP write). The functions keep the search_path they were created with: on a shard, rows
-- arrive from the coordinator's postgres_fdw, whose sessions search pg_catalog only.
create table word_frequencies (
    word     integer primary key,
    postings integer not null
);

create function count_new_postings() returns trigger language plpgsql set search_path from current as $$
begin
    insert into word_frequencies as f (word, postings)
    select word, count(*) from new_postings group by word order by word
    on conflict (word) do update set postings = f.postings + excluded.postings;
    return null;
end $$;

create function count_deleted_postings() returns trigger language plpgsql set search_path from current as $$
begin
    insert into word_frequencies as f (word, postings)
    select word, -count(*) from old_postings group by word order by word
    on conflict (word) do update set postings = f.postings + excluded.postings;
    delete from word_frequencies f where f.postings <= 0 and f.word in (select word from old_postings);
    return null;
end $$;

create function forget_word_frequencies() returns trigger language plpgsql set search_path from current as $$
begin
    truncate word_frequencies;
    return null;
end $$;

-- Counted afresh from keypoint_words (the backfill below; after a bulk load with the triggers
-- disabled; on Citus, where statement triggers with transition tables do not run: docs/scale.md).
create function refresh_word_frequencies() returns bigint language sql set search_path from current as $$
    truncate word_frequencies;
    insert into word_frequencies (word, postings) select word, count(*) from keypoint_words group by word;
    select count(*) from word_frequencies;
$$;

-- Only on an ordinary table: a scaled-out coordinator's keypoint_words is partitioned over its
-- shards, each of which keeps its own frequencies (its own migrations), and searches read those.
do $$
begin
    if (select relkind from pg_class where oid = 'keypoint_words'::regclass) = 'r' then
        create trigger keypoint_words_count_new after insert on keypoint_words
            referencing new table as new_postings for each statement execute function count_new_postings();
        create trigger keypoint_words_count_deleted after delete on keypoint_words
            referencing old table as old_postings for each statement execute function count_deleted_postings();
        create trigger keypoint_words_truncated after truncate on keypoint_words
            for each statement execute function forget_word_frequencies();
        perform refresh_word_frequencies();
    end if;
end $$;
