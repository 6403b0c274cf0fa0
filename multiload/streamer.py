"""The Streamer: sequential blocks of an HDF5 dataset, read ahead by native
worker threads into a ring buffer and handed out as zero-copy numpy views.

Drop-in compatible with ``multitables.Streamer``; see docs/streamer.md.
"""

import atexit
import copyreg
import numbers
import os
import threading
import warnings
import weakref

import numpy as np

from . import _core, _handle, vlstring
from . import budget as _budget
from ._args import UINT_MAX, open_file_options, positive_int
from ._io import io_mode_code
from ._signals import QueueClosed, SlowPathWarning
from . import _live_writers
from ._live_writers import flush_for_read as _flush_for_read

__all__ = ["Streamer", "Queue", "io_mode"]

#: Default block bytes for contiguous data: multitables' 128 KiB, kept so
#: that code (and tests) relying on multitables' block arithmetic run
#: unchanged. Larger blocks stream faster when the consumer is light
#: (measured on 2 cores, 1 KiB rows, warm cache: 256 KiB 16 GB/s, 1 MiB
#: 24 GB/s, 4 MiB 16 GB/s); pass block_size to choose one.
DEFAULT_CONTIGUOUS_BYTES = 128 * 1024
# Default read-ahead for small blocks: slots enough for this many bytes, at most this many slots.
READ_AHEAD_MIN_BYTES = 2 * 1024 * 1024
SMALL_BLOCK_SLOTS = 64
#: Default block bytes for chunked data, rounded to whole chunk rows so that
#: no chunk is decoded twice.
DEFAULT_CHUNKED_BYTES = 1024 * 1024

# Every live queue, so that interpreter exit stops worker threads before
# HDF5's own atexit handler tears the library down under them.
_live_queues = weakref.WeakSet()


@atexit.register
def _close_all_queues():
    for q in list(_live_queues):
        try:
            q.close()
        except Exception:
            pass


def io_mode():
    """Return the I/O engine new queues use.

    ``MULTILOAD_IO=pread`` (or ``=uring``) in the environment forces one; by
    default io_uring is used where the kernel allows it, else pread. An
    ``io_mode`` argument to :meth:`Streamer.get_queue` overrides both.

    Returns
    -------
    str
        ``'io_uring'`` or ``'pread'``.
    """
    return _core.default_io_mode()


def default_block_size(layout, field=None):
    """The block size (rows) multiload picks when none is given.

    Chunked data: a whole number of chunk rows, about 1 MiB per block.
    Contiguous data: 128 KiB per block, as multitables. Never more than the dataset's
    rows, never less than one row.
    """
    n_rows = layout.shape[0]
    row_bytes = max(1, layout.row_bytes)
    chunks = layout.chunks
    if chunks:
        chunk_rows = chunks[0]
        per_chunk_row = max(1, chunk_rows * row_bytes)
        rows = chunk_rows * max(1, DEFAULT_CHUNKED_BYTES // per_chunk_row)
    else:
        rows = max(1, DEFAULT_CONTIGUOUS_BYTES // row_bytes)
    return max(1, min(rows, n_rows))


def default_read_ahead(n_procs, block_bytes, direct=False):
    """The number of ring slots multiload uses when read_ahead is None.

    ``2 * n_procs + 1`` (multitables' default): each worker fills one slot
    while the others wait, ready. Small blocks get more slots, up to
    SMALL_BLOCK_SLOTS, so that about READ_AHEAD_MIN_BYTES are in flight.
    With few small slots the consumer and the workers take turns sleeping
    and every block costs a cross-core wake-up. Measured on 2 cores, warm
    cache: one 4 KiB row per block, 3 -> 64 slots: ~19 -> ~2.5 us per
    block; 128 KiB blocks (the contiguous default), 5 -> 16 slots: ~8 ->
    ~10-12 GB/s; 1 MiB blocks are best with 5 (32 slots: 18 -> 14 GB/s, the
    slots fall out of cache), so large blocks keep multitables' count.

    ``direct=True`` reads bypass the page cache, so the device's queue
    depth is the slots being read: each worker reads a batch of blocks at
    once, about 16 MiB in flight among all workers (src/readahead.h), and
    the default gives every worker and the consumer a full batch (1 MiB
    blocks, 2 workers: 24 slots).
    """
    slots = 2 * n_procs + 1
    if block_bytes > 0:
        slots = max(slots, min(SMALL_BLOCK_SLOTS, -(-READ_AHEAD_MIN_BYTES // block_bytes)))
        if direct:
            slots = max(slots, _core.direct_slots(block_bytes, min(n_procs, UINT_MAX)))
    return min(slots, UINT_MAX)


def _check_field(layout, field, filename, path):
    if field is None:
        return
    names = layout.dtype.names
    if not names or field not in names:
        raise KeyError(
            f"dataset {path!r} of file {filename!r} has no field {field!r}"
            + (f" (fields: {', '.join(names)})" if names else " (it is not a table)")
        )


def _check_direct(filename):
    """Fail at get_queue() rather than on every block if O_DIRECT is refused."""
    try:
        fd = os.open(filename, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
    except OSError as e:
        raise OSError(e.errno, f"direct=True: cannot open {filename!r} with O_DIRECT "
                      f"({e.strerror}); this filesystem may not support it", filename) from None
    os.close(fd)


_UINT64_MAX = 2**64 - 1


def _check_shuffle(shuffle, seed, epoch, rank, world_size, cyclic):
    """Validate get_queue's shuffle and shard keywords; return (permuted, seed, epoch, rank, world_size)."""
    if shuffle not in (None, "none", "block"):
        raise ValueError(f"shuffle must be None, 'none' or 'block', got {shuffle!r}")
    permuted = shuffle == "block"
    values = {}
    for name, value in (("seed", seed), ("epoch", epoch), ("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        values[name] = int(value)
    for name in ("seed", "epoch"):
        if not 0 <= values[name] <= _UINT64_MAX:
            raise ValueError(f"{name} must be in [0, 2**64), got {values[name]}")
    world_size, rank = values["world_size"], values["rank"]
    if not 1 <= world_size <= UINT_MAX:
        raise ValueError(f"world_size must be an integer in [1, {UINT_MAX}], got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size) = [0, {world_size}), got {rank}")
    if cyclic and permuted:
        raise ValueError("shuffle='block' needs cyclic=False: a shuffled queue is one pass "
                         "(make a queue per epoch with epoch=0, 1, ...)")
    if cyclic and world_size > 1:
        raise ValueError("world_size > 1 needs cyclic=False: a sharded queue is one pass")
    return permuted, values["seed"], values["epoch"], rank, world_size


class Queue:
    """Direct access to a stream's ring buffer; made by :meth:`Streamer.get_queue`.

    ``get()`` returns a guard for the next block, or :data:`QueueClosed` once
    the stream has ended or the queue was closed. ``with guard as block:``
    gives a zero-copy numpy view of the block, valid inside the with-block
    (copy it to keep it: the slot is reused). A guard also has ``index``
    (block number in this queue's stream: 0, 1, ...), ``start`` (dataset
    row of the block's first row; with ``shuffle`` or shards, the rows are
    ``[start, start + rows)`` and the block's number in dataset order is
    ``start // block_size``), ``rows``, ``array`` (another view),
    ``release()`` and ``released``.

    A queue is an iterator of guards and a context manager that closes it.
    ``get()`` is thread-safe. A queue is one pass over the dataset: a
    second ``for`` loop over it, in a thread whose first loop reached its
    end, raises RuntimeError (make a new queue for the next pass, or use
    ``cyclic=True``, which never ends); ``get()`` and ``iter()`` keep
    multitables' behaviour (``QueueClosed`` again, an empty loop).

    Attributes
    ----------
    block_size : int
        Rows per block (the last block is shorter when ``remainder=True``).
    n_blocks : int or None
        Blocks per pass: full blocks, plus the short last block when
        ``remainder=True``, divided by ``world_size`` (rounded down: this
        rank's share); ``None`` for a cyclic (endless) queue.
    read_ahead : int
        Slots in the ring (the ``read_ahead`` asked for, or the default
        chosen by :func:`default_read_ahead`); 0 for an empty dataset.
    dtype : numpy.dtype
        Dtype of the blocks (of the field, when one was selected).
    shape : tuple
        Shape of the dataset.
    cyclic, ordered : bool
        The modes the queue was made with.
    field : str or None
        The column streamed, if any.
    shuffle : {'none', 'block'}
        The block order (``'block'``: keyed by ``seed`` and ``epoch``).
    seed, epoch, rank, world_size : int
        As given to :meth:`Streamer.get_queue`.
    """

    __reduce_ex__ = _handle.unpicklable(
        "a queue is a stream in progress (worker threads and a ring of this process)",
        "pickle its Streamer and call get_queue() in the process that reads")

    def __init__(self, stream, layout, block_size, n_blocks, field, cyclic, ordered, read_ahead=0,
                 shuffle="none", seed=0, epoch=0, rank=0, world_size=1):
        self._stream = stream
        self._layout = layout
        self.block_size = block_size
        self.read_ahead = read_ahead
        self.n_blocks = n_blocks
        self.cyclic = cyclic
        self.ordered = ordered
        self.field = field
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.rank = rank
        self.world_size = world_size
        dtype = layout.dtype
        self.dtype = dtype[field] if field is not None else dtype
        self.shape = layout.shape
        self._closed = stream is None
        self._remainder = False  # Streamer._make_queue records remainder=True
        self._write_mark = None  # (_live_writers.mark(), filename) at the open: Streamer._make_queue
        # Threads whose iteration over the queue reached its end (StopIteration
        # from __next__): another for-loop of theirs over it is a second pass.
        self._ended_in = weakref.WeakSet()

    def _check_written(self):
        """FileChangedError if a Writer of this process wrote the dataset
        since this queue opened it (its chunks may have moved: _live_writers)."""
        if self._write_mark is not None:
            _live_writers.check(*self._write_mark)

    def get(self, timeout=None):
        """Return a guard for the next block, or :data:`QueueClosed`.

        Blocks until a block is ready (Ctrl-C interrupts the wait). Errors
        from the background (I/O errors, corrupt chunks) are raised here as
        ``OSError`` naming the file, dataset and block; the queue stays
        usable for the blocks after it.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait; ``TimeoutError`` after that. Default: forever.

        Returns
        -------
        Guard or QueueClosedType
            A guard for the next block (use ``with guard as block:``), or
            :data:`QueueClosed` at the end of the stream or after ``close()``.

        Raises
        ------
        OSError
            The block failed in the background (``errno``, ``filename``, and
            a message naming the block, rows and dataset).
        RuntimeError
            Every slot of the ring is held by unreleased guards of the
            calling thread, so waiting could never end. A view kept from a
            guard (``guard.array``) keeps its guard unreleased: keep copies
            (``np.array(block)``) instead.
        TimeoutError
            ``timeout`` passed without a block.
        FileChangedError
            A :class:`multiload.Writer` of this process wrote the dataset
            after this queue was made (its chunks may have moved: make a new
            queue; docs/writer.md).
        KeyboardInterrupt
            Ctrl-C while waiting.
        """
        stream = self._stream
        if stream is None:
            return QueueClosed
        if _live_writers.writes:  # a Writer of this process wrote: not this dataset since the open?
            self._check_written()
        guard = stream.take(timeout)
        return QueueClosed if guard is None else guard

    def iter(self):
        """Yield guards until the queue is closed or the stream ends.

        multitables' spelling. As in multitables, ``iter()`` on a queue that
        has ended yields nothing (a plain ``for guard in queue`` raises
        RuntimeError instead: see :meth:`__iter__`).

        Yields
        ------
        Guard
            One per block, as :meth:`get` returns them.
        """
        while True:
            guard = self.get()
            if guard is QueueClosed:
                return
            yield guard

    def __iter__(self):
        """The queue itself, an iterator of guards.

        Raises
        ------
        RuntimeError
            An earlier iteration of the calling thread over this queue
            reached its end: a queue is one pass over the dataset, so a
            second ``for`` loop over it would yield nothing. (A cyclic queue
            never ends. Other threads whose loops did not reach the end, and
            loops after ``get()`` returned ``QueueClosed``, get an empty loop,
            as consumers sharing one queue and multitables-style code should.)
        """
        if threading.current_thread() in self._ended_in:
            raise RuntimeError(
                "this queue has already ended (its pass is over, or it was closed): a queue "
                "makes one pass over the dataset, so iterating it again would yield nothing; "
                "make a new queue with Streamer.get_queue() for another pass, or use cyclic=True "
                "for an endless stream")
        return self

    def __next__(self):
        """The next guard, as :meth:`get`; ``StopIteration`` at the end."""
        guard = self.get()
        if guard is QueueClosed:
            self._ended_in.add(threading.current_thread())
            raise StopIteration
        return guard

    async def get_async(self, timeout=None):
        """``await queue.get_async()``: :meth:`get` for asyncio code.

        Returns a guard for the next block, or :data:`QueueClosed`, and
        raises what :meth:`get` raises. It never blocks the loop: when no
        block is ready it waits on the queue's event fd (one ``add_reader``
        per loop, no thread), which the stream's workers write when they
        publish a block or the queue closes. Cancelling the awaiting task
        just stops the wait (no block is taken). All coroutines of one loop
        run on one thread, so they share its reservations: guards held
        across ``await`` by other coroutines count as this thread's, and
        when all ``read_ahead`` slots are held this raises RuntimeError as
        :meth:`get` does (release guards before awaiting anything else).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait; ``TimeoutError`` after that. Default: forever.
        """
        stream = self._stream
        if stream is None:
            return QueueClosed
        if _live_writers.writes:  # a Writer of this process wrote: not this dataset since the open?
            self._check_written()
        try:
            fd = stream.event_fd()
        except ValueError:  # closed under us
            return QueueClosed
        from . import _aio

        guard = await _aio.poll_fd(fd, stream.take_nowait, timeout, "block became ready")
        return QueueClosed if guard is None else guard

    def __aiter__(self):
        """``async for guard in queue``: the guards of :meth:`get_async`
        until the stream ends or the queue is closed."""
        return self

    async def __anext__(self):
        guard = await self.get_async()
        if guard is QueueClosed:
            raise StopAsyncIteration
        return guard

    async def __aenter__(self):
        """``async with queue``: closes it at the end (as ``with``)."""
        return self

    async def __aexit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Stop the background workers and wait for them.

        Idempotent. Later ``get()`` calls return :data:`QueueClosed`. Blocks
        already handed out stay readable while their guards or views are
        alive; the ring's memory is freed when the last of them goes.
        """
        self._closed = True
        stream = self._stream
        if stream is not None:
            stream.close()

    @property
    def closed(self):
        """bool: True once the queue was closed (or was empty from the start)."""
        return self._closed

    def stats(self):
        """Counters since the queue started.

        Returns
        -------
        dict
            ``blocks`` (handed out), ``bytes`` (in those blocks),
            ``wait_seconds`` (time consumers spent blocked in ``get()``),
            ``errors`` (blocks that raised), ``io_mode`` (``'io_uring'`` or
            ``'pread'``: the engine the workers use), ``block_size`` and
            ``n_blocks``; and what the cold path did (docs/streamer.md,
            "Data not in the page cache"): ``prefetch_steps`` (steps of
            blocks ahead hinted to the kernel), ``resident_steps`` (steps
            found in the page cache and left alone), ``batch_blocks``
            (blocks a worker reads at once: more than 1 for ``direct=True``)
            and ``batched_blocks`` (blocks read that way). A queue with a
            budget also has ``budget``: a dict of what its reads took
            (``bytes``, ``ios``, ``bytes_per_s`` and ``iops`` achieved since
            the queue started, ``throttled_seconds``, ``throttled``, ...: as
            :meth:`multiload.Budget.stats`, for this queue alone).
        """
        if self._stream is None:
            st = {"blocks": 0, "bytes": 0, "wait_seconds": 0.0, "errors": 0, "io_mode": io_mode(),
                  "prefetch_steps": 0, "resident_steps": 0, "batched_blocks": 0, "batch_blocks": 1}
        else:
            st = self._stream.stats()
        st["block_size"] = self.block_size
        st["n_blocks"] = self.n_blocks
        return st

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return (f"<multiload.Queue block_size={self.block_size} n_blocks={self.n_blocks} "
                f"cyclic={self.cyclic} ordered={self.ordered}{' closed' if self._closed else ''}>")


# Where the arguments a Streamer() call may be given by mistake belong.
_GET_QUEUE_HINTS = dict.fromkeys(
    ("path", "n_procs", "read_ahead", "cyclic", "block_size", "ordered", "field", "remainder",
     "io_mode", "direct", "shuffle", "seed", "epoch", "rank", "world_size"), "Streamer.get_queue()")


# A guard is one reserved slot of a ring of this process: it does not pickle.
copyreg.pickle(_core.Guard, _handle.unpicklable(
    "a guard holds a slot of this process's ring",
    "pickle a copy of its block (numpy.array(block)) or the Streamer"))


class Streamer(_handle.Handle):
    """Stream blocks of rows out of the datasets of one HDF5 file.

    Parameters
    ----------
    filename : str or os.PathLike
        The HDF5 file. It is opened when a queue is made.
    budget : Budget, optional
        The I/O budget of this Streamer's queues (a queue's own
        ``budget=`` overrides it): see :class:`multiload.Budget` and
        docs/budgets.md.
    **kw_args
        PyTables ``open_file`` options, accepted for compatibility with
        multitables, which passes them on: ``mode`` (``'r'`` only),
        ``title``, ``root_uep`` (``'/'`` only), ``filters`` and PyTables'
        parameters (``driver``, ``node_cache_slots``, ... in any case).
        multiload reads the file natively and ignores them, except
        ``driver='H5FD_DIRECT'``, which makes ``direct=True`` the default
        of this Streamer's queues.

    Raises
    ------
    TypeError
        A keyword argument open_file does not take (a typo, or an argument
        of :meth:`get_queue` such as ``block_size``).
    ValueError
        An open_file option multiload cannot honour: another ``mode``, a
        ``root_uep`` below ``'/'``, a driver that spreads the file over
        several files (split, family, multi), ``driver_core_image``.

    Notes
    -----
    A Streamer pickles as its description: the filename, the open_file
    options and the file's identity (size and modification time, recorded
    when the Streamer first opened the file, or when it was pickled if that
    came first). Its queues are not part of it. The copy opens the file
    when it makes its first queue, in the process that unpickled it; a
    Streamer inherited over ``fork()`` does the same in the child (its
    parent's queues stay the parent's). If the file changed since it was
    recorded, that first open raises :class:`multiload.FileChangedError`.
    See docs/streamer.md, "Pickling and worker processes".
    """

    def __init__(self, filename, budget=None, **kw_args):
        _budget.core_of(budget)  # TypeError now, not at the first queue
        self._budget = budget
        self._direct = open_file_options("Streamer", kw_args, _GET_QUEUE_HINTS)
        self._filename = os.fspath(filename)
        self._h5_kw_args = kw_args
        self._file = _handle.FileRef(self._filename)
        self._open_local()
        self._local_opened()

    # -- the handle: description and process-local state (multiload._handle)
    def _describe(self):
        d = {"filename": self._filename, "kw_args": self._h5_kw_args, "file": self._file.describe()}
        if self._budget is not None:
            d["budget"] = self._budget  # pickles as its limits (multiload/budget.py)
        return d

    @classmethod
    def _from_description(cls, d):
        self = cls.__new__(cls)
        self._direct = open_file_options("Streamer", d["kw_args"])
        self._filename = d["filename"]
        self._h5_kw_args = d["kw_args"]
        self._budget = d.get("budget")
        self._file = d["file"]
        return self  # no local state: made by the first get_queue()

    def _open_local(self):
        # The queues this process started, and the lock of that set.
        self._queues = weakref.WeakSet()
        self._lock = threading.Lock()

    @property
    def filename(self):
        """str: The HDF5 file this Streamer reads."""
        return self._filename

    def _layout(self, path):
        return self._open_layout(path)[0]

    def _open_layout(self, path):
        """The Layout of ``path`` and its write mark (_live_writers: taken
        after a live Writer's flush and before the open, so a write after
        it is seen by the queue's check)."""
        if not isinstance(path, str):
            raise TypeError(f"path must be a str, got {type(path).__name__}")
        if self._local_pid != _handle.pid:
            self._reopen_local()
        self._file.opening("Streamer")
        _flush_for_read(self._filename, path)  # a live Writer of this process (docs/writer.md)
        mark = _live_writers.mark(self._filename, path)
        return _core.Layout(self._filename, path), mark

    def get_queue(self, path, n_procs=None, read_ahead=None, cyclic=False, block_size=None,
                  ordered=False, field=None, remainder=False, io_mode=None, direct=None,
                  shuffle=None, seed=0, epoch=0, rank=0, world_size=1, budget=None):
        """Start streaming the dataset at ``path``.

        Each call starts its own workers and ring; queues on one Streamer are
        independent of each other.

        Parameters
        ----------
        path : str
            HDF5 path of the dataset (PyTables Table, Array, CArray and EArray
            nodes are datasets too).
        n_procs : int, default 4
            Worker threads reading in parallel.
        read_ahead : int, default ``2 * n_procs + 1``
            Slots in the ring buffer (blocks read ahead or held by guards).
            By default, small blocks get more slots (up to 64, so that
            about 2 MiB are read ahead): see :func:`default_read_ahead`.
        cyclic : bool, default False
            Wrap around forever. The rows left over at the end travel in a
            block that continues at the start of the dataset.
        block_size : int, optional
            Rows per block. Default: a whole number of chunk rows of about
            1 MiB for chunked data, 128 KiB (multitables' default) for contiguous data. A size
            larger than the dataset shrinks to its row count.
        ordered : bool, default False
            Hand out blocks in dataset order instead of completion order.
        field : str, optional
            Stream only this column of a table (a zero-copy strided view).
        remainder : bool, default False
            Non-cyclic only: also hand out the last, shorter block.
        io_mode : {'io_uring', 'pread'}, optional
            Force an I/O engine (default: :func:`io_mode`). Where io_uring
            cannot be set up the workers use pread regardless.
        direct : bool, optional
            Read with O_DIRECT, bypassing the page cache (for data larger
            than memory, read once). Reads are widened to 4 KiB boundaries
            into an aligned buffer. ``OSError`` if the filesystem does not
            support O_DIRECT (tmpfs, some network filesystems). Default:
            False, or True when the Streamer was made with
            ``driver='H5FD_DIRECT'``.
        shuffle : {None, 'none', 'block'}, optional
            Block order. ``None`` or ``'none'``: dataset order (the
            default, as multitables). ``'block'``: every block once, in a
            keyed pseudo-random order that is a pure function of
            ``(seed, epoch)`` and the block count (perm.c's documented
            Feistel bijection; no numpy), so every process agrees on it.
            Rows inside a block keep their order. Needs ``cyclic=False``.
        seed : int, default 0
            Key of the ``'block'`` order, in ``[0, 2**64)``.
        epoch : int, default 0
            Epoch number, in ``[0, 2**64)``: a new order per epoch under one
            seed. Make one queue per epoch.
        rank, world_size : int, default 0 and 1
            Sharding for data-parallel training: with ``world_size`` R > 1
            this queue hands out blocks ``rank, rank + R, rank + 2R, ...``
            of the unsharded order (dataset order or the ``'block'`` order).
            Every rank gets ``n // R`` blocks (n: the unsharded block count),
            so ranks stay in step; the ``n % R`` blocks at the end of the
            unsharded order are left out of this pass (with ``'block'``, a
            different set each epoch). The ranks together hand out each block
            at most once. Needs ``0 <= rank < world_size`` and
            ``cyclic=False`` when ``world_size > 1``.
        budget : Budget, optional
            An I/O budget (:class:`multiload.Budget`): every read of this
            queue's workers first takes its bytes and one I/O per request
            from it, sleeping while it is empty; queues, Readers and
            FileLoaders given the same Budget share its rates. Default: the
            Streamer's ``budget``, if any. A budgeted queue does not hint
            blocks ahead to the kernel (those reads would not be charged).
            Its ``stats()`` gain a ``"budget"`` dict (docs/budgets.md).

        Returns
        -------
        Queue
            Already closed when the dataset has no rows.

        Raises
        ------
        FileNotFoundError, OSError, KeyError, TypeError, ValueError
            Missing file; not an HDF5 file; no such dataset or field; a group
            or an unsupported type; a bad argument (``ValueError``: also an
            unknown ``shuffle``, ``rank`` outside ``[0, world_size)``,
            ``world_size < 1``, or ``shuffle='block'`` or ``world_size > 1``
            with ``cyclic=True``).
        """
        return self._make_queue(path, n_procs, read_ahead, cyclic, block_size, ordered, field, remainder,
                                io_mode, direct, shuffle, seed, epoch, rank, world_size, budget=budget)

    def _make_queue(self, path, n_procs=None, read_ahead=None, cyclic=False, block_size=None,
                    ordered=False, field=None, remainder=False, io_mode=None, direct=None,
                    shuffle=None, seed=0, epoch=0, rank=0, world_size=1, shared=False, budget=None):
        """get_queue(); with ``shared``, the ring is one memfd a consumer
        process attaches (the loader process's streams, loader_process.py)."""
        permuted, seed, epoch, rank, world_size = _check_shuffle(shuffle, seed, epoch, rank, world_size,
                                                                 bool(cyclic))
        shard = dict(shuffle="block" if permuted else "none", seed=seed, epoch=epoch, rank=rank,
                     world_size=world_size)
        n_procs = positive_int("n_procs", n_procs, 4, maximum=UINT_MAX)
        read_ahead = positive_int("read_ahead", read_ahead, maximum=UINT_MAX)
        block_size = positive_int("block_size", block_size)
        io_code = io_mode_code(io_mode, "'io_uring' or 'pread'")
        direct = self._direct if direct is None else bool(direct)
        budget_core, budget_priority = _budget.core_of(self._budget if budget is None else budget)
        layout, mark = self._open_layout(path)
        _check_field(layout, field, self._filename, path)
        if direct:
            _check_direct(self._filename)
        if layout.slow_reason:
            warnings.warn(
                f"dataset {path!r} of file {self._filename!r} uses {layout.slow_reason}; "
                "multiload reads it through HDF5 under a lock (correct, not parallel)",
                SlowPathWarning, stacklevel=3)
        n_rows = layout.shape[0]
        if block_size is None:
            block_size = default_block_size(layout, field)
        if n_rows == 0:
            queue = Queue(None, layout, block_size, 0, field, bool(cyclic), bool(ordered), **shard)
            queue._remainder = bool(remainder)
            return queue
        block_size = min(block_size, n_rows)
        if read_ahead is None:
            read_ahead = default_read_ahead(n_procs, block_size * layout.row_bytes, bool(direct))
        # The core builds a sequential, cyclic or permuted block schedule
        # (one shard of it) from these and a private ring of read_ahead
        # slots for it (stream_type.c; the schedule: schedule.c).
        stream = layout.stream(n_workers=n_procs, read_ahead=read_ahead, block_rows=block_size,
                               cyclic=bool(cyclic), ordered=bool(ordered), remainder=bool(remainder),
                               field=field, io_mode=io_code, direct=bool(direct), permuted=permuted,
                               seed=seed, epoch=epoch, shard_rank=rank, shard_count=world_size,
                               shared=bool(shared), budget=budget_core, budget_priority=budget_priority)
        n_blocks = _core.n_blocks(n_rows, block_size, bool(cyclic), bool(remainder))
        if n_blocks is not None:
            n_blocks //= world_size  # this rank's share (schedule.c: floor(n / R))
        queue = Queue(stream, layout, block_size, n_blocks, field, bool(cyclic), bool(ordered), read_ahead,
                      **shard)
        queue._remainder = bool(remainder)
        queue._write_mark = (mark, self._filename)
        with self._lock:
            self._queues.add(queue)
        _live_queues.add(queue)
        return queue

    def get_remainder(self, path, block_size, field=None):
        """Return the rows a non-cyclic queue without ``remainder`` leaves out.

        Parameters
        ----------
        path : str
            HDF5 path of the dataset.
        block_size : int or None
            The queue's ``block_size`` (``None``: the default block size).
        field : str, optional
            Return only this column.

        Returns
        -------
        numpy.ndarray
            A copy of the last ``n_rows % block_size`` rows (possibly none).

        Raises
        ------
        FileNotFoundError, OSError, KeyError, TypeError, ValueError
            As :meth:`get_queue`.
        """
        layout = self._layout(path)
        _check_field(layout, field, self._filename, path)
        block_size = positive_int("block_size", block_size)
        n_rows = layout.shape[0]
        if block_size is None:
            block_size = default_block_size(layout)
        block_size = max(1, min(block_size, n_rows)) if n_rows else 1
        start = n_rows - n_rows % block_size
        rows = layout.read(start, n_rows)
        return rows[field].copy() if field is not None else rows

    def get_generator(self, path, n_procs=None, read_ahead=None, cyclic=False, block_size=None,
                      ordered=False, field=None, remainder=True, io_mode=None):
        """Yield the dataset row by row (copies), remainder included.

        Parameters
        ----------
        path, n_procs, read_ahead, cyclic, block_size, field, io_mode
            As :meth:`get_queue`.
        ordered : bool, default False
            Accepted for compatibility: rows always come in dataset order,
            which unordered mode allows too. Copying rows one by one in
            Python is far slower than reading, so waiting for the next block
            in order costs nothing, and any prefix of a cyclic generator is
            then whole passes plus the start of the next one.
        remainder : bool, default True
            True here (unlike :meth:`get_queue`) so that every row is produced.

        Yields
        ------
        numpy.ndarray or numpy.void
            One row at a time, a copy that stays valid. With ``cyclic=True``
            the generator is endless. A dataset of variable-length strings
            (which :meth:`get_queue` refuses: a ring slot holds no Python
            object) yields ``bytes`` (1-D) or object arrays of ``bytes``
            (N-D) as h5py reads them, ``block_size`` rows (default 1024)
            read at a time by the calling thread.

        Notes
        -----
        The queue behind the generator is closed when the generator is
        closed or garbage-collected.
        """
        try:
            queue = self.get_queue(path, n_procs=n_procs, read_ahead=read_ahead, cyclic=cyclic,
                                   block_size=block_size, ordered=True, field=field,
                                   remainder=remainder, io_mode=io_mode)
        except TypeError:
            vlen = vlstring.open_strings(self._filename, path)  # strings: rows read here, not in a ring
            if vlen is None:
                raise
            yield from vlstring.generate_rows(vlen, self._filename, path, cyclic, block_size, field)
            return
        try:
            for guard in queue.iter():
                with guard as block:
                    block_copy = np.array(block, copy=True)
                yield from block_copy
        finally:
            queue.close()

    def close(self):
        """Close every queue this Streamer started in this process (idempotent)."""
        if self._local_pid != _handle.pid:
            return  # none here (a parent's queues are the parent's to close)
        with self._lock:
            queues = list(self._queues)
        for q in queues:
            q.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __iter__(self):
        raise TypeError("iterate over stream.get_queue(path) or stream.get_generator(path)")

    def __repr__(self):
        return f"<multiload.Streamer {self._filename!r}>"
