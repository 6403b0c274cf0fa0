"""Picklable handles: objects that pickle as a description of what they read
and open lazily in the process that uses them.

A *handle* (the Streamer, the Reader and its datasets; BatchStream and the
torch datasets build on the same pieces) is two things:

- its **description**: the files, datasets and options it was made with,
  and each file's identity as the handle first saw it. Small, picklable,
  the same in every process;
- its **process-local state**: native worker threads, rings, opened
  datasets, locks. Made in the process that uses it, on first use there;
  never pickled, never used by another process.

Pickling stores the description; unpickling makes a handle with no local
state, which opens on first use. A handle inherited over ``fork()`` (a
DataLoader worker, a ``multiprocessing`` pool under the fork start method)
holds its parent's local state, whose threads do not exist in the child and
whose locks may have been held at the fork: the pid check sees that the
state belongs to another process, *abandons* it (keeps it alive, never
closes or frees it: the C objects already refuse to touch their parent's
threads) and opens the handle anew in the child. So a handle works under
fork, spawn and forkserver alike (pytorch#11929: an h5py file opened in the
parent and used in DataLoader workers).

Live objects -- a queue, a guard, a request, a stage -- are state in
progress in one process and refuse to pickle with a TypeError saying what
to pickle instead (:func:`unpicklable`).

The pieces, each usable alone
-----------------------------
``pid``
    This process's id, renewed in a forked child (``os.register_at_fork``),
    so that ``obj._local_pid != _handle.pid`` is a check as cheap as an
    attribute read on every call. Read it as ``_handle.pid`` (an import of
    the name would keep the parent's value). A fork made by C code without
    Python's ``os.fork`` does not renew it: the C objects' own pid checks
    then raise RuntimeError, as before this module.
``FileRef(path)``
    A file as a handle describes it: ``path`` and ``identity``
    (:class:`FileIdentity`: size and ``st_mtime_ns``). Call
    ``ref.opening()`` before every open of the file: the first call
    anywhere records the identity; the first call in another process (or
    in a copy restored from a pickle) compares the file with the record and
    raises :class:`multiload.FileChangedError` naming what changed. Calls
    in a process that has checked cost one comparison. Pickles as
    ``(path, identity)``; ``ref.describe()`` records the identity first if
    the file was never opened.
``Handle``
    A mixin. A subclass defines ``_describe()`` (a dict: what pickles),
    the classmethod ``_from_description(d)`` (a handle with no local
    state), ``_open_local()`` (make this process's state) and, optionally,
    ``_local_state()`` (the objects of the current state, for
    abandonment). Entry points start with
    ``if self._local_pid != _handle.pid: self._reopen_local()``; a
    constructor that opens at once calls ``self._open_local()`` and then
    ``self._local_opened()``. The mixin gives ``__reduce__``.
``unpicklable(why, instead)``
    A ``__reduce_ex__`` raising TypeError, for live objects.

Example (what BatchStream could do)::

    from . import _handle

    class BatchStream(_handle.Handle):
        def __init__(self, path, datasets, batch_size):
            self._files = [_handle.FileRef(p) for p in expand(path)]
            self._datasets, self._batch_size = datasets, batch_size
            # lazy: nothing is opened until the first iteration

        def _describe(self):
            return {"files": [f.describe() for f in self._files],  # FileRefs pickle themselves
                    "datasets": self._datasets, "batch_size": self._batch_size}

        @classmethod
        def _from_description(cls, d):
            self = cls.__new__(cls)
            self._files, self._datasets, self._batch_size = d["files"], d["datasets"], d["batch_size"]
            return self

        def _open_local(self):            # once per process, under _handle's lock
            for f in self._files:
                f.opening()               # FileChangedError if a file changed
            self._readers = [Reader(f.path) for f in self._files]

        def _local_state(self):           # a forked child abandons these
            return getattr(self, "_readers", ())

        def __iter__(self):
            if self._local_pid != _handle.pid:
                self._reopen_local()
            ...

May import: the standard library, :mod:`multiload._signals`.
"""

import datetime
import errno
import os
import threading
from typing import NamedTuple

from ._signals import FileChangedError

__all__ = ["pid", "FileIdentity", "FileRef", "Handle", "abandon", "unpicklable", "DESCRIPTION_VERSION"]

#: This process's id; renewed in a forked child. Read it as ``_handle.pid``.
pid = os.getpid()

#: Held while a handle makes its process-local state (re-entrant: a handle's
#: state may open other handles). A forked child gets a fresh one, so a fork
#: while another thread held it never deadlocks the child.
_lock = threading.RLock()

#: A forked child's references to its parent's local state (see abandon()).
_abandoned = []

#: The format of the descriptions handles pickle as; restore() refuses others.
DESCRIPTION_VERSION = 1


def _after_fork_in_child():
    global pid, _lock
    pid = os.getpid()
    _lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def abandon(objects):
    """Keep ``objects`` (a parent's local state, in a forked child) alive
    and untouched for the rest of this process: their threads do not exist
    here and their locks may be held, so they are never closed or freed."""
    _abandoned.extend(o for o in objects if o is not None)


def _utc(ns):
    t = datetime.datetime.fromtimestamp(ns // 1_000_000_000, datetime.timezone.utc)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{ns % 1_000_000_000:09d}Z"


class FileIdentity(NamedTuple):
    """What says a file is still the file a handle describes: its size
    (bytes) and modification time (``st_mtime_ns``).

    Not the inode: a copy that keeps the times (``rsync -a``, ``cp -p``,
    staging to local scratch) is the same data under another inode, and
    inode numbers do not survive a move to another mount.
    """

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path):
        """The identity of the file at ``path`` now (OSError as os.stat raises it)."""
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns)

    def changes(self, now):
        """Words saying how ``now`` differs from this identity ('' if not)."""
        words = []
        if now.size != self.size:
            words.append(f"size {self.size} -> {now.size} bytes")
        if now.mtime_ns != self.mtime_ns:
            words.append(f"modified {_utc(self.mtime_ns)} -> {_utc(now.mtime_ns)}")
        return ", ".join(words)


class FileRef:
    """A file a handle reads: ``path`` and the ``identity`` it had when the
    handle first opened it (None until then).

    ``opening()`` before each open records or checks the identity (see the
    module docstring); an original handle never refuses its own file, a
    copy in another process refuses a changed one. Pickles as
    ``(path, identity)``.
    """

    __slots__ = ("path", "identity", "_checked_pid")

    def __init__(self, path, identity=None):
        self.path = os.fspath(path)
        self.identity = identity
        self._checked_pid = None  # the process that recorded or checked the identity

    def opening(self, owner="handle"):
        """Call before opening the file. Records its identity on the first
        call; on the first call in a process other than the one that
        recorded it (a forked child, an unpickled copy), compares the file
        with it.

        Raises
        ------
        FileChangedError
            The file's size or modification time differs from the record
            (``owner`` names the handle in the message).
        OSError
            The file cannot be stat'ed (FileNotFoundError: it is gone).
        """
        if self._checked_pid == pid:
            return
        now = FileIdentity.of(self.path)
        if self.identity is None:
            self.identity = now
        elif now != self.identity:
            raise FileChangedError(
                errno.ESTALE,
                f"file {self.path!r} is not the file this {owner} was made on "
                f"({self.identity.changes(now)}): a {owner} that was pickled or inherited over fork() "
                f"reads only that file; make a new {owner} to read the file as it is now", self.path)
        self._checked_pid = pid

    def describe(self):
        """This reference for a description: its identity recorded now if
        the file was never opened (left None if it cannot be stat'ed:
        nothing was read from it)."""
        if self.identity is None:
            try:
                self.identity = FileIdentity.of(self.path)
                self._checked_pid = pid
            except OSError:
                pass
        return self

    def __reduce__(self):
        return (FileRef, (self.path, self.identity))

    def __repr__(self):
        return f"FileRef({self.path!r}, {self.identity!r})"


def restore(cls, version, description):
    """Unpickle a handle: ``cls._from_description(description)``."""
    if version != DESCRIPTION_VERSION:
        raise ValueError(f"this multiload {cls.__name__} was pickled in description format {version}; "
                         f"this multiload reads format {DESCRIPTION_VERSION}: pickle it with the "
                         "same multiload version that unpickles it")
    return cls._from_description(description)


class Handle:
    """Mixin of objects that pickle as a description and keep
    process-local state (see the module docstring for the protocol)."""

    #: The process whose local state this handle holds; None: none yet.
    _local_pid = None

    def _describe(self):
        raise NotImplementedError

    @classmethod
    def _from_description(cls, description):
        raise NotImplementedError

    def _open_local(self):
        raise NotImplementedError

    def _local_state(self):
        """The objects of the current local state (abandoned in a forked child)."""
        return ()

    def _local_opened(self):
        """Say that ``_open_local()`` has run in this process (an eager constructor)."""
        self._local_pid = pid

    def _reopen_local(self):
        """Make this process's local state, once (thread-safe): the caller
        saw ``self._local_pid != _handle.pid``. A parent's state (fork) is
        abandoned first. If ``_open_local`` raises, the next call tries again."""
        with _lock:
            if self._local_pid == pid:
                return
            if self._local_pid is not None:
                abandon(self._local_state())
                self._local_pid = None
            self._open_local()
            self._local_pid = pid

    def __reduce__(self):
        return (restore, (type(self), DESCRIPTION_VERSION, self._describe()))


def unpicklable(why, instead):
    """A ``__reduce_ex__`` for live objects: it raises TypeError
    ``cannot pickle a multiload <class>: <why>; <instead>``."""

    def __reduce_ex__(self, protocol=None):  # (copyreg calls it with the object alone)
        raise TypeError(f"cannot pickle a multiload {type(self).__name__}: {why}; {instead}")

    return __reduce_ex__
