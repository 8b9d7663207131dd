"""numpy integer arrays bound as PostgreSQL arrays in binary, without a Python int per element.

A query image's look-up sends ~10-25k multi-index probes and ~2,000 visual words (engine.search).
psycopg adapts a list of Python ints element by element (~0.3 us each: ~15 ms a query); these
wrappers write PostgreSQL's binary array format from the numpy array in one go. Use them with
binary placeholders (``%(name)b``), e.g. ``{"v": Int4Array(values)}`` for ``%(v)b::int4[]``.

``from_binary`` reads the same format back (``array_send(...)`` in SQL gives it as bytea): the
look-up returns its ~40k visual-word postings so, as two arrays instead of 40k rows.
"""

from __future__ import annotations

import struct

import numpy as np
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

INT2_ARRAY_OID, INT4_ARRAY_OID, INT8_ARRAY_OID = 1005, 1007, 1016
_ELEMENT_OID = {INT2_ARRAY_OID: 21, INT4_ARRAY_OID: 23, INT8_ARRAY_OID: 20}


class _IntArray:
    """A one-dimensional integer array, checked to fit its PostgreSQL type."""

    dtype: np.dtype
    array_oid: int
    __slots__ = ("values",)

    def __init__(self, values) -> None:
        values = np.asarray(values)
        if values.ndim != 1:
            raise ValueError(f"{type(self).__name__} takes a one-dimensional array, not shape {values.shape}")
        if values.size and values.dtype.kind not in "iu":
            raise TypeError(f"{type(self).__name__} takes integers, not {values.dtype}")
        info = np.iinfo(self.dtype)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise OverflowError(f"{type(self).__name__}: a value does not fit {self.dtype}")
        self.values = values

    def to_binary(self) -> bytes:
        """PostgreSQL's binary array: ndim, has-nulls, element type, then per dimension (size,
        lower bound), then per element (byte length, big-endian value)."""
        element = _ELEMENT_OID[self.array_oid]
        n = len(self.values)
        if n == 0:
            return struct.pack(">iii", 0, 0, element)
        width = np.dtype(self.dtype).itemsize
        items = np.empty(n, dtype=[("length", ">i4"), ("value", f">i{width}")])
        items["length"] = width
        items["value"] = self.values
        return struct.pack(">iiiii", 1, 0, element, n, 1) + items.tobytes()


class Int2Array(_IntArray):
    dtype, array_oid = np.dtype(np.int16), INT2_ARRAY_OID
    __slots__ = ()


class Int4Array(_IntArray):
    dtype, array_oid = np.dtype(np.int32), INT4_ARRAY_OID
    __slots__ = ()


class Int8Array(_IntArray):
    dtype, array_oid = np.dtype(np.int64), INT8_ARRAY_OID
    __slots__ = ()


def _dumper(cls: type[_IntArray]) -> type[Dumper]:
    class _ArrayDumper(Dumper):
        format = Format.BINARY
        oid = cls.array_oid

        def dump(self, obj: _IntArray) -> bytes:
            return obj.to_binary()

    _ArrayDumper.__name__ = f"{cls.__name__}Dumper"
    return _ArrayDumper


_ELEMENT_DTYPE = {21: np.dtype(">i2"), 23: np.dtype(">i4"), 20: np.dtype(">i8")}


def from_binary(data: bytes | memoryview) -> np.ndarray:
    """A one-dimensional int2/int4/int8 array without NULLs in PostgreSQL's binary format (what
    ``array_send`` returns) as a numpy array of that width, native byte order."""
    data = memoryview(data)
    if len(data) < 12:
        raise ValueError(f"not a binary PostgreSQL array ({len(data)} bytes)")
    ndim, has_nulls, element = struct.unpack_from(">iii", data)
    if element not in _ELEMENT_DTYPE:
        raise ValueError(f"binary array of element type {element}: only int2, int4 and int8 are read")
    dtype = _ELEMENT_DTYPE[element]
    if ndim == 0:
        return np.zeros(0, dtype.newbyteorder("="))
    if ndim != 1 or has_nulls:
        raise ValueError(f"binary array with {ndim} dimensions{' and NULLs' if has_nulls else ''}: only "
                         "one-dimensional arrays without NULLs are read")
    (n, _lower) = struct.unpack_from(">ii", data, 12)
    items = np.frombuffer(data, dtype=[("length", ">i4"), ("value", dtype)], count=n, offset=20)
    return items["value"].astype(dtype.newbyteorder("="))


def register() -> None:
    """Teach psycopg's global adapters to bind the wrappers (done on import)."""
    for cls in (Int2Array, Int4Array, Int8Array):
        psycopg.adapters.register_dumper(cls, _dumper(cls))


register()
