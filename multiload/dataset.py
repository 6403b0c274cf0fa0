"""Dataset proxies handed out by ``Reader.get_dataset`` (multitables'
``TableDataset``, ``ArrayDataset`` and ``VLArrayDataset``): they build
request expressions (:mod:`multiload.dataset_ops`) without I/O and make
stages. What an expression means is the planner's (:mod:`multiload._plan`).

May import: numpy, :mod:`multiload.dataset_ops`, :mod:`multiload.stage`.
"""

import math
import numbers
import sys

import numpy as np

from . import dataset_ops as ops
from .dataset_ops import _column_field, _context, _is_coords, _is_int, _is_simple_slice, _read_range
from .stage import Stage, StagePool

__all__ = ["DatasetBase", "Dataset", "TableDataset", "ArrayDataset", "ScalarDataset", "VLArrayDataset"]


def _fill_shape(ds_shape, shape):
    """The stage shape ``shape`` (an int or a partial tuple) completed with
    the dataset's dimensions: None or -1, and the dimensions not given,
    take the dataset's. Only the byte count matters, so a shape with more
    dimensions than the dataset is accepted, as in multitables."""
    if isinstance(shape, (numbers.Integral, type(None))) or not hasattr(shape, "__iter__"):
        shape = [shape]
    shape = list(shape)
    shape += [-1] * (len(ds_shape) - len(shape))
    out = []
    for i, s in enumerate(shape):
        if s is None or (not isinstance(s, bool) and isinstance(s, numbers.Integral) and s == -1):
            if i >= len(ds_shape):
                raise ValueError(f"stage dimension {i} is {s!r}, which takes the dataset's, but the dataset "
                                 f"{tuple(ds_shape)} has {len(ds_shape)} dimensions")
            s = ds_shape[i]
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise ValueError(f"bad stage dimension {s!r}")
        out.append(int(s))
    return out


def _key_ndims(k):
    """How many dimensions one entry of a key indexes: none for None, a
    field name or a boolean scalar; a boolean array's ndim; else one."""
    if k is None or isinstance(k, (str, bool, np.bool_)):
        return 0
    if isinstance(k, (list, np.ndarray)):
        a = np.asarray(k)
        return a.ndim if a.dtype == np.bool_ else 1
    return 1


#: Bytes of rows read at a time when a dataset is iterated.
_ITER_BYTES = 1 << 20


def _read_attrs(reader, path):
    """Dataset ``path``'s attributes in ``reader``'s file, read with h5py."""
    import types

    try:
        import h5py
    except ImportError:
        raise TypeError(f"multiload reads attributes with h5py, which is not installed: pip install h5py "
                        f"(dataset {path!r}, file {reader._filename!r})") from None
    reader._file.opening("Reader")  # the file the reader describes, or FileChangedError
    with h5py.File(reader._filename, "r") as f:
        return types.MappingProxyType({k: v for k, v in f[path].attrs.items()})


def _restore(reader, path, cls, dtype, shape):
    """Unpickle a dataset proxy: its (unpickled) reader's proxy of ``path``."""
    return reader._adopt_dataset(cls, path, dtype, shape)


class DatasetBase:
    """A dataset proxy: ``dtype``, ``shape``; builds requests without I/O.

    Pickles as its reader (a description: see :class:`multiload.Reader`)
    and its path, class, dtype and shape; the unpickled proxy's dataset is
    opened with its reader, on first use, and checked to be the same.
    """

    #: Read by the native engine through a ``_core.Layout`` (VLArrays: no).
    _native_rows = True
    #: At most this many rows are read at a time by iteration.
    _iter_max_rows = 1 << 20

    def __init__(self, reader, path, dtype, shape, layout=None):
        self._reader = reader
        self._path = path
        self._layout = layout  # None until opened, for a proxy unpickled with its reader
        self.dtype = dtype
        self.shape = tuple(shape)
        # The planner's fast path (_plan._fast_plan) takes common expressions on this dataset.
        self._fast = self._native_rows and len(self.shape) > 0
        # ds[i] on a 1-D dataset is a scalar, which numpy gives in native byte
        # order: the generic planner converts it when the file's is not.
        self._fast_int = len(self.shape) != 1 or dtype.names is not None or dtype.isnative
        self._row_nbytes = dtype.itemsize * math.prod(self.shape[1:])
        # What requests index (see _ElementView): the dataset itself, unless
        # its element type is an HDF5 array.
        self._planned = self
        if dtype.subdtype is not None and self._native_rows and self.shape:
            self._planned = _ElementView(self)
        # What Reader._request_row reads ds[i] with, made by the reader on
        # first use: (layout, rows, plan), None (the usual path) or False (not yet).
        self._row_plan = False

    @classmethod
    def _described(cls, reader, path, dtype, shape):
        """A proxy of a described dataset, not opened: its reader opens it
        (:meth:`_attach`) when it opens in this process."""
        self = cls.__new__(cls)
        DatasetBase.__init__(self, reader, path, dtype, shape)
        return self

    def _attach(self, opened):
        """Read through ``opened`` (the dataset opened again, checked by the reader)."""
        self._layout = opened
        self._planned._layout = opened
        self._row_plan = False

    def _native(self):
        """The opened dataset (a ``_core.Layout`` or ``VLen``), or None."""
        return self._layout

    def __reduce__(self):
        return (_restore, (self._reader, self._path, type(self), self.dtype, self.shape))

    def create_stage_natoms(self, size_natoms):
        """A stage of ``size_natoms`` elements of the dataset's dtype."""
        return Stage(self.dtype.itemsize * int(size_natoms))

    def __len__(self):
        if not self.shape:
            raise TypeError(f"Attempt to take len() of scalar dataset ({_context(self)})")
        return self.shape[0]

    # -- the generic protocol: what numpy, list(), for loops and libraries ask of an array-like.
    # Indexing builds a lazy request and never raises IndexError, so without these the old
    # sequence protocol made np.asarray(ds), list(ds) and `for row in ds` loop forever.
    @property
    def ndim(self):
        return len(self.shape)

    def __array__(self, dtype=None, copy=None):
        """The whole dataset, read now through the reader (as h5py's
        ``np.asarray(ds)``). ``copy=False`` is refused: the data is read
        into a new array."""
        if copy is False:
            raise ValueError(f"a dataset's data is read into a new array: np.asarray(ds, copy=False) cannot avoid "
                             f"the copy ({_context(self)})")
        out = np.asarray(self._read_all())
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self):
        """The rows, read about 1 MiB at a time through the reader (rows of
        a table are ``numpy.void``, of a 1-D array numpy scalars, as h5py
        iterates). TypeError for a scalar dataset."""
        if not self.shape:
            raise TypeError(f"iteration over a scalar (0-d) dataset ({_context(self)})")
        n = self.shape[0]
        step = max(1, min(self._iter_max_rows, _ITER_BYTES // max(1, self._row_nbytes)))
        for start in range(0, n, step):
            yield from self._read_rows(start, min(n, start + step))

    def __reversed__(self):
        raise TypeError(f"reversed() of a dataset: read the rows reversed with reader.read(ds[::-1]) "
                        f"({_context(self)})")

    def __setitem__(self, key, value):
        raise TypeError(f"a multiload dataset is read-only ({_context(self)})")

    def __contains__(self, value):
        raise TypeError(f"`in` on a dataset would read all of it: use `value in reader.read(ds[:])` "
                        f"({_context(self)})")

    @property
    def attrs(self):
        """The dataset's HDF5 attributes, as a read-only mapping read once
        (through h5py, which must be installed: the C core reads data, not
        attributes). FileChangedError if the file is not the reader's."""
        attrs = self.__dict__.get("_attrs")
        if attrs is None:
            attrs = self.__dict__["_attrs"] = _read_attrs(self._reader, self._path)
        return attrs

    def _read_all(self):
        """The whole dataset as a numpy array (what ``np.asarray`` gives)."""
        return self._reader.read(self[:] if self.shape else self[...])

    def _read_rows(self, start, stop):
        """Rows ``[start, stop)``, something whose iteration gives the rows."""
        return self._reader.read(self[start:stop])

    def __repr__(self):
        return f"<multiload {type(self).__name__} {self._path!r} shape={self.shape} dtype={self.dtype}>"


class Dataset(DatasetBase):
    def create_stage(self, shape):
        """A stage for results up to ``shape`` (an int or a partial tuple;
        None or -1 take the dataset's dimension)."""
        dims = _fill_shape(self.shape, shape)
        return Stage(int(np.prod(dims, dtype=np.int64)) * self.dtype.itemsize)

    def create_stage_pool(self, shape, num_stages, timeout=None):
        """``num_stages`` stages of ``shape``, handed out in turn."""
        return StagePool(self, shape, num_stages, timeout)


class TableDataset(Dataset):
    """A table (1-D compound dataset) with PyTables' read methods."""

    def _check_col(self, name):
        """ColumnError unless ``name`` is a column: a field, or a PyTables
        path of nested fields (``'inner/p'``)."""
        _column_field(self.dtype, name, self._path)

    def col(self, name):
        """Column ``name`` (``'inner/p'`` for a nested one) of every row."""
        self._check_col(name)
        return ops.ColOp(self._path, name)

    def read(self, start=None, stop=None, step=None, field=None):
        if field is not None:
            self._check_col(field)
        return ops.ReadOpTable(self._path, field, start, stop, step)

    def read_coordinates(self, coords, field=None):
        if field is not None:
            self._check_col(field)
        return ops.CoordOp(self._path, field, coords)

    def read_sorted(self, sortby, checkCSI=False, field=None, start=None, stop=None, step=None):
        if not isinstance(sortby, str):
            sortby = getattr(sortby, "name", sortby)
        self._check_col(sortby)
        if field is not None:
            self._check_col(field)
        return ops.SortOp(self._path, sortby, checkCSI, field, start, stop, step)

    def where(self, condition, condvars=None, start=None, stop=None, step=None):
        """The rows where the numexpr ``condition`` over the columns holds,
        as PyTables' ``read_where``: ``start`` alone means the one row
        ``start`` (IndexError when it is past the end). A condition
        variable may be a column of this table, ``table.col('inner/p')``
        (PyTables' ``table.cols.inner.p``): the only way to use a nested
        column, as in PyTables."""
        frame_vars = None
        if condvars is None:
            f = sys._getframe(1)
            frame_vars = dict(f.f_globals)
            frame_vars.update(f.f_locals)
            condvars = {}
        rng = _read_range(start, stop, step, self)
        start, stop, step = rng.start, rng.stop, rng.step
        if any(isinstance(v, ops.ColOp) for v in condvars.values()):
            condvars = {k: self._condition_column(k, v, start, stop, step) if isinstance(v, ops.ColOp) else v
                        for k, v in condvars.items()}
        return ops.WhereOp(self._path, condition, condvars, start, stop, step, frame_vars)

    def _condition_column(self, var, op, start, stop, step):
        # PyTables' checks of a column given as a condition variable.
        if op._path != self._path:
            raise ValueError(f"variable ``{var}`` refers to a column which is not part of table ``{self._path}``")
        if op._index is not None:
            raise TypeError(f"variable ``{var}`` is an indexed column expression, not a column")
        _, dt = _column_field(self.dtype, op._col, self._path)
        if dt.names is not None:
            raise TypeError(f"variable ``{var}`` refers to a nested column, not allowed in conditions")
        if dt.subdtype is not None:
            raise NotImplementedError(f"variable ``{var}`` refers to a multidimensional column, "
                                      f"not yet supported in conditions, sorry")
        return ops._ColumnVar(self, op._col, start, stop, step)

    def __getitem__(self, key):
        if key is Ellipsis:
            raise IndexError(f"a single Ellipsis is not a request (PyTables does not support it); use [:] "
                             f"({_context(self)})")
        if isinstance(key, str):
            return self.col(key)
        if _is_int(key):
            return ops.ReadScalarOpTable(self._path, None, key)
        if isinstance(key, slice):
            return ops.ReadOpTable(self._path, None, key.start, key.stop, key.step)
        if _is_simple_slice(key):
            return ops.ReadOpTable(self._path, None, key[0].start, key[0].stop, key[0].step)
        if _is_coords(key):
            return ops.CoordOp(self._path, None, key)
        return ops.IndexOp(self._path, key)


class ArrayDataset(Dataset):
    """An N-D array."""

    def read(self, start=None, stop=None, step=None):
        """Rows ``start:stop:step``, as PyTables' ``Array.read``: ``start``
        alone means the one row ``start`` (IndexError when it is past the
        end)."""
        single = start is not None and stop is None and step is None
        return ops.ReadOpArray(self._path, None, start, stop, step, _single=single)

    def __getitem__(self, key):
        if type(key) is int:
            return ops.ReadScalarOpArray(self._path, None, key)
        if key is Ellipsis:
            raise IndexError(f"a single Ellipsis is not a request (PyTables does not support it); use [:] "
                             f"({_context(self)})")
        return _array_op(self._path, key)


class _ElementView(ArrayDataset):
    """A dataset whose element type is an HDF5 array (PyTables' atoms with
    a shape, h5py's subarray dtypes), as requests index it: h5py reads
    shape ``S`` of dtype ``(base, sub)`` as an array of shape ``S + sub``
    of ``base``, and a request's result is numpy indexing of that array
    (``ds[i]`` is ``sub``-shaped, ``ds[i, j]`` indexes into the element).
    The dataset's own ``shape`` and ``dtype`` stay h5py's and PyTables'
    (``(N,)`` and ``('<i4', (2, 3))``), so stages sized in rows or atoms
    hold whole elements. Never handed out: the reader plans with it
    (``ds._planned``), and it reads through the dataset's layout."""

    def __init__(self, ds):
        base, sub = ds.dtype.subdtype
        super().__init__(ds._reader, ds._path, base, ds.shape + tuple(sub), ds._layout)
        self._space_ndim = len(ds.shape)  # the dataset's own dimensions, which keys index
        self._sub = tuple(sub)

    def _op(self, op):
        """``op`` (a request on the dataset) as a request on this view: the
        first key of an IndexOp indexes the dataset's own dimensions, as in
        h5py (an Ellipsis stands for those only), and the element's
        dimensions come whole after them; further keys index that result,
        as numpy does. IndexError for a key with more indices than the
        dataset has dimensions (h5py refuses it too)."""
        if type(op) is not ops.IndexOp:
            return op  # rows (and their numpy keys): axis 0 is the dataset's
        key, *rest = op._index
        k = key if isinstance(key, tuple) else (key,)
        used = sum(_key_ndims(x) for x in k if x is not Ellipsis)
        nd = self._space_ndim
        if used > nd:
            raise IndexError(f"too many indices for the dataset: it has {nd} dimension{'s' if nd > 1 else ''} "
                             f"({used} were indexed), and its elements, HDF5 arrays of shape {self._sub}, are read "
                             f"whole, as h5py reads them ({_context(self)})")
        ell = [i for i, x in enumerate(k) if x is Ellipsis]
        fill = (slice(None),) * (nd - used)
        if ell:
            k = k[:ell[0]] + fill + k[ell[0] + 1:]  # (a second Ellipsis is left to numpy to refuse)
        else:
            k = k + fill
        new = ops.IndexOp(self._path, k + (slice(None),) * len(self._sub))
        new._index += rest
        return new


class ScalarDataset(Dataset):
    """A scalar (0-d) dataset, shape ``()``: NeXus metadata, h5py's
    ``f['x'] = 3.5``. A request takes it whole, as h5py does:
    ``ds[()]`` is its value (``reader.read`` returns the numpy scalar
    h5py returns; a request's stage holds it as a 0-d array), ``ds[...]``
    a 0-d array; a field name selects a field of a compound. Other keys
    are numpy's on a 0-d array (an integer or a slice: IndexError, as
    there is no dimension to index). ``ds.read()`` is ``ds[...]``, a 0-d
    array, as PyTables' ``Array.read`` of a scalar array."""

    def read(self):
        return ops.IndexOp(self._path, Ellipsis)

    def __getitem__(self, key):
        return ops.IndexOp(self._path, key)



def _array_op(path, key):
    """The request expression of `key` (not a lone Ellipsis) on the array
    dataset at `path`: a row, a row range, or any other numpy-style index."""
    if _is_int(key):
        return ops.ReadScalarOpArray(path, None, key)
    if isinstance(key, slice):
        return ops.ReadOpArray(path, None, key.start, key.stop, key.step)
    if _is_simple_slice(key):
        return ops.ReadOpArray(path, None, key[0].start, key[0].stop, key[0].step)
    return ops.IndexOp(path, key)


class VLenBase(DatasetBase):
    """What the variable-length proxies share (VLArrayDataset here,
    vlstring.VLStringDataset): the core's VLen handle, opened by HDF5 in
    the calling thread, never read by the worker engine."""

    _native_rows = False
    _iter_max_rows = 1024  # rows of any length: a row's size is not known before it is read
    _vlen = None  # _core.VLen: the opened dataset (None until opened, for an unpickled proxy)

    def __init__(self, reader, path, vlen):
        super().__init__(reader, path, vlen.dtype, vlen.shape)
        self._vlen = vlen

    def _attach(self, opened):
        self._vlen = opened

    def _native(self):
        return self._vlen


class VLArrayDataset(VLenBase):
    """A variable-length array (PyTables VLArray): each row is a 1-D array
    of any length of one dtype (the atom's; an atom with a shape adds
    trailing dimensions). Read by the C core through HDF5 under its lock
    in the calling thread (the slow path; no worker threads, no h5py).

    ``dataset[i]`` is row i's array (shape ``(len,) + atom shape``);
    a slice, a list, an integer array or a boolean mask of rows gives those
    rows concatenated, in the order given (repeats allowed). Negative rows
    count from the end, as in numpy; a row out of range is an IndexError.
    Further keys (``dataset[3:9][::2]``) index that result as numpy does.
    ``dtype`` is the element dtype as h5py reports it (PyTables'
    VLStringAtom and ObjectAtom rows are their ``uint8`` bytes).
    """

    def read(self, start=None, stop=None, step=None):
        """Rows ``start:stop:step`` concatenated. Slice rules: PyTables'
        ``VLArray.read`` defaults ``step`` to 1, so ``start`` alone reads
        to the end (unlike ``Array.read``)."""
        return ops.IndexOp(self._path, slice(start, stop, step))

    def __getitem__(self, key):
        if key is Ellipsis:
            raise IndexError(f"a single Ellipsis is not a request (PyTables does not support it); use [:] "
                             f"({_context(self)})")
        return ops.IndexOp(self._path, key)

    def _read_all(self):
        return self._read_rows(0, self.shape[0])

    def _read_rows(self, start, stop):
        """Rows ``[start, stop)`` as h5py reads a variable-length dataset:
        an object array holding each row's array."""
        reader = self._reader
        if reader._closed:
            raise RuntimeError("Attempt to request data from a closed reader.")
        reader.get_dataset(self._path)  # opens the reader in this process if it is not yet
        counts, data = self._vlen.read(np.arange(start, stop, dtype=np.int64))
        out = np.empty(stop - start, dtype=object)
        out[:] = np.split(data, np.cumsum(counts)[:-1]) if stop > start else []
        return out
