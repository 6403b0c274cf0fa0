"""BatchStream: the training feed -- shuffled, sharded, resumable batches.

``BatchStream(source, datasets, batch_size, ...)`` gives one epoch of
batches per iteration: aligned rows of several datasets (images and
labels), over one file or many concatenated, in the order a
:class:`multiload.Order` defines -- the same global sequence whatever the
number of ranks, torch workers, threads or read-ahead -- with the state of
the consumer (``{version, fingerprint, epoch, step}``) to resume exactly.
What the order is: docs/training.md. How it is read: :mod:`multiload._feed`.

May import: ``_core``, :mod:`multiload.order`, ``_sources``, ``_handle``, ``_signals``,
``_feed``, ``_slots``, ``_progress``, ``_args``, ``_io``; never torch
(``torch.distributed`` is consulted only when torch is already imported).
"""

import errno
import math
import numbers
import os
import sys
import threading
import time
import warnings

from . import _core
from ._args import positive_int
from ._feed import Feed, row_addressable
from ._handle import FileIdentity
from ._io import io_mode_code
from ._progress import Progress
from ._signals import FileChangedError
from ._slots import SlotPool
from ._sources import Sources
from .order import Order

__all__ = ["BatchStream", "STATE_VERSION"]

#: The version of state_dict()'s layout (and of the order it names).
STATE_VERSION = 1
#: Bytes of all datasets' rows per block, when block_rows is not given.
DEFAULT_BLOCK_BYTES = 1 << 20
#: Streams per rank when num_streams is not given: each batch mixes rows
#: of this many windows.
DEFAULT_STREAMS_PER_RANK = 4
#: Batches handed out and still referenced, at most, when outstanding is not given.
DEFAULT_OUTSTANDING = 8
#: A reading thread's fixed memory (allocator arena, I/O ring, decoder
#: state, stack pages), for the memory bound. Measured: two threads reading
#: 50 gathers of 256 one-image gzip chunks grew the RSS by 15 MiB, of which
#: ~1.5 MiB is the chunk table (counted apart).
ENGINE_THREAD_BYTES = 7 << 20
#: Bytes per chunk of a dataset's table of chunk addresses (an upper bound).
CHUNK_ENTRY_BYTES = 48

_SHUFFLES = ("none", "block", "window", "global")
_TAILS = ("drop", "pad", "uneven")
#: The fingerprint's fields, in the order a changed one is reported.
_FINGERPRINT_FIELDS = ("files", "datasets", "shapes", "block_rows", "shuffle", "seed", "window_rows",
                       "num_streams", "global_batch", "tail")


def _nonneg_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def _distributed_defaults():
    """(rank, world_size) of torch.distributed when it is initialised (and
    torch already imported), else (0, 1)."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return int(dist.get_rank()), int(dist.get_world_size())
    except Exception:  # noqa: BLE001 - a broken torch install is no reason to fail here
        pass
    return 0, 1


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _default_block_rows(sources):
    """Whole chunks of every dataset (a multiple of the lcm of their chunk
    rows; when that is over 4 MiB of rows, whole chunks of the dataset
    with the widest rows), about
    DEFAULT_BLOCK_BYTES of all datasets' rows, and at most a 64th of the
    dataset (but never less than one such unit)."""
    chunk_rows = sources.chunk_rows()
    row_bytes = max(1, sum(sources.row_bytes))
    unit = math.lcm(*chunk_rows)
    if unit * row_bytes > 4 * DEFAULT_BLOCK_BYTES:
        # Whole chunks of the dataset with the widest rows, which carries the
        # bytes; a narrow one (labels in large chunks) is read in parts.
        unit = chunk_rows[max(range(len(chunk_rows)), key=lambda d: sources.row_bytes[d])]
    units = DEFAULT_BLOCK_BYTES // (unit * row_bytes)
    # At least 64 blocks where the dataset allows: a shuffle of few blocks mixes little.
    units = min(units, sources.n_rows // (64 * unit))
    return unit * max(1, units)


def _plain(x):
    """x with tuples made lists (what a state looks like after JSON or torch.save)."""
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


class BatchStream:
    """Batches of aligned rows for a training loop: shuffled, sharded, resumable.

    Parameters
    ----------
    source : str, os.PathLike or list of them
        An HDF5 file, a glob (``"data/part-*.h5"``, sorted), or a list of
        files. The files' datasets are one logical dataset, concatenated
        along the first axis in that order.
    datasets : str, sequence of str, or mapping of names to str
        The dataset path(s) read in lockstep: batch k of each holds the same
        rows. A mapping gives dict batches keyed alike, a sequence gives
        tuples, one path gives the array itself.
    batch_size : int
        Rows per batch of one rank, as in torch's DataLoader; the global
        batch is ``batch_size * world_size``.
    shuffle : {"window", "block", "global", "none"}
        The order (docs/training.md): ``"window"`` (default) permutes
        blocks, then rows inside a window of each stream -- sequential
        reads, bounded memory; ``"block"`` permutes whole blocks;
        ``"global"`` permutes every row (each batch is a scattered gather:
        on compressed data every row costs a chunk decode unless cached);
        ``"none"`` is dataset order.
    seed : int
        Key of the permutations.
    window_rows : int, optional
        Rows per window under ``"window"``, a multiple of ``block_rows``
        (default 8 blocks).
    rank, world_size : int, optional
        This process's shard; default torch.distributed's rank and world
        size when it is initialised, else 0 and 1.
    num_streams : int, optional
        Streams the epoch is cut into; every world size dividing it sees the
        same global sequence. Default ``4 * world_size`` (``world_size``
        under ``shuffle="none"``, so that one rank reads dataset order) --
        and when a state is loaded with num_streams not given, the state's.
    tail : {"drop", "pad", "uneven"}
        ``"drop"``: every rank gets ``len(stream)`` full batches, each row
        at most once, fewer than one global batch dropped. ``"pad"``: the
        last global batch is filled with repeats, marked by a ``valid``
        mask in each batch (key ``"valid"`` of a dict batch; the last item
        of a tuple; ``(array, valid)`` for one dataset). ``"uneven"``:
        nothing dropped or repeated; ranks' step counts may differ by one.
    epoch : int
        The epoch to start with (see :meth:`set_epoch`).
    n_procs : int, optional
        Threads that read and decode (default: the machine's cores).
    read_ahead : int, optional
        Batches (steps) planned and read ahead beyond the span of the
        current windows (default: one window's span, so the next windows
        are read while the current ones are served); under
        ``shuffle="global"``, batches gathered ahead (default ``2 * n_procs``).
    progress : bool
        Show a tqdm progress bar (rows/s, GB/s, epoch).
    block_rows : int, optional
        Rows per block: the unit of the shuffle and of a read. Default: a
        whole number of every dataset's chunks, about 1 MiB.
    max_memory : int, optional
        Bytes this stream may hold in blocks and batches (default a quarter
        of the machine's memory). A configuration that needs more is a
        ValueError, never a silent change of the order.
    copy : bool
        False (default): batches live in reused memory, pinned while
        referenced (at most ``outstanding`` at once). True: each batch has
        memory of its own.
    outstanding : int
        Batches handed out and still referenced, at most (``copy=False``);
        one more is a RuntimeError saying how to copy.
    io_mode : {'io_uring', 'pread', None}

    Raises
    ------
    FileNotFoundError
        A file that does not exist, a glob that matches nothing.
    KeyError, TypeError, OSError
        A dataset missing, of a type multiloaded cannot read, a damaged file.
    ValueError
        Datasets of different lengths, files that disagree in dtype or row
        shape, or a parameter breaking its rule (said in the message).
    """

    def __init__(self, source, datasets, batch_size, *, shuffle="window", seed=0, window_rows=None, rank=None,
                 world_size=None, num_streams=None, tail="drop", epoch=0, n_procs=None, read_ahead=None,
                 progress=False, block_rows=None, max_memory=None, copy=False, outstanding=None, io_mode=None):
        self._core = None
        self._closed = False
        self._kwargs = dict(source=source, datasets=datasets, batch_size=batch_size, shuffle=shuffle, seed=seed,
                            window_rows=window_rows, rank=rank, world_size=world_size, num_streams=num_streams,
                            tail=tail, epoch=epoch, n_procs=n_procs, read_ahead=read_ahead, progress=progress,
                            block_rows=block_rows, max_memory=max_memory, copy=copy, outstanding=outstanding,
                            io_mode=io_mode)
        self._batch_size = positive_int("batch_size", batch_size)
        if shuffle not in _SHUFFLES:
            raise ValueError(f"shuffle must be one of {', '.join(map(repr, _SHUFFLES))}, got {shuffle!r}")
        if tail not in _TAILS:
            raise ValueError(f"tail must be one of {', '.join(map(repr, _TAILS))}, got {tail!r}")
        self._shuffle, self._tail = shuffle, tail
        self._seed = _nonneg_int("seed", seed)
        self._epoch = _nonneg_int("epoch", epoch)
        d_rank, d_world = _distributed_defaults()
        self._world = positive_int("world_size", world_size, d_world)
        self._rank = _nonneg_int("rank", d_rank if rank is None else rank)
        if self._rank >= self._world:
            raise ValueError(f"rank must be in [0, world_size): got rank {self._rank} with world_size {self._world}")
        self._n_procs = positive_int("n_procs", n_procs, os.cpu_count() or 2, maximum=1024)
        self._read_ahead = None if read_ahead is None else _nonneg_int("read_ahead", read_ahead)
        self._io_code = io_mode_code(io_mode, "'io_uring', 'pread' or None")
        self._progress = bool(progress)
        self._copy = bool(copy)
        self._outstanding = positive_int("outstanding", outstanding, DEFAULT_OUTSTANDING)
        self._max_memory = (_physical_memory() // 4 if max_memory is None
                            else positive_int("max_memory", max_memory))
        self._src = Sources(source, datasets)
        # Which datasets are read by row gathers rather than blocks (see _feed).
        self._by_rows = [shuffle == "global" or row_addressable(self._src, d) for d in range(len(self._src.paths))]
        self._block_rows = positive_int("block_rows", block_rows) or _default_block_rows(self._src)
        if window_rows is not None:
            window_rows = positive_int("window_rows", window_rows)
            if shuffle != "window":
                raise ValueError(f"window_rows is for shuffle='window' only (shuffle is {shuffle!r})")
            if window_rows % self._block_rows:
                raise ValueError(f"window_rows ({window_rows}) must be a multiple of block_rows "
                                 f"({self._block_rows}): a window is whole blocks, so reads stay whole chunks")
        self._window_rows_arg = window_rows
        self._num_streams_given = num_streams is not None
        per_rank = 1 if shuffle == "none" else DEFAULT_STREAMS_PER_RANK  # "none" on one rank: dataset order
        self._set_num_streams(positive_int("num_streams", num_streams, per_rank * self._world))
        self._step = 0                 # batches of this epoch handed to the consumer
        self._warned_repeat = False
        self._repeat_ok = False        # set_epoch/load_state_dict since the epoch ended
        self._iter_token = None        # the live iteration (a newer one supersedes it)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._stats = dict(steps=0, rows=0, blocks_read=0, block_rows_read=0, gathered_rows=0, wait_s=0.0,
                           elapsed_s=0.0)

    # -- the order
    def _set_num_streams(self, num_streams):
        if num_streams % self._world:
            raise ValueError(f"world_size ({self._world}) must divide num_streams ({num_streams}): every rank "
                             f"reads the same number of streams")
        self._num_streams = num_streams
        self._order_at = {}
        self._order(self._epoch)  # checks the rest of the parameters now
        self._check_memory()

    def _order(self, epoch):
        o = self._order_at.get(epoch)
        if o is None:
            o = Order(self._src.n_rows, block_rows=self._block_rows, seed=self._seed, epoch=epoch,
                      shuffle=self._shuffle, window_rows=self._window_rows_arg, num_streams=self._num_streams,
                      global_batch=self._batch_size * self._world, tail=self._tail)
            self._order_at = {epoch: o}
        return o

    def _plan_bounds(self):
        """(horizon, row_ahead, n_slots, batches): how far ahead the feed
        plans blocks (steps) and issues row gathers (steps), the blocks it
        may hold, and the batches in flight -- the memory bound.

        A stream's rows are consumed together in units of ``window_rows``
        (``"window"``) or ``block_rows``; the positions of one unit of one
        stream lie within ``span = unit * S / GB`` consecutive steps. Blocks
        are planned ``span + read_ahead`` steps ahead (read_ahead defaults
        to span: the next windows are read while the current ones are
        served), and steps ``[t, t + horizon]`` need at most
        ``ceil((horizon + 1) * GB / S / unit) + 1`` units of each of the
        rank's ``S / R`` streams, plus the tail's blocks. Row gathers are
        issued ``row_ahead`` steps ahead (read_ahead under "global",
        default ``2 * n_procs + 2``)."""
        o = self._order(self._epoch)
        S, R, GB, B = self._num_streams, self._world, o.global_batch, o.block_rows
        ra = self._read_ahead
        row_ahead = max(1, ra if ra is not None and self._shuffle == "global" else 2 * self._n_procs + 2)
        batches = row_ahead + 1 if any(self._by_rows) else 1
        if all(self._by_rows):
            return row_ahead, row_ahead, 0, batches
        unit = o.window_rows if self._shuffle == "window" else B
        span = max(1, -(-unit * S // GB))
        horizon = span + (ra if ra is not None else span)
        units = -(-(horizon + 1) * GB // (S * unit)) + 1
        tail_blocks = -(-o.tail_rows // B) + 1 if o.tail_rows else 0
        n_slots = (S // R) * units * (unit // B) + tail_blocks
        # Never more blocks than the dataset has.
        return horizon, row_ahead, min(n_slots, -(-self._src.n_rows // B)) or 1, batches

    def _engine_bytes(self):
        """(cache_bytes, bytes): the request engine's cache of decoded bands
        (a band: one chunk row of a dataset) and, with it, all the engine
        holds: what its threads hold while they decode (a band and its
        compressed bytes per dataset per thread), each chunked dataset's
        table of chunk addresses, and a fixed cost per thread
        (ENGINE_THREAD_BYTES). The cache is a few bands per thread, except
        under "global", where rows of a band come back at random (64 MiB)."""
        band = [(L.chunks[0] if L.chunks else 1) * rb for L, rb in zip(self._src.layouts[0], self._src.row_bytes)]
        if self._shuffle == "global":
            cache = 64 << 20
        else:
            cache = max(1 << 20, 4 * self._n_procs * max(band))
        tables = sum(CHUNK_ENTRY_BYTES * -(-L.shape[0] // L.chunks[0]) * math.prod(
                     -(-n // c) for n, c in zip(L.shape[1:], L.chunks[1:]))
                     for row in self._src.layouts for L in row if L.chunks)
        return cache, cache + 2 * self._n_procs * sum(band) + tables + self._n_procs * ENGINE_THREAD_BYTES

    def _check_memory(self):
        _, _, n_slots, batches = self._plan_bounds()
        block_bytes = self._block_rows * sum(rb for rb, r in zip(self._src.row_bytes, self._by_rows) if not r)
        batch_bytes = self._batch_size * sum(self._src.row_bytes)
        n_batches = batches + (0 if self._copy else self._outstanding)
        engine = self._engine_bytes()[1]
        need = n_slots * block_bytes + n_batches * batch_bytes + engine
        if need > self._max_memory:
            raise ValueError(
                f"this configuration needs up to {need:,} bytes ({n_slots} blocks of {block_bytes:,} bytes, "
                f"{n_batches} batches of {batch_bytes:,}, {engine:,} for the reading threads), over "
                f"max_memory={self._max_memory:,}: lower window_rows, num_streams, block_rows, read_ahead or "
                f"outstanding, or raise max_memory")
        self._memory_bound = need

    # -- size and position
    def __len__(self):
        """Batches this rank gets in an epoch (exact)."""
        return self._order(self._epoch).steps(self._rank, self._world)

    @property
    def epoch(self):
        return self._epoch

    @property
    def step(self):
        """Batches of the current epoch handed to the consumer so far."""
        return self._step

    @property
    def block_rows(self):
        return self._block_rows

    @property
    def num_streams(self):
        return self._num_streams

    @property
    def rank(self):
        return self._rank

    @property
    def world_size(self):
        return self._world

    @property
    def n_rows(self):
        """Rows of the logical dataset (all files)."""
        return self._src.n_rows

    @property
    def order(self):
        """The :class:`multiload.Order` of the current epoch."""
        return self._order(self._epoch)

    def set_epoch(self, epoch):
        """Make the next iteration epoch ``epoch``, from its start -- unless
        the stream is already inside that epoch (loaded by
        :meth:`load_state_dict`, or an iteration left part-way), where it
        goes on from there."""
        epoch = _nonneg_int("epoch", epoch)
        with self._lock:
            if epoch != self._epoch or self._step >= len(self):
                self._epoch = epoch
                self._step = 0
            self._repeat_ok = True

    # -- state
    def _fingerprint(self):
        o = self._order(self._epoch)
        fp = self._src.identity()
        fp.update(block_rows=self._block_rows, shuffle=self._shuffle, seed=self._seed, window_rows=o.window_rows,
                  num_streams=self._num_streams, global_batch=self._batch_size * self._world, tail=self._tail)
        return _plain(fp)

    def state_dict(self):
        """The consumer's position: ``{"version", "fingerprint", "epoch",
        "step"}``, plain data (JSON-safe). ``step`` counts batches handed
        out, not read ahead; at the end of an epoch the state is the start
        of the next."""
        with self._lock:
            epoch, step = self._epoch, self._step
            if step >= len(self):
                epoch, step = epoch + 1, 0
        return {"version": STATE_VERSION, "fingerprint": self._fingerprint(), "epoch": epoch, "step": step}

    def load_state_dict(self, state):
        """Go on from ``state`` (from :meth:`state_dict`, any world size that
        divides its num_streams with the same global batch). Raises
        ValueError naming the field of the fingerprint that differs."""
        if not isinstance(state, dict) or not {"version", "fingerprint", "epoch", "step"} <= state.keys():
            raise ValueError("a BatchStream state is a dict with version, fingerprint, epoch and step "
                             "(from state_dict())")
        if state["version"] != STATE_VERSION:
            raise ValueError(f"state version {state['version']!r} is not this multiload's ({STATE_VERSION})")
        theirs = state["fingerprint"]
        if not isinstance(theirs, dict):
            raise ValueError("the state's fingerprint is not a dict")
        if not self._num_streams_given and "num_streams" in theirs and theirs["num_streams"] != self._num_streams:
            self._set_num_streams(positive_int("the state's num_streams", theirs["num_streams"]))
        ours = self._fingerprint()
        for field in _FINGERPRINT_FIELDS:
            if _plain(theirs.get(field)) != ours[field]:
                raise ValueError(f"the state was made on another configuration: {field} differs "
                                 f"(state: {theirs.get(field)!r}, this stream: {ours[field]!r})")
        epoch = _nonneg_int("the state's epoch", state["epoch"])
        step = _nonneg_int("the state's step", state["step"])
        with self._lock:
            self._epoch = epoch
            if step > len(self):
                raise ValueError(f"the state's step {step} is past the epoch's {len(self)} batches")
            self._step = step
            self._repeat_ok = True

    # -- iteration
    def __iter__(self):
        """One epoch's batches, from the current position."""
        return self._iterate(0, 1)

    def _iterate(self, worker, n_workers):
        """Generator of the batches of steps t = start + worker (mod
        n_workers) of the current epoch (torch workers split an epoch so)."""
        if self._closed:
            raise RuntimeError("the BatchStream is closed")
        self._reopen_after_fork()
        with self._lock:
            total = len(self)
            if self._step >= total:
                if not self._repeat_ok and not self._warned_repeat and total:
                    self._warned_repeat = True
                    warnings.warn(f"iterating a BatchStream again without set_epoch() repeats epoch {self._epoch}; "
                                  f"call set_epoch(e) before each epoch", stacklevel=3)
                self._step = 0
            self._repeat_ok = False
            token = object()
            self._iter_token = token
            start = self._step
            epoch = self._epoch
        return self._batches(token, epoch, range(start + worker, total, n_workers))

    def _batches(self, token, epoch, steps):
        core = self._reader_core()
        order = self._order(epoch)
        horizon, row_ahead, n_slots, batches = self._plan_bounds()
        pool = None
        if not self._copy:
            pool = SlotPool([((self._batch_size, *s), dt) for s, dt in zip(self._src.row_shapes, self._src.dtypes)],
                            self._outstanding + batches - 1)
        feed = Feed(core, self._src, order, steps, self._rank, self._world, by_rows=self._by_rows, pool=pool,
                    outstanding=self._outstanding, horizon=horizon, row_ahead=row_ahead, n_slots=n_slots,
                    stats=self._stats)
        bar = Progress(len(steps), f"epoch {epoch}", epoch) if self._progress else None
        row_bytes = sum(self._src.row_bytes)
        t0 = time.perf_counter()
        try:
            while True:
                if self._iter_token is not token:
                    if self._closed:
                        raise RuntimeError("the BatchStream was closed")
                    raise RuntimeError("this iteration of the BatchStream was superseded by a newer one "
                                       "(iter() was called again): iterate one at a time")
                try:
                    step, arrays, valid = feed.next()
                except StopIteration:
                    return
                n = len(arrays[0])
                with self._lock:
                    if self._iter_token is token:
                        self._step = step + 1
                st = self._stats
                st["steps"] += 1
                st["rows"] += n
                st["elapsed_s"] = st.get("elapsed_s", 0.0) + (time.perf_counter() - t0)
                if bar is not None:
                    bar.update(n, n * row_bytes)
                batch = self._src.wrap(arrays)
                if valid is not None:
                    if self._src.kind == "dict":
                        batch["valid"] = valid
                    elif self._src.kind == "tuple":
                        batch = batch + (valid,)
                    else:
                        batch = (batch, valid)
                yield batch
                t0 = time.perf_counter()
        finally:
            feed.close()
            if bar is not None:
                bar.close()

    def stats(self):
        """Counters since the stream was made: ``steps`` and ``rows``
        handed out; ``blocks_read`` and ``block_rows_read`` (the datasets
        read by blocks: block rows read per row handed out is their read
        amplification, 1.0 under "window"); ``gathered_rows`` (rows of the
        datasets read by row gathers: those stored one row per chunk, and
        all under "global"); ``wait_s``
        (time the consumer waited for reads), ``elapsed_s`` (time inside
        next()), ``memory_bound`` (bytes), ``epoch`` and ``step``."""
        s = dict(self._stats)
        s.update(memory_bound=self._memory_bound, epoch=self._epoch, step=self._step)
        return s

    # -- lifecycle
    def _reader_core(self):
        if self._core is None:
            self._core = _core.ReaderCore(n_workers=self._n_procs, io_mode=self._io_code,
                                          cache_bytes=self._engine_bytes()[0], inline_reads=True)
        return self._core

    def _reopen_after_fork(self):
        """In a process forked from the one that opened the stream, reopen
        the files and start threads of our own (the parent's are not here)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._core = None
        self._src = Sources(self._kwargs["source"], self._kwargs["datasets"])

    def close(self):
        """Stop reading and release the threads; iterating afterwards is a
        RuntimeError. Batches already handed out stay valid."""
        self._closed = True
        self._iter_token = None
        core, self._core = self._core, None
        if core is not None and self._pid == os.getpid():
            core.shutdown(False, 0.5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __reduce__(self):
        # A description: the arguments, the position, and the files' identity,
        # checked when the copy is made (in the process that will use it).
        # rank and world size resolved: a spawned worker has no torch.distributed of its own.
        kwargs = dict(self._kwargs, epoch=self._epoch, num_streams=self._num_streams, rank=self._rank,
                      world_size=self._world)
        return (_rebuild, (kwargs, self._num_streams_given, self._step, self._src.identity()["files"]))

    def __repr__(self):
        return (f"BatchStream({self._src.files[0] if len(self._src.files) == 1 else self._src.files!r}, "
                f"{self._kwargs['datasets']!r}, batch_size={self._batch_size}, shuffle={self._shuffle!r}, "
                f"rank={self._rank}, world_size={self._world}, num_streams={self._num_streams}, "
                f"tail={self._tail!r}, epoch={self._epoch}, step={self._step})")


def _rebuild(kwargs, num_streams_given, step, files):
    """A pickled BatchStream, made again in this process: FileChangedError
    if a file is not the one it was made on (ValueError if a glob now
    matches other files)."""
    bs = BatchStream(**kwargs)
    bs._num_streams_given = num_streams_given
    now = bs._src.identity()["files"]
    if [f[0] for f in files] != [f[0] for f in now]:
        raise ValueError(f"the source matches other files now ({[f[0] for f in now]}) than when the BatchStream "
                         f"was pickled ({[f[0] for f in files]})")
    for (path, *old), (_, *new) in zip(files, now):
        if old != new:
            raise FileChangedError(errno.ESTALE, f"file {path!r} is not the file this BatchStream was made on "
                                   f"({FileIdentity(*old).changes(FileIdentity(*new))}): make a new BatchStream "
                                   f"to read the file as it is now", path)
    bs._step = step
    return bs
