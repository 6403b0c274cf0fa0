"""Reading the batches of one epoch: rows gathered, blocks read ahead.

A ``Feed`` serves one consumer a list of steps of an epoch whose order an
:class:`multiload.Order` gives. Each dataset is read one of two ways:

- **Rows**: the batch's rows are one batched gather of the C request
  engine, straight into the batch's memory, issued ``row_ahead`` steps
  early. Used for every dataset under ``shuffle="global"`` (its rows are
  scattered over the whole dataset) and, under every shuffle, for a
  dataset stored one row per chunk (images, one per gzip chunk): there a
  row is a chunk, which the engine decodes straight into its place in the
  batch (src/reader_exec.c), so each chunk is decoded once, in parallel,
  and nothing is copied after -- on 2 cores the copy out of a block arena
  competes with the decoding threads for CPU.
- **Blocks** (the others under ``"none"``, ``"block"``, ``"window"``): the
  rows of a batch lie in few blocks (whole chunks, ``block_rows`` rows).
  The feed plans ``horizon`` steps ahead and keeps every block a planned
  step needs: a block is read once, all its chunks decoded in parallel,
  when a planned step first needs it, and dropped when no planned step
  needs it any more. Blocks live in a fixed arena of ``n_slots`` blocks
  per dataset -- the memory bound -- and a batch is gathered from it with
  one ``numpy.take`` per dataset. Under ``"window"`` a block is needed by
  the steps of its window only, and two uses of it are never further apart
  than the window's span of steps: with a horizon of at least that span
  (BatchStream's), no block is dropped before its window is over, so each
  block is read exactly once per epoch.

Reads are requests of a ``_core.ReaderCore``; an error of one reaches the
consumer at the step that needs it. The request engine holds each
destination's buffer until the request has finished, so closing a feed
with reads in flight is safe.

May import: numpy.
"""

import collections
import gc
import time

import numpy as np

__all__ = ["Feed", "row_addressable", "submit_gather", "settle_gather"]


def _bytes(a):
    """A flat uint8 view of the C-contiguous array ``a``."""
    return a.reshape(-1).view(np.uint8)


def row_addressable(sources, d):
    """True when dataset ``d`` is stored one row per chunk in every file."""
    for row in sources.layouts:
        c = row[d].chunks
        if not c or c[0] != 1:
            return False
    return True


def _settle(q):
    """Wait for read ``q`` and raise its error, if any."""
    q.wait(None)
    q.check()


def submit_gather(core, sources, rows, outs, datasets):
    """Submit the row gathers of logical ``rows`` (int64, any order) of the
    datasets ``datasets`` (indices) straight into ``outs`` (one array per
    dataset, ``len(rows)`` rows). Rows of several files go through a
    temporary each. Returns ``(reqs, scatter)`` for :func:`settle_gather`."""
    reqs, scatter = [], []
    for f, pos, local in sources.split_rows(rows):
        local = np.ascontiguousarray(local, np.int64)
        for d in datasets:
            if pos is None:
                dest = outs[d]
            else:
                dest = np.empty((len(local), *outs[d].shape[1:]), outs[d].dtype)
                scatter.append((d, pos, dest))
            if dest.nbytes:
                reqs.append(core.submit(sources.layouts[f][d], rows=local, n=len(local), dest=_bytes(dest)))
    return reqs, scatter


def settle_gather(reqs, scatter, outs):
    """Wait for the reads of :func:`submit_gather` (raising the first
    error) and put the rows read through temporaries in place."""
    for q in reqs:
        _settle(q)
    for d, pos, tmp in scatter:
        outs[d][pos] = tmp


class _Block:
    __slots__ = ("slot", "reqs")

    def __init__(self, slot, reqs):
        self.slot = slot
        self.reqs = reqs


class _Step:
    __slots__ = ("step", "rows", "valid", "blocks", "outs", "reqs", "scatter")

    def __init__(self, step, rows, valid, blocks):
        self.step, self.rows, self.valid, self.blocks = step, rows, valid, blocks
        self.outs = None   # the batch's arrays, once its row reads are issued
        self.reqs = ()
        self.scatter = ()


class Feed:
    """The batches of ``steps`` (an iterable of increasing step numbers) of
    the epoch ``order`` describes, for ``rank`` of ``world_size``.

    ``by_rows[d]`` says dataset ``d`` is read by row gathers (else through
    the block arena). ``next()`` returns ``(step, arrays, valid)``: one
    array per dataset, and the valid mask under ``tail="pad"`` (else
    None). ``pool`` (a SlotPool, or None for fresh arrays) supplies the
    batch memory, of which the caller may hold ``outstanding`` batches."""

    def __init__(self, core, sources, order, steps, rank, world_size, *, by_rows, pool, outstanding, horizon,
                 row_ahead, n_slots, stats):
        self._core = core
        self._src = sources
        self._order = order
        self._steps = iter(steps)
        self._rank = rank
        self._world = world_size
        self._pool = pool
        self._outstanding = outstanding
        self._B = order.block_rows
        self._by_rows = list(by_rows)
        self._blocky = [d for d, r in enumerate(self._by_rows) if not r]
        self._horizon = max(1, int(horizon)) if self._blocky else max(1, int(row_ahead))
        self._row_ahead = max(1, int(row_ahead))
        self._stats = stats
        self._planned = collections.deque()   # _Step, in order
        self._need = collections.Counter()    # block -> planned steps that need it
        self._held = {}                       # block -> _Block
        self._kept = None                     # a step taken from steps, not planned yet
        self._exhausted = False
        self._closed = False
        self._arena = {}
        if self._blocky:
            n_slots = max(1, int(n_slots))
            self._arena = {d: np.empty((n_slots * self._B, *sources.row_shapes[d]), sources.dtypes[d])
                           for d in self._blocky}
            self._free_slots = list(range(n_slots - 1, -1, -1))

    # -- planning
    def _plan_more(self):
        """Plan the steps within the horizon (at least one), then issue the
        row reads of the first ``row_ahead`` planned steps."""
        while not self._exhausted:
            if self._kept is not None:
                step, self._kept = self._kept, None
            else:
                step = next(self._steps, None)
            if step is None:
                self._exhausted = True
                break
            if self._planned and step - self._planned[0].step > self._horizon:
                self._kept = step
                break
            got = self._order.local_batch(step, self._rank, self._world)
            rows, valid = got if isinstance(got, tuple) else (got, None)
            blocks = None
            if self._blocky:
                blocks = np.unique(rows // self._B)
                new = [b for b in blocks.tolist() if b not in self._held]
                if len(new) > len(self._free_slots):
                    if self._planned:
                        self._kept = step  # planned once blocks are dropped
                        break
                    raise RuntimeError(f"internal: step {step} needs {len(new)} blocks, only "
                                       f"{len(self._free_slots)} slots are free")
                for b in new:
                    self._held[b] = self._issue_block(b)
                for b in blocks.tolist():
                    self._need[b] += 1
            self._planned.append(_Step(step, rows, valid, blocks))
        if len(self._blocky) == len(self._by_rows):
            return  # no row gathers: a batch's memory is taken when it is served
        for i, st in enumerate(self._planned):
            if i >= self._row_ahead:
                break
            if st.outs is None and not self._issue_rows(st, ahead=True):
                break  # every batch slot is held: read ahead later

    def _issue_block(self, b):
        B = self._B
        row0 = b * B
        n = min(B, self._src.n_rows - row0)
        slot = self._free_slots.pop()
        base = slot * B
        reqs = []
        for f, local, cnt, off in self._src.pieces(row0, n):
            for d in self._blocky:
                dest = self._arena[d][base + off:base + off + cnt]
                if dest.nbytes:
                    reqs.append(self._core.submit(self._src.layouts[f][d], row0=local, n=cnt, dest=_bytes(dest)))
        self._stats["blocks_read"] += 1
        self._stats["block_rows_read"] += n
        return _Block(slot, reqs)

    def _issue_rows(self, st, ahead):
        """Take the batch's memory and issue the row gathers of its
        row-read datasets, straight into it. Reading ahead (``ahead``), a
        batch slot is only taken if one is free: False if none is; else
        the pool's RuntimeError says every slot is held."""
        outs = self._new_batch(len(st.rows), ahead)
        if outs is None:
            return False
        st.outs = outs
        if len(self._blocky) == len(self._by_rows):
            return True
        st.reqs, st.scatter = submit_gather(self._core, self._src, st.rows, outs,
                                            [d for d, r in enumerate(self._by_rows) if r])
        self._stats["gathered_rows"] += len(st.rows)
        return True

    def _new_batch(self, n, ahead=False):
        if self._pool is not None:
            return self._pool.try_take(n) if ahead else self._pool.take(n)
        return [np.empty((n, *shape), dt) for shape, dt in zip(self._src.row_shapes, self._src.dtypes)]

    # -- serving
    def next(self):
        """The next step's ``(step, arrays, valid)``; StopIteration at the end."""
        if self._closed:
            raise RuntimeError("this feed is closed")
        self._plan_more()
        if not self._planned:
            raise StopIteration
        st = self._planned[0]
        self._check_held()  # raises with the step still planned: no batch is lost
        if st.outs is None:
            self._issue_rows(st, ahead=False)
        self._planned.popleft()
        t0 = time.perf_counter()
        settle_gather(st.reqs, st.scatter, st.outs)
        if self._blocky:
            for b in st.blocks.tolist():
                blk = self._held[b]
                for q in blk.reqs:
                    _settle(q)
                blk.reqs = ()
            self._stats["wait_s"] += time.perf_counter() - t0
            self._gather(st)
            for b in st.blocks.tolist():
                self._need[b] -= 1
                if self._need[b] == 0:
                    del self._need[b]
                    self._free_slots.append(self._held.pop(b).slot)
        else:
            self._stats["wait_s"] += time.perf_counter() - t0
        self._plan_more()  # read ahead while the consumer works
        return st.step, st.outs, st.valid

    def _check_held(self):
        """RuntimeError when the caller holds ``outstanding`` batches (slots
        taken for batches read ahead do not count)."""
        if self._pool is None:
            return
        ahead = sum(1 for p in self._planned if p.outs is not None)
        if self._pool.held() - ahead >= self._outstanding:
            gc.collect()  # batches held only by reference cycles come back
            if self._pool.held() - ahead >= self._outstanding:
                raise self._pool.held_error(self._outstanding)

    def _gather(self, st):
        """The block-read datasets' rows of step ``st`` from the arena: one
        take per dataset."""
        B, rows, blocks = self._B, st.rows, st.blocks
        if len(blocks) == 1:
            base = self._held[int(blocks[0])].slot * B - int(blocks[0]) * B
        else:
            slot_base = np.array([self._held[b].slot * B - b * B for b in blocks.tolist()], np.int64)
            base = slot_base[np.searchsorted(blocks, rows // B)]
        idx = rows + base
        for d in self._blocky:
            np.take(self._arena[d], idx, axis=0, out=st.outs[d])

    def close(self):
        """Drop every block and planned read; reads in flight finish into
        buffers the request engine keeps alive."""
        self._closed = True
        for blk in self._held.values():
            for q in blk.reqs:
                q.cancel()
        for st in self._planned:
            for q in st.reqs:
                q.cancel()
        self._held.clear()
        self._planned.clear()
        self._need.clear()
