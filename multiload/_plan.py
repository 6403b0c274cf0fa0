"""Planning a Reader request: what an expression means, in one place.

``reader.request(expr, stage)`` asks :func:`plan` what ``expr`` means and
then only carries it out. A plan (:class:`_Plan`) says which rows to fetch
(a range or a row list: :class:`_Head`), which bytes of each row (a column's
offset and size, or the whole row), what numpy indexing is left to apply to
the fetched rows (``post``), and the result's shape, dtype and byte count,
which the stage is checked against before any I/O. A VLArray's plan
(:class:`_VLPlan`) is its row list and the further keys: its size is known
only once the rows are read.

:func:`plan` tries, in order:

* the fast planner (:func:`_fast_plan`): one row, a slice, a 1-D integer
  array or list of rows, with no column and no further keys -- the one-row
  path, a few hundred nanoseconds;
* ``where()`` and ``read_sorted()``, whose rows come from a column read now
  by the dataset's reader (``reader.read``, in :func:`_read_column`): the
  only I/O planning does;
* the generic planner (:func:`_generic_plan`), which evaluates the
  expression on a zero-stride dummy to learn the result's shape and dtype.

Errors are raised here, before the request's own I/O: IndexError with
numpy's wording followed by the dataset and the file, ColumnError, and
TypeError for what a dataset kind cannot do.

May import: numpy, :mod:`multiload.dataset_ops` (the expressions) and
:mod:`multiload.dataset` (the proxies' kinds); nothing that submits reads
(its one read goes through the dataset's reader).
"""

import functools
import math
import operator

import numpy as np

from . import dataset_ops as ops
from .dataset import TableDataset, VLArrayDataset
from .dataset_ops import ColumnError, _column_field, _context, _is_int, _read_range

_BAD_INDEX = (
    "only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) "
    "and integer or boolean arrays are valid indices"
)


@functools.lru_cache(maxsize=256)
def _dummy_base(dtype):
    """One element of ``dtype``: zeros, but every string field full (so that
    a string scalar taken out of it keeps the field's length, as the
    dataset's values do; an empty one would come out as S1)."""
    base = np.zeros(1, dtype=dtype)
    _fill_strings(base)
    base.flags.writeable = False
    return base


def _fill_strings(a):
    dt = a.dtype
    if dt.names is not None:
        for name in dt.names:
            _fill_strings(a[name])
    elif dt.kind == "S":
        a[...] = b"x" * dt.itemsize
    elif dt.kind == "U":
        a[...] = "x" * (dt.itemsize // 4)


def _dummy(shape, dtype):
    """A read-only array of `shape` that owns one element (zero strides):
    numpy indexing on it gives the result's shape and dtype without I/O."""
    # broadcast_to, not as_strided: as_strided rebuilds the dtype from
    # __array_interface__, which loses string fields' h5py metadata.
    return np.broadcast_to(_dummy_base(np.dtype(dtype)).reshape(()), shape)


def _as_index_array(k):
    a = np.asarray(k)
    if a.dtype == object or not (a.dtype.kind in "iub" or a.size == 0):
        raise IndexError(_BAD_INDEX)
    if a.size == 0 and a.dtype.kind not in "iub":
        a = a.astype(np.intp)
    return a


def _normalize(k):
    """One entry of a key as numpy reads it: a sequence (list, tuple, range)
    is an index array, a 0-d integer array and anything with ``__index__``
    an integer; IndexError for what numpy refuses."""
    if k is None or k is Ellipsis or isinstance(k, (slice, bool, np.bool_)) or _is_int(k):
        return k
    if isinstance(k, (list, tuple, range, np.ndarray)):
        a = _as_index_array(k)
        if a.ndim == 0 and a.dtype.kind in "iu":
            return int(a)
        return a
    try:
        return operator.index(k)
    except TypeError:
        raise IndexError(_BAD_INDEX) from None


def _ndims_used(k):
    """How many dimensions of the array a (normalized) key entry indexes."""
    if k is None or isinstance(k, (bool, np.bool_)):
        return 0
    if isinstance(k, np.ndarray) and k.dtype.kind == "b":
        return k.ndim
    return 1


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
    if key is None:  # every row (None from a key is (None,): numpy.newaxis)
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
        raise IndexError(f"{_BAD_INDEX} (field name {key!r} on data without fields)")
    tup = key if isinstance(key, tuple) else (key,)
    tup = tuple(_normalize(k) for k in tup)
    # Expand the Ellipsis so that tup[i] is the key for the i-th dimension.
    ellipsis = [i for i, k in enumerate(tup) if k is Ellipsis]
    if len(ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(_ndims_used(k) for k in tup if k is not Ellipsis)
    if ellipsis and used <= ndim:
        i = ellipsis[0]
        tup = tup[:i] + (slice(None),) * (ndim - used) + tup[i + 1:]
    # At most one index array, as in PyTables. A boolean mask is one array
    # when it indexes the leading dimensions (a[m], a[m, 2:], a[a > 5]):
    # it picks points of those, each with its whole sub-array. A mask of k
    # dimensions further in counts as k (a[:, m2d], refused by PyTables).
    n_adv, dim = 0, 0
    for k in tup:
        if isinstance(k, np.ndarray) and k.ndim > 0:
            n_adv += k.ndim if k.dtype.kind == "b" and dim > 0 else 1
        dim += _ndims_used(k)
    if n_adv > 1:
        full_points = (
            len(tup) == ndim
            and all(isinstance(k, np.ndarray) and k.ndim == 1 and k.dtype.kind in "iu" for k in tup)
            and len({k.shape[0] for k in tup}) == 1
        )
        if not full_points:
            raise IndexError(
                "only one index array is allowed per request, as in PyTables (a mask on the leading dimensions "
                "is one, a mask of k dimensions further in counts as k), except a point selection with one 1-D "
                "integer array per dimension"
            )
    # numpy validates everything else (types, bounds, shapes) on a dummy.
    _dummy(tuple(vshape), np.bool_)[tup]
    if len(tup) == 0 or tup[0] is None or isinstance(tup[0], (bool, np.bool_)) or (
        isinstance(tup[0], np.ndarray) and tup[0].ndim == 0
    ):
        return _Head(row0=0, n=n, kprime=tup)  # rare forms: every row, numpy does the rest
    k0, rest = tup[0], tup[1:]
    identity = all(isinstance(k, slice) and k == slice(None) for k in rest)
    if _is_int(k0):
        i = int(k0)
        i = i + n if i < 0 else i
        if ellipsis and all(_is_int(k) for k in rest):  # a[i, j, ...]: a 0-d array, not a scalar
            return _Head(row0=i, n=1, kprime=(0,) + rest + (Ellipsis,))
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
    """The plan of column ``col`` (None: whole rows), head key ``head``
    (None: every row) and further keys ``post`` on ``ds``. IndexError names
    the dataset and its file after numpy's wording."""
    try:
        return _generic_plan(ds, col, head, list(post))
    except IndexError as e:
        raise IndexError(f"{e} ({_context(ds)})") from None


def _is_field_list(k):
    return isinstance(k, list) and len(k) > 0 and all(isinstance(x, str) for x in k)


def _generic_plan(ds, col, head, post):
    dtype, shape = ds.dtype, tuple(ds.shape)
    # A field name as the head selects a column (numpy's a['x']); fields of
    # a compound column fold into a nested column ('inner' then 'p' is
    # PyTables' 'inner/p'), so only its bytes are read.
    while isinstance(head, str):
        cdt = dtype if col is None else _column_field(dtype, col, ds._path)[1]
        if cdt.names is None:
            break  # numpy: a field name on an array without fields is an IndexError
        col = head if col is None else f"{col}/{head}"
        head = _as_head(post.pop(0)) if post else None
    if _is_field_list(head):  # several fields: every row, numpy selects them
        post.insert(0, head)
        head = None
    p = _Plan()
    p.ds = ds
    p.col_offset = p.col_size = 0
    pre = []
    if col is not None:
        offset, cdt = _column_field(dtype, col, ds._path)
        base, sub = cdt.subdtype if cdt.subdtype else (cdt, ())
        vshape = shape + tuple(sub)
        if len(shape) == 1:
            p.col_offset = offset
            p.col_size = cdt.itemsize
            fdtype = base
        else:  # N-D compound: whole rows, then numpy takes the field
            fdtype = dtype
            pre = [col] if col in dtype.names else col.split("/")
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
    keys += post
    if not keys:
        p.post = None
        p.shape = p.fetch_shape[1:] if h.scalar else p.fetch_shape
        p.dtype = fdtype
        if h.scalar and not p.shape and fdtype.names is None and not fdtype.isnative:
            # numpy gives a scalar, and numpy scalars are in native byte order
            p.post = [0]
            p.dtype = fdtype.newbyteorder("=")
    else:
        if h.scalar:  # the head dropped the row: apply the post keys to it
            keys = [0] + keys
        p.post = keys
        res = _dummy(p.fetch_shape, fdtype)
        for k in keys:
            res = _apply_key(res, k)
        res = np.asarray(res)  # a numpy scalar's dtype: native, strings of the field's length
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
        if not ds._fast_int:
            return None
        if not -n <= k < n:
            raise IndexError(f"index {k} is out of bounds for axis 0 with size {n} ({_context(ds)})")
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
    if isinstance(k, str) or _is_field_list(k):
        names = arr.dtype.names
        missing = [x for x in ([k] if isinstance(k, str) else k) if names and x not in names]
        if missing:
            raise ColumnError(f"Specified column name '{missing[0]}' not in the result"
                              f" (columns: {', '.join(names)})")
    try:
        return arr[k]
    except (TypeError, ValueError) as e:
        raise IndexError(str(e)) from e


# ---------------------------------------------------------------- the entry point

class _VLPlan:
    """A VLArray request: the rows to read (an int64 array) and the numpy
    keys to apply to their concatenation."""

    __slots__ = ("rows", "post")

    def __init__(self, rows, post):
        self.rows, self.post = rows, post


def plan(ds, key):
    """The plan of expression ``key`` on dataset proxy ``ds``: a
    :class:`_Plan`, or a :class:`_VLPlan` for a VLArray. ``where()`` and
    ``read_sorted()`` read the columns they need now, through the dataset's
    reader (:func:`_read_column`)."""
    if ds._fast:
        p = _fast_plan(ds, key)
        if p is not None:
            return p
    if isinstance(ds, VLArrayDataset):
        keys = key._post()
        return _VLPlan(_vlarray_rows(ds, keys[0]), keys[1:])
    if isinstance(key, ops.WhereOp):
        return _make_plan(ds, None, _where_coords(ds, key), key._post())
    if isinstance(key, ops.SortOp):
        return _make_plan(ds, key._col, _sorted_coords(ds, key), key._post())
    col, head, post = _parts(key, ds)
    return _make_plan(ds, col, head, post)


def _as_head(key):
    """A head key as numpy means it: ``None`` (numpy.newaxis) is ``(None,)``,
    since a head of None means "every row" to the planner."""
    return (None,) if key is None else key


def _parts(op, ds):
    """``(col, head, post)`` of an expression: the column (None: whole
    rows), the key applied to the dataset or the column as numpy would
    (None: every row), and the keys applied, in order, to its result."""
    if isinstance(op, ops.ReadScalarOpBase):  # before ReadOpArray: ReadScalarOpArray is one
        return op._col, op._idx, op._post()
    if isinstance(op, ops.ReadOpBase):
        if isinstance(op, ops.ReadOpArray) and op._single:  # array.read(start): PyTables' one row
            return op._col, _read_range(op._start, None, None, ds), op._post()
        return op._col, slice(op._start, op._stop, op._step), op._post()
    if isinstance(op, ops.IndexOp):
        keys = op._post()
        return None, _as_head(keys[0]), keys[1:]
    if isinstance(op, ops.ColOp):
        keys = op._post()
        if keys:
            return op._col, _as_head(keys[0]), keys[1:]
        return op._col, None, []
    if isinstance(op, ops.CoordOp):
        coords = op._coords
        if isinstance(coords, list) and len(coords) == 0:
            coords = np.zeros(0, np.intp)
        return op._col, coords, op._post()
    if isinstance(op, ops.JoinedSlicesOp):
        n = ds.shape[0]
        a = np.arange(*slice(op._start1, op._stop1, op._step1).indices(n))
        b = np.arange(*slice(op._start2, op._stop2, op._step2).indices(n))
        return op._col, np.concatenate([a, b]).astype(np.intp), op._post()
    raise NotImplementedError(f"{type(op).__name__} is not an expression the reader can plan")


# ---------------------------------------------------------------- where() and read_sorted()

def _read_column(ds, name, rng=None):
    """Column ``name`` of rows ``rng`` = (start, stop, step) (None: every
    row), read now by the dataset's reader: the one I/O of planning."""
    return ds._reader.read(ops.ReadOpTable(ds._path, name, *(rng or (None, None, None))))


def _where_coords(ds, op):
    """The rows where ``op``'s numexpr condition holds (reads the columns it
    names, over its range)."""
    try:
        import numexpr
    except ImportError:
        raise ImportError("where() evaluates its condition with numexpr, as PyTables does, and numexpr "
                          "is not installed: pip install numexpr (or pip install 'multiload[where]')") from None

    if not isinstance(ds, TableDataset):
        raise TypeError("where() needs a table")
    n = ds.shape[0]
    start, stop, step = slice(op._start, op._stop, op._step).indices(n)
    if step < 0:
        raise ValueError("where() needs a positive step")
    names = numexpr.necompiler.getExprNames(op._condition, {})[0]
    local = {}
    for name in names:
        if name in op._condvars:
            local[name] = op._condvars[name]
        elif ds.dtype.names and name in ds.dtype.names:
            if ds.dtype[name].names is not None:  # PyTables refuses these too
                raise TypeError(f"variable ``{name}`` refers to a nested column, not allowed in conditions")
            local[name] = _read_column(ds, name, (start, stop, step))
        elif op._frame_vars is not None and name in op._frame_vars:
            local[name] = op._frame_vars[name]
        else:
            raise NameError(f"name '{name}' in the condition is neither a column of {ds._path!r} "
                            f"nor a condition variable")
    mask = numexpr.evaluate(op._condition, local_dict=local, global_dict={})
    mask = np.broadcast_to(np.asarray(mask, dtype=bool), (len(range(start, stop, step)),))
    return np.arange(start, stop, step, dtype=np.int64)[mask]


def _sorted_coords(ds, op):
    """The rows of ``op``'s range in the stable order of its ``sortby``
    column (read whole)."""
    if not isinstance(ds, TableDataset):
        raise TypeError("read_sorted() needs a table")
    if op._checkCSI:
        _check_csi(ds, op._sortby)
    values = _read_column(ds, op._sortby)
    if values.ndim != 1:
        raise ValueError(f"cannot sort by the multidimensional column {op._sortby!r}")
    order = np.argsort(values, kind="stable")
    start, stop = op._start, op._stop
    if start is not None and stop is None and op._step is None:  # PyTables: one row
        stop = None if start == -1 else start + 1
    return order[start:stop:op._step]


def _check_csi(ds, col):
    """ValueError unless column ``col`` has a completely sorted index
    (checked with PyTables, when it is installed)."""
    try:
        import tables
    except ImportError:  # without PyTables there is no index to check
        return
    with tables.open_file(ds._reader._filename, "r") as f:
        node = f.get_node(ds._path)
        index = getattr(node.cols._f_col(col), "index", None)
        if index is None or not index.is_csi:
            raise ValueError(f"Field `{col}` must have associated a 'full' index in table `{ds._path}`.")


# ---------------------------------------------------------------- VLArray rows

def _vlarray_rows(ds, key):
    """The rows ``key`` selects in VLArray ``ds``, as an int64 array (one
    row: its array is the result; several: their concatenation).
    IndexError as numpy raises it."""
    n = ds.shape[0]
    if isinstance(key, tuple):  # ds[i, ...], ds[(i,)]: one dimension only
        parts = [k for k in key if k is not Ellipsis]
        if len(parts) > 1 or len(key) - len(parts) > 1:
            raise IndexError(f"too many indices for the 1-D VLArray: {key!r} ({_context(ds)})")
        key = parts[0] if parts else slice(None)
    if _is_int(key):
        i = int(key)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of bounds for axis 0 with size {n} (VLArray; {_context(ds)})")
        return np.array([i % n], dtype=np.int64)
    if isinstance(key, slice):
        return np.arange(*key.indices(n), dtype=np.int64)
    sel = np.asarray(key)
    if sel.dtype == bool:
        if sel.shape != (n,):
            raise IndexError(f"boolean index of shape {sel.shape} does not match the {n} rows of the VLArray "
                             f"({_context(ds)})")
        return np.flatnonzero(sel).astype(np.int64)
    if sel.size == 0:
        sel = sel.astype(np.int64)
    if not np.issubdtype(sel.dtype, np.integer):
        raise IndexError("only integers, slices, integer arrays and boolean masks select VLArray rows, "
                         f"not {key!r} ({_context(ds)})")
    if sel.ndim > 1:
        raise IndexError(f"a {sel.ndim}-D index array cannot select rows of a 1-D VLArray ({_context(ds)})")
    rows = sel.astype(np.int64).reshape(-1)
    bad = (rows < -n) | (rows >= n)
    if bad.any():
        raise IndexError(f"index {rows[bad][0]} is out of bounds for axis 0 with size {n} "
                         f"(VLArray; {_context(ds)})")
    return np.where(rows < 0, rows + n, rows)
