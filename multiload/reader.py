"""The Reader: random access to HDF5 datasets by native worker threads.

``reader.request(dataset[expr], stage)`` turns an index expression into a
plan (multiload/_plan.py: which rows, which column, what numpy indexing is
left), checks the result fits the stage (multiload/stage.py), and queues the
rows on the C request engine (src/reader.c). The returned future
(multiload/request.py) gives the result. Drop-in compatible with
``multitables.Reader``; see docs/reader.md.
"""

import itertools
import os
import threading

import numpy as np

from . import _core
from . import dataset_ops as ops
from ._args import positive_int
from ._io import io_mode_code
from ._signals import QueueClosed, SharedMemoryError
from .dataset_ops import ColumnError
from ._plan import _Plan, _fast_plan, _make_plan
from .stage import Stage, StagePool
from .request import Request, RequestPool, _Done
from .dataset import ArrayDataset, TableDataset, VLArrayDataset

__all__ = ["Reader", "RequestPool", "Stage", "StagePool", "Request", "ColumnError"]


# ---------------------------------------------------------------- the reader

class Reader:
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
        Size of the cache of decoded chunk rows (chunked data). Default:
        the larger of 64 MiB and 4 x n_procs chunk rows.
    io_mode : {'io_uring', 'pread', None}
    inline_reads : bool, default True
        Read a small contiguous request (up to 64 KiB of whole rows) inside
        ``request()`` when its bytes are in the page cache (``preadv2`` with
        ``RWF_NOWAIT``, which never waits for the disk); the future is then
        done at once. A request not in the cache goes to the workers as
        usual. False sends every request to the workers.
    **kw_args
        Accepted for compatibility (PyTables open_file options); ignored.
    """

    def __init__(self, filename, n_procs=4, notify=None, cache_bytes=None, io_mode=None, inline_reads=True,
                 **kw_args):
        self._core = None
        n_procs = positive_int("n_procs", n_procs)
        io_code = io_mode_code(io_mode, "'io_uring', 'pread' or None")
        self._filename = os.fspath(filename)
        if not os.path.exists(self._filename):
            raise FileNotFoundError(2, "No such file", self._filename)
        self._datasets = {}
        self._lock = threading.Lock()
        self._closed = False
        self._notify_fn = notify
        self._tags = itertools.count(1)
        # tag -> (Request, notify?) for requests the notification thread
        # delivers: submitted with notify, or watched (callbacks, stdlib
        # waiters); None holds the place of one still in _submit.
        self._pending = {}
        self._dispatcher = None
        self._core = _core.ReaderCore(n_workers=n_procs, io_mode=io_code, cache_bytes=int(cache_bytes or 0),
                                      inline_reads=bool(inline_reads))
        if notify is not None:
            self._start_dispatcher()

    # -- datasets
    def get_dataset(self, path):
        """A proxy of the dataset at ``path`` (dtype, shape, request builder):
        a :class:`TableDataset` (1-D compound), an :class:`ArrayDataset`, or
        a :class:`VLArrayDataset` for a variable-length dataset (PyTables
        VLArray), which the C core reads through HDF5 in the calling thread.

        Raises KeyError (no such dataset), TypeError naming a type or shape
        multiload cannot read (variable-length strings, references, a group),
        and OSError for a missing or damaged file."""
        with self._lock:
            ds = self._datasets.get(path)
        if ds is not None:
            return ds
        try:
            layout, refused = _core.Layout(self._filename, path), None
        except TypeError as e:
            layout, refused = None, e
        if layout is None:
            # A type the streaming path refuses may be a VLArray's; any
            # other refusal is raised as Layout raised it.
            vlen = _core.vlen_open(self._filename, path)
            if vlen is None:
                raise refused
            ds = VLArrayDataset(self, path, vlen)
        else:
            dtype = layout.dtype
            if dtype.names and len(layout.shape) == 1:
                ds = TableDataset(self, path, dtype, layout.shape, layout)
            else:
                ds = ArrayDataset(self, path, dtype, layout.shape, layout)
        with self._lock:
            return self._datasets.setdefault(path, ds)

    def _dataset_for(self, key):
        path = getattr(key, "_path", None)
        if path is None:
            raise TypeError(f"a request is built by indexing a dataset (reader.get_dataset(path)[...]), "
                            f"not {type(key).__name__}")
        return self.get_dataset(path)

    # -- planning
    def _plan(self, key):
        ds = self._dataset_for(key)
        if isinstance(ds, VLArrayDataset):
            return ds, None
        if isinstance(key, ops.WhereOp):
            coords = self._where_coords(ds, key)
            return ds, _make_plan(ds, None, coords, key._post())
        if isinstance(key, ops.SortOp):
            coords = self._sorted_coords(ds, key)
            return ds, _make_plan(ds, key._col, coords, key._post())
        col, head, post = key._parts(ds)
        return ds, _make_plan(ds, col, head, post)

    def _column(self, ds, name, rng=None):
        """Read one column (rows rng = (start, stop, step)) synchronously."""
        op = ops.ReadOpTable(ds._path, name, *(rng or (None, None, None)))
        return self.read(op)

    def _where_coords(self, ds, op):
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
                local[name] = self._column(ds, name, (start, stop, step))
            elif op._frame_vars is not None and name in op._frame_vars:
                local[name] = op._frame_vars[name]
            else:
                raise NameError(f"name '{name}' in the condition is neither a column of {ds._path!r} "
                                f"nor a condition variable")
        mask = numexpr.evaluate(op._condition, local_dict=local, global_dict={})
        mask = np.broadcast_to(np.asarray(mask, dtype=bool), (len(range(start, stop, step)),))
        return np.arange(start, stop, step, dtype=np.int64)[mask]

    def _sorted_coords(self, ds, op):
        if not isinstance(ds, TableDataset):
            raise TypeError("read_sorted() needs a table")
        if op._checkCSI:
            self._check_csi(ds, op._sortby)
        values = self._column(ds, op._sortby)
        if values.ndim != 1:
            raise ValueError(f"cannot sort by the multidimensional column {op._sortby!r}")
        order = np.argsort(values, kind="stable")
        start, stop = op._start, op._stop
        if start is not None and stop is None and op._step is None:  # PyTables: one row
            stop = None if start == -1 else start + 1
        return order[start:stop:op._step]

    def _check_csi(self, ds, col):
        try:
            import tables
        except ImportError:  # without PyTables there is no index to check
            return
        with tables.open_file(self._filename, "r") as f:
            node = f.get_node(ds._path)
            index = getattr(node.cols._f_col(col), "index", None)
            if index is None or not index.is_csi:
                raise ValueError(f"Field `{col}` must have associated a 'full' index in table `{ds._path}`.")

    # -- requests
    def request(self, key, stage):
        """Queue ``key`` (an expression on a dataset of this reader) into
        ``stage`` (a stage or a stage pool); return its future.

        Raises RuntimeError on a closed reader or a busy stage,
        SharedMemoryError when the result would not fit the stage, and
        IndexError / KeyError for a bad expression, before any I/O."""
        if self._closed:
            raise RuntimeError("Attempt to request data from a closed reader.")
        ds = self._datasets.get(getattr(key, "_path", None))
        plan = _fast_plan(ds, key) if ds is not None and ds._fast else None
        if plan is None:
            ds, plan = self._plan(key)
            if plan is None:
                return self._request_vlarray(ds, key, stage)
        self._check_fits(stage, plan.nbytes, plan.shape, plan.dtype, ds)
        st = stage._acquire(ds)
        try:
            return self._submit(plan, st)
        except BaseException:
            st._release()
            raise

    def _check_fits(self, stage, nbytes, shape, dtype, ds):
        """SharedMemoryError (multitables' wording first) unless a result of
        ``nbytes`` fits ``stage``."""
        cap = stage._capacity()
        if nbytes > cap:
            raise SharedMemoryError(f"Stage is smaller than requested array: {cap} < {nbytes} "
                                    f"(result shape {shape}, dtype {dtype}; dataset {ds._path!r} "
                                    f"of file {self._filename!r})")

    def _submit(self, plan, st, dest=None):
        h = plan.head
        temp = None
        if dest is None:
            if plan.post is None:
                dest = st._buf
            else:
                temp = np.empty(plan.fetch_shape, dtype=plan.fetch_dtype)
                dest = temp.reshape(-1).view(np.uint8) if temp.size else np.empty(1, np.uint8)
        elif dest.dtype != np.uint8 or dest.ndim != 1:
            dest = dest.reshape(-1).view(np.uint8) if dest.size else np.empty(1, np.uint8)
        notify = self._dispatcher is not None
        tag = next(self._tags)  # itertools.count: atomic under the GIL
        if notify:
            # The tag may come back (request read inline, or by a fast
            # worker) before the future exists: hold its place, so the
            # dispatcher can tell "finished early" from "not ours".
            with self._lock:
                self._pending[tag] = None
        try:
            creq = self._core.submit(plan.ds._layout, rows=h.rows, row0=h.row0, n=h.n, col_offset=plan.col_offset,
                                     col_size=plan.col_size, dest=dest, tag=tag, notify=notify, wrap=h.wrap)
        except BaseException:
            if notify:
                with self._lock:
                    self._pending.pop(tag, None)
            raise
        fut = Request(self, st, creq, plan, temp, tag)
        if notify:
            with self._lock:
                early = tag not in self._pending  # the dispatcher took the tag already
                if not early:
                    self._pending[tag] = (fut, True)
            if early or not self._dispatcher.is_alive():  # (a dead one: stopped while we submitted)
                self._deliver(fut, True)
        return fut

    def _vlarray_result(self, ds, key):
        """Read a VLArray expression now (C core, HDF5 under its lock, GIL
        released): the row, or the rows concatenated, then further keys."""
        keys = key._post()
        _counts, res = ds._vlen.read(ds._rows(keys[0]))
        for k in keys[1:]:
            res = res[k]
        return np.asarray(res)

    def _request_vlarray(self, ds, key, stage):
        # A VLArray's result size is known only once its rows are read: read
        # first, then check the stage and copy, so a refused request leaves
        # the stage untouched and free.
        res = self._vlarray_result(ds, key)
        plan = _Plan()
        plan.post, plan.shape, plan.dtype = None, res.shape, res.dtype
        plan.nbytes = res.nbytes
        self._check_fits(stage, res.nbytes, res.shape, res.dtype, ds)
        st = stage._acquire(ds)
        st._view(res.dtype, res.shape)[...] = res
        fut = Request(self, st, _Done(), plan, None)
        fut._finish()
        return fut

    def read(self, key):
        """Read ``key`` now and return the result as a new array."""
        if self._closed:
            raise RuntimeError("Attempt to request data from a closed reader.")
        ds, plan = self._plan(key)
        if plan is None:
            return np.ascontiguousarray(self._vlarray_result(ds, key))
        out = np.empty(plan.shape, dtype=plan.dtype)
        st = _OwnStage(out)
        st._acquire()
        fut = self._submit(plan, st, dest=out if plan.post is None else None)
        try:
            fut._take()
        finally:
            fut._stage_release()  # interrupted: `out` stays alive until the workers let go of it
        return out

    # -- notifications
    def _start_dispatcher(self):
        with self._lock:
            if self._dispatcher is not None or self._core is None:
                return
            self._dispatcher = threading.Thread(target=self._dispatch, name="multiload-reader-notify",
                                                daemon=True)
            self._dispatcher.start()

    def _watch(self, fut):
        """Have the notification thread deliver ``fut`` (run its callbacks,
        complete its concurrent.futures state) once its request is done."""
        if fut._finished:
            return
        self._start_dispatcher()
        with self._lock:
            if fut._tag not in self._pending:
                self._pending[fut._tag] = (fut, False)
        fut._creq.watch()  # the engine reports the tag when done (now, if it is)
        if fut._creq.done():
            fut._finish()  # a stdlib waiter installing itself now is woken at once

    def _deliver(self, fut, notify):
        """A finished request: its callbacks, then notify(fut) if asked."""
        fut._finish()
        fut._run_callbacks()
        if notify and self._notify_fn is not None:
            try:
                self._notify_fn(fut)
            except Exception:  # noqa: BLE001 - a user callback must not stop the dispatcher
                import logging

                logging.getLogger("multiload").exception("exception in the reader's notify callback")

    def _dispatch(self):
        core = self._core
        while True:
            tags = core.pop_done(0.1)
            with self._lock:
                # A None entry is a request still in _submit: it delivers itself.
                entries = [self._pending.pop(t) for t in tags or () if t in self._pending]
            for e in entries:
                if e is not None:
                    self._deliver(*e)
            if tags is None:
                with self._lock:
                    rest = [e for e in self._pending.values() if e is not None]
                    self._pending.clear()
                for fut, notify in rest:
                    fut._wait()
                    self._deliver(fut, notify)
                if self._notify_fn is not None:
                    self._notify_fn(QueueClosed)
                return

    # -- shutdown
    def close(self, wait=False):
        """Refuse new requests; queued and running ones are still served.

        ``wait=False`` returns at once. ``wait=True`` blocks until the
        workers have finished every request and exited -- on a hung mount,
        until its reads return; Ctrl-C interrupts the wait (use ``stop()``
        to give up on the requests)."""
        self._closed = True
        if self._core is not None:
            self._core.shutdown(True)
            if wait:
                while not self._core.join(0.1):  # signals are handled between steps
                    pass
                d = self._dispatcher
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
        if self._core is not None:
            self._core.shutdown(False, 0.5)

    def stats(self):
        """Counters of the request engine: ``requests`` completed, ``rows``
        copied out, ``cache_hits`` / ``cache_misses`` (decoded chunk rows),
        ``parallel`` (requests split across threads), ``helped`` (run by
        the waiting thread), ``batched`` (small requests read in one I/O
        batch), ``inlined`` (read inside ``request()`` from the page cache)."""
        return self._core.stats()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(wait=True)
        return False

    def __del__(self):
        if getattr(self, "_core", None) is not None:
            try:
                self.stop()
            except Exception:  # noqa: BLE001
                pass


class _OwnStage(Stage):
    """The result array of reader.read(), posing as a stage."""

    def __init__(self, out):
        self.size_nbytes = out.nbytes
        self._buf = out.reshape(-1).view(np.uint8) if out.size else np.empty(1, np.uint8)
        self._lock = threading.Lock()
        self._closed = False
        self._pool = None
        self._held_by = None
        self._held_lock = threading.Lock()
