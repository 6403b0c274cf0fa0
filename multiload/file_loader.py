"""The whole-file loader: AsyncLoader's API, done right.

Worker processes (or threads) ask for files by path; loader threads --
in this process, in a loader process, or in whichever process calls
:meth:`FileLoader.become_loader` -- read each whole file into a slot of
one shared memory region (a sealed memfd), and the worker takes the bytes
(or the error) from there, zero-copy if it likes::

    loader = multiload.FileLoader(queue_depth=32, max_file_size=1 << 20, n_workers=1)
    loader.start()                      # loader threads in this process
    worker = loader.get_worker_context(0)
    for path in paths:
        while not worker.request(path):  # False: every entry in use
            with worker.wait_get() as entry:
                use(entry.array)           # numpy uint8 view, valid until release
    ...
    loader.close()

See docs/file-loader.md for the modes, the fault guarantees and what
differs from AsyncLoader.
"""

import concurrent.futures
import multiprocessing
import os
import select
import signal
import threading
import time
from multiprocessing.reduction import DupFd

from . import _core
from . import budget as _budget
from ._io import io_mode_code
from ._signals import QueueClosed

__all__ = ["FileLoader", "Worker", "Entry", "FileRequest"]

#: The entry type :meth:`Worker.try_get` and :meth:`Worker.wait_get` return.
Entry = _core.FileEntry

DEFAULT_DISPATCH_N = 16  # entries a loader thread reads per submit
DEFAULT_SERVE_TIMEOUT = 10.0  # s a waiting worker allows for somebody to serve the loader
_STOP_TIMEOUT = 5.0  # s close() gives a loader process to leave before it is killed


def _cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _attach(dupfd):
    fd = dupfd.detach()
    try:
        return _core.FileRegion.attach(fd)
    finally:
        os.close(fd)


def _rebuild_worker(dupfd, worker_id, serve_timeout):
    return Worker(_attach(dupfd), worker_id, serve_timeout)


def _rebuild_loader(dupfd, params):
    return FileLoader(_region=_attach(dupfd), **params)


class _Watch:
    """Is the process that started us alive? A pidfd (immune to pid reuse)
    where the kernel has them, else signal 0. Not getppid(): a forkserver
    child's parent is the fork server, not the process that asked for it."""

    def __init__(self, pid):
        self.pid, self.fd = pid, None
        try:
            self.fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pass

    def alive(self):
        if self.fd is not None:
            return not select.select([self.fd], [], [], 0)[0]  # readable once it exited
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def _loader_main(loader, parent_pid):
    """A spawned loader process: serve until the loader is closed or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it closes us
    loader.become_loader(_parent_pid=parent_pid)


class FileRequest:
    """One file request with a handle: what :meth:`Worker.submit` returns.

    Its entry is *bound* to the handle: once read it goes to this handle
    alone (:meth:`wait`, ``await request``), never to ``try_get`` /
    ``wait_get``. It can be cancelled in any state before it is taken
    (docs/file-loader.md, "Cancellation"):

    - queued: it never runs (no loader thread opens or reads the file) and
      its entry is free for a new request at once;
    - running (a loader thread reads it): *abandoned* -- the read completes
      and the core then frees the entry, which nobody was handed;
    - completed, not taken: its result is discarded and the entry freed
      at once.

    ``cancel()`` never waits for a read: it takes the region's lock only.
    Cancelling a task that awaits the request cancels the request (as
    ``await`` of a Reader request does). A handle dropped without being
    taken or cancelled cancels its request, so its entry is never lost.
    Handles belong to the process that submitted them (they do not pickle).
    """

    __slots__ = ("_worker", "_k", "_seq", "_path", "_lock", "_entry", "_handed", "_cancelled", "__weakref__")

    def __init__(self, worker, entry, seq, path):
        self._worker = worker
        self._k = entry
        self._seq = seq
        self._path = path
        self._lock = threading.Lock()
        self._entry = None  # the Entry once taken
        self._handed = False  # True once wait()/await returned the entry to the caller
        self._cancelled = False

    @property
    def path(self):
        """The path as submitted."""
        return self._path

    def _status(self):
        return self._worker._region.status(self._worker.id, self._k, self._seq)

    def cancel(self):
        """Cancel the request unless its entry was taken already.

        Never blocks for long: it takes the region's lock only, never waits
        for a read.

        Returns
        -------
        bool
            True if the request is cancelled (now or before): queued, it
            never runs; running, it is abandoned (the read completes, then
            the core frees the entry); completed, its result is discarded.
            False if its entry was taken (by :meth:`wait` or ``await``):
            the entry is the caller's, to release.
        """
        with self._lock:
            if self._entry is not None:
                return False
            if self._cancelled:
                return True
            st = self._worker._region.cancel(self._worker.id, self._k, self._seq)
            if st == "taken":  # another thread's wait() has it
                return False
            self._cancelled = True
            return True

    def cancelled(self):
        """True if the request was cancelled (by :meth:`cancel`, a cancelled
        awaiting task, or :meth:`Worker.cancel_pending`)."""
        if self._cancelled:
            return True
        if self._entry is not None:
            return False
        return self._status() in ("cancelled", "gone")

    def running(self):
        """True while a loader thread reads the file (and it is not cancelled)."""
        if self._cancelled or self._entry is not None:
            return False
        return self._status() == "running"

    def done(self):
        """True once the request completed (read or failed) or was cancelled:
        :meth:`wait` then returns (or raises) at once."""
        if self._cancelled or self._entry is not None:
            return True
        return self._status() in ("done", "taken", "cancelled", "gone")

    def _take(self, timeout):
        """The Entry, QueueClosed, or None (not yet, timeout 0); raises
        CancelledError if cancelled, TimeoutError, LoaderDiedError."""
        w = self._worker
        with self._lock:
            if self._entry is not None:
                return self._entry
            if self._cancelled:
                raise concurrent.futures.CancelledError(f"the request of {self._path!r} was cancelled")
        try:
            r = w._region.take(w.id, self._k, self._seq, timeout, w._serve_timeout)
        except TimeoutError:
            raise TimeoutError(f"the file {self._path!r} (worker {w.id}) was not read within {timeout} s") from None
        if r is None:
            return None
        if r is False:
            return QueueClosed
        if r is True:
            with self._lock:
                self._cancelled = True
            raise concurrent.futures.CancelledError(f"the request of {self._path!r} was cancelled")
        with self._lock:
            self._entry = r
        return r

    def wait(self, timeout=None):
        """Wait for the file and return its :class:`Entry` (the same one on
        every call).

        Parameters
        ----------
        timeout : float or None
            Seconds to wait at most; None: as long as it takes (Ctrl-C and
            close() end it).

        Returns
        -------
        Entry or QueueClosed
            The entry (``get_data()`` raises the file's OSError if it
            failed); :data:`multiload.QueueClosed` (falsy) once the loader
            is closed.

        Raises
        ------
        concurrent.futures.CancelledError
            The request was cancelled.
        TimeoutError
            Not completed within ``timeout``.
        LoaderDiedError
            (a RuntimeError) the loader process died; RuntimeError if
            nobody served the loader for ``serve_timeout`` seconds.
        """
        r = self._take(timeout)
        if r is None:
            raise TimeoutError(f"the file {self._path!r} was not read within {timeout} s")
        if r is not QueueClosed:
            self._handed = True
        return r

    def __await__(self):
        """``entry = await request``: :meth:`wait` for asyncio.

        With the loader threads in this process (``FileLoader.start()``)
        the loop waits on the loader's event fd (no thread per waiter);
        with a loader in another process the wait runs in the loop's
        default executor, as :meth:`Worker.wait_get_async` does.
        Cancelling the awaiting task cancels the request in whatever state
        it is (queued: never runs; running: abandoned; completed: its entry
        freed); an entry taken on behalf of the cancelled task is released,
        never handed out.
        """
        return self._await().__await__()

    async def _await(self):
        import asyncio

        from . import _aio

        region = self._worker._region
        try:
            if region.serving_here:
                def poll():
                    r = self._take(0)
                    if r is None:
                        region.arm()  # then look once more: a completion in between fires the fd
                        r = self._take(0)
                    return False if r is None else r

                r = await _aio.poll_fd(region.event_fd(), poll, None, f"read of {self._path!r}")
            else:
                r = await asyncio.get_running_loop().run_in_executor(None, self._take, None)
        except BaseException:  # CancelledError (task cancelled), KeyboardInterrupt, loop closing
            self._abandon()
            raise
        if r is not QueueClosed:
            self._handed = True
        return r

    def _abandon(self):
        """The awaiting task gave up: cancel the request; an entry taken for
        it (by an executor thread, just before) is released. Never waits."""
        if self.cancel():
            return
        with self._lock:
            e = None if self._handed else self._entry
        if e is not None:
            e.release()

    def __del__(self):
        try:
            if self._entry is None and not self._cancelled:
                self._worker._region.cancel(self._worker.id, self._k, self._seq)
        except Exception:  # noqa: BLE001 - never raise from __del__
            pass

    def __reduce__(self):
        raise TypeError("a FileRequest belongs to the process that submitted it: pickle the Worker instead")

    def __repr__(self):
        if self._entry is not None:
            state = "taken"
        elif self._cancelled:
            state = "cancelled"
        else:
            try:
                state = self._status()
            except Exception:  # noqa: BLE001
                state = "?"
        return f"<multiload FileRequest {self._path!r} {state}>"


class Worker:
    """One worker context: its own ``queue_depth`` entries of the loader.

    Made by :meth:`FileLoader.get_worker_context`. It pickles (the region's
    memfd travels as a duplicated descriptor), so it can be handed to a
    worker process as an argument; forked children can use it as is. Use
    one context from one consumer at a time (threads of one process may
    share it; entries come out in completion order).
    """

    __slots__ = ("_region", "id", "_serve_timeout")

    def __init__(self, region, worker_id, serve_timeout=DEFAULT_SERVE_TIMEOUT):
        self._region = region
        self.id = worker_id
        self._serve_timeout = float(serve_timeout)

    def request(self, path, timeout=0.0):
        """Queue ``path`` (str, bytes or os.PathLike) to be read whole.

        Parameters
        ----------
        path : str, bytes or os.PathLike
            Any path ``open()`` takes; no length limit of our own (longer
            than PATH_MAX fails on its entry with ENAMETOOLONG, as open()).
        timeout : float or None
            0 (the default, AsyncLoader's behaviour): return at once.
            Seconds: wait that long for an entry to be released. None:
            wait as long as it takes (Ctrl-C and close() end it).

        Returns
        -------
        bool
            True if queued; False when every entry of this worker is in use
            (requested, loading, completed but not taken, or taken and not
            released) and none freed in time: back-pressure.

        Raises
        ------
        RuntimeError
            The loader is closed; or a waiting request could never end,
            because every entry is completed or held by this thread.
        ValueError
            A path with an embedded NUL, as open() raises.
        """
        return self._region.request(self.id, path, timeout)

    def submit(self, path, timeout=0.0):
        """Queue ``path`` with a handle: :meth:`request` that can be
        cancelled and awaited.

        ``entry = await worker.submit(path)`` or
        ``worker.submit(path).wait()``; the entry goes to the handle alone,
        never to :meth:`try_get` / :meth:`wait_get`. The handle's
        ``cancel()`` cancels it in any state before it is taken
        (:class:`FileRequest`).

        Parameters
        ----------
        path, timeout
            As :meth:`request`.

        Returns
        -------
        FileRequest or None
            The handle; None when every entry of this worker is in use and
            none freed in time (back-pressure, as ``request()``'s False).

        Raises
        ------
        RuntimeError, ValueError
            As :meth:`request`.
        """
        r = self._region.submit(self.id, path, timeout)
        if r is None:
            return None
        return FileRequest(self, r[0], r[1], path)

    def cancel_pending(self):
        """Cancel every queued request of this worker (those of
        :meth:`request` and of :meth:`submit`): none of them runs, their
        entries are free at once. Requests being read or completed are
        left alone. Never waits.

        Returns
        -------
        int
            How many requests were cancelled.
        """
        return self._region.cancel_pending(self.id)

    def try_get(self):
        """The oldest completed entry, or None if none has completed.

        Returns :data:`multiload.QueueClosed` (falsy) once the loader is
        closed. Raises :class:`multiload.LoaderDiedError` if the loader
        process died.
        """
        r = self._region.get(self.id, 0, self._serve_timeout)
        return QueueClosed if r is False else r

    def wait_get(self, timeout=None):
        """Wait for the oldest completed entry and return it.

        Sleeps in the kernel (a futex) until a file completes; Ctrl-C
        raises KeyboardInterrupt at once (within 0.1 s).

        Parameters
        ----------
        timeout : float or None
            Seconds to wait at most; None waits as long as files are on
            their way.

        Returns
        -------
        Entry or QueueClosed
            The entry (check ``entry.ok`` or call ``get_data()``, which
            raises the file's OSError), or :data:`multiload.QueueClosed`
            (falsy) once the loader is closed.

        Raises
        ------
        TimeoutError
            Nothing completed within ``timeout``.
        LoaderDiedError
            (a RuntimeError) the loader process died, said within about
            0.1 s of its death.
        RuntimeError
            Nobody has served the loader for ``serve_timeout``
            seconds, or this worker has nothing requested, so waiting
            could never end.
        """
        r = self._region.get(self.id, timeout, self._serve_timeout)
        return QueueClosed if r is False else r

    async def wait_get_async(self, timeout=None):
        """``await worker.wait_get_async()``: :meth:`wait_get` for asyncio.

        Returns the oldest completed entry, or :data:`multiload.QueueClosed`
        once the loader is closed, and raises what :meth:`wait_get` raises.
        When the loader threads run in this process on this context's
        loader (``FileLoader.start()``), the loop waits on the loader's event
        fd -- no thread, whatever the number of waiting coroutines; the
        threads write it when a file completes or the loader closes. When
        the loader runs in another process (``spawn_loader``,
        ``become_loader`` elsewhere), that process cannot write this one's
        fd: the wait then runs :meth:`wait_get` in the loop's default
        executor (one executor thread per waiting coroutine, at most the
        executor's size: docs/async.md). Cancelling the awaiting task just
        stops the wait; no entry is taken.

        Raises
        ------
        TimeoutError
            Nothing completed within ``timeout`` seconds.
        RuntimeError
            This worker has nothing requested or loading (waiting could
            never end), or the loader died / nobody serves it.
        """
        import asyncio

        from . import _aio

        region = self._region
        if not region.serving_here:
            return await asyncio.get_running_loop().run_in_executor(None, self.wait_get, timeout)
        w, grace = self.id, self._serve_timeout

        def poll():
            r = region.get(w, 0, grace)
            if r is None:
                region.arm()  # then look once more: a completion in between fires the fd
                # Count before looking: an entry that completes in between is
                # then either counted or found, never neither.
                outstanding = region.outstanding(w)
                r = region.get(w, 0, grace)
                if r is None:
                    if not outstanding:
                        raise RuntimeError(f"worker {w} has nothing requested or loading: waiting for a file "
                                           "would never end")
                    return False
            return QueueClosed if r is False else r

        return await _aio.poll_fd(region.event_fd(), poll, timeout, f"file of worker {w} completed")

    def __reduce__(self):
        return (_rebuild_worker, (DupFd(self._region.fd), self.id, self._serve_timeout))

    def __repr__(self):
        return f"<multiload FileLoader Worker {self.id}>"


class FileLoader:
    """Read whole files for several workers through one shared region.

    Parameters
    ----------
    queue_depth : int
        Entries per worker context: how many files one worker may have
        requested, completed or held at once.
    max_file_size : int
        Bytes of the largest file; a larger one fails on its entry with
        EFBIG. Each entry's slot is this, rounded up to 4 KiB.
    n_workers : int
        Worker contexts (ids 0 .. n_workers - 1).
    n_threads : int, optional
        Loader threads (default: the CPUs this process may use).
    direct : bool
        Read with O_DIRECT (no page cache) where the filesystem allows;
        elsewhere the file is read buffered and ``stats()`` counts a
        ``direct_fallbacks``.
    dispatch_n : int, optional
        AsyncLoader's batch size: here, entries one loader thread reads
        per submit (1..256, default 16).
    max_idle_iters : int, optional
        Accepted for AsyncLoader compatibility and ignored: AsyncLoader's
        loader spun that many times before sleeping; this one always
        sleeps in the kernel until there is work.
    io_mode : {None, 'auto', 'io_uring', 'pread'}
        The read engine; None honours ``MULTILOAD_IO``.
    serve_timeout : float
        Seconds a waiting worker allows for somebody to serve the loader
        before ``wait_get`` raises (start, spawn_loader or become_loader).
    budget : Budget, optional
        An I/O budget (:class:`multiload.Budget`, docs/budgets.md) for the
        loader threads: before each batch's reads they take the files'
        bytes and one I/O per file, sleeping while it is empty; FileLoaders,
        queues and Readers given one Budget share its rates. It binds the
        threads of the process that serves: :meth:`start` and
        :meth:`become_loader` use it as given; a loader process
        (:meth:`spawn_loader`) gets a budget of the same limits of its own
        (budgets are per process). ``stats()`` of the serving process gains
        a ``"budget"`` dict.
    """

    def __init__(self, queue_depth=None, max_file_size=None, n_workers=1, *, n_threads=None, direct=False,
                 dispatch_n=None, max_idle_iters=None, io_mode=None, serve_timeout=DEFAULT_SERVE_TIMEOUT,
                 budget=None, _region=None):
        del max_idle_iters  # see the docstring
        self._budget_core, self._budget_priority = _budget.core_of(budget)
        self._budget = budget
        self._n_threads = _cpus() if n_threads is None else int(n_threads)
        if self._n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {n_threads!r}")
        self._dispatch_n = DEFAULT_DISPATCH_N if dispatch_n is None else int(dispatch_n)
        if not 1 <= self._dispatch_n <= 256:
            raise ValueError(f"dispatch_n must be 1..256, got {dispatch_n!r}")
        self._io_mode = io_mode
        self._io = io_mode_code(io_mode, "None, 'auto', 'io_uring' or 'pread'")
        self._direct = bool(direct)
        self._serve_timeout = float(serve_timeout)
        if _region is None:
            if queue_depth is None or max_file_size is None:
                raise TypeError("FileLoader needs queue_depth and max_file_size")
            _region = _core.FileRegion(int(queue_depth), int(max_file_size), int(n_workers))
            self._owner = os.getpid()
        else:
            self._owner = None  # attached (unpickled): close() still closes it for everyone
        self._region = _region
        self.queue_depth, self.max_file_size, self.n_workers = _region.geometry
        self._proc = None
        self._closed = False
        self._final_stats = None
        self.io_engine = None  # 'io_uring' or 'pread' once this process serves

    # -- serving -----------------------------------------------------------

    def start(self):
        """Serve from loader threads in this process; returns once they serve.

        Returns self. Raises RuntimeError if the loader is already served
        (here or by another process) or closed.
        """
        self._check_open()
        self.io_engine = self._region.serve_start(self._n_threads, self._dispatch_n, self._direct, self._io,
                                                  self._budget_core, self._budget_priority)
        return self

    def spawn_loader(self, start_method="spawn", timeout=60.0):
        """Start a loader process and return its pid once it serves.

        The process is started with ``spawn`` (or ``forkserver``), never
        ``fork``: forking a process that may already run threads (torch,
        numpy's BLAS, our own) copies locks other threads held. It is a
        daemon process; :meth:`close` stops it, and it leaves by itself
        if this process dies.

        Raises
        ------
        ValueError
            ``start_method`` is not 'spawn' or 'forkserver'.
        RuntimeError
            The process exited before serving (its exit code is named).
        TimeoutError
            It did not serve within ``timeout`` seconds (it is killed).
        """
        self._check_open()
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method must be 'spawn' or 'forkserver' (never 'fork'), got {start_method!r}")
        if self._proc is not None and self._proc.is_alive():
            raise RuntimeError(f"this FileLoader already has a loader process (pid {self._proc.pid})")
        ctx = multiprocessing.get_context(start_method)
        p = ctx.Process(target=_loader_main, args=(self, os.getpid()), name="multiload-file-loader", daemon=True)
        p.start()
        deadline = time.monotonic() + timeout
        while True:
            st = self._region.stats()
            if st["serving"] and st["server_pid"] == p.pid:
                break
            if not p.is_alive():
                p.join()
                raise RuntimeError(f"the FileLoader's loader process exited (exit code {p.exitcode}) before serving")
            if time.monotonic() > deadline:
                p.kill()
                p.join()
                raise TimeoutError(f"the FileLoader's loader process did not serve within {timeout} s")
            self._region.wait_event(0.1)
        self._proc = p
        return p.pid

    def become_loader(self, _parent_pid=None):
        """Serve from this process until the loader is closed (by any process).

        Starts the loader threads and sleeps; Ctrl-C closes the loader
        (every worker's ``wait_get`` then returns QueueClosed) and raises
        KeyboardInterrupt here.
        """
        self._check_open()
        watch = _Watch(_parent_pid) if _parent_pid is not None else None
        self.io_engine = self._region.serve_start(self._n_threads, self._dispatch_n, self._direct, self._io,
                                                  self._budget_core, self._budget_priority)
        try:
            while not self._region.wait_event(0.5):
                if watch is not None and not watch.alive():
                    self._region.close()  # the process that made us is gone: nobody will close us
                    break
        except BaseException:
            self._region.close()
            raise
        finally:
            self._region.serve_stop()
            if watch is not None and watch.fd is not None:
                os.close(watch.fd)

    # -- workers -----------------------------------------------------------

    def get_worker_context(self, worker_id):
        """The :class:`Worker` for ``worker_id`` (0 <= worker_id < n_workers)."""
        self._check_open()
        if not isinstance(worker_id, int) or not 0 <= worker_id < self.n_workers:
            raise ValueError(f"worker id must be an int in 0..{self.n_workers - 1}, got {worker_id!r}")
        return Worker(self._region, worker_id, self._serve_timeout)

    # -- state ---------------------------------------------------------------

    def stats(self):
        """Counters and states as a dict.

        requested, completed, failed, bytes (of completed files); in_flight
        (requested or loading), ready (completed, not taken), unreleased
        (taken, not released); serving, server_pid, server_dead, closed,
        direct_fallbacks; cancelled (requests cancelled while queued: never
        read), abandoned (cancelled while read or completed but not taken:
        read, then freed by the core), abandoning (cancelled, read still
        under way). After close(): the state at close. In the process
        whose threads serve with a budget, also ``budget``: what they took
        (``bytes``, ``ios``, ``bytes_per_s`` and ``iops`` achieved since they
        started, ``throttled_seconds``, ...; as
        :meth:`multiload.Budget.stats`, for this loader alone).
        """
        if self._final_stats is not None:
            return dict(self._final_stats)
        return self._region.stats()

    @property
    def closed(self):
        return self._closed

    def close(self):
        """Close the loader for every process; always returns.

        Requests in flight are abandoned (loader threads finish the batch
        they read, then leave); waiting workers wake up (``wait_get``
        returns QueueClosed, ``request`` raises). A loader process is
        stopped (killed if it has not left within a few seconds). The
        region is unmapped once the workers and entries of this process
        are gone too. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        region = self._region
        region.close()  # wakes everyone; joins this process's threads
        p, self._proc = self._proc, None
        if p is not None:
            p.join(_STOP_TIMEOUT)
            if p.is_alive():
                p.kill()
                p.join()
        self._final_stats = region.stats()
        self._region = None

    def _check_open(self):
        if self._closed:
            raise RuntimeError("this FileLoader is closed")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    async def __aenter__(self):
        """``async with FileLoader(...)``: closes it at the end (as ``with``)."""
        return self

    async def __aexit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            if self._owner == os.getpid():
                self.close()
        except Exception:  # interpreter shutdown: nothing left to report to
            pass

    def __reduce__(self):
        self._check_open()
        params = dict(n_threads=self._n_threads, direct=self._direct, dispatch_n=self._dispatch_n,
                      io_mode=self._io_mode, serve_timeout=self._serve_timeout, budget=self._budget)
        return (_rebuild_loader, (DupFd(self._region.fd), params))

    def __repr__(self):
        state = "closed" if self._closed else "open"
        return (f"<multiload FileLoader {self.n_workers} workers x {self.queue_depth} entries of "
                f"{self.max_file_size} bytes, {state}>")
