"""Write HDF5 datasets behind the producer: rows are gathered into chunk-sized
buffer blocks, filtered on the core's worker threads (shuffle, gzip through
libdeflate, lzf, fletcher32) and stored as whole chunks with HDF5's direct
chunk write. See docs/writer.md.

::

    with multiload.Writer("out.h5", "w") as w:
        ds = w.create_dataset("/features", shape=(0, 128), dtype="f4",
                              chunks=(1024, 128), maxshape=(None, 128),
                              compression="gzip", shuffle=True)
        for batch in batches:
            ds.append(batch)          # returns at once; blocks past max_pending_bytes
        w.flush()                     # every row so far is on disk (fsync)

A block is WRITABLE while rows go into it, PENDING (immutable) once full
and handed to the workers, then COMMITTED or ERROR. Memory is bounded by
``max_pending_bytes``; ``flush()`` raises one :class:`WriteError` rolling
up every failed block.

May import: numpy, the standard library, multiload._core, multiload._aio,
multiload._live_writers, multiload.budget.
"""

import asyncio
import math
import os
import sys
import threading
import time

import numpy as np

from . import _core, _live_writers
from . import budget as _budget
from ._aio import wait_fd

__all__ = ["Writer", "WriterDataset", "WriteError", "BlockError"]

_GZIP, _SHUFFLE, _FLETCHER32, _LZF = 1, 2, 3, 32000
_OPTIONAL = 1  # H5Z_FLAG_OPTIONAL

DEFAULT_MAX_PENDING_BYTES = 256 << 20


class BlockError(OSError):
    """One block that could not be written: ``errno``, ``filename``,
    ``dataset`` and ``rows`` (a ``range`` of the rows lost)."""

    def __init__(self, err, message, filename, dataset, rows):
        super().__init__(err, message, filename)
        self.dataset = dataset
        self.rows = rows


class WriteError(OSError):
    """Raised by :meth:`Writer.flush` (and everything after a failure): one
    error rolling up every block that failed; ``errors`` lists each one
    as a :class:`BlockError`. ``errno`` is the first block's."""

    def __init__(self, message, filename, errors):
        err = next((e.errno for e in errors if e.errno), None)
        super().__init__(err, message, filename)
        self.errors = list(errors)

    def __str__(self):
        return self.strerror


def _dtype_spec(dt, where):
    """The core's type spec of numpy dtype ``dt``; TypeError naming ``where``."""
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return ("a", tuple(int(x) for x in shape), _dtype_spec(base, where))
    if dt.names:
        return ("c", dt.itemsize, [(n, dt.fields[n][1], _dtype_spec(dt.fields[n][0], where)) for n in dt.names])
    big = dt.byteorder == ">" or (dt.byteorder == "=" and sys.byteorder == "big")
    if dt.kind in "iu" and dt.itemsize in (1, 2, 4, 8):
        return (dt.kind, dt.itemsize, big)
    if dt.kind == "f" and dt.itemsize in (2, 4, 8):
        return ("f", dt.itemsize, big)
    if dt.kind == "c" and dt.itemsize in (8, 16):
        h = dt.itemsize // 2
        return ("c", dt.itemsize, [("r", 0, ("f", h, big)), ("i", h, ("f", h, big))])
    if dt.kind == "b":
        return ("b",)
    if dt.kind == "S" and dt.itemsize > 0:
        return ("S", dt.itemsize)
    raise TypeError(f"{where}: the Writer cannot store dtype {dt} (numbers, bool, fixed-length bytes 'S<n>', "
                    "and compounds and sub-arrays of them)")


def guess_chunk(shape, maxshape, typesize):
    """h5py's chunk guess (h5py/_hl/filters.py): about 16 KiB to 1 MiB per
    chunk, halving the axes in turn; a 0-length axis counts as 1024."""
    CHUNK_BASE, CHUNK_MIN, CHUNK_MAX = 16 * 1024, 8 * 1024, 1024 * 1024
    shape = tuple((x if x != 0 else 1024) for x in shape)
    ndims = len(shape)
    chunks = np.array(shape, dtype="=f8")
    dset_size = np.prod(chunks) * typesize
    target = CHUNK_BASE * (2 ** np.log10(dset_size / (1024.0 * 1024)))
    target = min(max(target, CHUNK_MIN), CHUNK_MAX)
    idx = 0
    while idx < 64 * ndims:  # each axis halves at most 63 times (sizes < 2**63)
        chunk_bytes = np.prod(chunks) * typesize
        if (chunk_bytes < target or abs(chunk_bytes - target) / target < 0.5) and chunk_bytes < CHUNK_MAX:
            break
        if np.prod(chunks) == 1:
            break
        chunks[idx % ndims] = math.ceil(chunks[idx % ndims] / 2.0)
        idx += 1
    return tuple(int(x) for x in chunks)


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class WriterDataset:
    """One dataset of a :class:`Writer`: ``append(rows)`` grows axis 0;
    ``ds[i:j] = array`` writes rows ``i..j`` (chunk-aligned or not).

    Attributes follow h5py's ``Dataset``: ``name``, ``shape`` (rows written
    so far along axis 0, whether committed or not), ``dtype``, ``chunks``,
    ``maxshape``, ``compression``, ``compression_opts``, ``shuffle``,
    ``fletcher32``, ``fillvalue``.
    """

    def __init__(self, writer, name, ds, info):
        self._w = writer
        self._ds = ds
        self.name = name
        self.dtype = info["dtype"]
        self.chunks = info["chunks"]
        self.maxshape = info["maxshape"]
        self._rest = tuple(info["shape"][1:])
        self._n = info["shape"][0]
        self._block_bytes = info["block_bytes"]
        self._tail = None  # (band, capsule): the WRITABLE block of the last, partial band
        self.fillvalue = np.frombuffer(info["fill"], dtype=self.dtype)[0] if self.dtype.itemsize else None
        comp, opts, shuf, f32 = None, None, False, False
        for fid, _flags, vals in info["filters"]:
            if fid == _GZIP:
                comp, opts = "gzip", (vals[0] if vals else 4)
            elif fid == _LZF:
                comp = "lzf"
            elif fid == _SHUFFLE:
                shuf = True
            elif fid == _FLETCHER32:
                f32 = True
        self.compression, self.compression_opts, self.shuffle, self.fletcher32 = comp, opts, shuf, f32

    @property
    def shape(self):
        return (self._n,) + self._rest

    def __len__(self):
        return self._n

    def __repr__(self):
        return f"<multiload.WriterDataset {self.name!r} shape {self.shape} dtype {self.dtype}>"

    def _where(self):
        return f"dataset {self.name!r} in {self._w.filename!r}"

    def _coerce(self, data, n_rows=None):
        arr = np.asarray(data)
        dt = self.dtype
        if not isinstance(data, np.ndarray) and arr.dtype.kind in "iu" and dt.kind in "iuf":
            try:  # Python ints: numpy checks each fits (OverflowError otherwise)
                arr = np.asarray(data, dtype=dt)
            except OverflowError as e:
                raise ValueError(f"{self._where()}: {e}") from None
        if arr.dtype != dt:
            ok = False
            if dt.names or arr.dtype.names:
                ok = bool(dt.names) and bool(arr.dtype.names) and len(dt.names) == len(arr.dtype.names) and \
                    np.can_cast(arr.dtype, dt, "same_kind")
            elif dt.kind == "S":
                ok = arr.dtype.kind == "S"
            elif dt.kind == "b":
                ok = arr.dtype.kind == "b"
            else:
                ok = arr.dtype.kind in "biuf" and np.can_cast(arr.dtype, dt, "same_kind")
            if not ok:
                raise TypeError(f"{self._where()}: cannot write {arr.dtype} values into a dataset of dtype {dt}")
        rest = self._rest
        if n_rows is None:
            if arr.shape == rest:
                arr = arr.reshape((1,) + rest)
            if arr.shape[1:] != rest:
                raise ValueError(f"{self._where()}: rows of shape {arr.shape[1:]} given, the dataset's rows "
                                 f"are {rest}")
        else:
            try:
                arr = np.broadcast_to(arr, (n_rows,) + rest)
            except ValueError:
                raise ValueError(f"{self._where()}: cannot write an array of shape {arr.shape} into "
                                 f"{n_rows} rows of shape {rest}") from None
        return np.ascontiguousarray(arr, dtype=dt)

    def _submit(self, cap, band, deadline, keep=False):
        """Reserve room for one block (waiting until deadline) and submit it."""
        core = self._w._core
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not core.reserve(self._block_bytes, timeout):
            self._w._raise_failures()
        valid = min(self.chunks[0], self._n - band * self.chunks[0]) if keep else self._valid(band)
        _live_writers.wrote(self._w._key, self.name)
        core.submit(cap, valid, keep)

    def _valid(self, band):
        c0 = self.chunks[0]
        return max(0, min(c0, self._n - band * c0))

    def append(self, rows, *, timeout=None):
        """Append ``rows`` (an array of shape ``(n,) + shape[1:]``, or one
        row) along axis 0, which must be resizable (``maxshape[0]`` None or
        large enough). Returns once the rows are in buffer blocks; full
        blocks go to the workers. Past ``max_pending_bytes`` of blocks in
        flight it waits for room, at most ``timeout`` seconds (None: no
        bound), then raises TimeoutError; the rows before the block that
        did not fit are appended then (``len(ds)`` says how many). Raises
        :class:`WriteError` at once if a block of the writer has failed."""
        w = self._w
        with w._lock:
            w._check_usable()
            arr = self._coerce(rows)
            n = arr.shape[0]
            m0 = self.maxshape[0]
            if m0 is not None and self._n + n > m0:
                raise ValueError(f"{self._where()}: appending {n} rows would pass maxshape[0] = {m0} "
                                 f"(it has {self._n}); create it with maxshape=(None, ...) to grow it")
            deadline = None if timeout is None else time.monotonic() + timeout
            c0 = self.chunks[0]
            done = 0
            while done < n:
                pos = self._n
                band, at = divmod(pos, c0)
                take = min(c0 - at, n - done)
                if self._tail is None or self._tail[0] != band:
                    self._tail = (band, w._core.block_new(self._ds, band, at > 0))
                cap = self._tail[1]
                if at + take == c0:  # this fills the block: room first, so a timeout loses nothing
                    timeout_left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if not w._core.reserve(self._block_bytes, timeout_left):
                        w._raise_failures()
                    w._core.block_put(cap, at, arr[done:done + take], take)
                    self._n = pos + take
                    self._tail = None
                    _live_writers.wrote(w._key, self.name)
                    w._core.submit(cap, c0, False)
                else:
                    w._core.block_put(cap, at, arr[done:done + take], take)
                    self._n = pos + take
                done += take

    async def append_async(self, rows):
        """``await ds.append_async(rows)``: :meth:`append` for asyncio code.

        Never blocks the loop for room: past ``max_pending_bytes`` it
        appends what fits, then awaits the writer's event fd (written when
        a block commits or fails; no thread per wait) and goes on. Raises
        what :meth:`append` raises. Cancelling the awaiting task stops the
        append between blocks: the rows before stay appended (``len(ds)``
        says how many), the rest are not."""
        arr = self._coerce(rows)
        n = arr.shape[0]
        done = 0
        while done < n:
            before = self._n
            try:
                self.append(arr[done:], timeout=0)
                return
            except TimeoutError:
                done += self._n - before
                await wait_fd(self._w._core.event_fd())

    def __setitem__(self, key, value):
        """``ds[i:j] = array`` (or ``ds[i] = row``): write rows i..j of
        axis 0, which must lie inside the dataset's current shape
        (IndexError otherwise; grow it with append). Bands of whole chunks
        are written as they are; a band only partly covered is read back
        (after any pending block of it commits), merged and rewritten whole."""
        w = self._w
        with w._lock:
            w._check_usable()
            if isinstance(key, tuple):
                if len(key) != 1:
                    raise TypeError(f"{self._where()}: the Writer assigns whole rows: ds[i:j] = array")
                key = key[0]
            if isinstance(key, slice):
                start, stop, step = key.indices(self._n)
                if step != 1:
                    raise ValueError(f"{self._where()}: slices with a step are not supported")
                if key.stop is not None and key.stop > self._n:
                    raise IndexError(f"{self._where()}: rows {start}..{key.stop} pass its {self._n} rows")
                stop = max(stop, start)
            else:
                try:
                    i = int(key.__index__())
                except AttributeError:
                    raise TypeError(f"{self._where()}: index with an int or a slice, not {type(key).__name__}") \
                        from None
                if i < 0:
                    i += self._n
                if not 0 <= i < self._n:
                    raise IndexError(f"{self._where()}: row {key} out of range for {self._n} rows")
                start, stop = i, i + 1
            arr = self._coerce(value, stop - start)
            c0 = self.chunks[0]
            pos = start
            while pos < stop:
                band, at = divmod(pos, c0)
                take = min(c0 - at, stop - pos)
                src = arr[pos - start:pos - start + take]
                if self._tail is not None and self._tail[0] == band:
                    w._core.block_put(self._tail[1], at, src, take)
                else:
                    whole = at == 0 and take >= self._valid(band)
                    cap = w._core.block_new(self._ds, band, not whole)
                    w._core.block_put(cap, at, src, take)
                    if not w._core.reserve(self._block_bytes, None):
                        w._raise_failures()
                    _live_writers.wrote(w._key, self.name)
                    w._core.submit(cap, self._valid(band), False)
                pos += take

    def _flush_tail(self):
        """Submit a copy of the partial tail block (fill in the rows not
        written yet); the block stays WRITABLE for more rows."""
        if self._tail is not None:
            band, cap = self._tail
            if not self._w._core.reserve(self._block_bytes, None):
                self._w._raise_failures()
            _live_writers.wrote(self._w._key, self.name)
            self._w._core.submit(cap, self._valid(band), True)


class Writer:
    """Write HDF5 datasets behind the producer.

    Parameters
    ----------
    path : str or os.PathLike
        The HDF5 file.
    mode : {"a", "w"}
        "a" (default): read/write, creating the file if absent; "w":
        create, truncating an existing file.
    n_procs : int, optional
        Worker threads that filter and write blocks (default: the CPUs).
    max_pending_bytes : int
        At most this many bytes of blocks in flight (PENDING); past it
        ``append`` waits (default 256 MiB). One block always fits.
    budget : Budget, optional
        An I/O budget (:class:`multiload.Budget`, docs/budgets.md): every
        chunk write first takes its stored (compressed) bytes and one I/O
        from it, so a background writer cannot starve a training feed that
        shares the disk. ``stats()`` then gains a ``"budget"`` dict.
        ``close(abort=True)`` wakes writes waiting on it at once.

    A Writer is a context manager (``with`` and ``async with``); leaving it
    closes it, flushing. HDF5's file lock is not taken: another process may
    open the file, and sees every row written before the last ``flush()``.
    """

    def __init__(self, path, mode="a", *, n_procs=None, max_pending_bytes=DEFAULT_MAX_PENDING_BYTES, budget=None):
        if mode not in ("a", "w"):
            raise ValueError(f"mode must be 'a' or 'w', not {mode!r}")
        if n_procs is None:
            n_procs = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
        if isinstance(n_procs, bool) or not isinstance(n_procs, int) or not 1 <= n_procs <= 256:
            raise ValueError(f"n_procs must be an int in 1..256, not {n_procs!r}")
        if isinstance(max_pending_bytes, bool) or not isinstance(max_pending_bytes, int) or \
                not 1 <= max_pending_bytes < 2**63:
            raise ValueError(f"max_pending_bytes must be an int in 1..2**63-1, not {max_pending_bytes!r}")
        budget_core, budget_priority = _budget.core_of(budget)
        self.filename = os.fspath(path)
        self.mode = mode
        self.max_pending_bytes = max_pending_bytes
        self._lock = threading.RLock()
        self._datasets = {}
        self._closed = False
        self._core = _core.WriterCore(self.filename, mode == "w", n_procs, max_pending_bytes, budget_core,
                                      budget_priority)
        self._budget = budget
        self._key = _live_writers.register(self, self.filename)

    # datasets

    @staticmethod
    def _norm(name):
        return "/" + name.strip("/")

    def _has(self, name):
        return self._norm(name) in self._datasets

    def create_dataset(self, name, shape=None, dtype=None, data=None, *, chunks=None, maxshape=None,
                       compression=None, compression_opts=None, shuffle=None, fletcher32=None, fillvalue=None):
        """Create (or, with the same parameters, open) dataset ``name``, with
        h5py's meanings and defaults: ``chunks`` None guesses as h5py does
        (the Writer always chunks), ``maxshape`` None is fixed at ``shape``
        (an entry None: unlimited), ``compression`` "gzip" (level
        ``compression_opts``, default 4; an int 0-9 means gzip of that
        level), "lzf" or None, ``shuffle``, ``fletcher32``, ``fillvalue``
        (default 0). ``data``, if given, sets shape and dtype and is written.
        A dataset that exists with other parameters is a ValueError naming
        the difference. Returns a :class:`WriterDataset`."""
        with self._lock:
            self._check_open()
            path = self._norm(name)
            if data is not None:
                data = np.asarray(data)
                if shape is None:
                    shape = data.shape
                if dtype is None:
                    dtype = data.dtype
            if shape is None:
                raise TypeError(f"dataset {path!r}: give shape (or data)")
            shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(x) for x in shape)
            where = f"dataset {path!r} in {self.filename!r}"
            if len(shape) < 1:
                raise ValueError(f"{where}: the Writer writes datasets of at least one dimension")
            if len(shape) > 32 or any(not 0 <= x < 2**63 for x in shape):
                raise ValueError(f"{where}: shape {shape} must be 1 to 32 sizes, each 0 <= size < 2**63")
            dt = np.dtype("f4" if dtype is None else dtype)
            if isinstance(compression, (int, np.integer)) and not isinstance(compression, bool):
                compression, compression_opts = "gzip", int(compression)
            if compression not in (None, "gzip", "lzf"):
                raise ValueError(f"{where}: compression must be 'gzip', 'lzf' or None, not {compression!r}")
            if compression == "gzip":
                level = 4 if compression_opts is None else compression_opts
                if not isinstance(level, (int, np.integer)) or not 0 <= level <= 9:
                    raise ValueError(f"{where}: gzip compression_opts must be an int 0-9, not {level!r}")
            elif compression_opts is not None:
                raise ValueError(f"{where}: compression_opts without gzip")
            ms = shape if maxshape is None else tuple(None if m is None else int(m) for m in maxshape)
            if len(ms) != len(shape) or any(m is not None and not s <= m < 2**63 for m, s in zip(ms, shape)):
                raise ValueError(f"{where}: maxshape {maxshape} does not fit shape {shape}")
            if chunks is True or chunks is None:
                ch = guess_chunk(shape, ms, dt.itemsize)
            else:
                ch = (chunks,) if isinstance(chunks, (int, np.integer)) else tuple(int(c) for c in chunks)
                if len(ch) != len(shape) or any(not 1 <= c < 2**32 for c in ch):
                    raise ValueError(f"{where}: chunks {chunks} do not fit shape {shape}")
                if any(m is not None and c > m and m > 0 for c, m in zip(ch, ms)):
                    raise ValueError(f"{where}: chunks {ch} larger than maxshape {ms}")
            filters = []
            if shuffle:
                filters.append((_SHUFFLE, _OPTIONAL, ()))
            if compression == "gzip":
                filters.append((_GZIP, _OPTIONAL, (int(level),)))
            elif compression == "lzf":
                filters.append((_LZF, _OPTIONAL, ()))
            if fletcher32:
                filters.append((_FLETCHER32, 0, ()))
            fill = None
            if fillvalue is not None:
                try:
                    fill = np.array(fillvalue, dtype=dt).tobytes()
                except (TypeError, ValueError, OverflowError) as e:
                    raise ValueError(f"{where}: fillvalue {fillvalue!r} is not a {dt} value: {e}") from None
            try:
                existing = self._open(path)
            except KeyError:
                existing = None
            if existing is not None:
                self._compare(existing, shape, dt, chunks, ms, compression, compression_opts, shuffle,
                              fletcher32, fillvalue)
                ds = existing
            else:
                spec = _dtype_spec(dt, where)
                idx = self._core.create(path, spec, shape, ms, ch, filters, fill)
                ds = WriterDataset(self, path, idx, self._core.info(idx))
                self._datasets[path] = ds
        if data is not None:
            ds[0:shape[0]] = data
        return ds

    def _compare(self, ds, shape, dt, chunks, ms, compression, compression_opts, shuffle, fletcher32, fillvalue):
        diffs = []
        grows = ds.maxshape[0] is None
        if (ds.shape[1:] if grows else ds.shape) != (shape[1:] if grows else shape):
            diffs.append(f"shape {ds.shape} (asked {shape})")
        if ds.dtype != dt:
            diffs.append(f"dtype {ds.dtype} (asked {dt})")
        if chunks not in (None, True) and tuple(ds.chunks) != (
                (chunks,) if isinstance(chunks, int) else tuple(chunks)):
            diffs.append(f"chunks {ds.chunks} (asked {chunks})")
        if tuple(ds.maxshape) != tuple(ms):
            diffs.append(f"maxshape {ds.maxshape} (asked {ms})")
        if ds.compression != compression:
            diffs.append(f"compression {ds.compression!r} (asked {compression!r})")
        elif compression == "gzip" and ds.compression_opts != (4 if compression_opts is None else compression_opts):
            diffs.append(f"compression_opts {ds.compression_opts} (asked {compression_opts})")
        if ds.shuffle != bool(shuffle):
            diffs.append(f"shuffle {ds.shuffle} (asked {bool(shuffle)})")
        if ds.fletcher32 != bool(fletcher32):
            diffs.append(f"fletcher32 {ds.fletcher32} (asked {bool(fletcher32)})")
        if fillvalue is not None and np.array(fillvalue, dtype=ds.dtype).tobytes() != \
                np.array(ds.fillvalue, dtype=ds.dtype).tobytes():
            diffs.append(f"fillvalue {ds.fillvalue!r} (asked {fillvalue!r})")
        if diffs:
            raise ValueError(f"dataset {ds.name!r} in {self.filename!r} exists with other parameters: "
                             + "; ".join(diffs))

    def _open(self, path):
        ds = self._datasets.get(path)
        if ds is None:
            idx = self._core.find(path)
            ds = WriterDataset(self, path, idx, self._core.info(idx))
            self._datasets[path] = ds
        return ds

    def __getitem__(self, name):
        """The existing dataset ``name`` (made by this Writer, h5py, PyTables
        or anyone: chunked, with filters the Writer encodes). KeyError if
        absent; ValueError if it cannot be written (contiguous storage, an
        other filter)."""
        with self._lock:
            self._check_open()
            return self._open(self._norm(name))

    def __contains__(self, name):
        try:
            self[name]
        except (KeyError, TypeError, ValueError):
            return False
        return True

    # errors

    def _failures(self):
        return [BlockError(err, msg, self.filename, ds, range(row0, row0 + n))
                for ds, row0, n, err, msg in self._core.failures()]

    def _raise_failures(self, extra=None):
        errors = self._failures()
        if extra is not None:
            errors.append(extra)
        lost = "; ".join(f"dataset {e.dataset!r} rows {e.rows.start}..{e.rows.stop}: {e.strerror}"
                         if e.dataset else e.strerror for e in errors[:8])
        more = f" (and {len(errors) - 8} more)" if len(errors) > 8 else ""
        raise WriteError(f"{len(errors)} block(s) not written to {self.filename!r}: {lost}{more}",
                         self.filename, errors)

    def _check_open(self):
        if self._closed:
            raise RuntimeError(f"the Writer of {self.filename!r} is closed")

    def _check_usable(self):
        self._check_open()
        if self._core.stats()["failed_blocks"]:
            self._raise_failures()

    # flush and close

    def _submit_tails(self):
        for ds in self._datasets.values():
            ds._flush_tail()

    def _finish_flush(self):
        for ds in self._datasets.values():
            if ds._n > 0:
                self._core.grow(ds._ds, ds._n)
        bad = self._core.sync()
        extra = None
        if bad is not None:
            err, msg = bad
            extra = BlockError(err, msg, self.filename, None, range(0))
        if extra is not None or self._core.stats()["failed_blocks"]:
            self._raise_failures(extra)

    def _flush_sync(self, timeout):
        with self._lock:
            self._check_open()
            self._submit_tails()
            if not self._core.wait_idle(timeout):
                raise TimeoutError(f"blocks of {self.filename!r} still pending after {timeout} s")
            self._finish_flush()

    async def _flush_async(self):
        with self._lock:
            self._check_open()
            self._submit_tails()
        fd = self._core.event_fd()
        while not self._core.wait_idle(0):
            await wait_fd(fd)
        loop = asyncio.get_running_loop()
        # H5Fflush and fsync are disk I/O: run them off the loop.
        await loop.run_in_executor(None, self._finish_flush_locked)

    def _finish_flush_locked(self):
        with self._lock:
            self._check_open()
            self._finish_flush()

    def flush(self, timeout=None):
        """Write every row given so far: partial blocks too (the rows not
        written yet of their chunk hold the fill value), wait for every
        PENDING block, then H5Fflush and fsync. After it returns another
        process can open the file and read every row. Raises one
        :class:`WriteError` rolling up every block that failed.

        Called on a thread running an asyncio loop it does not block: it
        returns an awaitable (``await writer.flush()``); elsewhere it
        blocks (at most ``timeout`` seconds for the pending blocks, then
        TimeoutError) and returns None."""
        if _running_loop() is not None:
            return self._flush_async()
        self._flush_sync(timeout)
        return None

    def commit_all(self, timeout=None):
        """Alias of :meth:`flush` (Arvados' BlockManager name)."""
        return self.flush(timeout)

    def close(self, abort=False):
        """Close the writer; always completes and is idempotent. By default
        flush first (raising its :class:`WriteError` after closing, if any);
        with ``abort=True`` discard every block not yet started and every
        partial block. Blocking (also on an asyncio thread: use
        ``async with`` or ``await writer.aclose()`` there)."""
        with self._lock:
            if self._closed:
                return
            error = None
            try:
                if not abort:
                    try:
                        self._flush_sync(None)
                    except WriteError as e:
                        error = e
            except BaseException:  # Ctrl-C (or another error) in the flush: discard the rest, close
                abort = True
                raise
            finally:
                self._closed = True
                for ds in self._datasets.values():
                    ds._tail = None  # WRITABLE blocks: freed with their capsules
                try:
                    self._core.close(abort)
                finally:
                    _live_writers.unregister(self, self._key)
            if error is not None:
                raise error

    async def aclose(self, abort=False):
        """Close without blocking the loop: await the flush, then close."""
        error = None
        if not abort and not self._closed:
            try:
                await self._flush_async()
            except WriteError as e:
                error = e
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._close_after_flush, abort or error is not None)
        if error is not None:
            raise error

    def _close_after_flush(self, abort):
        try:
            self.close(abort=True) if abort else self.close()
        except WriteError:
            pass

    @property
    def closed(self):
        return self._closed

    def event_fd(self):
        """The core's eventfd, written whenever a block commits or fails
        (asyncio waits on it through multiload._aio.wait_fd)."""
        return self._core.event_fd()

    def stats(self):
        """Counters: ``pending_bytes``, ``pending_blocks``,
        ``committed_blocks``, ``failed_blocks``; with a budget, ``"budget"``
        (achieved ``bytes_per_s`` and ``iops``, ``throttled_seconds``, ...:
        docs/budgets.md)."""
        return self._core.stats()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        await self.aclose()

    def __repr__(self):
        state = "closed" if self._closed else "open"
        return f"<multiload.Writer {self.filename!r} ({state})>"

    def __del__(self):
        try:
            if not self._closed:
                self.close(abort=False)
        except Exception:
            pass
