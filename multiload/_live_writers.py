"""The live Writers of this process, by file: what a reader opened here
flushes first, so that it sees every row a Writer of this process wrote
before the open (docs/writer.md, "Reading while writing").

Readers (the Reader, Streamer, Array and the training sources) call
:func:`flush_for_read` before they open a dataset; a Writer registers
itself when it opens its file and leaves when it closes. Keyed by the
file's (st_dev, st_ino), so any path naming the file finds its writers.

A reader opened *before* a Writer of this process wrote its dataset again
holds chunk addresses the write may have moved (HDF5 reallocates a chunk
whose stored size grew, and may give its old space to another), so its
reads could return bytes HDF5 would not. :func:`mark` records how many
blocks had been written to the dataset when the reader opened it; the
Reader's requests and the Streamer's queues call :func:`check` before
each read and raise FileChangedError once more were written: open a new
reader to read the dataset as it is now.

May import: the standard library, multiload._signals.
"""

import errno
import os
import threading
import weakref

__all__ = ["register", "unregister", "flush_for_read", "wrote", "mark", "check", "writes"]

# (st_dev, st_ino) -> WeakSet of live writers of that file. _lock.
_by_file = {}
_lock = threading.Lock()
# ((st_dev, st_ino), "/dataset") -> blocks handed to the workers so far, by every
# Writer of this process; kept for the process's life (a reader may outlive
# the writer). Empty until a Writer writes: readers test it first (cheap).
writes = {}


def _file_key(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def register(writer, filename):
    """``writer`` has ``filename`` open; returns the key to unregister with."""
    key = _file_key(filename)
    with _lock:
        _by_file.setdefault(key, weakref.WeakSet()).add(writer)
    return key


def unregister(writer, key):
    """``writer`` (registered under ``key``) closed its file."""
    with _lock:
        live = _by_file.get(key)
        if live is not None:
            live.discard(writer)
            if not live:
                _by_file.pop(key, None)


def _norm(dataset):
    return "/" + dataset.strip("/")


def wrote(key, dataset):
    """A Writer (of the file with ``key``) handed a block of ``dataset`` to
    its workers: a reader that opened the dataset before is out of date."""
    k = (key, _norm(dataset))
    with _lock:
        writes[k] = writes.get(k, 0) + 1


def mark(filename, dataset):
    """What a reader opening ``dataset`` of ``filename`` now (after
    :func:`flush_for_read`) records: ``(key, blocks written so far)``."""
    k = (_file_key(filename), _norm(dataset))
    return k, writes.get(k, 0)


def check(mark_, filename):
    """Raise FileChangedError if a Writer of this process wrote the dataset
    of ``mark_`` (from :func:`mark`) since."""
    k, seen = mark_
    if writes.get(k, 0) != seen:
        from ._signals import FileChangedError

        raise FileChangedError(
            errno.ESTALE,
            f"dataset {k[1]!r} of {filename!r} was written by a multiload.Writer of this process after this "
            f"reader opened it: its chunks may have moved, so it cannot read them; open a new Reader or queue "
            f"to read the dataset as it is now (docs/writer.md)", filename)


def flush_for_read(filename, dataset=None):
    """Flush every live Writer of this process writing ``filename`` (and,
    if given, ``dataset``), so a reader opened next sees every row written
    before. A writer whose flush fails keeps its error for its own
    ``flush()``; the reader then opens what the file holds."""
    if not _by_file:
        return
    key = _file_key(filename)
    with _lock:
        writers = list(_by_file.get(key, ())) if key else []
    for w in writers:
        if dataset is not None and not w._has(dataset):
            continue
        try:
            w._flush_sync(None)
        except (OSError, RuntimeError):  # WriteError is an OSError
            pass
