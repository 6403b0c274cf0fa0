"""What worker processes run for tests/test_pickle_handles.py.

A module of its own (not the test file) so that spawn and forkserver
workers import it, and only it, by name. The handles reach a worker
unpickled (spawn, forkserver, a task's arguments) or inherited (fork, a
Pool's initializer arguments); either way the worker reads through them
and hands back plain numpy arrays, which the test compares with h5py.
"""

import os

import numpy as np

import multiload

_handles = {}  # this worker's handles, set by init()


def init(handles):
    """Pool initializer: keep ``handles`` (a dict) for the tasks."""
    _handles.update(handles)


def whoami(_=None):
    """(pid, the multiload package this worker imported)."""
    return os.getpid(), multiload.__file__


def run(task):
    """One task: (what, *args) -> (pid, result). The handles come from
    init(), except for "given", whose dataset travels in the task."""
    what, *args = task
    h = _handles
    if what == "range":  # rows [a, b) of a dataset, through a stage
        name, a, b = args
        ds = h[name]
        stage = ds.create_stage(b - a)
        out = h["reader"].request(ds[a:b], stage).get()
    elif what == "coords":  # scattered rows, any order, through read()
        name, rows = args
        out = h["reader"].read(h[name][list(rows)])
    elif what == "column":  # one column of a table
        name, col, a, b = args
        out = h["reader"].read(h[name].read(a, b, field=col))
    elif what == "vl":  # VLArray rows, concatenated
        name, rows = args
        out = h["reader"].read(h[name][list(rows)])
    elif what == "stream":  # a whole dataset through a queue of the Streamer
        path, block_size = args
        out = stream_all(h["streamer"], path, block_size)
    elif what == "given":  # the dataset (and its own reader) pickled in the task
        ds, a, b = args
        out = ds._reader.read(ds[a:b])
    elif what == "local":  # the reader's local state: its pid and the id of its core
        r = h["reader"]
        r.stats()  # an entry point: opens the reader here if no earlier task of this worker did
        out = (r._local_pid, id(r._core))
    else:
        raise ValueError(what)
    return os.getpid(), np.asarray(out)


def stream_all(streamer, path, block_size):
    """Every row of ``path`` through one queue of ``streamer``, in order."""
    rows = {}
    with streamer.get_queue(path, n_procs=2, block_size=block_size, ordered=True, remainder=True) as q:
        for guard in q:
            with guard as block:
                rows[guard.start] = np.array(block)
    return np.concatenate([rows[k] for k in sorted(rows)])


class RowDataset:
    """A map-style dataset for torch's DataLoader (any object with
    ``__getitem__`` and ``__len__``): item i is ``(i, row i)``, read
    through a Reader dataset that the DataLoader pickles into each worker
    (spawn, forkserver) or that the worker inherits (fork)."""

    def __init__(self, reader, ds):
        self.reader, self.ds = reader, ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return i, self.reader.read(self.ds[int(i)])
