"""Sentinels, exceptions and warnings shared by the Streamer and the Reader.

Names and behaviour follow multitables so that code catching them keeps
working with ``import multiload as multitables``.
"""


class QueueClosedType:
    """Type of the :data:`QueueClosed` singleton."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = object.__new__(cls)
        return cls._instance

    def __reduce__(self):
        return (QueueClosedType, ())

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __bool__(self):
        return False

    def __repr__(self):
        return "multiload.QueueClosed"


#: Returned by ``queue.get()`` once a queue has no more blocks (the stream
#: ended, or the queue was closed). Compare with ``is``.
QueueClosed = QueueClosedType()


class QueueClosedException(Exception):
    """Raised where a closed queue cannot return :data:`QueueClosed`.

    Kept for multitables compatibility; the Streamer's ``get()`` returns
    :data:`QueueClosed` instead of raising it.
    """


class SubprocessException(Exception):
    """multitables' wrapper for errors raised in its reader processes.

    Kept so that code catching it still imports. multiload raises the
    original error type directly in the consumer (``OSError`` for I/O
    errors and corrupt data), so ``except OSError`` is what catches
    background failures.
    """


class SharedMemoryError(Exception):
    """A request's result does not fit in its stage (multitables' Reader)."""


class OutOfMemoryError(OSError, MemoryError):
    """An allocation failed: for the ring when a queue starts, for a worker's
    reader or scratch buffer while it reads a block, for a request.

    Both a ``MemoryError`` (what Python code catches for memory) and an
    ``OSError`` like every other failure of a block: ``errno`` is
    ``ENOMEM``, ``filename`` the file, and the message names the dataset
    and, from ``get()``, the block.
    """


class SlowPathWarning(RuntimeWarning):
    """The dataset is read through HDF5 under a lock (a filter or storage
    the native decoder does not handle): correct, but not parallel."""


class FileChangedError(OSError):
    """A handle's file is not the file it describes any more.

    A Streamer or Reader records its file's identity (size and modification
    time) when it first opens it. A copy of the handle in another process --
    unpickled, or inherited over ``fork()`` -- compares the file with that
    record when it first opens it there, and raises this error, naming the
    file and what changed, rather than read other data than its original
    does. An ``OSError`` with ``errno`` ``ESTALE`` ("stale file handle") and
    ``filename`` the file; make a new handle to read the file as it is now.
    """


class LoaderDiedError(RuntimeError):
    """The loader process serving a queue is gone while the queue streams.

    Raised by ``get()`` of a :class:`multiload.LoaderProcess` queue within
    about a second of the loader's death, never a hang. The message names
    the loader's pid and how it ended: the signal that killed it, its exit
    code, or that its owner process exited first. Blocks already handed
    out stay readable (their shared memory outlives the loader).
    """
