"""The live Writers of this process, by file: what a reader opened here
flushes first, so that it sees every row a Writer of this process wrote
before the open (docs/writer.md, "Reading while writing").

Readers (the Reader, Streamer, Array and the training sources) call
:func:`flush_for_read` before they open a dataset; a Writer registers
itself when it opens its file and leaves when it closes. Keyed by the
file's (st_dev, st_ino), so any path naming the file finds its writers.

May import: the standard library.
"""

import os
import threading
import weakref

__all__ = ["register", "unregister", "flush_for_read"]

# (st_dev, st_ino) -> WeakSet of live writers of that file. _lock.
_by_file = {}
_lock = threading.Lock()


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
