"""numpy arrays bound as PostgreSQL binary arrays: PostgreSQL reads back exactly what was sent."""

from __future__ import annotations

import numpy as np
import pytest

from engine.pgarrays import Int2Array, Int4Array, Int8Array, from_binary

CASES = [
    (Int2Array, "int2", [0, 1, -1, 32767, -32768, 255]),
    (Int4Array, "int4", [0, 7, -7, 2**31 - 1, -(2**31), 4_194_303]),
    (Int8Array, "int8", [0, -1, 2**63 - 1, -(2**63), 0x7FEDCBA987654321]),
]


@pytest.mark.parametrize(("wrapper", "sql_type", "values"), CASES)
def test_round_trip(conn, wrapper, sql_type, values):
    for dtype in (np.int64, np.int16 if sql_type == "int2" else np.int64):
        array = np.array(values, dtype=dtype)
        row = conn.execute(f"select %(a)b::{sql_type}[] as a, cardinality(%(a)b::{sql_type}[]) as n",
                           {"a": wrapper(array)}).fetchone()
        assert row["a"] == values and row["n"] == len(values)


@pytest.mark.parametrize(("wrapper", "sql_type", "values"), CASES)
def test_empty_array(conn, wrapper, sql_type, values):
    row = conn.execute(f"select cardinality(%(a)b::{sql_type}[]) as n, %(a)b::{sql_type}[] = '{{}}' as empty",
                       {"a": wrapper(np.zeros(0, np.int64))}).fetchone()
    assert row == {"n": 0, "empty": True}


def test_usable_in_unnest_joins_like_the_lookup(conn):
    values = np.arange(1000, dtype=np.int64) * 3
    row = conn.execute("select sum(v)::bigint as s, count(*) as n from unnest(%(v)b::int4[], %(j)b::int2[]) as t(v, j)",
                       {"v": Int4Array(values), "j": Int2Array(values % 7)}).fetchone()
    assert row == {"s": int(values.sum()), "n": 1000}


def test_auto_placeholders_pick_the_binary_dumper(conn):
    row = conn.execute("select %(a)s::int4[] as a", {"a": Int4Array([3, 1, 2])}).fetchone()
    assert row["a"] == [3, 1, 2]


def test_values_that_do_not_fit_are_refused():
    with pytest.raises(OverflowError):
        Int2Array([40000])
    with pytest.raises(OverflowError):
        Int4Array([2**31])
    with pytest.raises(TypeError):
        Int4Array([1.5])
    with pytest.raises(ValueError):
        Int4Array(np.zeros((2, 2), np.int64))


@pytest.mark.parametrize(("wrapper", "sql_type", "values"), CASES)
def test_from_binary_reads_what_array_send_writes(conn, wrapper, sql_type, values):
    row = conn.execute(f"select array_send(%(a)b::{sql_type}[]) as full, array_send('{{}}'::{sql_type}[]) as empty",
                       {"a": wrapper(np.array(values, np.int64))}).fetchone()
    got = from_binary(row["full"])
    assert got.tolist() == values and got.dtype == wrapper.dtype
    assert from_binary(row["empty"]).tolist() == [] and from_binary(row["empty"]).dtype == wrapper.dtype


def test_from_binary_refuses_what_it_cannot_read(conn):
    for text, message in (("select array_send('{1.5}'::float8[]) as b", "element type"),
                          ("select array_send('{{1,2},{3,4}}'::int4[]) as b", "2 dimensions"),
                          ("select array_send('{1,null}'::int4[]) as b", "NULLs")):
        with pytest.raises(ValueError, match=message):
            from_binary(conn.execute(text).fetchone()["b"])
    with pytest.raises(ValueError, match="not a binary"):
        from_binary(b"\0\0")
