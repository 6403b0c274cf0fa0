"""Batch memory that is reused only once nothing refers to it.

A training feed hands out every batch in memory it owns, and reuses that
memory for a later batch. Reusing it while the caller still holds the
batch (kept in a list, wrapped by ``torch.from_numpy``, sliced) would
change the caller's data under it. So a ``SlotPool`` gives each batch a
slot, and a slot comes back only when the last array that sees its memory
is gone:

- each array handed out is made by ``numpy.asarray`` of a fresh ``_Pin``
  (an object exporting the slot's memory through
  ``__array_interface__``), so every view, slice or tensor made from it
  keeps that ``_Pin`` alive -- numpy's base chain stops at a non-array
  base, and ``torch.from_numpy`` keeps the array;
- ``weakref.finalize`` on the ``_Pin`` returns the slot when it dies.

At most ``limit`` slots exist; when every one is held, ``take()`` runs one
garbage collection (batches in reference cycles) and then raises
RuntimeError saying how to copy, rather than ever reusing a live slot.

May import: numpy.
"""

import gc
import threading
import weakref

import numpy as np

__all__ = ["SlotPool"]


class _Pin:
    """Exports one slot array's memory; its death frees the slot."""

    __slots__ = ("__array_interface__", "_buf", "__weakref__")

    def __init__(self, buf):
        self._buf = buf
        self.__array_interface__ = buf.__array_interface__


class SlotPool:
    """Up to ``limit`` slots of arrays of ``specs`` (``[(shape, dtype), ...]``
    per slot), made on first need."""

    def __init__(self, specs, limit, what="batch"):
        self._specs = [(tuple(s), np.dtype(dt)) for s, dt in specs]
        self._limit = int(limit)
        self._what = what
        self._free = []    # slot arrays ready for reuse
        self._made = 0
        self._lock = threading.Lock()

    @property
    def limit(self):
        return self._limit

    def held(self):
        """Slots handed out and still referenced."""
        with self._lock:
            return self._made - len(self._free)

    def take(self, rows=None):
        """The arrays of a free slot (the first ``rows`` rows of each, when
        given), each pinning the slot until it and its views die.
        RuntimeError when every slot is held."""
        return self._hand_out(self._take_bufs(must=True), rows)

    def try_take(self, rows=None):
        """As take(), but None instead of an error (and no garbage
        collection) when every slot is held: for reading ahead."""
        bufs = self._take_bufs(must=False)
        return None if bufs is None else self._hand_out(bufs, rows)

    def _hand_out(self, bufs, rows):
        left = [len(bufs)]
        lock = self._lock
        free = self._free

        def release(_left=left, _bufs=bufs):
            _left[0] -= 1
            if _left[0] == 0:
                with lock:
                    free.append(_bufs)

        out = []
        for b in bufs:
            pin = _Pin(b if rows is None else b[:rows])
            weakref.finalize(pin, release)
            # The interface's descr flattens some dtypes (fields out of offset
            # order become V<n>, string fields lose h5py's metadata): view back.
            a = np.asarray(pin)
            out.append(a if a.dtype == b.dtype and a.dtype.metadata == b.dtype.metadata else a.view(b.dtype))
        return out

    def _take_bufs(self, must):
        """A free slot's arrays, or a new slot's; when every slot is held,
        None (not ``must``) or, after one garbage collection, RuntimeError."""
        for attempt in (0, 1):
            with self._lock:
                if self._free:
                    return self._free.pop()
                if self._made < self._limit:
                    self._made += 1
                    break
            if not must:
                return None
            if attempt == 0:
                gc.collect()  # batches held only by reference cycles come back here
        else:
            raise self.held_error(self._limit)
        return self._new_bufs()

    def held_error(self, n):
        """The error for ``n`` batches held by the caller, all the pool allows."""
        return RuntimeError(
            f"all {n} {self._what} slots are held: every batch handed out is still referenced (a batch, any "
            f"slice or view of it, and any torch tensor made from it pin its memory until they are gone). Drop "
            f"batches you no longer need, copy the ones you keep (np.array(batch) / tensor.clone()), pass "
            f"copy=True for batches in memory of their own, or raise outstanding=")

    def _new_bufs(self):
        """A new slot's arrays (the slot is counted in _made already)."""
        try:
            return [np.empty(s, dt) for s, dt in self._specs]
        except BaseException:
            with self._lock:
                self._made -= 1
            raise
