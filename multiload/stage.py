"""Stages: memory that holds one Reader request's result (multitables'
``Stage`` and ``StagePool``), and the one rule of who may use it when.

Stage ownership -- the rule, stated here and kept only here
------------------------------------------------------------
A stage is *free* or *lent* to one request. ``stage._lend(ds)`` lends it
(RuntimeError if it is lent; a pool waits for a free stage instead) and
returns the *loan*, a one-element list holding the stage (``loan[0]``);
the request ends it with ``end_loan(loan, writer)`` when its result is
taken, or it is cancelled, failed or dropped. A loan ends once (the pop of
its one element is atomic): later calls do nothing, from any thread.

``writer`` is the C request (``_core`` Request) if it may still write into
the stage: the rows go straight into the stage (no numpy indexing left to
apply to a temporary array) and the request has not settled with success
or as cancelled -- a request that succeeded has always released its
destination, and a cancelled one never touched it (src/reader.c). Else
None. If ``writer.busy()`` -- a thread does still write into the stage:
the read is running, or the reader was stopped during it -- the stage is
not free yet: it stays lent to the writer, and it becomes free the first
time someone who wants it (the next ``_lend``, a pool looking for a free
stage) finds ``writer.busy()`` False. Nothing waits for that, and nothing
outside this module asks whether a stage is being written: the C
request's ``busy()`` is the one source of truth, this module its one
reader. (The stage's *memory* is a separate matter: the
binding keeps the buffer alive while a worker writes into it, even after
the stage and its request are dropped.)

Workload: one ``_lend`` and one ``end`` per request, on the one-row fast
path too, so a loan is a bare list and ending it a pop and a lock release.

May import: numpy, :mod:`multiload._args`, :mod:`multiload._signals`,
:mod:`multiload._handle`.
"""

import collections
import math
import queue
import threading
import time

import numpy as np

from ._args import positive_int
from ._handle import unpicklable
from ._signals import SharedMemoryError

__all__ = ["Stage", "StagePool"]


def _where(ds):
    """' (request on dataset '/x' of file 'f.h5')' for an error message
    about a request on dataset proxy ``ds`` (or None)."""
    if ds is None:
        return ""
    return f" (request on dataset {ds._path!r} of file {ds._reader._filename!r})"


def check_fits(stage, nbytes, shape, dtype, ds):
    """SharedMemoryError (multitables' wording first) unless a result of
    ``nbytes`` (shape ``shape``, ``dtype``) of dataset proxy ``ds`` fits
    ``stage`` (a stage or a pool)."""
    cap = stage._capacity()
    if nbytes > cap:
        raise SharedMemoryError(f"Stage is smaller than requested array: {cap} < {nbytes} "
                                f"(result shape {shape}, dtype {dtype}; dataset {ds._path!r} "
                                f"of file {ds._reader._filename!r})")


def end_loan(loan, writer=None):
    """End ``loan`` (once; later calls do nothing, from any thread).
    ``writer``: the C request if it may still write into the stage (see
    the rule above), else None."""
    try:
        stage = loan.pop()  # atomic: one caller gets it
    except IndexError:
        return
    if writer is not None and writer.busy():
        stage._free_when_written(writer)
    else:
        stage._free()


class Stage:
    """Memory that holds one request's result, at most ``size_nbytes``.

    One request at a time: a request on a busy stage raises RuntimeError.
    The stage is busy from ``reader.request()`` until the future's result is
    taken (``get``, ``get_direct``, ``get_unsafe``, ``get_proxy``,
    ``result``) or the future is cancelled or dropped. A future dropped
    while a worker still writes into the stage (or whose reader was stopped
    during its read) leaves the stage busy until that write is over; the
    next request on it then finds it free."""

    __reduce_ex__ = unpicklable(
        "a stage is memory of this process that requests write into",
        "make stages in the process that reads (dataset.create_stage(...)) and pickle the dataset")

    def __init__(self, size_nbytes):
        size_nbytes = int(size_nbytes)
        if size_nbytes < 0:
            raise ValueError("stage size must be >= 0")
        self._setup(size_nbytes, np.empty(max(1, size_nbytes), dtype=np.uint8))

    def _setup(self, size_nbytes, buf):
        self.size_nbytes = size_nbytes
        self._buf = buf  # uint8, at least one byte (a zero-size request still has a destination)
        self._lock = threading.Lock()  # held while lent
        self._closed = False
        self._pool = None  # the StagePool this stage returns to when freed
        self._writer = None  # the C request still writing into _buf past its loan; _writer_lock
        self._writer_lock = threading.Lock()

    def _capacity(self):
        return self.size_nbytes

    def _lend(self, ds=None):
        """Lend the stage to a request on dataset proxy ``ds`` (named in the
        error message); returns the loan."""
        if self._closed:
            raise RuntimeError("Stage has already been closed." + _where(ds))
        if not self._lock.acquire(False):
            if not (self._reclaim() and self._lock.acquire(False)):
                raise RuntimeError("Stage already fielding another request: it is busy until that request's "
                                   "result is taken, or it is cancelled or dropped" + _where(ds))
        return [self]  # the loan

    def _free(self):
        self._lock.release()
        if self._pool is not None:
            self._pool._return(self)

    def _free_when_written(self, writer):
        """Free once ``writer`` no longer writes into the stage: now if it is
        done already, else at the first _reclaim() that finds it done."""
        with self._writer_lock:
            self._writer = writer
        self._reclaim()

    def _reclaim(self):
        """Free the stage if the writer that kept it past its loan is done.
        True if it did."""
        with self._writer_lock:
            writer = self._writer
            if writer is None or writer.busy():
                return False
            self._writer = None
        self._free()
        return True

    def _view(self, dtype, shape):
        nbytes = math.prod(shape) * dtype.itemsize
        return self._buf[:nbytes].view(dtype).reshape(shape)

    def close(self):
        """Refuse further requests. Memory is freed once no array views it."""
        self._closed = True

    def __repr__(self):
        return f"<multiload Stage {self.size_nbytes} bytes{' closed' if self._closed else ''}>"


class _ArrayStage(Stage):
    """The result array of ``reader.read()``, posing as a stage: the rows
    are read straight into it."""

    def __init__(self, out):
        self._setup(out.nbytes, out.reshape(-1).view(np.uint8) if out.size else np.empty(1, np.uint8))


class StagePool:
    """``n`` stages of one size handed out in turn: a request on a pool
    waits until a stage is free (``timeout`` seconds, then queue.Empty)."""

    __reduce_ex__ = unpicklable(
        "its stages are memory of this process that requests write into",
        "make the pool in the process that reads (dataset.create_stage_pool(...)) and pickle the dataset")

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

    def _lend(self, ds=None):
        """Lend a free stage (waiting for one); returns its loan."""
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            with self._cvar:
                if self._free:
                    stage = self._free.popleft()
                    break
            # Stages kept past their loans by a write in flight come back
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
            return stage._lend(ds)
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
