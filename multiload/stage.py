"""Stages: memory that holds one Reader request's result (multitables'
``Stage`` and ``StagePool``)."""

import collections
import math
import queue
import threading
import time

import numpy as np

from ._args import positive_int

__all__ = ["Stage", "StagePool"]


def _where(ds):
    """' (request on dataset '/x' of file 'f.h5')' for an error message
    about a request on dataset proxy ``ds`` (or None)."""
    if ds is None:
        return ""
    return f" (request on dataset {ds._path!r} of file {ds._reader._filename!r})"


class Stage:
    """Memory that holds one request's result, at most ``size_nbytes``.

    One request at a time: a request on a busy stage raises RuntimeError.
    The stage is busy from ``reader.request()`` until the future's result is
    taken (``get``, ``get_direct``, ``get_unsafe``, ``get_proxy``,
    ``result``) or the future is cancelled or dropped. A future dropped
    while a worker still writes into the stage (or whose reader was stopped
    during its read) leaves the stage busy until that write is over; the
    next request on it then finds it free."""

    def __init__(self, size_nbytes):
        size_nbytes = int(size_nbytes)
        if size_nbytes < 0:
            raise ValueError("stage size must be >= 0")
        self.size_nbytes = size_nbytes
        self._buf = np.empty(max(1, size_nbytes), dtype=np.uint8)
        self._lock = threading.Lock()
        self._closed = False
        self._pool = None
        self._held_by = None  # a C request still writing into _buf: released once it is done
        self._held_lock = threading.Lock()

    def _capacity(self):
        return self.size_nbytes

    def _acquire(self, ds=None):
        """Take the stage for a request on dataset proxy ``ds`` (named in
        the error message)."""
        if self._closed:
            raise RuntimeError("Stage has already been closed." + _where(ds))
        if not self._lock.acquire(False):
            if not (self._reclaim() and self._lock.acquire(False)):
                raise RuntimeError("Stage already fielding another request: it is busy until that request's "
                                   "result is taken, or it is cancelled or dropped" + _where(ds))
        return self

    def _release(self):
        self._lock.release()
        if self._pool is not None:
            self._pool._return(self)

    def _release_when_written(self, creq):
        """Release once ``creq`` (a C request writing into this stage) is
        done with it: now if it is, else at the next _reclaim()."""
        with self._held_lock:
            self._held_by = creq
        self._reclaim()

    def _reclaim(self):
        """Release the stage if the request that held it past its future
        is done writing. True if it did."""
        with self._held_lock:
            creq = self._held_by
            if creq is None or creq.busy():
                return False
            self._held_by = None
        self._release()
        return True

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

    def _acquire(self, ds=None):
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            with self._cvar:
                if self._free:
                    stage = self._free.popleft()
                    break
            # Stages held past their futures by a write in flight come back
            # here (_reclaim returns them to the free list).
            if sum(s._reclaim() for s in self._stages):
                continue
            with self._cvar:
                if not self._free:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise queue.Empty()
                    self._cvar.wait(0.1 if left is None else min(left, 0.1))
        try:
            return stage._acquire(ds)
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
