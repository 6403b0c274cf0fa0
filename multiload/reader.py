"""The Reader: random access to HDF5 datasets by native worker threads.

``reader.request(dataset[expr], stage)`` carries out one request in four
steps, each another module's concern:

1. plan it: :func:`multiload._plan.plan` says what ``expr`` means (rows,
   column, numpy indexing left, result shape) -- all of planning lives
   there, including where() and read_sorted(), which read a column through
   the dataset's reader (:meth:`Reader.read`);
2. check the result fits the stage and take the stage
   (:mod:`multiload.stage`, which states who may use a stage when);
3. submit the rows to the C request engine (``_core.ReaderCore``, in
   :meth:`Reader._submit`, the one call site of ``submit``);
4. hand back a :class:`multiload.request.Request`, which owns the rest of the
   request's life; finished requests are delivered by the notification
   thread (:mod:`multiload._notify`).

This module keeps what is the reader's own: opening datasets, the request
and read entry points, shutdown and stats. Drop-in compatible with
``multitables.Reader``; see docs/reader.md.

May import: every module of the package's Reader side (``_plan``, ``stage``,
``request``, ``_notify``, ``dataset``, ``dataset_ops``, ``_args``,
``_signals``), ``_handle``, ``budget``, ``_live_writers`` and ``_core``; nothing imports it
but ``__init__``.
"""

import errno
import itertools
import os
import threading

import numpy as np

from . import _core, _handle
from . import budget as _budget
from ._args import open_file_options, positive_int
from ._io import io_mode_code
from ._notify import Notifier
from . import dataset_ops as ops
from ._plan import _Head, _Plan, _VLPlan, _apply_key, _dummy_base, _fast_plan, plan as _plan_of
from ._signals import FileChangedError
from .dataset import ArrayDataset, ScalarDataset, TableDataset, VLArrayDataset
from .dataset_ops import ColumnError, _context
from .vlstring import VLStringDataset, refuse_request
from .request import Request, RequestPool, _Done
from .stage import Stage, StagePool, _ArrayStage, check_fits, end_loan
from . import _live_writers
from ._live_writers import flush_for_read as _flush_for_read

_DONE = _Done()  # the C request of every request read inside request(): done, with success
_ROW_OP = ops.ReadScalarOpArray  # ds[i] on an array
_OWN_RESULT_BYTES = 32 << 10  # results this large are read into an array of their own (Reader._submit)

__all__ = ["Reader", "RequestPool", "Stage", "StagePool", "Request", "ColumnError"]


# ---------------------------------------------------------------- scalar datasets

class _ScalarPlan(_Plan):
    """The plan of a request on a scalar dataset: its one element fetched
    (a 0-d layout's one row), then numpy's keys on it as a 0-d array."""

    __slots__ = ("numpy_scalar",)  # numpy gives the result as a scalar (h5py's ds[()])


def _scalar_keys(ds, key):
    """The first key of a request on scalar dataset ``ds`` as h5py takes
    it, in plain numpy keys for its value as a 0-d array: the field names
    in it first (several: numpy's field list), then the rest of it; nothing else (``[()]``, ``['a']``)
    takes the value (h5py's numpy scalar), else numpy indexes the 0-d
    array (``[...]``: a 0-d array; an integer or a slice: IndexError)."""
    parts = key if isinstance(key, tuple) else (key,)
    names = [k for k in parts if isinstance(k, str)]
    rest = tuple(k for k in parts if not isinstance(k, str))
    if names and ds.dtype.names is None:
        raise IndexError(f"field name {names[0]!r} on a scalar dataset without fields ({_context(ds)})")
    fields = [] if not names else [names[0]] if len(names) == 1 else [names]  # several: numpy's field list
    return fields + [rest]


def _scalar_plan(ds, key):
    """Plan ``key`` on scalar dataset ``ds``: its value, indexed as h5py
    indexes a scalar dataset (:func:`_scalar_keys`), then any further keys
    as numpy does; IndexError naming the dataset for a key numpy refuses."""
    if type(key) is not ops.IndexOp:
        raise TypeError(f"a request on a scalar dataset indexes it (ds[()], ds[...], ds['field']), not "
                        f"{type(key).__name__} ({_context(ds)})")
    keys = key._post()
    keys = _scalar_keys(ds, keys[0]) + keys[1:]
    res = _dummy_base(ds.dtype)[0, ...]  # its value as a 0-d array (an HDF5 array element: its shape)
    try:
        for k in keys:
            res = _apply_key(res, k)
    except IndexError as e:
        raise IndexError(f"{e} ({_context(ds)}, a scalar dataset: index it with [()] or [...])") from None
    p = _ScalarPlan()
    p.numpy_scalar = not isinstance(res, np.ndarray)
    res = np.asarray(res)  # a numpy scalar's dtype: native, strings of the field's length
    p.ds, p.head = ds, _Head(row0=0, n=1)
    p.col_offset = p.col_size = 0
    p.fetch_shape, p.fetch_dtype = (1,), ds.dtype
    p.post = [(0, Ellipsis)] + keys  # the fetched row as a 0-d array, then the keys
    p.shape, p.dtype = res.shape, res.dtype
    p.nbytes = res.nbytes
    return p


# ---------------------------------------------------------------- the reader

# The Reader's own parameters, for the hint of a misspelt one.
_READER_HINTS = dict.fromkeys(("n_procs", "notify", "cache_bytes", "cache_budget", "io_mode", "inline_reads",
                               "budget"), "")
_IO_MODES = "'io_uring', 'pread' or None"


def _budget_kw(budget):
    """ReaderCore's budget arguments for a ``budget=`` option."""
    core, priority = _budget.core_of(budget)
    return {} if core is None else {"budget": core, "budget_priority": priority}

class Reader(_handle.Handle):
    """Random access to the datasets of one HDF5 file.

    Parameters
    ----------
    filename : str or os.PathLike
    n_procs : int
        Worker threads that serve requests (multitables' name).
    notify : callable, optional
        Called with each finished request, from a notification thread, and
        with :data:`multiload.QueueClosed` when the reader has shut down.
    cache_bytes : int, optional
        Size of the cache of decoded chunk rows (chunked, compressed data),
        shared by the workers. Default: sized from the data -- the decoded
        size of every dataset requests have read chunks of, so a dataset
        whose decoded rows fit is decoded once and then served from memory
        (an epoch of random batches decodes each chunk once) -- at least 64
        MiB and at most ``cache_budget``. The cache grows only as chunks
        are decoded. ``stats()`` gives the hit rate and the size that would
        hold everything.
    cache_budget : int, optional
        The most the default cache grows to. Default: an eighth of physical
        memory, at most 2 GiB. Ignored when ``cache_bytes`` is given.
    io_mode : {'io_uring', 'pread', None}
    inline_reads : bool, default True
        Read a small contiguous request (up to 64 KiB of whole rows) inside
        ``request()`` when its bytes are in the page cache (``preadv2`` with
        ``RWF_NOWAIT``, which never waits for the disk); the future is then
        done at once. A request not in the cache goes to the workers as
        usual. False sends every request to the workers.
    budget : Budget, optional
        An I/O budget (:class:`multiload.Budget`, docs/budgets.md): every
        read of the workers first takes its bytes and one I/O per request
        from it, sleeping while it is empty; Readers, queues and
        FileLoaders given one Budget share its rates. A budgeted Reader
        reads every byte through its workers (no inline reads, no reads by
        a waiting thread, no copies from the file's mapping), so every
        byte is charged; decoded chunks served from the cache cost nothing.
        ``close()`` still serves the queued requests, at the budget's rate;
        ``stop()`` wakes the sleeping reads at once. ``stats()`` gains a
        ``"budget"`` dict.
    **kw_args
        PyTables ``open_file`` options, accepted for compatibility with
        multitables, which passes them on: ``mode`` (``'r'`` only),
        ``title``, ``root_uep`` (``'/'`` only), ``filters`` and PyTables'
        parameters (``driver``, ``node_cache_slots``, ... in any case).
        All are ignored: multiload reads the file natively, and the Reader
        always reads through the page cache (``driver='H5FD_DIRECT'`` is
        accepted and changes nothing here; the Streamer maps it to
        ``direct=True``).

    Raises
    ------
    TypeError
        A keyword argument neither the Reader nor open_file takes (a typo
        such as ``n_proc``).
    ValueError
        An open_file option multiload cannot honour: another ``mode``, a
        ``root_uep`` below ``'/'``, a driver that spreads the file over
        several files (split, family, multi), ``driver_core_image``.

    Notes
    -----
    A Reader, and a dataset proxy from :meth:`get_dataset`, pickles as its
    description: the filename, the options above (``notify`` too, so it
    must be picklable), whether the reader was closed, the file's identity
    (size and modification time, recorded when the Reader was made) and,
    for a dataset, its path, class, dtype and shape. Requests in flight and
    stages are not part of it. The copy starts its worker threads and opens
    its datasets on first use (a request, ``read``, ``get_dataset``,
    ``stats``) in the process that uses it; a Reader inherited over
    ``fork()`` does the same in the child. If the file changed since it was recorded, that first use
    raises :class:`multiload.FileChangedError`. Datasets pickled together
    share one unpickled Reader. See docs/reader.md, "Pickling and worker
    processes".
    """

    def __init__(self, filename, n_procs=4, notify=None, cache_bytes=None, io_mode=None, inline_reads=True,
                 cache_budget=None, budget=None, **kw_args):
        self._core = None
        _budget.core_of(budget)  # TypeError now
        open_file_options("Reader", kw_args, _READER_HINTS)
        n_procs = positive_int("n_procs", n_procs)
        io_mode_code(io_mode, _IO_MODES)
        self._filename = os.fspath(filename)
        if not os.path.exists(self._filename):
            raise FileNotFoundError(2, "No such file", self._filename)
        for name, v in (("cache_bytes", cache_bytes), ("cache_budget", cache_budget)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
                raise ValueError(f"{name} must be a number of bytes >= 0 or None, got {v!r}")
        self._options = dict(n_procs=n_procs, notify=notify, cache_bytes=cache_bytes, io_mode=io_mode,
                             inline_reads=inline_reads, cache_budget=cache_budget)
        if budget is not None:
            self._options["budget"] = budget  # pickles as its limits (multiload/budget.py)
        self._kw_args = kw_args
        self._file = _handle.FileRef(self._filename)
        self._datasets = {}  # path -> dataset proxy; _lock
        self._write_marks = {}  # path -> _live_writers.mark() at its open (a Writer of this process)
        self._closed = False
        self._open_local()
        self._local_opened()

    # -- the handle: description and process-local state (multiload._handle)
    def _describe(self):
        return {"filename": self._filename, "options": dict(self._options), "kw_args": self._kw_args,
                "file": self._file.describe(), "closed": self._closed}

    @classmethod
    def _from_description(cls, d):
        self = cls.__new__(cls)
        self._core = self._notifier = None
        self._filename = d["filename"]
        self._options = d["options"]
        self._kw_args = d["kw_args"]
        self._file = d["file"]
        self._closed = d["closed"]
        self._datasets = {}  # the datasets unpickled with it (_adopt_dataset); _lock
        self._write_marks = {}  # path -> _live_writers.mark() at its open
        self._lock = threading.Lock()
        return self  # no local state: made on first use

    def _open_local(self):
        """This process's workers and notification thread; the datasets
        already known (unpickled, or a forked parent's) are opened again,
        each checked to be the dataset it was. The file's identity is
        recorded here (the constructor) or checked (another process)."""
        self._core = None
        self._file.opening("Reader")
        reopened = [(ds, self._open(ds._path)) for ds in self._datasets.values()]
        for ds, (cls, obj) in reopened:
            self._check_same(ds._path, (type(ds), ds.shape, ds.dtype), (cls, tuple(obj.shape), obj.dtype))
        o = self._options
        self._lock = threading.Lock()
        self._tags = itertools.count(1)  # request tags (next() is atomic under the GIL)
        self._core = _core.ReaderCore(n_workers=o["n_procs"], io_mode=io_mode_code(o["io_mode"], _IO_MODES),
                                      cache_bytes=int(o["cache_bytes"] or 0), inline_reads=bool(o["inline_reads"]),
                                      cache_budget=int(o.get("cache_budget") or 0),
                                      **_budget_kw(o.get("budget")))
        self._notifier = Notifier(self._core, o["notify"])
        if o["notify"] is not None:
            self._notifier.start()
        for ds, (_cls, obj) in reopened:
            ds._attach(obj)

    def _local_state(self):
        return [self._core, self._notifier] + [ds._native() for ds in self._datasets.values()]

    def _adopt_dataset(self, cls, path, dtype, shape):
        """The proxy of a dataset unpickled with this reader (its layout is
        opened with the reader's local state)."""
        if self._local_pid == _handle.pid:  # opened here already: open it now
            ds = self.get_dataset(path)
            self._check_same(path, (cls, tuple(shape), dtype), (type(ds), ds.shape, ds.dtype))
            return ds
        with self._lock:
            return self._datasets.setdefault(path, cls._described(self, path, dtype, shape))

    def _check_same(self, path, was, now):
        """FileChangedError unless dataset ``path`` is now (class, shape,
        dtype) ``now`` as it was ``was`` when described."""
        if was != now:
            words = lambda d: f"{d[0].__name__} of shape {d[1]} and dtype {d[2]}"  # noqa: E731
            raise FileChangedError(
                errno.ESTALE, f"dataset {path!r} of file {self._filename!r} is not the dataset this Reader "
                f"was made on: it was {words(was)}, it is now {words(now)}; make a new Reader to read it as "
                "it is now", self._filename)

    @property
    def _dispatcher(self):
        """The notification thread (None until it is needed)."""
        notifier = getattr(self, "_notifier", None)
        return None if notifier is None else notifier.thread

    # -- datasets
    def get_dataset(self, path):
        """A proxy of the dataset at ``path`` (dtype, shape, request builder):
        a :class:`TableDataset` (1-D compound), an :class:`ArrayDataset`, a
        :class:`ScalarDataset` (0-d, shape ``()``), a :class:`VLArrayDataset`
        for a variable-length dataset (PyTables VLArray), or a
        :class:`~multiload.vlstring.VLStringDataset` for variable-length
        strings (read by ``read()`` only); the C core reads the last two
        through HDF5 in the calling thread. ``dtype`` and ``shape`` are
        h5py's: an HDF5 array element type is a subarray dtype (requests read
        it as h5py does, into trailing dimensions).

        Raises KeyError (no such dataset, a dangling link: the message says
        which), TypeError naming a type or shape multiload cannot read
        (references, a null dataspace, a group, strings in a compound),
        and OSError for a missing or damaged file, or a dataset this HDF5
        cannot open (through a link too: the message names the target)."""
        if self._local_pid != _handle.pid:
            self._reopen_local()
        with self._lock:
            ds = self._datasets.get(path)
        if ds is not None:
            return ds
        cls, obj = self._open(path)
        if cls is VLArrayDataset or cls is VLStringDataset:
            ds = cls(self, path, obj)
        else:
            ds = cls(self, path, obj.dtype, obj.shape, obj)
        with self._lock:
            return self._datasets.setdefault(path, ds)

    def _open(self, path):
        """Open the dataset at ``path``: (its proxy class, its Layout or VLen)."""
        self._file.opening("Reader")
        _flush_for_read(self._filename, path)  # a live Writer of this process (docs/writer.md)
        self._write_marks[path] = _live_writers.mark(self._filename, path)
        try:
            layout, refused = _core.Layout(self._filename, path, scalar=True), None
        except TypeError as e:
            layout, refused = None, e
        if layout is None:
            # A type the streaming path refuses may be a VLArray's; any
            # other refusal is raised as Layout raised it.
            vlen = _core.vlen_open(self._filename, path)
            if vlen is None:
                raise refused
            return (VLStringDataset if vlen.is_string else VLArrayDataset), vlen
        if not layout.shape:
            return ScalarDataset, layout
        if layout.dtype.names and len(layout.shape) == 1:
            return TableDataset, layout
        return ArrayDataset, layout

    def _check_written(self, ds):
        """FileChangedError if a Writer of this process wrote ``ds`` since
        this reader opened it (its chunks may have moved: _live_writers)."""
        mark = self._write_marks.get(ds._path)
        if mark is not None:
            _live_writers.check(mark, self._filename)

    def _dataset_for(self, key):
        """The dataset proxy expression ``key`` is on (TypeError if it is not
        an expression)."""
        ds = self._datasets.get(getattr(key, "_path", None))
        if ds is not None:
            return ds
        path = getattr(key, "_path", None)
        if path is None:
            raise TypeError(f"a request is built by indexing a dataset (reader.get_dataset(path)[...]), "
                            f"not {type(key).__name__}")
        return self.get_dataset(path)

    # -- requests
    def request(self, key, stage):
        """Queue ``key`` (an expression on a dataset of this reader) into
        ``stage`` (a stage or a stage pool); return its future.

        Raises RuntimeError on a closed reader or a busy stage,
        SharedMemoryError when the result would not fit the stage, and
        IndexError / KeyError for a bad expression, before any I/O."""
        if type(key) is _ROW_OP:  # ds[i]: one row, read here when it is cached (_request_row)
            fut = self._request_row(key, stage)
            if fut is not None:
                return fut
        if self._closed:
            raise RuntimeError("Attempt to request data from a closed reader.")
        if self._local_pid != _handle.pid:  # unpickled, or forked: open here
            self._reopen_local()
        ds = self._datasets.get(getattr(key, "_path", None))  # _dataset_for(), inlined: the fast path
        if ds is None:
            ds = self._dataset_for(key)
        if _live_writers.writes:  # a Writer of this process wrote: not this dataset since its open?
            self._check_written(ds)
        if type(ds) is VLStringDataset:
            refuse_request(ds)
        pds = ds._planned  # what requests index (an HDF5 array element type: into its dimensions)
        if pds is not ds:
            key = pds._op(key)
        plan = _fast_plan(pds, key) if pds._fast else None  # plan()'s first step, inlined: the fast path
        if plan is None:
            plan = self._plan(pds, key)
            if type(plan) is _VLPlan:
                return self._request_vlarray(ds, plan, stage)
        check_fits(stage, plan.nbytes, plan.shape, plan.dtype, ds)
        loan = stage._lend(ds)
        h = plan.head
        # A small range of cached rows is read here and now, with no request
        # in the core and no worker: the one-row path (_core read_now). Not
        # with notify=: the notification thread reports requests of the core.
        if (h.rows is None and plan.post is None and plan.col_size == 0 and self._notifier.thread is None
                and self._core.read_now(pds._layout, h.row0, h.n, loan[0]._buf)):
            fut = Request(self._notifier, loan, _DONE, plan, None)
            fut._finished = True
            return fut
        try:
            return self._submit(plan, loan)
        except BaseException:
            end_loan(loan)  # nothing was submitted: no writer
            raise

    def _request_row(self, key, stage):
        """``ds[i]`` (key) into a plain stage, read now from the file's mapping
        or the page cache, with no request in the core (``_core.read_now``):
        its future, done; or None where request() must take the usual path
        (which also raises every error: a closed reader, a bad row, a busy
        stage). Workload: W5's single rows, where Python was the cost --
        this is request() with nothing but what one row needs."""
        ds = self._datasets.get(key._path)
        row = ds._row_plan if ds is not None else None
        if row is False:
            row = ds._row_plan = self._row_plan_of(ds)
        if (row is None or self._closed or self._local_pid != _handle.pid or type(stage) is not Stage
                or self._notifier.thread is not None or _live_writers.writes):
            return None
        layout, n, plan = row
        i = key._idx
        if (type(i) is not int or not -n <= i < n or stage.size_nbytes < plan.nbytes or key._index is not None
                or key._col is not None):  # ds[i][...], a column: the usual path
            return None
        loan = stage._lend(ds)
        if not self._core.read_now(layout, i + n if i < 0 else i, 1, loan[0]._buf):
            end_loan(loan)
            return None
        fut = Request(self._notifier, loan, _DONE, plan, None)
        fut._finished = True
        return fut

    @staticmethod
    def _row_plan_of(ds):
        """(layout, rows, the plan every ds[i] request shares: _fast_plan's
        for an int), or None where ds[i] takes the usual path."""
        if ds._layout is None or not (ds._fast and ds._fast_int and ds._planned is ds):
            return None
        p = _Plan()
        p.ds, p.head, p.col_offset, p.col_size, p.post = ds, None, 0, 0, None
        p.shape, p.dtype, p.fetch_dtype, p.nbytes = ds.shape[1:], ds.dtype, ds.dtype, ds._row_nbytes
        return ds._layout, ds.shape[0], p

    @staticmethod
    def _plan(pds, key):
        """The plan of ``key`` on ``pds`` (a dataset's ``_planned``)."""
        if type(pds) is ScalarDataset:
            return _scalar_plan(pds, key)
        return _plan_of(pds, key)

    def _submit(self, plan, loan, dest=None):
        """Submit ``plan`` into the stage of ``loan`` (or into ``dest``, an
        array the result is read straight into); return its Request."""
        h = plan.head
        temp = res = None
        if dest is None:
            if plan.post is None and plan.nbytes >= _OWN_RESULT_BYTES:
                # A large result is read into an array of its own, which get()
                # returns: one copy (the gather) where the stage took two.
                res = np.empty(plan.shape, dtype=plan.dtype)
                dest = res.reshape(-1).view(np.uint8)
            elif plan.post is None:
                dest = loan[0]._buf
            else:
                temp = np.empty(plan.fetch_shape, dtype=plan.fetch_dtype)
                dest = temp.reshape(-1).view(np.uint8) if temp.size else np.empty(1, np.uint8)
        elif dest.dtype != np.uint8 or dest.ndim != 1:
            dest = dest.reshape(-1).view(np.uint8) if dest.size else np.empty(1, np.uint8)
        notifier = self._notifier
        notify = notifier.thread is not None
        tag = next(self._tags)
        if notify:
            notifier.hold(tag)
        try:
            creq = self._core.submit(plan.ds._layout, rows=h.rows, row0=h.row0, n=h.n, col_offset=plan.col_offset,
                                     col_size=plan.col_size, dest=dest, tag=tag, notify=notify, wrap=h.wrap)
        except BaseException:
            if notify:
                notifier.release(tag)
            raise
        fut = Request(notifier, loan, creq, plan, temp, tag, res)
        if notify:
            notifier.submitted(fut)
        return fut

    def _vlarray_result(self, ds, vplan):
        """Read a VLArray plan now (C core, HDF5 under its lock, GIL
        released): the row, or the rows concatenated, then further keys."""
        _counts, res = ds._vlen.read(vplan.rows)
        for k in vplan.post:
            res = res[k]
        return np.asarray(res)

    def _request_vlarray(self, ds, vplan, stage):
        # A VLArray's result size is known only once its rows are read: read
        # first, then check the stage and copy, so a refused request leaves
        # the stage untouched and free.
        res = self._vlarray_result(ds, vplan)
        plan = _Plan()
        plan.post, plan.shape, plan.dtype = None, res.shape, res.dtype
        plan.nbytes = res.nbytes
        check_fits(stage, res.nbytes, res.shape, res.dtype, ds)
        loan = stage._lend(ds)
        try:
            loan[0]._view(res.dtype, res.shape)[...] = res
        except BaseException:
            end_loan(loan)
            raise
        fut = Request(self._notifier, loan, _Done(), plan, None)
        fut._finish()
        return fut

    def read(self, key):
        """Read ``key`` now and return the result as a new array; on a
        scalar dataset, what h5py returns (``ds[()]``: a numpy scalar)."""
        if self._closed:
            raise RuntimeError("Attempt to request data from a closed reader.")
        if self._local_pid != _handle.pid:
            self._reopen_local()
        ds = self._dataset_for(key)
        if _live_writers.writes:
            self._check_written(ds)
        if type(ds) is VLStringDataset:
            return ds._read_now(key)
        pds = ds._planned
        plan = self._plan(pds, key if pds is ds else pds._op(key))
        if type(plan) is _VLPlan:
            return np.ascontiguousarray(self._vlarray_result(ds, plan))
        out = np.empty(plan.shape, dtype=plan.dtype)
        loan = _ArrayStage(out)._lend()
        fut = self._submit(plan, loan, dest=out if plan.post is None else None)
        try:
            fut._take()
        finally:
            fut._end_loan()  # interrupted: `out` stays alive until the workers let go of it
        if type(plan) is _ScalarPlan and plan.numpy_scalar:
            return out[()]  # h5py's ds[()] on a scalar dataset: the numpy scalar
        return out

    # -- shutdown
    def close(self, wait=False):
        """Refuse new requests; queued and running ones are still served.

        ``wait=False`` returns at once. ``wait=True`` blocks until the
        workers have finished every request and exited -- on a hung mount,
        until its reads return; Ctrl-C interrupts the wait (use ``stop()``
        to give up on the requests)."""
        self._closed = True
        if self._core is not None and self._local_pid == _handle.pid:  # (a parent's workers are not ours)
            self._core.shutdown(True)
            if wait:
                while not self._core.join(0.1):  # signals are handled between steps
                    pass
                d = self._notifier.thread
                if d is not None and d is not threading.current_thread():
                    while d.is_alive():
                        d.join(0.1)

    def stop(self):
        """Refuse new requests and fail every request not finished: queued
        ones and those being read, whose futures raise QueueClosedException
        at once. Returns within about half a second: a worker still inside a
        read then (a hung mount) is left to finish it in the background, and
        a stage it writes into stays busy until it has."""
        self._closed = True
        if self._core is not None and self._local_pid == _handle.pid:
            self._core.shutdown(False, 0.5)

    def stats(self):
        """Counters of the request engine: ``requests`` completed, ``rows``
        copied out, ``cache_hits`` / ``cache_misses`` (decoded chunk rows),
        ``parallel`` (requests split across threads), ``helped`` (run by
        the waiting thread), ``batched`` (small requests read in one I/O
        batch), ``inlined`` (read inside ``request()`` from the page cache
        or the file's mapping), ``mapped`` (rows copied from the file's
        memory mapping instead of read); and for the decoded-chunk cache:
        ``cache_hit_rate`` (hits / look-ups, None before any),
        ``cache_evictions``, ``cache_bytes`` (held now), ``cache_limit`` (its
        most now), ``cache_wanted`` (what would hold every dataset read
        through it, decoded) and ``cache_advice``: None, or a sentence
        saying which ``cache_bytes`` would stop the evictions. A Reader with
        a budget also has ``budget``: what its reads took (``bytes``,
        ``ios``, ``bytes_per_s`` and ``iops`` achieved since it started,
        ``throttled_seconds``, ...; as :meth:`multiload.Budget.stats`, for
        this Reader alone)."""
        if self._local_pid != _handle.pid:
            self._reopen_local()
        st = self._core.stats()
        looks = st["cache_hits"] + st["cache_misses"]
        st["cache_hit_rate"] = st["cache_hits"] / looks if looks else None
        st["cache_advice"] = None
        if st["cache_evictions"] and st["cache_wanted"] > st["cache_limit"]:
            st["cache_advice"] = (
                f"the decoded-chunk cache evicted {st['cache_evictions']} chunk rows: it holds "
                f"{st['cache_limit'] / 2**20:.0f} MiB and the datasets read need "
                f"{st['cache_wanted'] / 2**20:.0f} MiB decoded; Reader(..., cache_bytes="
                f"{st['cache_wanted']}) would decode each chunk once")
        return st

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(wait=True)
        return False

    async def __aenter__(self):
        """``async with Reader(...)``: as ``with``; requests are awaited with
        ``await reader.request(key, stage)`` (docs/async.md)."""
        return self

    async def __aexit__(self, *exc):
        """Close as ``with`` does (``close(wait=True)``: every request
        served, workers gone), without blocking the loop: the join runs in
        the loop's default executor."""
        import asyncio

        self.close()  # refuse new requests now, on the loop's thread
        await asyncio.get_running_loop().run_in_executor(None, self.close, True)
        return False

    def __del__(self):
        if getattr(self, "_core", None) is not None:
            try:
                self.stop()
            except Exception:  # noqa: BLE001
                pass
