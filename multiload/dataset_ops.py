"""Request expressions: what ``dataset[...]`` and the table methods build.

The class names (and the ``_path``, ``_col``, ``_index`` attributes) are
multitables' so that code which inspects requests keeps working; the
behaviour is multiload's own. An expression is data: it records what was
asked (its path, column, rows, further keys) and does no I/O and no
planning. What it means -- which rows, which column, what numpy indexing is
left -- is decided in one place, :mod:`multiload._plan`.

This module is the bottom of the package: it imports nothing of multiload.
Beside the expression classes it holds what both the dataset proxies (which
build expressions) and the planner (which reads them) need: the key
classifiers, the column lookup and its ColumnError, PyTables' read range,
and the dataset/file context of error messages.
"""

import numbers
import operator

import numpy as np

__all__ = [
    "ColumnError",
    "OpBase",
    "IndexOp",
    "ColOp",
    "ReadOpBase",
    "ReadOpTable",
    "ReadOpArray",
    "ReadScalarOpBase",
    "ReadScalarOpTable",
    "ReadScalarOpArray",
    "JoinedSlicesOp",
    "CoordOp",
    "SortOp",
    "WhereOp",
]


class ColumnError(KeyError, NameError):
    """An unknown column. Both KeyError (as numpy and h5py raise) and
    NameError (as multitables raises)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def _is_int(k):
    if type(k) is int:  # the common case, without the ABC check
        return True
    return isinstance(k, numbers.Integral) and not isinstance(k, (bool, np.bool_))


def _is_simple_slice(key):
    """A tuple whose first entry is a slice and whose others are ``:`` or ``...``."""
    return (
        isinstance(key, tuple)
        and len(key) > 0
        and isinstance(key[0], slice)
        and all(k is Ellipsis or (isinstance(k, slice) and k == slice(None)) for k in key[1:])
    )


def _is_coords(key):
    """A point selection: a list (not of field names), or an integer numpy array."""
    if isinstance(key, list):
        return not (key and isinstance(key[0], str))
    return isinstance(key, np.ndarray) and np.issubdtype(key.dtype, np.integer)


def _column_field(dtype, name, path):
    """``(offset, dtype)`` of column ``name`` of a compound ``dtype``: a
    field name, or a PyTables path of nested fields (``'inner/p'``).
    ColumnError names the dataset ``path`` when there is no such column."""
    fields = dtype.fields
    if fields is not None and isinstance(name, str) and name in fields:
        f = fields[name]
        return f[1], f[0]
    offset, dt, parent = 0, dtype, ""
    if isinstance(name, str):
        for part in name.split("/"):
            fields = dt.fields
            if fields is None or part not in fields:
                break
            f = fields[part]
            offset, dt = offset + f[1], f[0]
            parent = f"{parent}/{part}" if parent else part
        else:
            return offset, dt
    names = dt.names
    where = f"columns of {parent!r}" if parent else "columns"
    raise ColumnError(f"Specified column name {name!r} not in dataset {path!r}"
                      + (f" ({where}: {', '.join(names)})" if names else ""))


def _read_range(start, stop, step, ds):
    """PyTables' range of a ``read()`` or ``where()`` on ``ds``
    (``Leaf._process_range_read``) as a slice: ``start`` alone means the
    one row ``start`` (to the end when it is -1), and IndexError when
    ``start >= rows > 0``; otherwise slice rules."""
    if start is not None and stop is None and step is None:
        n = ds.shape[0]
        start = operator.index(start)
        if 0 < n <= start:
            raise IndexError(f"start of range ({start}) is greater than number of rows ({n}) ({_context(ds)})")
        return slice(start, n if start == -1 else start + 1, None)
    return slice(start, stop, step)


def _context(ds):
    """Where an error happened, for its message: ``dataset '/x', file 'f.h5'``."""
    filename = getattr(getattr(ds, "_reader", None), "_filename", None)
    return f"dataset {ds._path!r}" + (f", file {filename!r}" if filename is not None else "")


class OpBase:
    """Base of request expressions: ``op[key]`` appends a numpy-style key
    applied to the result so far (and returns the same object, as in
    multitables)."""

    def __init__(self, path):
        self._path = path
        self._index = None

    def __getitem__(self, key):
        if self._index is None:
            self._index = [key]
        else:
            self._index.append(key)
        return self

    def _post(self):
        return list(self._index or ())

    def __repr__(self):
        return f"<{type(self).__name__} {self._path!r}>"


class IndexOp(OpBase):
    """``dataset[key]`` for keys that are not a plain slice or row list."""

    def __init__(self, path, key):
        super().__init__(path)
        self.__getitem__(key)


class ColOp(OpBase):
    """``table.col(name)`` / ``table[name]``: one column of every row."""

    def __init__(self, path, col):
        super().__init__(path)
        self._col = col

    def __getitem__(self, key):
        if self._index is None:
            if _is_int(key):
                return ReadScalarOpTable(self._path, self._col, key)
            if isinstance(key, slice):
                return ReadOpTable(self._path, self._col, key.start, key.stop, key.step)
            if _is_simple_slice(key):
                return ReadOpTable(self._path, self._col, key[0].start, key[0].stop, key[0].step)
            if _is_coords(key):
                return CoordOp(self._path, self._col, key)
        return super().__getitem__(key)


class ReadOpBase(OpBase):
    """Rows ``start:stop:step`` (Python slice semantics), optionally one column."""

    def __init__(self, path, col, start, stop, step):
        super().__init__(path)
        self._col = col
        self._start = start
        self._stop = stop
        self._step = step


class ReadOpTable(ReadOpBase):
    """``table[a:b]``, ``table.read(...)``; ``['col']`` next selects a column."""

    def __getitem__(self, key):
        if isinstance(key, str) and self._col is None and self._index is None:
            return ReadOpTable(self._path, key, self._start, self._stop, self._step)
        return super().__getitem__(key)


class ReadOpArray(ReadOpBase):
    """``array[a:b]`` and ``array.read(...)``."""

    def __init__(self, path, col, start, stop, step, _single=False):
        super().__init__(path, col, start, stop, step)
        self._single = _single  # array.read(start): PyTables reads one row


class ReadScalarOpBase(ReadOpBase):
    """One row, ``dataset[i]``: the first dimension is dropped."""

    def __init__(self, path, col, idx):
        # ReadOpBase's fields, set directly: this runs once per one-row request.
        self._path = path
        self._index = None
        self._col = col
        self._start = idx
        self._stop = None if idx == -1 else idx + 1
        self._step = None
        self._idx = idx


class ReadScalarOpTable(ReadScalarOpBase, ReadOpTable):
    """``table[i]``, and ``table[i]['col']`` / ``table['col'][i]``."""

    def __getitem__(self, key):
        if isinstance(key, str) and self._col is None and self._index is None:
            return ReadScalarOpTable(self._path, key, self._idx)
        return OpBase.__getitem__(self, key)


class ReadScalarOpArray(ReadScalarOpBase, ReadOpArray):
    """``array[i]``."""


class JoinedSlicesOp(OpBase):
    """Two row slices, concatenated."""

    def __init__(self, path, col, start1, stop1, step1, start2, stop2, step2):
        super().__init__(path)
        self._col = col
        self._start1, self._stop1, self._step1 = start1, stop1, step1
        self._start2, self._stop2, self._step2 = start2, stop2, step2


class CoordOp(OpBase):
    """``table.read_coordinates(coords, field)`` and ``dataset[[i, j, ...]]``."""

    def __init__(self, path, col, coords):
        super().__init__(path)
        self._col = col
        self._coords = coords

    def __getitem__(self, key):
        if isinstance(key, str) and self._col is None and self._index is None:
            return CoordOp(self._path, key, self._coords)
        return super().__getitem__(key)


class SortOp(OpBase):
    """``table.read_sorted(sortby, checkCSI, field, start, stop, step)``.

    The planner (:mod:`multiload._plan`) sorts the ``sortby`` column
    (stable), takes ``order[start:stop:step]`` and those rows are read."""

    def __init__(self, path, sortby, checkCSI, col, start, stop, step):
        super().__init__(path)
        self._sortby = sortby
        self._checkCSI = checkCSI
        self._col = col
        self._start, self._stop, self._step = start, stop, step

    def __getitem__(self, key):
        if isinstance(key, str) and self._col is None and self._index is None:
            return SortOp(self._path, self._sortby, self._checkCSI, key, self._start, self._stop, self._step)
        return super().__getitem__(key)


class _ColumnVar:
    """A condition variable that names a column of the table being searched:
    ``condvars={'p': table.col('inner/p')}``, as PyTables takes
    ``table.cols.inner.p`` (the only way to use a nested column in a
    condition). numexpr reads it, over the where() range, when it
    evaluates the condition (numpy.asarray calls ``__array__``)."""

    def __init__(self, ds, col, start, stop, step):
        self._ds, self._col = ds, col
        self._start, self._stop, self._step = start, stop, step

    def __array__(self, dtype=None, copy=None):
        a = self._ds._reader.read(ReadOpTable(self._ds._path, self._col, self._start, self._stop, self._step))
        return a if dtype is None else a.astype(dtype, copy=False)

    def __repr__(self):
        return f"<column {self._col!r} of {self._ds._path!r}>"


class WhereOp(OpBase):
    """``table.where(condition, condvars, start, stop, step)``: the rows
    where a numexpr condition over the columns holds."""

    def __init__(self, path, condition, condvars, start, stop, step, _frame_vars=None):
        super().__init__(path)
        self._condition = condition
        self._condvars = condvars
        self._start, self._stop, self._step = start, stop, step
        self._frame_vars = _frame_vars
