"""One loader process reading for many consumer processes.

:class:`LoaderProcess` starts one process (spawn or forkserver: never a fork
of a process that already runs threads) that owns the worker threads, their
io_uring instances and, per consumer, a ring in one sealed memfd mapping.
Consumer processes -- DistributedDataParallel ranks, DataLoader workers, an
evaluation job beside training -- connect by id and get a queue with the
Streamer queue's interface whose guards are zero-copy views of the shared
slots::

    loader = multiload.LoaderProcess("data.h5", "/images", n_procs=2, world_size=4)
    # in each of 4 processes (the loader pickles):
    with loader.connect(rank) as queue:          # rank's shard of the stream
        for guard in queue:
            with guard as block:
                train_step(block)
    loader.close()

How it works and what it guarantees (leases, a consumer killed with
SIGKILL, the loader dying, Ctrl-C, nothing left behind): docs/loader-process.md.
The loader's side is _loader_serve.py; the consumer's end of a shared ring
is _core.RemoteStream (src/python/remote_stream_type.c).
"""

import atexit
import multiprocessing
import os
import secrets
import signal
import threading
import time
import warnings
import weakref
from multiprocessing import connection, reduction

from . import _core, _loader_serve
from ._args import positive_int
from ._signals import LoaderDiedError
from .streamer import Queue

# get_queue()'s options a LoaderProcess or a connect() may set (path and
# filename are arguments of their own).
_QUEUE_OPTIONS = frozenset((
    "n_procs", "read_ahead", "cyclic", "block_size", "ordered", "field", "remainder", "io_mode",
    "direct", "shuffle", "seed", "epoch", "rank", "world_size"))

_START_METHODS = ("spawn", "forkserver")

# Owners' loaders still running, closed at interpreter exit.
_live = weakref.WeakSet()


@atexit.register
def _close_all_loaders():
    for loader in list(_live):
        try:
            loader.close()
        except Exception:
            pass


def _check_options(options, where):
    unknown = sorted(set(options) - _QUEUE_OPTIONS)
    if unknown:
        raise TypeError(f"{where} got unexpected option(s) {', '.join(map(repr, unknown))}; "
                        f"the queue options are {', '.join(sorted(_QUEUE_OPTIONS))}")


def _exit_status(code, owner_pid):
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-code} ({name})"
    if code == _loader_serve.EXIT_OWNER_GONE:
        return f"it stopped because its owner process {owner_pid} exited"
    return f"exited with code {code}"


def _zombie_exit_code(pid):
    """The exit code of a dead process not yet reaped by its parent (from
    /proc/<pid>/stat, field 52), in multiprocessing's convention (-signal
    or the code); None if it is running, reaped or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] != b"Z" or len(fields) < 50:
        return None
    raw = int(fields[49])
    return -(raw & 0x7F) if raw & 0x7F else raw >> 8


class LoaderProcess:
    """One process that reads HDF5 datasets for several consumer processes.

    Parameters
    ----------
    filename : str or os.PathLike, optional
        The default file of the consumers' streams (``connect()`` may name
        another).
    path : str, optional
        The default dataset (``connect()`` may name another).
    n_procs : int, default 4
        Worker threads of each consumer's stream, in the loader process.
    start_method : {'spawn', 'forkserver'}, default 'spawn'
        How the loader process starts. ``'fork'`` is refused: forking a
        process that runs threads (the caller's, multiload's, a framework's)
        can copy a held lock into the child.
    start : bool, default True
        Start the loader process now (:meth:`spawn_loader`). With False,
        call :meth:`spawn_loader` later, or run :meth:`become_loader` in a
        process of your own (AsyncLoader's pattern:
        ``multiprocessing.Process(target=loader.become_loader).start()``).
    connect_timeout : float, default 60
        Seconds :meth:`connect` waits for a loader that is not listening
        yet (one starting with ``become_loader``).
    **queue_options
        Defaults for every consumer's queue: :meth:`Streamer.get_queue`'s
        ``read_ahead``, ``cyclic``, ``block_size``, ``ordered``, ``field``,
        ``remainder``, ``io_mode``, ``direct``, ``shuffle``, ``seed``,
        ``epoch``, ``rank``, ``world_size``. With ``world_size > 1`` and no
        ``rank``, a consumer's rank is its id.

    A LoaderProcess pickles (its address and key), so consumer processes
    started with any method can connect. The process that made it owns the
    loader: its :meth:`close` stops the loader, and the loader stops by
    itself when its owner exits.
    """

    def __init__(self, filename=None, path=None, *, n_procs=None, start_method=None, start=True,
                 connect_timeout=60.0, **queue_options):
        _check_options(queue_options, "LoaderProcess()")
        if start_method is None:
            start_method = "spawn"
        if start_method == "fork":
            raise ValueError("start_method='fork' is refused: forking a process that runs threads can "
                             "copy a held lock into the loader; use 'spawn' or 'forkserver'")
        if start_method not in _START_METHODS:
            raise ValueError(f"start_method must be 'spawn' or 'forkserver', got {start_method!r}")
        self._n_procs = positive_int("n_procs", n_procs, 4)
        timeout = float(connect_timeout)
        if not timeout >= 0:
            raise ValueError("connect_timeout must be a non-negative number of seconds")
        self._filename = os.fspath(filename) if filename is not None else None
        self._path = path
        self._options = dict(queue_options)
        self._start_method = start_method
        self._connect_timeout = timeout
        self._address = f"\0multiload-loader-{os.getpid()}-{secrets.token_hex(8)}"
        self._authkey = secrets.token_bytes(32)
        self._owner_pid = os.getpid()
        self._owns = True          # this object (not a copy) is the owner: its close() stops the loader
        self._process = None       # the loader process, in the owner after spawn_loader()
        self._loader_pid = None    # known once a connection told it (or spawn_loader)
        self._closed = False
        self._lock = threading.Lock()
        if start:
            self.spawn_loader()

    # -- pickling: the address and key travel; the process object does not ----

    def __reduce__(self):
        return (_rebuild, ({
            "filename": self._filename, "path": self._path, "n_procs": self._n_procs,
            "options": self._options, "start_method": self._start_method,
            "connect_timeout": self._connect_timeout, "address": self._address,
            "authkey": self._authkey, "owner_pid": self._owner_pid, "loader_pid": self._loader_pid},))

    @property
    def filename(self):
        """str or None: the consumers' default file."""
        return self._filename

    @property
    def path(self):
        """str or None: the consumers' default dataset."""
        return self._path

    @property
    def pid(self):
        """int or None: the loader process's pid, once known in this process."""
        return self._loader_pid

    @property
    def is_owner(self):
        """bool: this is the LoaderProcess object that was made (not a copy
        unpickled from it): its close() stops the loader."""
        return self._owns and os.getpid() == self._owner_pid

    # -- starting -------------------------------------------------------------

    def spawn_loader(self, timeout=120.0):
        """Start the loader process and return once it serves.

        Returns the ``multiprocessing.Process``. Only the owner may call it,
        once. ``RuntimeError`` if the process exits before it serves (with
        its exit status); ``TimeoutError`` after ``timeout`` seconds.
        """
        with self._lock:
            if not self.is_owner:
                raise RuntimeError("only the process that made the LoaderProcess can start its loader")
            if self._closed:
                raise RuntimeError("this LoaderProcess is closed")
            if self._process is not None:
                raise RuntimeError("the loader process is already started")
            ctx = multiprocessing.get_context(self._start_method)
            theirs_r, ours_w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_loader_serve.main, name="multiload-loader", daemon=True,
                            args=(self._address, self._authkey, self._owner_pid, self._n_procs, ours_w))
            p.start()
            ours_w.close()
            self._process = p
            _live.add(self)
        try:
            deadline = time.monotonic() + timeout
            while not theirs_r.poll(0.1):
                if not p.is_alive():
                    raise RuntimeError(f"the loader process {p.pid} {_exit_status(p.exitcode, self._owner_pid)} "
                                       "before it could serve")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the loader process {p.pid} did not start serving within {timeout} s")
            try:
                msg = theirs_r.recv()
            except EOFError:
                p.join(5)
                raise RuntimeError(f"the loader process {p.pid} {_exit_status(p.exitcode, self._owner_pid)} "
                                   "before it could serve") from None
            if msg[0] == "error":
                raise msg[1]
            self._loader_pid = msg[1]
        except BaseException:
            self._stop_process()
            raise
        finally:
            theirs_r.close()
        return p

    def become_loader(self):
        """Serve the consumers from this process until the loader is closed.

        AsyncLoader's name. Blocks: run it in a process of its own, e.g.
        ``multiprocessing.Process(target=loader.become_loader)``. Returns
        when the owner calls :meth:`close` or the owner process exits.
        """
        if self.is_owner and self._process is not None:
            raise RuntimeError("this LoaderProcess already runs its loader process (spawn_loader)")
        self._loader_pid = os.getpid()
        _loader_serve.serve(self._address, self._authkey, self._owner_pid, self._n_procs)

    # -- consumers ------------------------------------------------------------

    def _dial(self, timeout):
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                return _loader_serve.dial(self._address, self._authkey)
            except (ConnectionRefusedError, ConnectionResetError, FileNotFoundError):
                if self._process is not None and not self._process.is_alive():
                    raise LoaderDiedError(self._death_message()) from None
                if self._closed:
                    raise RuntimeError("this LoaderProcess is closed") from None
                if time.monotonic() >= deadline:
                    raise ConnectionError(
                        f"no loader process is serving this LoaderProcess (waited {timeout:g} s): start "
                        "it with spawn_loader() or become_loader()") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def connect(self, consumer_id, path=None, *, filename=None, timeout=None, **queue_options):
        """Connect consumer ``consumer_id`` and return its queue.

        The queue has the Streamer queue's interface (``get()``, iteration,
        guards with zero-copy views of the shared slots, ``QueueClosed``,
        ``stats()``, ``close()``, a context manager). Each consumer has its
        own stream: the defaults given to the LoaderProcess, overridden by
        ``path``, ``filename`` and ``queue_options`` here.

        Parameters
        ----------
        consumer_id : int
            The consumer's id, >= 0: a lease held until the queue is closed
            or the consumer's process exits. With ``world_size > 1`` and no
            ``rank``, it is the consumer's rank.
        path, filename : optional
            The dataset and file of this consumer's stream.
        timeout : float, optional
            Seconds to wait for a loader that is not serving yet (default:
            the LoaderProcess's ``connect_timeout``).
        **queue_options
            As :meth:`Streamer.get_queue`.

        Raises
        ------
        ValueError
            The id is in use by a live consumer; a bad option.
        LoaderDiedError
            The loader process is gone.
        FileNotFoundError, OSError, KeyError, TypeError
            As :meth:`Streamer.get_queue`, raised in the loader and re-raised here.
        """
        if isinstance(consumer_id, bool) or not isinstance(consumer_id, int) or consumer_id < 0:
            raise TypeError(f"consumer_id must be an int >= 0, got {consumer_id!r}")
        _check_options(queue_options, "connect()")
        options = {**self._options, **queue_options}
        filename = os.fspath(filename) if filename is not None else self._filename
        path = path if path is not None else self._path
        if filename is None or path is None:
            raise ValueError("connect() needs a file and a dataset: give them to LoaderProcess() or here")
        if not isinstance(path, str):
            raise TypeError(f"path must be a str, got {type(path).__name__}")
        if "rank" not in options and int(options.get("world_size", 1) or 1) > 1:
            options["rank"] = consumer_id
        if self._closed:
            raise RuntimeError("this LoaderProcess is closed")
        conn = self._dial(self._connect_timeout if timeout is None else float(timeout))
        try:
            conn.send(("connect", {"consumer_id": consumer_id, "pid": os.getpid(),
                                   "filename": os.path.abspath(filename), "path": path, "options": options}))
            try:
                reply = conn.recv()
            except EOFError:
                raise LoaderDiedError(self._death_message()) from None
            if reply[0] == "error":
                raise reply[1]
            meta = reply[1]
            self._loader_pid = meta["loader_pid"]
            for category, message in meta["warnings"]:
                warnings.warn(message, category, stacklevel=2)
            stream = None
            if not meta["empty"]:
                fd = reduction.recv_handle(conn)
                try:
                    stream = _core.RemoteStream(
                        fd=fd, live_fd=conn.fileno(), dtype=meta["dtype"], row_shape=meta["shape"][1:],
                        row_bytes=meta["row_bytes"], ordered=meta["ordered"], kind=_schedule_kind(meta),
                        n_rows=meta["shape"][0], block_rows=meta["block_size"], remainder=meta["remainder"],
                        seed=meta["seed"], epoch=meta["epoch"], shard_rank=meta["rank"],
                        shard_count=meta["world_size"], field=meta["field"], filename=filename)
                finally:
                    os.close(fd)
        except BaseException:
            conn.close()
            raise
        return LoaderQueue(self, conn, stream, meta, consumer_id)

    def get_worker_context(self, id):
        """AsyncLoader's name for :meth:`connect` (with the defaults)."""
        return self.connect(id)

    # -- the end --------------------------------------------------------------

    def _death_message(self):
        pid = self._loader_pid if self._loader_pid is not None else (
            self._process.pid if self._process is not None else None)
        if self._process is not None:
            self._process.join(1.0)
            code = self._process.exitcode
        else:
            code = _zombie_exit_code(pid) if pid is not None else None
        return (f"the loader process {pid if pid is not None else '(unknown pid)'} is gone: "
                f"{_exit_status(code, self._owner_pid)}")

    def _stop_process(self):
        p = self._process
        if p is None:
            return
        p.join(10)
        if p.is_alive():  # it did not stop: make sure nothing is left behind
            p.terminate()
            p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)
        _live.discard(self)

    def close(self):
        """Stop the loader (owner) and wait for it; idempotent.

        Every consumer's queue then ends (``QueueClosed``). In a process
        that is not the owner, close() only marks this copy closed.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if not self.is_owner:
            return
        if self._process is None or self._process.is_alive():
            try:
                conn = _loader_serve.dial(self._address, self._authkey)
            except (OSError, EOFError, connection.AuthenticationError):
                conn = None  # not serving (never started, or already gone)
            if conn is not None:
                try:
                    conn.send(("shutdown",))
                    conn.recv()
                except (EOFError, OSError):
                    pass
                finally:
                    conn.close()
        self._stop_process()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        state = "closed" if self._closed else f"pid={self._loader_pid}" if self._loader_pid else "not started"
        return f"<multiload.LoaderProcess {self._filename!r} {self._path!r} {state}>"


def _rebuild(d):
    self = LoaderProcess.__new__(LoaderProcess)
    self._filename, self._path, self._n_procs = d["filename"], d["path"], d["n_procs"]
    self._options, self._start_method = d["options"], d["start_method"]
    self._connect_timeout = d["connect_timeout"]
    self._address, self._authkey, self._owner_pid = d["address"], d["authkey"], d["owner_pid"]
    self._loader_pid = d["loader_pid"]
    self._process = None
    self._owns = False
    self._closed = False
    self._lock = threading.Lock()
    return self


def _schedule_kind(meta):
    # schedule.h's ml_schedule_kind
    if meta["cyclic"]:
        return 1
    return 2 if meta["shuffle"] == "block" else 0


class _Shape:
    """What Queue needs of a layout, from the loader's description."""

    def __init__(self, meta):
        self.dtype = meta["dtype"]
        self.shape = meta["shape"]


class LoaderQueue(Queue):
    """A consumer's queue on a :class:`LoaderProcess`: made by ``connect()``.

    The Streamer queue's interface; its blocks are zero-copy views of slots
    in the loader's shared ring, reserved for this process until released.
    ``get()`` raises :class:`multiload.LoaderDiedError` if the loader
    process dies (within about a second). ``consumer_id`` and ``loader_pid``
    say who is connected to whom.
    """

    def __init__(self, loader, conn, stream, meta, consumer_id):
        super().__init__(stream, _Shape(meta), meta["block_size"], meta["n_blocks"], meta["field"],
                         meta["cyclic"], meta["ordered"], meta["read_ahead"], shuffle=meta["shuffle"],
                         seed=meta["seed"], epoch=meta["epoch"], rank=meta["rank"],
                         world_size=meta["world_size"])
        self._remainder = meta["remainder"]
        self._loader = loader
        self._conn = conn
        self._conn_lock = threading.Lock()
        self.consumer_id = consumer_id
        self.loader_pid = meta["loader_pid"]
        self._pid = os.getpid()
        if stream is None:  # an empty dataset: nothing to stream, the lease ends now
            self._hang_up()

    def get(self, timeout=None):
        try:
            return super().get(timeout)
        except BrokenPipeError:
            raise LoaderDiedError(f"{self._loader._death_message()}; this queue (consumer "
                                  f"{self.consumer_id}) cannot continue") from None

    def _hang_up(self):
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        if os.getpid() != self._pid:
            return  # a forked child's copy: the lease is the parent's, leave it alone
        try:  # wait (bounded) until the loader has freed the lease, so the id can reconnect at once
            conn.send(("close",))
            if conn.poll(_loader_serve.HANDSHAKE_SECONDS):
                conn.recv()
        except (OSError, EOFError, ValueError):
            pass
        conn.close()

    def close(self):
        """Close the queue: the loader stops this consumer's stream and
        frees its ring (idempotent). Views already made stay readable."""
        super().close()
        self._hang_up()

    def stats(self):
        """The Streamer queue's counters: ``blocks``, ``bytes``,
        ``wait_seconds`` and ``errors`` counted in this process, the rest
        (``io_mode``, the cold path's) from the loader's stream, plus
        ``consumer_id`` and ``loader_pid``."""
        st = super().stats()
        with self._conn_lock:
            conn = self._conn
            if conn is not None:
                try:
                    conn.send(("stats",))
                    reply = conn.recv()
                except (EOFError, OSError):
                    reply = None
                if reply and reply[0] == "ok":
                    for k, v in reply[1].items():
                        st.setdefault(k, v)
                    for k in ("io_mode", "prefetch_steps", "resident_steps", "batched_blocks", "batch_blocks"):
                        st[k] = reply[1].get(k, st.get(k))
        st["consumer_id"] = self.consumer_id
        st["loader_pid"] = self.loader_pid
        return st

    def __repr__(self):
        return (f"<multiload.LoaderQueue consumer={self.consumer_id} loader={self.loader_pid} "
                f"block_size={self.block_size} n_blocks={self.n_blocks}{' closed' if self._closed else ''}>")
