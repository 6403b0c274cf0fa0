"""The order of an epoch: a pure, versioned function (src/order.c)."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

from . import _core

__all__ = ["Order"]


def _rebuild(kwargs):
    return Order(**kwargs)


class Order:
    """Which row comes where in one epoch, for every rank: no I/O, O(1) memory.

    The epoch's rows are put in a keyed order, cut into ``num_streams``
    equal streams of whole blocks (the rest, with the short last block, is
    the tail) and interleaved one row per stream in turn into one global
    sequence, the tail first (last under ``shuffle="none"``). Global batch
    ``t`` is positions ``[t*global_batch, (t+1)*global_batch)``; rank ``r``
    of ``R`` takes every ``R``-th of them starting at ``r``, so outside the
    tail it reads only the streams ``s = r (mod R)``. The
    global sequence does not depend on ``R``: any world size dividing
    ``num_streams`` and ``global_batch`` partitions the same batches. The
    exact definition (the contract of ``version=1``) is in src/order.c and
    docs/training.md ("Order").

    Parameters
    ----------
    n_rows : int
        Rows in the dataset (>= 0).
    block_rows : int
        Rows per block (>= 1); pass the chunk-aligned block size, so that a
        block is whole chunks.
    seed, epoch : int
        Key of the permutations (>= 0, below 2**64). Different epochs give
        different orders; the permutations are keyed Feistel bijections,
        independent of numpy.
    shuffle : {"none", "block", "window", "global"}
        ``"none"``: dataset order; ``"block"``: whole blocks permuted, rows
        inside a block in order; ``"window"``: blocks permuted, then rows
        permuted inside each window of ``window_rows`` rows of a stream;
        ``"global"``: every row permuted.
    window_rows : int, optional
        ``shuffle="window"`` only: a multiple of ``block_rows``; default 8
        blocks. A row never leaves its window.
    num_streams : int, optional
        Streams the epoch is cut into (default 1). Fix it when training
        starts: every world size that divides it sees the same order.
    global_batch : int
        Rows per step over all ranks (>= 1).
    tail : {"drop", "pad", "uneven"}
        ``"drop"``: ``n_rows // global_batch`` steps, each row at most once,
        fewer than one global batch dropped. ``"pad"``: ceil steps, the last
        batch filled with repeats of the epoch's first rows, marked invalid.
        ``"uneven"``: nothing dropped or repeated; the last batches are
        short and ranks' step counts may differ by one.
    version : int
        The order's version; 1 is the only one.

    Raises
    ------
    ValueError
        Saying the rule a parameter breaks.

    Examples
    --------
    >>> o = Order(10, block_rows=2, seed=0, epoch=0, shuffle="none", global_batch=4, tail="pad")
    >>> o.steps_per_epoch
    3
    >>> rows, valid = o.local_batch(2)
    >>> rows.tolist(), valid.tolist()
    ([8, 9, 0, 1], [True, True, False, False])
    """

    def __init__(self, n_rows: int, *, block_rows: int, seed: int, epoch: int,
                 shuffle: str = "none", window_rows: Optional[int] = None,
                 num_streams: Optional[int] = None, global_batch: int,
                 tail: str = "drop", version: int = 1) -> None:
        self._kwargs = dict(n_rows=n_rows, block_rows=block_rows, seed=seed, epoch=epoch,
                            shuffle=shuffle, window_rows=window_rows, num_streams=num_streams,
                            global_batch=global_batch, tail=tail, version=version)
        self._o = _core.Order(n_rows, **{k: v for k, v in self._kwargs.items() if k != "n_rows"})

    def row(self, k: int) -> int:
        """The ``k``-th row (0 <= k < n_rows) of the epoch's global sequence, in O(1).

        Raises IndexError outside ``[0, n_rows)``.
        """
        return self._o.row(k)

    def local_batch(self, step: int, rank: int = 0, world_size: int = 1
                    ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """Row indices of ``rank``'s batch at ``step``, as an int64 array.

        Element ``i`` is ``row(step*global_batch + rank + i*world_size)``.
        Under ``tail="drop"`` and ``"pad"`` the batch has
        ``global_batch // world_size`` rows; under ``"uneven"`` the last one
        may be shorter. Under ``tail="pad"`` only, the result is a pair
        ``(rows, valid)``: ``valid`` is a bool array, False exactly where the
        row repeats one to fill the last batch (``row(k % n_rows)`` for
        positions ``k >= n_rows``).

        Raises ValueError when ``rank`` is outside ``[0, world_size)``, or
        ``world_size`` does not divide ``num_streams`` and ``global_batch``;
        IndexError when ``step`` is outside ``[0, steps(rank, world_size))``.
        """
        return self._o.local_batch(step, rank, world_size)

    def steps(self, rank: int = 0, world_size: int = 1) -> int:
        """Batches ``rank`` of ``world_size`` gets in the epoch.

        Under ``tail="drop"`` and ``"pad"`` this is ``steps_per_epoch`` for
        every rank and world size; under ``"uneven"`` it is that rank's own
        count (``steps_per_epoch`` or one fewer).
        """
        return self._o.steps(rank, world_size)

    @property
    def steps_per_epoch(self) -> int:
        """Global batches in the epoch: ``n_rows // global_batch`` under drop,
        ``ceil(n_rows / global_batch)`` under pad and uneven (under uneven the
        most any rank gets, rank 0's); the same for every world size."""
        return self._o.steps_per_epoch

    n_rows = property(lambda self: self._o.n_rows, doc="Rows in the dataset.")
    block_rows = property(lambda self: self._o.block_rows, doc="Rows per block.")
    seed = property(lambda self: self._o.seed, doc="Key of the permutations.")
    epoch = property(lambda self: self._o.epoch, doc="The epoch.")
    shuffle = property(lambda self: self._o.shuffle, doc="The shuffle kind.")
    window_rows = property(lambda self: self._o.window_rows,
                           doc="Rows per window under shuffle='window' (default resolved), else None.")
    num_streams = property(lambda self: self._o.num_streams, doc="Streams the epoch is cut into.")
    global_batch = property(lambda self: self._o.global_batch, doc="Rows per step over all ranks.")
    tail = property(lambda self: self._o.tail, doc="The tail rule.")
    version = property(lambda self: self._o.version, doc="The order's version.")
    stream_rows = property(lambda self: self._o.stream_rows,
                           doc="Rows of each stream: (n_rows // block_rows // num_streams) * block_rows.")
    tail_rows = property(lambda self: self._o.tail_rows,
                         doc="Rows after the interleaved streams: n_rows - num_streams * stream_rows.")

    def __reduce__(self):
        return (_rebuild, (self._kwargs,))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items() if k != "n_rows")
        return f"Order({self._kwargs['n_rows']!r}, {args})"
