"""Reading the batches of one epoch: blocks read ahead, rows gathered.

A ``Feed`` serves one consumer a list of steps of an epoch whose order an
:class:`multiload.Order` gives. Two ways of reading, by the shuffle:

- **Blocks** (``"none"``, ``"block"``, ``"window"``): the rows of a batch
  lie in few blocks (whole chunks, ``block_rows`` rows). The feed plans
  steps ahead and keeps every block a planned step needs: a block is read
  once, with all its chunks decoded in parallel by the C request engine,
  when a planned step first needs it, and dropped when no planned step
  needs it any more. Steps are planned ahead while the blocks they keep
  stay within ``cap_blocks`` -- the memory bound. A batch is then gathered
  from its blocks with numpy. Under ``"window"`` a block is needed by the
  steps of its window only, so with ``cap_blocks`` at least the window's
  blocks of every stream the rank reads (the default), every block is read
  exactly once per epoch.
- **Rows** (``"global"``): a batch's rows are scattered over the whole
  dataset, so each step is one batched gather of its rows by the request
  engine (sorted into file order there; decoded chunk rows are cached),
  issued ``ahead_steps`` steps early.

Reads are requests of a ``_core.ReaderCore``; an error of one reaches the
consumer at the step that needs it. The request engine holds each
destination's buffer until the request has finished, so closing a feed
with reads in flight is safe.

May import: numpy, :mod:`multiload._slots`.
"""

import collections
import time

import numpy as np

__all__ = ["Feed"]


def _bytes(a):
    """A flat uint8 view of the C-contiguous array ``a``."""
    return a.reshape(-1).view(np.uint8)


class _Block:
    __slots__ = ("bufs", "reqs", "rows", "ready")

    def __init__(self, bufs, reqs, rows):
        self.bufs = bufs
        self.reqs = reqs
        self.rows = rows
        self.ready = False


class Feed:
    """The batches of ``steps`` (an iterable of step numbers, in order) of
    the epoch ``order`` describes, for ``rank`` of ``world_size``.

    ``next()`` returns ``(arrays, valid)``: one array per dataset, and the
    valid mask under ``tail="pad"`` (else None). ``pool`` (a SlotPool, or
    None for fresh arrays) supplies the batch memory."""

    def __init__(self, core, sources, order, steps, rank, world_size, *, pool, cap_blocks, ahead_steps, stats):
        self._core = core
        self._src = sources
        self._order = order
        self._steps = iter(steps)
        self._rank = rank
        self._world = world_size
        self._pool = pool
        self._B = order.block_rows
        self._cap = max(1, int(cap_blocks))
        self._ahead_steps = max(1, int(ahead_steps))
        self._stats = stats
        self._global = order.shuffle == "global"
        self._planned = collections.deque()   # (step, rows, valid, blocks or pending reads)
        self._need = collections.Counter()    # block -> planned steps that need it
        self._held = {}                       # block -> _Block
        self._spare = []                      # block buffers to reuse
        self._kept = None                     # a step taken from steps, not planned yet
        self._exhausted = False
        self._closed = False

    # -- planning
    def _plan_more(self):
        """Plan steps while the memory bound allows (at least one)."""
        while not self._exhausted:
            if self._planned and (len(self._planned) >= self._ahead_steps if self._global
                                  else len(self._held) >= self._cap):
                return
            step, self._kept = (self._kept, None) if self._kept is not None else (next(self._steps, None), None)
            if step is None:
                self._exhausted = True
                return
            got = self._order.local_batch(step, self._rank, self._world)
            rows, valid = got if isinstance(got, tuple) else (got, None)
            if self._global:
                self._planned.append((step, rows, valid, self._issue_rows(rows)))
                continue
            blocks = np.unique(rows // self._B)
            if self._planned and len(self._held) + sum(int(b) not in self._held for b in blocks) > self._cap:
                self._kept = step  # planned once blocks are dropped
                return
            for b in blocks.tolist():
                if self._need[b] == 0 and b not in self._held:
                    self._held[b] = self._issue_block(b)
                self._need[b] += 1
            self._planned.append((step, rows, valid, blocks))

    def _issue_block(self, b):
        B = self._B
        row0 = b * B
        n = min(B, self._src.n_rows - row0)
        bufs = self._spare.pop() if self._spare else \
            [np.empty((B, *shape), dt) for shape, dt in zip(self._src.row_shapes, self._src.dtypes)]
        reqs = []
        for f, local, cnt, off in self._src.pieces(row0, n):
            for d, L in enumerate(self._src.layouts[f]):
                dest = bufs[d][off:off + cnt]
                if dest.nbytes:
                    reqs.append(self._core.submit(L, row0=local, n=cnt, dest=_bytes(dest)))
        self._stats["blocks_read"] += 1
        self._stats["rows_read"] += n
        return _Block(bufs, reqs, n)

    def _issue_rows(self, rows):
        """The reads of one global-shuffle batch, into its output arrays."""
        outs = self._new_batch(len(rows))
        reqs, scatter = [], []
        for f, pos, local in self._src.split_rows(rows):
            for d, L in enumerate(self._src.layouts[f]):
                if pos is None:
                    dest = outs[d]
                else:
                    dest = np.empty((len(local), *outs[d].shape[1:]), outs[d].dtype)
                    scatter.append((d, pos, dest))
                if dest.nbytes:
                    reqs.append(self._core.submit(L, rows=np.ascontiguousarray(local, np.int64), n=len(local),
                                                  dest=_bytes(dest)))
        self._stats["rows_read"] += len(rows)
        return outs, reqs, scatter

    def _new_batch(self, n):
        if self._pool is not None:
            return self._pool.take(n)
        return [np.empty((n, *shape), dt) for shape, dt in zip(self._src.row_shapes, self._src.dtypes)]

    # -- serving
    def next(self):
        """The next step's ``(step, arrays, valid)``; StopIteration at the end."""
        if self._closed:
            raise RuntimeError("this feed is closed")
        self._plan_more()
        if not self._planned:
            raise StopIteration
        step, rows, valid, what = self._planned.popleft()
        t0 = time.perf_counter()
        if self._global:
            outs, reqs, scatter = what
            for q in reqs:
                _settle(q)
            for d, pos, tmp in scatter:
                outs[d][pos] = tmp
        else:
            for b in what.tolist():
                blk = self._held[b]
                if not blk.ready:
                    for q in blk.reqs:
                        _settle(q)
                    blk.reqs = ()
                    blk.ready = True
            self._stats["wait_s"] += time.perf_counter() - t0
            outs = self._gather(rows, what)
            for b in what.tolist():
                self._need[b] -= 1
                if self._need[b] == 0:
                    del self._need[b]
                    self._spare.append(self._held.pop(b).bufs)
            self._plan_more()  # read ahead while the consumer works
            return step, outs, valid
        self._stats["wait_s"] += time.perf_counter() - t0
        self._plan_more()
        return step, outs, valid

    def _gather(self, rows, blocks):
        outs = self._new_batch(len(rows))
        B = self._B
        blk_of = rows // B
        if len(blocks) == 1:
            blk = self._held[int(blocks[0])]
            local = rows - int(blocks[0]) * B
            for d, out in enumerate(outs):
                np.take(blk.bufs[d], local, axis=0, out=out)
            return outs
        order = np.argsort(blk_of, kind="stable")
        sorted_blk = blk_of[order]
        cuts = np.flatnonzero(np.diff(sorted_blk)) + 1
        starts = np.concatenate([[0], cuts])
        stops = np.concatenate([cuts, [len(rows)]])
        for s, e in zip(starts.tolist(), stops.tolist()):
            pos = order[s:e]
            b = int(sorted_blk[s])
            local = rows[pos] - b * B
            bufs = self._held[b].bufs
            for d, out in enumerate(outs):
                out[pos] = bufs[d][local]
        return outs

    def held_blocks(self):
        return len(self._held)

    def close(self):
        """Drop every block and planned read; reads in flight finish into
        buffers the request engine keeps alive."""
        self._closed = True
        for blk in self._held.values():
            for q in blk.reqs:
                q.cancel()
        for entry in self._planned:
            if self._global:
                for q in entry[3][1]:
                    q.cancel()
        self._held.clear()
        self._planned.clear()
        self._need.clear()
        self._spare.clear()


def _settle(q):
    """Wait for read ``q`` and raise its error, if any."""
    q.wait(None)
    q.check()

