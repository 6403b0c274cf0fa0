"""Planning a Reader request: which rows to fetch, which column, and what
numpy indexing is left to apply to them (no I/O here).

Common expressions (an int, a slice, a row list on the first axis, a
column) take the fast planner; everything else goes through the generic one,
which evaluates the expression on a zero-stride dummy to learn the result's
shape and dtype.
"""

import math
import numbers

import numpy as np

from . import dataset_ops as ops
from .dataset_ops import ColumnError, _is_int

_BAD_INDEX = (
    "only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) "
    "and integer or boolean arrays are valid indices"
)


def _dummy(shape, dtype):
    """A read-only array of `shape` that owns one element (zero strides):
    numpy indexing on it gives the result's shape and dtype without I/O."""
    base = np.zeros(1, dtype=dtype)
    return np.lib.stride_tricks.as_strided(base, shape=shape, strides=(0,) * len(shape), writeable=False)


def _as_index_array(k):
    a = np.asarray(k)
    if a.dtype == object or not (a.dtype.kind in "iub" or a.size == 0):
        raise IndexError(_BAD_INDEX)
    if a.size == 0 and a.dtype.kind not in "iub":
        a = a.astype(np.intp)
    return a


def _check_key_types(key):
    for k in key:
        if k is None or k is Ellipsis or isinstance(k, slice):
            continue
        if isinstance(k, (numbers.Integral, np.bool_)):
            continue
        if isinstance(k, (list, np.ndarray)):
            continue
        raise IndexError(_BAD_INDEX)


class _Head:
    """How the head key selects rows: either the range [row0, row0+n) or a
    row list; `kprime` (None = identity) indexes the fetched rows to give
    the head's result."""

    __slots__ = ("rows", "row0", "n", "kprime", "scalar", "wrap")

    def __init__(self, rows=None, row0=0, n=0, kprime=None, scalar=False):
        self.rows, self.row0, self.n, self.kprime, self.scalar = rows, row0, n, kprime, scalar
        self.wrap = False  # rows may be negative: C wraps them and checks bounds


def _plan_head(vshape, key):
    """Rows to fetch for numpy's ``a[key]`` on an array of shape vshape, and
    the key that gives the same result on the fetched rows."""
    n = vshape[0]
    ndim = len(vshape)
    if key is None:
        return _Head(row0=0, n=n)
    if _is_int(key):  # fast paths: one row, or a plain slice
        i = int(key)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of bounds for axis 0 with size {n}")
        return _Head(row0=i + n if i < 0 else i, n=1, scalar=True)
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        if step == 1:
            return _Head(row0=start, n=max(0, stop - start))
        return _Head(rows=np.arange(start, stop, step, dtype=np.int64))
    if isinstance(key, str):
        raise IndexError(f"field name {key!r} used as an index on a dataset without that column")
    tup = key if isinstance(key, tuple) else (key,)
    _check_key_types(tup)
    tup = tuple(_as_index_array(k) if isinstance(k, (list, np.ndarray)) else k for k in tup)
    arrays = [k for k in tup if isinstance(k, np.ndarray) and k.ndim > 0]
    n_adv = sum(max(1, a.ndim) if a.dtype.kind == "b" else 1 for a in arrays)
    if n_adv > 1:
        full_bool = len(tup) == 1 and arrays[0].dtype.kind == "b" and arrays[0].shape == tuple(vshape)
        full_points = (
            len(tup) == ndim
            and all(isinstance(k, np.ndarray) and k.ndim == 1 and k.dtype.kind in "iu" for k in tup)
            and len({k.shape[0] for k in tup}) == 1
        )
        if not (full_bool or full_points):
            raise IndexError(
                "only one index array is allowed per request (a mask of k dimensions counts as k), "
                "except a point selection with one 1-D integer array per dimension or a mask of the "
                "whole shape, as in PyTables"
            )
    # numpy validates everything else (types, bounds, shapes) on a dummy.
    _dummy(tuple(vshape), np.bool_)[tup]
    # Expand the Ellipsis so that tup[0] is the key for the first dimension.
    if any(k is Ellipsis for k in tup):
        i = next(i for i, k in enumerate(tup) if k is Ellipsis)
        used = sum((k.ndim if isinstance(k, np.ndarray) and k.dtype.kind == "b" else 1)
                   for k in tup if k is not None and k is not Ellipsis)
        tup = tup[:i] + (slice(None),) * (ndim - used) + tup[i + 1:]
    if len(tup) == 0 or tup[0] is None or isinstance(tup[0], (bool, np.bool_)) or (
        isinstance(tup[0], np.ndarray) and tup[0].ndim == 0
    ):
        return _Head(row0=0, n=n, kprime=tup)  # rare forms: every row, numpy does the rest
    k0, rest = tup[0], tup[1:]
    identity = all(isinstance(k, slice) and k == slice(None) for k in rest)
    if _is_int(k0):
        i = int(k0)
        i = i + n if i < 0 else i
        return _Head(row0=i, n=1, kprime=None if identity else (0,) + rest, scalar=identity)
    if isinstance(k0, slice):
        start, stop, step = k0.indices(n)
        kp = None if identity else (slice(None),) + rest
        if step == 1:
            return _Head(row0=start, n=max(0, stop - start), kprime=kp)
        return _Head(rows=np.arange(start, stop, step, dtype=np.int64), kprime=kp)
    a = k0
    if a.dtype.kind == "b":
        if a.ndim == 1:
            rows = np.flatnonzero(a).astype(np.int64)
            return _Head(rows=rows, kprime=None if identity else (np.arange(len(rows)),) + rest)
        sel = a.reshape(a.shape[0], -1).any(axis=1)
        rows = np.flatnonzero(sel).astype(np.int64)
        return _Head(rows=rows, kprime=(a[sel],) + rest)
    a = a.astype(np.int64, copy=False)
    a = np.where(a < 0, a + n, a)
    if a.ndim == 1 and identity:
        return _Head(rows=a)
    u, inv = np.unique(a, return_inverse=True)
    return _Head(rows=u, kprime=(inv.reshape(a.shape),) + rest)


class _Plan:
    """Everything request() needs: the C submission and the result's form."""

    __slots__ = ("ds", "head", "col_offset", "col_size", "fetch_shape", "fetch_dtype", "post",
                 "shape", "dtype", "nbytes")

    def fetch_rows(self):
        return self.head.n if self.head.rows is None else len(self.head.rows)


def _make_plan(ds, col, head, post):
    dtype, shape = ds.dtype, tuple(ds.shape)
    p = _Plan()
    p.ds = ds
    p.col_offset = p.col_size = 0
    pre = []
    if col is not None:
        if not dtype.names or col not in dtype.names:
            raise ColumnError(f"Specified column name '{col}' not in dataset {ds._path!r}"
                              + (f" (columns: {', '.join(dtype.names)})" if dtype.names else ""))
        cdt = dtype[col]
        base, sub = cdt.subdtype if cdt.subdtype else (cdt, ())
        vshape = shape + tuple(sub)
        if len(shape) == 1:
            p.col_offset = dtype.fields[col][1]
            p.col_size = cdt.itemsize
            fdtype = base
        else:  # N-D compound: whole rows, then numpy takes the field
            fdtype = dtype
            pre = [col]
    else:
        vshape, fdtype = shape, dtype
    if len(vshape) == 0:
        raise IndexError("scalar datasets cannot be requested")
    h = _plan_head(vshape, head)
    p.head = h
    m = p.fetch_rows()
    p.fetch_shape = (m,) + (tuple(vshape[1:]) if not pre else shape[1:])
    p.fetch_dtype = fdtype
    keys = pre + ([h.kprime] if h.kprime is not None else [])
    keys += list(post)
    if not keys:
        p.post = None
        p.shape = p.fetch_shape[1:] if h.scalar else p.fetch_shape
        p.dtype = fdtype
    else:
        if h.scalar:  # the head dropped the row: apply the post keys to it
            keys = [0] + keys
        p.post = keys
        res = _dummy(p.fetch_shape, fdtype)
        for k in keys:
            res = _apply_key(res, k)
        res = np.asarray(res)
        p.shape, p.dtype = res.shape, res.dtype
    p.nbytes = math.prod(p.shape) * p.dtype.itemsize
    return p


_SCALAR_OPS = (ops.ReadScalarOpArray, ops.ReadScalarOpTable)
_SLICE_OPS = (ops.ReadOpArray, ops.ReadOpTable)


def _fast_plan(ds, key):
    """The plan of the common expressions - one row, a slice, a 1-D integer
    array or list of rows, with no column and no further keys - without the
    generic planning (which costs tens of microseconds); None for anything
    else. Row bounds of arrays are checked (and negative rows wrapped) by
    the C submit, which raises IndexError as numpy does."""
    tp = type(key)
    if tp is ops.IndexOp:
        keys = key._index
        if len(keys) != 1:
            return None
        k = keys[0]
    elif key._index is not None or getattr(key, "_col", None) is not None:
        return None
    elif tp is ops.CoordOp:
        k = key._coords
    elif tp in _SCALAR_OPS:
        k = key._idx
    elif tp in _SLICE_OPS:
        if tp is ops.ReadOpArray and key._single:
            return None
        k = slice(key._start, key._stop, key._step)
    else:
        return None
    shape = ds.shape
    n = shape[0]
    tk = type(k)
    if tk is int:
        if not -n <= k < n:
            raise IndexError(f"index {k} is out of bounds for axis 0 with size {n}")
        h = _Head(row0=k + n if k < 0 else k, n=1, scalar=True)
        rshape = shape[1:]
        m = 1
    elif tk is slice:
        start, stop, step = k.indices(n)
        if step == 1:
            m = max(0, stop - start)
            h = _Head(row0=start, n=m)
        else:
            rows = np.arange(start, stop, step, dtype=np.int64)
            m = len(rows)
            h = _Head(rows=rows)
        rshape = (m,) + shape[1:]
    else:
        if tk is list:
            if not k:
                return None
            k = np.asarray(k)
        elif tk is not np.ndarray:
            return None
        if k.ndim != 1 or k.dtype.kind != "i":
            return None
        m = k.shape[0]
        h = _Head(rows=k)
        h.wrap = True
        rshape = (m,) + shape[1:]
    p = _Plan()
    p.ds = ds
    p.head = h
    p.col_offset = p.col_size = 0
    p.post = None
    p.shape = rshape
    p.dtype = p.fetch_dtype = ds.dtype
    p.nbytes = m * ds._row_nbytes
    return p


def _apply_key(arr, k):
    if isinstance(k, str):
        names = arr.dtype.names
        if not names or k not in names:
            raise ColumnError(f"Specified column name '{k}' not in the result"
                              + (f" (columns: {', '.join(names)})" if names else ""))
    try:
        return arr[k]
    except (TypeError, ValueError) as e:
        raise IndexError(str(e)) from e
