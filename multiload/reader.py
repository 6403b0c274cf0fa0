"""The Reader: random access to HDF5 datasets by native worker threads.

``reader.request(dataset[expr], stage)`` turns an index expression into a
plan (which rows, which column, what numpy indexing is left), checks the
result fits the stage, and queues the rows on the C request engine
(src/reader.c). The returned future gives the result. Drop-in compatible
with ``multitables.Reader``; see docs/reader.md.
"""

import collections
import itertools
import math
import concurrent.futures
import contextlib
import numbers
import os
import sys
import threading
import weakref

import numpy as np

from . import _core
from . import dataset_ops as ops
from ._args import positive_int
from ._signals import QueueClosed, QueueClosedException, SharedMemoryError, SubprocessException
from .dataset_ops import ColumnError, _is_coords, _is_int, _is_simple_slice

__all__ = ["Reader", "RequestPool", "Stage", "StagePool", "Request", "ColumnError"]

_IO_MODES = {None: 0, "auto": 0, "io_uring": 1, "uring": 1, "pread": 2}
_BAD_INDEX = (
    "only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) "
    "and integer or boolean arrays are valid indices"
)


# ---------------------------------------------------------------- errors

_exc_classes = {}


def _background_error(cause):
    """An exception that is both a SubprocessException and an instance of
    the cause's type (multitables' pattern), chained to the cause."""
    base = type(cause)
    cls = _exc_classes.get(base)
    if cls is None:
        try:
            cls = type(base.__name__, (base, SubprocessException), {"__module__": base.__module__})
        except TypeError:  # a final class: keep the cause's type only through __cause__
            cls = SubprocessException
        _exc_classes[base] = cls
    try:
        e = cls(*cause.args)
    except Exception:
        e = SubprocessException(str(cause))
    for attr in ("errno", "strerror", "filename"):
        if getattr(cause, attr, None) is not None:
            try:
                setattr(e, attr, getattr(cause, attr))
            except (AttributeError, TypeError):
                pass
    e.__cause__ = cause
    return e


# ---------------------------------------------------------------- planning

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


# ---------------------------------------------------------------- stages

class Stage:
    """Memory that holds one request's result, at most ``size_nbytes``.

    One request at a time: a request on a busy stage raises RuntimeError.
    The stage is busy from ``reader.request()`` until the future's result is
    taken (``get``, ``get_direct``, ``get_unsafe``, ``get_proxy``,
    ``result``) or the future is cancelled or dropped."""

    def __init__(self, size_nbytes):
        size_nbytes = int(size_nbytes)
        if size_nbytes < 0:
            raise ValueError("stage size must be >= 0")
        self.size_nbytes = size_nbytes
        self._buf = np.empty(max(1, size_nbytes), dtype=np.uint8)
        self._lock = threading.Lock()
        self._closed = False
        self._pool = None

    def _capacity(self):
        return self.size_nbytes

    def _acquire(self):
        if self._closed:
            raise RuntimeError("Stage has already been closed.")
        if not self._lock.acquire(False):
            raise RuntimeError("Stage already fielding another request.")
        return self

    def _release(self):
        self._lock.release()
        if self._pool is not None:
            self._pool._return(self)

    def _view(self, dtype, shape):
        nbytes = math.prod(shape) * dtype.itemsize
        return self._buf[:nbytes].view(dtype).reshape(shape)

    def close(self):
        """Refuse further requests. Memory is freed once no array views it."""
        self._closed = True

    def __repr__(self):
        return f"<multiload Stage {self.size_nbytes} bytes{' closed' if self._closed else ''}>"


class StagePool:
    """``n`` stages of one size handed out in turn: a request on a pool
    waits until a stage is free (``timeout`` seconds, then queue.Empty)."""

    def __init__(self, dataset, stage_size, N_stages, timeout=None):
        N_stages = positive_int("N_stages", N_stages)
        self._free = collections.deque()
        self._cvar = threading.Condition()
        self._timeout = timeout
        self._stages = []
        for _ in range(N_stages):
            s = dataset.create_stage(stage_size)
            s._pool = self
            self._free.append(s)
            self._stages.append(s)
        self.size_nbytes = self._stages[0].size_nbytes

    def _capacity(self):
        return self.size_nbytes

    def _acquire(self):
        import queue
        import time

        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        with self._cvar:
            while not self._free:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise queue.Empty()
                self._cvar.wait(0.1 if left is None else min(left, 0.1))
            stage = self._free.popleft()
        try:
            return stage._acquire()
        except BaseException:
            self._return(stage)
            raise

    def _return(self, stage):
        with self._cvar:
            self._free.append(stage)
            self._cvar.notify()

    def close(self):
        for s in self._stages:
            s.close()


# ---------------------------------------------------------------- futures

class _Done:
    """Stands in for a C request whose result was produced synchronously."""

    def __init__(self, exc=None):
        self._exc = exc

    def wait(self, timeout=None):
        return True

    def done(self):
        return True

    def cancel(self):
        return False

    def status(self):
        return "ok" if self._exc is None else "error"

    def check(self):
        if self._exc is not None:
            raise self._exc


class _Proxy:
    """Forwards to an array until released; afterwards every use raises."""

    __slots__ = ("_obj",)

    def __init__(self, obj):
        object.__setattr__(self, "_obj", obj)

    def _get(self):
        obj = object.__getattribute__(self, "_obj")
        if obj is None:
            raise RuntimeError("this proxy was released: the stage may hold another request's data")
        return obj

    def release(self):
        object.__setattr__(self, "_obj", None)

    def __getattr__(self, name):
        return getattr(self._get(), name)

    def __setattr__(self, name, value):
        setattr(self._get(), name, value)

    def __getitem__(self, k):
        return self._get()[k]

    def __setitem__(self, k, v):
        self._get()[k] = v

    def __len__(self):
        return len(self._get())

    def __iter__(self):
        return iter(self._get())

    def __array__(self, dtype=None, copy=None):
        a = self._get()
        return np.array(a, dtype=dtype, copy=True) if (dtype is not None or copy) else a

    def __eq__(self, o):
        return self._get() == o

    def __ne__(self, o):
        return self._get() != o

    def __repr__(self):
        obj = object.__getattribute__(self, "_obj")
        return "<released proxy>" if obj is None else f"proxy({obj!r})"


def _make_binop(name):
    def op(self, *args):
        return getattr(self._get(), name)(*args)
    op.__name__ = name
    return op


for _n in ("__add__", "__sub__", "__mul__", "__truediv__", "__lt__", "__le__", "__gt__", "__ge__",
           "__radd__", "__rsub__", "__rmul__", "__neg__", "__abs__", "__bool__", "__float__", "__int__"):
    setattr(_Proxy, _n, _make_binop(_n))


class Request:
    """A future for one request (multitables' ``Request``), with
    concurrent.futures methods and ``await`` support on top.

    Take the result once, with ``get()`` (a copy), ``get_direct(fn)``,
    ``with get_unsafe() as view`` or ``with get_proxy() as view``; that
    frees the stage. ``result()`` may be called again (it keeps a copy).
    """

    def __init__(self, reader, stage, creq, plan, temp):
        self._reader = reader
        self._stage = stage
        self._creq = creq
        self._plan = plan
        self._temp = temp  # fetched rows when numpy indexing is left to do
        self._lock = threading.Lock()
        self._consumed = False
        self._cancelled = False
        self._finished = False
        self._exc = None
        self._result = None
        self._callbacks = []
        self._callbacks_ran = False
        self._released = False

    # -- completion
    def _wait(self, timeout=None):
        if not self._creq.wait(timeout):
            return False
        self._finish()
        return True

    def _finish(self):
        with self._lock:
            if self._finished:
                return
            status = self._creq.status()
            if status == "ok":
                if self._plan is not None and self._plan.post is not None:
                    try:
                        self._postprocess()
                    except BaseException as e:  # noqa: BLE001 - delivered to the consumer
                        self._exc = e if isinstance(e, SubprocessException) else _background_error(e)
            elif status == "cancelled":
                self._cancelled = True
            elif status == "closed":
                self._exc = _background_error(QueueClosedException("This reader has been closed."))
            else:
                try:
                    self._creq.check()
                    if self._plan is not None and self._plan.post is not None:
                        self._postprocess()
                except BaseException as e:  # noqa: BLE001 - delivered to the consumer
                    self._exc = e if isinstance(e, SubprocessException) else _background_error(e)
            self._temp = None
            self._finished = True

    def _postprocess(self):
        p = self._plan
        res = self._temp
        for k in p.post:
            res = res[k]
        out = self._stage._view(p.dtype, p.shape)
        out[...] = res

    def _view(self):
        p = self._plan
        return self._stage._buf[:p.nbytes].view(p.dtype).reshape(p.shape)

    def _take(self):
        """Wait, then mark consumed; raise the request's error (after
        freeing the stage)."""
        self._wait_interruptibly()
        with self._lock:
            if self._consumed:
                raise RuntimeError("this request's result was already taken; its stage may hold other data now "
                                   "(use get() once, or keep result())")
            if self._cancelled:
                raise concurrent.futures.CancelledError()
            self._consumed = True
        if self._exc is not None:
            self._stage_release()
            raise self._exc

    def _wait_interruptibly(self, timeout=None):
        return self._wait(timeout)

    def _stage_release(self):
        if self._released:
            return
        self._released = True
        self._stage._release()

    @contextlib.contextmanager
    def get_unsafe(self):
        """Yield the result as a view of the stage; the stage is freed when
        the with-block ends (the view must not be used after)."""
        self._take()
        try:
            yield self._view()
        finally:
            self._stage_release()

    def get_direct(self, action):
        """Call ``action(view)`` with the result viewed in the stage."""
        with self.get_unsafe() as data:
            return action(data)

    @contextlib.contextmanager
    def get_proxy(self):
        """Yield a proxy of the result that raises once the block ends."""
        with self.get_unsafe() as data:
            proxy = _Proxy(data)
            try:
                yield proxy
            finally:
                proxy.release()

    def get(self):
        """Wait and return a copy of the result (frees the stage)."""
        self._take()
        try:
            return self._view().copy()
        finally:
            self._stage_release()

    # -- concurrent.futures.Future
    def done(self):
        return self._cancelled or self._creq.done()

    def running(self):
        return self._creq.status() == "running"

    def cancelled(self):
        if self._creq.done():
            self._finish()
        return self._cancelled

    def cancel(self):
        """Cancel a request that is still queued (True); a running or
        finished one is not cancelled (False) and completes as usual."""
        if self._cancelled:
            return True
        if not self._creq.cancel():
            return False
        self._finish()
        with self._lock:
            self._consumed = True
        self._stage_release()
        self._reader._run_callbacks_soon(self)
        return True

    def result(self, timeout=None):
        if not self._wait(timeout):
            raise TimeoutError(f"the request did not finish within {timeout} s")
        if self._cancelled:
            raise concurrent.futures.CancelledError()
        if self._exc is not None:
            raise self._exc
        with self._lock:
            have = self._result is not None
        if not have:
            res = self.get()
            with self._lock:
                self._result = res
        return self._result

    def exception(self, timeout=None):
        if not self._wait(timeout):
            raise TimeoutError(f"the request did not finish within {timeout} s")
        if self._cancelled:
            raise concurrent.futures.CancelledError()
        return self._exc

    def add_done_callback(self, fn):
        """Call ``fn(future)`` once the request is done (from the reader's
        notification thread, or at once if it is done already)."""
        with self._lock:
            if not self._callbacks_ran:
                self._callbacks.append(fn)
                fn = None
        if fn is not None:
            fn(self)
        else:
            self._reader._watch(self)

    def _run_callbacks(self):
        with self._lock:
            if self._callbacks_ran:
                return
            self._callbacks_ran = True
            cbs, self._callbacks = self._callbacks, []
        for fn in cbs:
            try:
                fn(self)
            except Exception:  # noqa: BLE001 - as concurrent.futures: log and go on
                import logging

                logging.getLogger("multiload").exception("exception calling callback for %r", self)

    def __await__(self):
        import asyncio

        if not self.done():
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()

            def wake(_):
                loop.call_soon_threadsafe(lambda: waiter.done() or waiter.set_result(None))

            self.add_done_callback(wake)
            yield from waiter.__await__()
        return self.result()

    def __del__(self):
        try:
            if getattr(self, "_released", False) or not hasattr(self, "_creq"):
                return
            if not self._creq.cancel():
                self._creq.wait(None)
            self._released = True
            self._stage._release()
        except Exception:  # noqa: BLE001 - never raise from __del__
            pass

    def __repr__(self):
        state = "cancelled" if self._cancelled else ("finished" if self.done() else "pending")
        return f"<multiload Request {state}>"


class RequestPool:
    """Futures in insertion order, shared between threads: ``add(future)``
    from producers, ``next()`` (blocking) from the consumer."""

    def __init__(self):
        self._queue = collections.deque()
        self._cvar = threading.Condition()

    def add(self, req):
        with self._cvar:
            self._queue.append(req)
            self._cvar.notify()

    def next(self, timeout=None):
        with self._cvar:
            if not self._cvar.wait_for(lambda: self._queue, timeout):
                raise TimeoutError("no request was added in time")
            return self._queue.popleft()

    def __len__(self):
        with self._cvar:
            return len(self._queue)


# ---------------------------------------------------------------- datasets

def _fill_shape(ds_shape, shape):
    if isinstance(shape, (numbers.Integral, type(None))) or not hasattr(shape, "__iter__"):
        shape = [shape]
    shape = list(shape)
    if len(shape) > len(ds_shape):
        raise ValueError(f"stage shape {tuple(shape)} has more dimensions than the dataset {tuple(ds_shape)}")
    shape += [-1] * (len(ds_shape) - len(shape))
    out = []
    for i, s in enumerate(shape):
        if s is None or s == -1:
            s = ds_shape[i]
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise ValueError(f"bad stage dimension {s!r}")
        out.append(int(s))
    return out


class DatasetBase:
    """A dataset proxy: ``dtype``, ``shape``; builds requests without I/O."""

    def __init__(self, reader, path, dtype, shape, layout=None):
        self._reader = reader
        self._path = path
        self._layout = layout
        self.dtype = dtype
        self.shape = tuple(shape)
        # The Reader plans common expressions on this dataset without the generic planner.
        self._fast = layout is not None and len(self.shape) > 0
        self._row_nbytes = dtype.itemsize * math.prod(self.shape[1:])

    def create_stage_natoms(self, size_natoms):
        """A stage of ``size_natoms`` elements of the dataset's dtype."""
        return Stage(self.dtype.itemsize * int(size_natoms))

    def __len__(self):
        return self.shape[0]

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
        if not isinstance(name, str) or not self.dtype.names or name not in self.dtype.names:
            raise ColumnError(f"Specified column name '{name}' not in dataset {self._path!r}"
                              + (f" (columns: {', '.join(self.dtype.names)})" if self.dtype.names else ""))

    def col(self, name):
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
        frame_vars = None
        if condvars is None:
            f = sys._getframe(1)
            frame_vars = dict(f.f_globals)
            frame_vars.update(f.f_locals)
            condvars = {}
        return ops.WhereOp(self._path, condition, condvars, start, stop, step, frame_vars)

    def __getitem__(self, key):
        if key is Ellipsis:
            raise IndexError("a single Ellipsis is not a request (PyTables does not support it); use [:]")
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
        single = start is not None and stop is None and step is None
        return ops.ReadOpArray(self._path, None, start, stop, step, _single=single)

    def __getitem__(self, key):
        if type(key) is int:
            return ops.ReadScalarOpArray(self._path, None, key)
        if key is Ellipsis:
            raise IndexError("a single Ellipsis is not a request (PyTables does not support it); use [:]")
        if _is_int(key):
            return ops.ReadScalarOpArray(self._path, None, key)
        if isinstance(key, slice):
            return ops.ReadOpArray(self._path, None, key.start, key.stop, key.step)
        if _is_simple_slice(key):
            return ops.ReadOpArray(self._path, None, key[0].start, key[0].stop, key[0].step)
        return ops.IndexOp(self._path, key)


class VLArrayDataset(DatasetBase):
    """A variable-length array (PyTables VLArray), read through h5py under
    the calling thread (the slow path): ``dataset[i]`` is row i's array;
    a slice or list gives the rows concatenated."""

    def read(self, start=None, stop=None, step=None):
        return ops.IndexOp(self._path, slice(start, stop, step))

    def __getitem__(self, key):
        if key is Ellipsis:
            raise IndexError("a single Ellipsis is not a request (PyTables does not support it); use [:]")
        return ops.IndexOp(self._path, key)


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
    **kw_args
        Accepted for compatibility (PyTables open_file options); ignored.
    """

    def __init__(self, filename, n_procs=4, notify=None, cache_bytes=None, io_mode=None, **kw_args):
        self._core = None
        n_procs = positive_int("n_procs", n_procs)
        if io_mode not in _IO_MODES:
            raise ValueError(f"io_mode must be 'io_uring', 'pread' or None, got {io_mode!r}")
        self._filename = os.fspath(filename)
        if not os.path.exists(self._filename):
            raise FileNotFoundError(2, "No such file", self._filename)
        self._datasets = {}
        self._lock = threading.Lock()
        self._closed = False
        self._notify_fn = notify
        self._tags = itertools.count(1)
        self._pending = {}  # tag -> Request, for requests submitted with notification
        self._watched = []  # requests without notification that gained callbacks
        self._dispatcher = None
        self._core = _core.ReaderCore(n_procs, _IO_MODES[io_mode], int(cache_bytes or 0))
        if notify is not None:
            self._start_dispatcher()

    # -- datasets
    def get_dataset(self, path):
        """A proxy of the dataset at ``path`` (dtype, shape, request builder)."""
        with self._lock:
            ds = self._datasets.get(path)
        if ds is not None:
            return ds
        try:
            layout = _core.Layout(self._filename, path)
        except TypeError:
            vl = self._vlarray_info(path)
            if vl is None:
                raise
            ds = VLArrayDataset(self, path, vl[0], vl[1])
        else:
            dtype = layout.dtype
            if dtype.names and len(layout.shape) == 1:
                ds = TableDataset(self, path, dtype, layout.shape, layout)
            else:
                ds = ArrayDataset(self, path, dtype, layout.shape, layout)
        with self._lock:
            return self._datasets.setdefault(path, ds)

    def _vlarray_info(self, path):
        import h5py

        with h5py.File(self._filename, "r") as f:
            d = f[path]
            base = h5py.check_vlen_dtype(d.dtype)
            if base is None:
                return None
            return np.dtype(base), d.shape

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
        import numexpr

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
        cap = stage._capacity()
        if plan.nbytes > cap:
            raise SharedMemoryError(f"Stage is smaller than requested array: {cap} < {plan.nbytes} "
                                    f"(result shape {plan.shape}, dtype {plan.dtype})")
        st = stage._acquire()
        try:
            return self._submit(plan, st)
        except BaseException:
            st._release()
            raise

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
        creq = self._core.submit(plan.ds._layout, h.rows, h.row0, h.n, plan.col_offset, plan.col_size,
                                 dest, tag, notify, h.wrap)
        fut = Request(self, st, creq, plan, temp)
        if notify:
            with self._lock:
                self._pending[tag] = fut
        return fut

    def _request_vlarray(self, ds, key, stage):
        import h5py

        keys = key._post()
        with h5py.File(self._filename, "r") as f:
            res = f[ds._path][keys[0]]
        if isinstance(res, np.ndarray) and res.dtype == object:
            res = np.concatenate(list(res)) if len(res) else np.zeros(0, ds.dtype)
        res = np.asarray(res)
        for k in keys[1:]:
            res = res[k]
        plan = _Plan()
        plan.post, plan.shape, plan.dtype = None, res.shape, res.dtype
        plan.nbytes = res.nbytes
        cap = stage._capacity()
        if res.nbytes > cap:
            raise SharedMemoryError(f"Stage is smaller than requested array: {cap} < {res.nbytes}")
        st = stage._acquire()
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
            st = Stage(1 << 30)
            return self._request_vlarray(ds, key, st).get()
        out = np.empty(plan.shape, dtype=plan.dtype)
        st = _OwnStage(out)
        st._acquire()
        fut = self._submit(plan, st, dest=out if plan.post is None else None)
        try:
            fut._take()
        finally:
            fut._stage_release()
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
        self._start_dispatcher()
        with self._lock:
            if any(f is fut for f in self._pending.values()):
                return
            self._watched.append(fut)

    def _run_callbacks_soon(self, fut):
        if fut._callbacks:
            fut._run_callbacks()

    def _dispatch(self):
        core = self._core
        while True:
            tags = core.pop_done(0.1)
            with self._lock:
                futs = [self._pending.pop(t) for t in tags or () if t in self._pending]
                watched = [f for f in self._watched if f.done()]
                if watched:
                    self._watched = [f for f in self._watched if not f.done()]
            for f in futs + watched:
                f._finish()
                f._run_callbacks()
                if self._notify_fn is not None and f in futs:
                    try:
                        self._notify_fn(f)
                    except Exception:  # noqa: BLE001
                        import logging

                        logging.getLogger("multiload").exception("exception in the reader's notify callback")
            if tags is None:
                with self._lock:
                    rest = list(self._pending.values()) + self._watched
                    self._pending.clear()
                    self._watched = []
                for f in rest:
                    f._wait()
                    f._run_callbacks()
                if self._notify_fn is not None:
                    self._notify_fn(QueueClosed)
                return

    # -- shutdown
    def close(self, wait=False):
        """Refuse new requests; queued ones are still served. ``wait=True``
        blocks until the workers have finished them and exited."""
        self._closed = True
        if self._core is not None:
            self._core.shutdown(True, bool(wait))
            if wait and self._dispatcher is not None and self._dispatcher is not threading.current_thread():
                self._dispatcher.join()

    def stop(self):
        """Refuse new requests and drop queued ones (their futures raise
        QueueClosedException); a request being read finishes."""
        self._closed = True
        if self._core is not None:
            self._core.shutdown(False, True)

    def stats(self):
        """Counters of the request engine."""
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
