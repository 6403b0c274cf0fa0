"""I/O budgets: limits of bytes and I/Os per second shared by streams.

A :class:`Budget` is a pair of token buckets (bytes per second, I/Os per
second) enforced in the C core (src/budget.c). Every Streamer queue,
Reader, FileLoader and Writer given the same Budget object draws from the
same buckets: before each read (or chunk write) a worker takes its bytes
and one I/O per request, and sleeps (woken at once by ``close()``; the
Writer's by ``close(abort=True)``) while the bucket is empty. See docs/budgets.md for the exact rules.
"""

import copyreg
import math

from . import _core

__all__ = ["Budget"]

_U64_MAX = 2**64 - 1


def _rate(name, value):
    """A rate argument: None (unlimited) -> 0, else an integer >= 1."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or None, not {type(value).__name__}")
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be > 0 (or None: unlimited), got {value!r}")
    if value == math.inf:
        return 0
    return min(_U64_MAX, max(1, int(math.ceil(value))))


def _priority(value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"priority must be an int, not {type(value).__name__}")
    if not -2**31 <= value < 2**31:
        raise ValueError(f"priority must fit in 32 bits, got {value}")
    return value


class Budget:
    """Limits of bytes and I/Os per second, shared by every stream given it.

    Parameters
    ----------
    max_bytes_per_s : float, optional
        Bytes read per second by all streams of this budget together.
        ``None`` (default): unlimited.
    max_iops : float, optional
        Read requests per second (a block's read, a batch's chunk reads
        count one each, a file read one). ``None``: unlimited.
    priority : int, default 0
        Who is served first when several reads wait on this budget's
        buckets: higher first, equal priorities in arrival order (strict
        priority). :meth:`share` makes a handle on the same buckets with
        another priority, e.g. for background work.

    Notes
    -----
    Each bucket holds one second of its rate (the burst) and starts full.
    A read passes when its bucket holds ``min(its size, one second of
    rate)`` tokens, then takes its whole size (a read larger than a
    second's worth passes on a full bucket and leaves a debt). Pass the
    object as ``budget=`` to :meth:`Streamer.get_queue` (or
    ``Streamer(..., budget=)``), :class:`Reader`, :class:`FileLoader` and
    :class:`Writer` (which is charged each chunk's stored bytes).

    A Budget pickles as its limits and priority: the copy, in another
    process, is a new budget of the same limits (buckets are per process);
    objects pickled together in one pickle stay one budget there.
    """

    __slots__ = ("_core", "_priority", "__weakref__")

    def __init__(self, max_bytes_per_s=None, max_iops=None, priority=0):
        self._core = _core.BudgetCore(_rate("max_bytes_per_s", max_bytes_per_s), _rate("max_iops", max_iops))
        self._priority = _priority(priority)

    @classmethod
    def _of_core(cls, core, priority):
        self = cls.__new__(cls)
        self._core = core
        self._priority = priority
        return self

    def share(self, priority):
        """A handle on the same buckets with another priority.

        Streams given either object draw from one budget; when reads of
        both wait, those of the higher priority go first.

        Parameters
        ----------
        priority : int

        Returns
        -------
        Budget
        """
        return Budget._of_core(self._core, _priority(priority))

    @property
    def max_bytes_per_s(self):
        """int or None: the byte rate, ``None`` for unlimited."""
        return self._core.max_bytes_per_s or None

    @property
    def max_iops(self):
        """int or None: the I/O rate, ``None`` for unlimited."""
        return self._core.max_iops or None

    @property
    def priority(self):
        """int: this handle's priority among the budget's waiting reads."""
        return self._priority

    def stats(self):
        """What every stream of this budget took, since it was made.

        Returns
        -------
        dict
            ``bytes`` and ``ios`` taken, ``takes`` (reads that took
            tokens), ``throttled`` (those that had to wait),
            ``throttled_seconds`` (wall time during which at least one read
            waited), ``elapsed_seconds`` (since the budget was made),
            ``bytes_per_s`` and ``iops`` (achieved: taken / elapsed),
            ``waiting`` (reads waiting now).
        """
        return self._core.stats()

    def __reduce__(self):
        # The core pickles as its limits (copyreg below): the pickle memo
        # keeps handles of one core, pickled together, on one copy.
        return (_rebuild, (self._core, self._priority))

    def __repr__(self):
        return (f"Budget(max_bytes_per_s={self.max_bytes_per_s!r}, max_iops={self.max_iops!r}, "
                f"priority={self._priority!r})")


def _rebuild(core, priority):
    return Budget._of_core(core, priority)


copyreg.pickle(_core.BudgetCore, lambda c: (_core.BudgetCore, (c.max_bytes_per_s, c.max_iops)))


def core_of(budget):
    """``(core, priority)`` of a ``budget=`` argument; ``(None, 0)`` for None.

    Raises TypeError for anything else.
    """
    if budget is None:
        return None, 0
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a multiload.Budget or None, not {type(budget).__name__}")
    return budget._core, budget._priority
