"""``multiload.Array``: one HDF5 dataset, in one file or several concatenated
along the first axis, as a picklable numpy-style array that Dask, Ray and
any other engine can ship to its workers.

An Array is a *handle* (:mod:`multiload._handle`): it pickles as its
description -- the files with their identity (size and modification time,
recorded when the Array was made), the dataset path, each file's shape,
dtype and HDF5 chunk shape -- and reads through a :class:`multiload.Reader`
that the process using it opens on first use, read-only, and shares among
every Array of that process (one Reader per file and ``n_procs``; a forked
child opens its own). Reads go through the Reader, so decoding runs on its
native threads with the GIL released: no lock is needed around it, which
is why ``multiload.dask`` uses ``lock=False``.

:func:`close_all` closes those Readers, which releases the files (HDF5 can
then open them for writing, in this process or another); an Array used
afterwards opens them again, after checking that each file is still the one
it describes.

The shape and dtype are h5py's reading of the dataset: a dataset whose
element is an HDF5 array (``('<i4', (2, 3))``) is an Array of shape
``(N, 2, 3)`` of ``int32``. Variable-length datasets (VLArrays, strings)
and scalar (0-d) datasets are refused with TypeError: they have no fixed
row size to chunk.

May import: numpy, :mod:`multiload._handle`, :mod:`multiload._core`,
:mod:`multiload._sources` (a source's files), :mod:`multiload.reader`,
:mod:`multiload._signals`.
"""

import errno
import gc
import math
import sys
import threading

import numpy as np

from . import _core, _handle
from ._signals import FileChangedError
from ._sources import _resolve_files
from ._live_writers import flush_for_read as _flush_for_read

__all__ = ["Array", "close_all"]

_WHAT = "multiload.Array"


# ---------------------------------------------------------------- the Readers of this process

#: (path, identity, n_procs) -> (Reader, dataset proxies by path) of this process; _cache_lock
_cache = {}
_cache_pid = _handle.pid
_cache_lock = threading.Lock()
#: Bumped by close_all(): an Array checks its files again before its next read.
_generation = 0


def _engine_threads():
    """The threads the engine gave the caller, when it is a Dask worker (its
    ``nthreads``) or a Ray task (its CPUs); else None. On a cluster each
    worker process is given its share of the machine: a Reader with more
    threads than that only competes with the other workers."""
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            worker = distributed.get_worker()
        except (ValueError, AttributeError):
            worker = None
        if worker is not None:
            n = getattr(getattr(worker, "state", None), "nthreads", None) or getattr(worker, "nthreads", None)
            if n:
                return max(1, int(n))
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        try:
            ctx = ray.get_runtime_context()
            cpus = ctx.get_assigned_resources().get("CPU") if ctx.get_task_id() is not None else None
        except Exception:  # noqa: BLE001 - not in a task (the driver), or an older Ray
            cpus = None
        if cpus:
            return max(1, int(round(cpus)))
    return None


def _shared_dataset(ref, dataset, n_procs):
    """This process's Reader dataset proxy of ``dataset`` in file ``ref``
    (a FileRef), opening the Reader on first use. ``n_procs`` None: the
    engine's threads for this worker (:func:`_engine_threads`), else the
    Reader's default."""
    global _cache_pid
    from .reader import Reader  # (the Reader side imports this package's top level)

    if n_procs is None:
        n_procs = _engine_threads()
    key = (ref.path, ref.identity, n_procs)
    with _cache_lock:
        if _cache_pid != _handle.pid:  # forked: the parent's Readers are not ours
            _handle.abandon([r for r, _ in _cache.values()])
            _cache.clear()
            _cache_pid = _handle.pid
        entry = _cache.get(key)
        if entry is None:
            entry = _cache[key] = (Reader(ref.path, **({} if n_procs is None else {"n_procs": n_procs})), {})
        reader, proxies = entry
        ds = proxies.get(dataset)
        if ds is None:
            ds = proxies[dataset] = reader.get_dataset(dataset)
        return reader, ds


def close_all():
    """Close every Reader that :class:`multiload.Array` (and so
    ``multiload.dask`` and ``multiload.ray``) opened in this process, which
    releases their files: HDF5 can then open them for writing. Arrays stay
    usable: the next read opens the file again, once it has checked that the
    file is still the one the Array was made on (FileChangedError if not).

    On a Dask cluster, run it on every worker and in the client::

        client.run(multiload.close_all)
        multiload.close_all()

    Returns the number of Readers closed.
    """
    global _generation
    with _cache_lock:
        entries = list(_cache.values()) if _cache_pid == _handle.pid else []
        _cache.clear()
        _generation += 1
    n = len(entries)
    _close(entries)
    del entries
    gc.collect()  # a Reader and its dataset proxies refer to each other: free their files now
    return n


def _close(entries):
    """Close the Readers of ``entries`` (their references end with this call)."""
    for reader, _proxies in entries:
        reader.close(wait=True)


# ---------------------------------------------------------------- sources

def _probe(path, dataset):
    """(dtype, shape, chunks) of ``dataset`` in ``path`` as the Reader reads
    it, the file closed again at return."""
    _flush_for_read(path, dataset)  # a live Writer of this process (docs/writer.md)
    try:
        layout = _core.Layout(path, dataset, scalar=True)
    except TypeError as e:
        if _core.vlen_open(path, dataset) is not None:
            raise TypeError(f"dataset {dataset!r} of file {path!r} holds variable-length data, which has no "
                            f"fixed row size: a {_WHAT} reads fixed-size types only (read it with "
                            "multiload.Reader)") from None
        raise e
    dtype, shape, chunks = layout.dtype, tuple(layout.shape), layout.chunks
    del layout
    if not shape:
        raise TypeError(f"dataset {dataset!r} of file {path!r} is scalar (0-d): a {_WHAT} needs rows "
                        "(read it with multiload.Reader: reader.read(ds[()]))")
    return dtype, shape, None if chunks is None else tuple(chunks)


def _rows_words(head, n=None):
    """Which rows a key's first entry selects, for an error message."""
    if isinstance(head, slice):
        start, stop, step = head.indices(n) if n is not None else (head.start, head.stop, head.step)
        return f"rows {start}:{stop}" + (f":{step}" if step not in (None, 1) else "")
    if isinstance(head, (int, np.integer)):
        return f"row {int(head)}"
    a = np.asarray(head)
    if a.dtype == np.bool_:
        a = np.nonzero(a.reshape(a.shape[0], -1).any(axis=1) if a.ndim > 1 else a)[0]
    if a.size == 0:
        return "no rows"
    return f"{a.size} rows from {int(a.min())} to {int(a.max())}"


def _with_context(e, words):
    """``e`` with ``words`` (the Array's file, dataset and rows) added to its
    message, as the same exception type where it can be made again."""
    if words in str(e):
        return e
    try:
        if isinstance(e, OSError) and e.errno is not None:
            new = type(e)(e.errno, f"{e.strerror} ({words})", *((e.filename,) if e.filename else ()))
        else:
            new = type(e)(f"{e} ({words})")
    except Exception:  # a type that cannot be made from a message: keep it, with a note
        e.add_note(words)
        return e
    new.__cause__ = e
    return new


# ---------------------------------------------------------------- the array

class Array(_handle.Handle):
    """A read-only, picklable numpy-style array over dataset ``dataset`` of
    ``source``.

    Parameters
    ----------
    source : str, os.PathLike or list of them
        A file, a glob pattern (matches sorted) or a list of files and
        patterns: the files are concatenated along the first axis, so each
        must hold ``dataset`` with the same dtype and the same row shape
        (every dimension but the first).
    dataset : str
        The dataset's path in each file (``'/data'``, a PyTables node).
    n_procs : int, optional
        Native threads of each file's Reader in the process that reads.
        Default: in a Dask worker its ``nthreads``, in a Ray task its CPUs
        (each worker's share of the machine), elsewhere the Reader's default.

    Attributes
    ----------
    shape, dtype, ndim, size, nbytes
        As numpy's (h5py's reading: an HDF5 array element type's dimensions
        trail the dataset's).
    chunks : tuple or None
        The HDF5 chunk shape (the files' common one; None for contiguous
        storage, or when the files differ: see ``file_chunks``).
    files : list of str
    file_rows : list of int
        Rows of each file.
    file_chunks : list
        Each file's HDF5 chunk shape (None: contiguous or compact).

    Indexing is numpy's (``a[3]``, ``a[10:20, ::2]``, ``a[[5, 1, 9]]``,
    ``a['field']`` on a compound) and returns a new numpy array; the Reader
    reads the rows the first axis selects, the other keys apply to them.
    Errors name the file, the dataset and the rows.

    Raises
    ------
    FileNotFoundError, KeyError, TypeError
        A missing file, no such dataset, a type or shape an Array cannot
        hold (variable-length data, a scalar dataset); ValueError when the
        files' dtypes or row shapes differ (naming the file).
    """

    def __init__(self, source, dataset, *, n_procs=None):
        if not isinstance(dataset, str):
            raise TypeError(f"dataset must be a path in the file (a str), not {type(dataset).__name__}")
        if n_procs is not None and (isinstance(n_procs, bool) or not isinstance(n_procs, int) or n_procs < 1):
            raise ValueError(f"n_procs must be a positive integer, got {n_procs!r}")
        files = [_handle.FileRef(p) for p in _resolve_files(source)]
        metas = []
        for f in files:
            f.opening(_WHAT)  # records the identity the description carries
            metas.append(_probe(f.path, dataset))
        dtype0, shape0 = metas[0][0], metas[0][1]
        for f, (dtype, shape, _) in zip(files[1:], metas[1:]):
            if dtype != dtype0 or shape[1:] != shape0[1:]:
                raise ValueError(
                    f"dataset {dataset!r} of file {f.path!r} is {dtype} with rows of shape {shape[1:]}, but in "
                    f"{files[0].path!r} it is {dtype0} with rows of shape {shape0[1:]}: files concatenated "
                    "along the first axis must agree on both")
        self._files, self._dataset, self._n_procs = files, dataset, n_procs
        self._stored_dtype = dtype0
        self._file_shapes = [m[1] for m in metas]
        self._file_chunks = [m[2] for m in metas]
        self._derive()

    def _derive(self):
        """The attributes that follow from the description."""
        sub = self._stored_dtype.subdtype
        self._sub = () if sub is None else tuple(sub[1])  # an HDF5 array element's dimensions
        self.dtype = self._stored_dtype if sub is None else sub[0]
        self.file_rows = [s[0] for s in self._file_shapes]
        self.shape = (sum(self.file_rows),) + tuple(self._file_shapes[0][1:]) + self._sub
        self._starts = np.cumsum([0] + self.file_rows)  # first global row of each file, then the total
        self._checked = None  # (pid, close_all() generation) in which the files were last checked

    # -- the handle (multiload._handle): the description
    def _describe(self):
        return {"files": [f.describe() for f in self._files], "dataset": self._dataset, "n_procs": self._n_procs,
                "dtype": self._stored_dtype, "shapes": self._file_shapes, "chunks": self._file_chunks}

    @classmethod
    def _from_description(cls, d):
        self = cls.__new__(cls)
        self._files, self._dataset, self._n_procs = d["files"], d["dataset"], d["n_procs"]
        self._stored_dtype, self._file_shapes, self._file_chunks = d["dtype"], d["shapes"], d["chunks"]
        self._derive()
        return self

    def _open_local(self):
        pass  # the Readers are the process's (_shared_dataset), opened on first read

    def __dask_tokenize__(self):
        # Deterministic and cheap: what is read (files as identified, dataset), not the data.
        return (_WHAT, self._dataset, [(f.path, tuple(f.identity or ())) for f in self._files], self._n_procs)

    # -- numpy's face
    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return math.prod(self.shape)

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    @property
    def chunks(self):
        c = self._file_chunks[0]
        if c is None or any(x != c for x in self._file_chunks[1:]):
            return None
        return c + self._sub

    @property
    def file_chunks(self):
        return [None if c is None else c + self._sub for c in self._file_chunks]

    @property
    def files(self):
        return [f.path for f in self._files]

    @property
    def dataset(self):
        return self._dataset

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        where = self._files[0].path if len(self._files) == 1 else f"{len(self._files)} files"
        return f"<multiload.Array {self._dataset!r} of {where} shape={self.shape} dtype={self.dtype}>"

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self):
        """The rows, read about 1 MiB at a time."""
        step = max(1, (1 << 20) // max(1, self.nbytes // max(1, self.shape[0])))
        for start in range(0, self.shape[0], step):
            yield from self[start:start + step]

    def __getitem__(self, key):
        key = _whole_axes_dropped(key, self.shape)
        if len(self._files) == 1:
            return self._read_file(0, key)
        return self._read_files(key)

    # -- reading
    def _proxy(self, i):
        """File ``i``'s Reader and dataset proxy in this process."""
        if self._checked != (_handle.pid, _generation):  # first read in this process, or after close_all()
            for f in self._files:  # is each file still the one described?
                _handle.FileRef(f.path, f.identity).opening(_WHAT)
            self._checked = (_handle.pid, _generation)
        ref = self._files[i]
        reader, ds = _shared_dataset(ref, self._dataset, self._n_procs)
        if (ds.dtype, ds.shape) != (self._stored_dtype, self._file_shapes[i]):
            raise FileChangedError(
                errno.ESTALE, f"dataset {self._dataset!r} of file {ref.path!r} is not the dataset this {_WHAT} was "
                f"made on: it was {self._stored_dtype} of shape {self._file_shapes[i]}, it is now {ds.dtype} of "
                f"shape {ds.shape}; make a new {_WHAT}", ref.path)
        return reader, ds

    def _read_file(self, i, key, words=None):
        """``key`` on file ``i`` as numpy indexes it, read now."""
        try:
            reader, ds = self._proxy(i)
            if key is Ellipsis or (isinstance(key, tuple) and not key):  # numpy's "everything" (a request says [:])
                key = slice(None)
            k = key if isinstance(key, tuple) else (key,)
            if not self._sub and sum(isinstance(x, (list, np.ndarray)) for x in k) <= 1:
                return np.asarray(reader.read(ds[key]))
            # The Reader takes one index array per request and reads HDF5 array elements whole (as
            # PyTables and h5py): it reads the rows, numpy applies the rest of the key to them.
            split = _head_of(k, self.ndim)
            if split is None:
                return np.asarray(reader.read(ds[:]))[k]
            lead, h, rest = split
            if _is_int(h) or isinstance(h, slice):
                res = np.asarray(reader.read(ds[h]))
                return res[lead + (() if _is_int(h) else (slice(None),)) + rest]
            rows = np.asarray(h)
            if rows.dtype == np.bool_:
                rows = np.nonzero(rows.reshape(rows.shape[0], -1).any(axis=1))[0] if rows.ndim > 1 else np.nonzero(rows)[0]
                h = np.asarray(h)[rows] if np.asarray(h).ndim > 1 else np.arange(rows.size)
            else:
                rows, inv = np.unique(rows.astype(np.int64), return_inverse=True)
                h = inv.reshape(np.shape(h))
            res = np.asarray(reader.read(ds[rows]))
            return res[lead + (h,) + rest]
        except Exception as e:
            if words is None:
                split = _head_of(key if isinstance(key, tuple) else (key,), self.ndim)
                words = "rows selected by the key" if split is None else _rows_words(split[1], self.file_rows[i])
            raise _with_context(e, f"{_WHAT} {words} of dataset {self._dataset!r}, file "
                                   f"{self._files[i].path!r}") from e

    def _read_files(self, key):
        """``key`` over the files concatenated (numpy's semantics)."""
        k = key if isinstance(key, tuple) else (key,)
        fields = [x for x in k if isinstance(x, str)]
        if fields:  # h5py's field names in the key: the rest first, then the fields
            res = self._read_files(tuple(x for x in k if not isinstance(x, str)))
            return res[fields[0] if len(fields) == 1 else fields]
        split = _head_of(k, self.ndim)
        n = self.shape[0]
        if split is None:  # no single entry indexes the first axis: numpy on whole rows
            return self._read_rows(np.arange(n), words="all rows")[k]
        lead, head, rest = split
        if _is_int(head):
            g = int(head) + n if int(head) < 0 else int(head)
            if not 0 <= g < n:
                raise IndexError(f"index {int(head)} is out of bounds for axis 0 with size {n} ({_WHAT} of "
                                 f"dataset {self._dataset!r}, {len(self._files)} files)")
            i = int(np.searchsorted(self._starts, g, side="right")) - 1
            return self._read_file(i, lead + (g - int(self._starts[i]),) + rest, words=f"row {g}")
        advanced = [j for j, x in enumerate(rest) if isinstance(x, (list, np.ndarray))]
        if isinstance(head, slice):
            step = head.indices(n)[2]
            adjacent = not advanced or advanced == list(range(advanced[0], advanced[-1] + 1))
            if step > 0 and adjacent:
                return self._concat_slice(head, lead, rest)
            rows = np.arange(n)[head]
            if advanced:
                return self._read_rows(rows, words=_rows_words(head, n))[lead + (slice(None),) + rest]
            return self._concat_rows(rows, lead, rest, words=_rows_words(head, n))
        rows = np.asarray(head)
        if rows.size == 0 and rows.dtype.kind not in "iub":  # [] is an empty integer index, as in numpy
            rows = rows.astype(np.int64)
        if rows.dtype == np.bool_:
            if rows.shape[0] != n:
                raise IndexError(f"boolean index did not match indexed array along axis 0; size of axis is {n} "
                                 f"but size of corresponding boolean axis is {rows.shape[0]} ({_WHAT} of dataset "
                                 f"{self._dataset!r})")
            if rows.ndim > 1:  # a mask over several axes: the rows it touches, then numpy
                touched = np.nonzero(rows.reshape(n, -1).any(axis=1))[0]
                return self._read_rows(touched, words=_rows_words(head))[lead + (rows[touched],) + rest]
            rows = np.nonzero(rows)[0]
        if rows.dtype.kind not in "iu":
            raise IndexError(f"arrays used as indices must be of integer (or boolean) type, not {rows.dtype} "
                             f"({_WHAT} of dataset {self._dataset!r})")
        rows = rows.astype(np.int64, copy=False)
        if rows.ndim != 1 or advanced:  # index arrays that broadcast together: whole rows, then numpy
            flat = self._in_range(rows.reshape(-1))
            uniq, inv = np.unique(flat, return_inverse=True)
            block = self._read_rows(uniq, words=_rows_words(uniq))
            return block[lead + (inv.reshape(rows.shape),) + rest]
        return self._concat_rows(rows, lead, rest)

    def _in_range(self, rows):
        """``rows`` with negatives counted from the end; IndexError for one out of range."""
        n = self.shape[0]
        bad = (rows < -n) | (rows >= n)
        if bad.any():
            raise IndexError(f"index {int(rows[bad][0])} is out of bounds for axis 0 with size {n} ({_WHAT} of "
                             f"dataset {self._dataset!r})")
        return np.where(rows < 0, rows + n, rows)

    def _read_rows(self, rows, words):
        """Whole rows ``rows`` (in range) across the files, in order."""
        return self._concat_rows(np.asarray(rows, dtype=np.int64), (), (), words=words)

    def _concat_slice(self, head, lead, rest):
        """A slice of positive step over the files: each file's part as a slice."""
        n = self.shape[0]
        start, stop, step = head.indices(n)
        parts = []
        for i in range(len(self._files)):
            a, b = int(self._starts[i]), int(self._starts[i + 1])
            first = start if start >= a else start + -(-(a - start) // step) * step
            if first < min(b, stop):
                parts.append(self._read_file(i, lead + (slice(first - a, min(b, stop) - a, step),) + rest,
                                             words=f"{_rows_words(head, n)} (rows {first - a}: of this file)"))
        if not parts:
            return self._read_file(0, lead + (slice(0, 0),) + rest, words=_rows_words(head, n))
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=len(lead))

    def _concat_rows(self, rows, lead, rest, words=None):
        """Rows ``rows`` (a 1-D integer array, negatives from the end) in
        order: each run of rows from one file read as one index array."""
        rows = self._in_range(rows)
        if rows.size == 0:
            return self._read_file(0, lead + (np.zeros(0, np.int64),) + rest, words="no rows")
        which = np.searchsorted(self._starts, rows, side="right") - 1
        cuts = np.nonzero(np.diff(which))[0] + 1
        parts = []
        for seg in np.split(np.arange(rows.size), cuts):
            i = int(which[seg[0]])
            parts.append(self._read_file(i, lead + (rows[seg] - int(self._starts[i]),) + rest,
                                         words=words or _rows_words(rows[seg])))
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=len(lead))


def _whole_axes_dropped(key, shape):
    """``key`` without its trailing slices that take a whole axis (Dask's
    getter asks ``(slice(a, b), slice(0, n))``): the Reader then reads the
    rows straight into the result instead of into a buffer it indexes."""
    if type(key) is not tuple or len(key) > len(shape):
        return key
    # Only where entry j indexes axis j: integers, slices and 1-D index arrays.
    for k in key:
        if not (type(k) in (int, slice) or isinstance(k, np.integer)
                or (isinstance(k, (list, np.ndarray)) and np.ndim(k) == 1)):
            return key
    n = len(key)
    while n > 1 and type(key[n - 1]) is slice and key[n - 1].indices(shape[n - 1]) == (0, shape[n - 1], 1):
        n -= 1
    return key if n == len(key) else key[:n]


def _is_int(k):
    return isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))


def _head_of(k, ndim):
    """Split key tuple ``k`` into ``(lead, head, rest)``: the ``None``
    entries before the entry that indexes the first axis, that entry, and
    the rest, so that ``lead + (head,) + rest`` indexes as ``k`` does (an
    Ellipsis that stands for no axis is dropped). None when no single entry
    indexes the first axis alone (a boolean scalar, a field name)."""
    used = sum(0 if x is None or x is Ellipsis or isinstance(x, (bool, np.bool_)) else
               (np.asarray(x).ndim if isinstance(x, (list, np.ndarray)) and np.asarray(x).dtype == np.bool_ else 1)
               for x in k)
    lead = []
    for j, x in enumerate(k):
        if x is None:
            lead.append(None)
            continue
        if x is Ellipsis:
            if used >= ndim:  # it stands for no axis
                continue
            return tuple(lead), slice(None), k[j:]
        if isinstance(x, (bool, np.bool_, str)):
            return None
        return tuple(lead), x, k[j + 1:]
    return tuple(lead), slice(None), ()
