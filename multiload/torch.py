"""torch datasets on multiload: ``StreamDataset`` and ``ArrayDataset``.

``import multiload`` never imports torch; this module does.

- :class:`StreamDataset` -- an ``IterableDataset`` of whole batches from a
  :class:`multiload.BatchStream` (use ``DataLoader(ds, batch_size=None)``,
  or :meth:`StreamDataset.loader`). ``num_workers=0`` is the recommended
  path: the C core already reads and decodes on ``n_procs`` threads. With
  ``num_workers=W > 0``, worker ``w`` yields the steps ``t = w (mod W)`` of
  the epoch, so the loader hands out exactly the batches of
  ``num_workers=0``, in the same order, and a state loads under any worker
  count.
- :class:`ArrayDataset` -- map-style over the rows; ``__getitems__`` reads
  a whole batch of indices in one gather of the request engine. Works with
  torch's samplers, ``DistributedSampler`` and stateful loaders.

Batches are tensors made by ``torch.from_numpy`` on the feed's batch
memory: a tensor pins that memory until it and every view of it are gone
(see :mod:`multiload._slots`); at most ``outstanding`` batches may be held
at once, past which ``next()`` raises RuntimeError. ``copy=True`` gives
each batch memory of its own.

The epoch reaches DataLoader workers, persistent or not, under fork,
spawn and forkserver, through a small shared array the workers inherit.

May import: torch, numpy, :mod:`multiload.batch`, ``_feed``, ``_sources``, ``_signals``, ``_core``, ``_io``.
"""

import errno
import multiprocessing
import os
import warnings

import numpy as np
import torch
import torch.utils.data as tud

from . import _core
from ._feed import settle_gather, submit_gather
from ._signals import FileChangedError
from ._sources import Sources
from .batch import STATE_VERSION, BatchStream

__all__ = ["StreamDataset", "ArrayDataset", "StreamLoader"]

# The shared array of a StreamDataset: what the main process says to its workers.
# _GEN counts set_epoch/load_state_dict calls; _RAN_GEN is the _GEN workers last iterated.
_EPOCH, _START, _WORKERS_RAN, _GEN, _RAN_GEN = range(5)


def _tensors(batch, pin):
    """``batch`` (dict, tuple or array of numpy arrays) as tensors."""
    def one(a):
        t = torch.from_numpy(a)
        return t.pin_memory() if pin else t
    if isinstance(batch, dict):
        return {k: one(v) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(one(v) for v in batch)
    return one(batch)


def _check_pin(pin_memory):
    if pin_memory and not torch.cuda.is_available():
        warnings.warn("pin_memory=True needs CUDA, which is not available: batches are not pinned", stacklevel=3)
        return False
    return bool(pin_memory)


class _Shared:
    """A few int64 the main process writes and its DataLoader workers read:
    a RawArray, which workers inherit under fork and receive while being
    spawned (spawn, forkserver). Pickled at any other time, it travels as a
    copy of its values."""

    def __init__(self, values):
        self._arr = multiprocessing.RawArray("q", list(values))

    def __getitem__(self, i):
        return self._arr[i]

    def __setitem__(self, i, v):
        self._arr[i] = v

    def __reduce__(self):
        from multiprocessing import context
        if context.get_spawning_popen() is not None:
            return (_Shared._inherit, (self._arr,))
        return (_Shared, (list(self._arr),))

    @staticmethod
    def _inherit(arr):
        s = _Shared.__new__(_Shared)
        s._arr = arr
        return s


class StreamDataset(tud.IterableDataset):
    """Batches of a :class:`multiload.BatchStream` as tensors.

    ``StreamDataset(source, datasets, batch_size, **options)`` takes the
    arguments of BatchStream (``shuffle``, ``seed``, ``rank``,
    ``world_size``, ``num_streams``, ``tail``, ``copy``, ``outstanding``,
    ...) and ``pin_memory``. Each item is a whole batch: load it with
    ``DataLoader(ds, batch_size=None, num_workers=...)`` or with
    :meth:`loader`, which also counts the batches the training loop takes,
    so :meth:`state_dict` is the consumer's position with workers too.

    ``set_epoch(e)`` before each epoch (it reaches persistent workers);
    ``state_dict()`` / ``load_state_dict()`` as BatchStream's (torchdata's
    Stateful protocol); ``len()`` is the rank's batches per epoch.
    """

    def __init__(self, source, datasets, batch_size, *, pin_memory=False, **options):
        super().__init__()
        self._args = (source, datasets, batch_size)
        self._options = options
        self._pin = _check_pin(pin_memory)
        self._stream = BatchStream(source, datasets, batch_size, **options)
        self._shared = _Shared([self._stream.epoch, self._stream.step, 0, 0, -1])
        self._counted = False   # a StreamLoader counts the consumer's batches

    # -- what the main process says
    def set_epoch(self, epoch):
        """Make the next iteration epoch ``epoch`` (in every worker too)."""
        self._stream.set_epoch(epoch)
        self._said()

    def state_dict(self):
        """The consumer's position (see :meth:`BatchStream.state_dict`).

        With DataLoader workers the main process sees no batch go by unless
        a :class:`StreamLoader` (:meth:`loader`) counts them: then a plain
        DataLoader's position is unknown here, and this raises RuntimeError."""
        if self._shared[_WORKERS_RAN] and not self._counted:
            raise RuntimeError("this StreamDataset was iterated by DataLoader workers, so its position is known "
                               "only where the batches are taken: load it with ds.loader(num_workers=...) (a "
                               "DataLoader that counts the batches the loop takes) to save state")
        return self._stream.state_dict()

    def load_state_dict(self, state):
        """Go on from ``state`` (ValueError naming a changed field)."""
        self._stream.load_state_dict(state)
        self._said()

    def _said(self):
        sh = self._shared
        sh[_EPOCH], sh[_START] = self._stream.epoch, self._stream.step
        sh[_GEN] += 1

    def __len__(self):
        return len(self._stream)

    @property
    def stream(self):
        """The BatchStream of this process."""
        return self._stream

    def loader(self, num_workers=0, **dataloader_options):
        """A :class:`StreamLoader` over this dataset (``batch_size=None``)."""
        return StreamLoader(self, num_workers=num_workers, **dataloader_options)

    # -- iteration
    def __iter__(self):
        info = tud.get_worker_info()
        s = self._stream
        if info is None:
            it = s._iterate(0, 1)
        else:
            # A worker: the epoch and start the main process last said.
            s._epoch, s._step = int(self._shared[_EPOCH]), int(self._shared[_START])
            s._repeat_ok = True
            sh = self._shared
            sh[_WORKERS_RAN] = 1
            if info.id == 0:
                if sh[_RAN_GEN] == sh[_GEN]:
                    warnings.warn(f"iterating a StreamDataset again without set_epoch() repeats epoch "
                                  f"{s._epoch}; call set_epoch(e) before each epoch", stacklevel=2)
                sh[_RAN_GEN] = sh[_GEN]
            it = s._iterate(info.id, info.num_workers)
        return self._tensor_batches(it)

    def _tensor_batches(self, it):
        pin = self._pin
        for batch in it:
            yield _tensors(batch, pin)

    def __reduce__(self):
        # A description (BatchStream pickles as one) and the shared array.
        return (_rebuild_stream_dataset, (self._args, self._options, self._pin, self._stream, self._shared,
                                          self._counted))


def _rebuild_stream_dataset(args, options, pin, stream, shared, counted):
    ds = StreamDataset.__new__(StreamDataset)
    tud.IterableDataset.__init__(ds)
    ds._args, ds._options, ds._pin = args, options, pin
    ds._stream, ds._shared, ds._counted = stream, shared, counted
    return ds


class StreamLoader(tud.DataLoader):
    """A DataLoader over a :class:`StreamDataset` (``batch_size=None``) that
    counts the batches the loop takes, so the dataset's ``state_dict()`` is
    the consumer's position whatever ``num_workers`` is. Also has
    ``state_dict``, ``load_state_dict`` and ``set_epoch``."""

    def __init__(self, dataset, **options):
        if not isinstance(dataset, StreamDataset):
            raise TypeError("StreamLoader loads a multiload.torch.StreamDataset")
        options.setdefault("batch_size", None)
        if options["batch_size"] is not None:
            raise ValueError("a StreamDataset's items are whole batches: StreamLoader needs batch_size=None")
        super().__init__(dataset, **options)
        dataset._counted = True

    def __iter__(self):
        ds = self.dataset
        if self.num_workers == 0:
            yield from super().__iter__()
            return
        s = ds._stream
        with s._lock:
            if s._step >= len(s):
                s._step = 0
            step = s._step
        # The workers start where the loop is (after a break too), and read
        # this when the iterator below starts or resumes them.
        ds._shared[_START] = step
        it = super().__iter__()
        for batch in it:
            step += 1
            s._step = step
            yield batch
        # The epoch ended: iterating again without set_epoch repeats it from its start.
        ds._shared[_START] = 0

    def state_dict(self):
        return self.dataset.state_dict()

    def load_state_dict(self, state):
        self.dataset.load_state_dict(state)

    def set_epoch(self, epoch):
        self.dataset.set_epoch(epoch)


class _Batch(list):
    """The samples of one ``__getitems__`` call (torch's default collate
    stacks them); ``collated`` is the batch as read, which
    :meth:`ArrayDataset.collate` returns without a copy."""

    __slots__ = ("collated",)


class ArrayDataset(tud.Dataset):
    """Map-style dataset over the rows of ``datasets`` in ``source``.

    ``source`` and ``datasets`` as for :class:`multiload.BatchStream` (one
    file, a glob or a list, concatenated; a dataset path, a sequence or a
    mapping). ``ds[i]`` is row ``i`` of each dataset as tensors;
    ``ds.__getitems__(indices)`` -- what DataLoader calls with a sampler's
    batch -- reads all the rows in one batched gather. Pass
    ``collate_fn=ds.collate`` to take that batch as read; torch's default
    collate also works (it stacks the rows again). Works with any sampler,
    ``DistributedSampler`` and stateful loaders; the position is the
    sampler's, so ``state_dict()`` holds only the fingerprint.
    """

    def __init__(self, source, datasets, *, n_procs=None, cache_bytes=None, io_mode=None, pin_memory=False):
        self._args = (source, datasets)
        self._opts = dict(n_procs=n_procs, cache_bytes=cache_bytes, io_mode=io_mode)
        self._pin = _check_pin(pin_memory)
        self._src = Sources(source, datasets)
        self._core = None
        self._pid = os.getpid()

    def __len__(self):
        return self._src.n_rows

    def _engine(self):
        if self._pid != os.getpid():  # forked: the parent's threads are not here
            self._pid = os.getpid()
            self._core = None
            self._src = Sources(*self._args)
        if self._core is None:
            from ._io import io_mode_code
            n = self._opts["n_procs"] or min(4, os.cpu_count() or 2)
            self._core = _core.ReaderCore(n_workers=int(n), io_mode=io_mode_code(self._opts["io_mode"], ""),
                                          cache_bytes=int(self._opts["cache_bytes"] or 0), inline_reads=True)
        return self._core

    def _read(self, rows):
        core = self._engine()
        src = self._src
        outs = [np.empty((len(rows), *s), dt) for s, dt in zip(src.row_shapes, src.dtypes)]
        settle_gather(*submit_gather(core, src, rows, outs, range(len(outs))), outs)
        return outs

    def _rows(self, indices):
        rows = np.asarray(indices)
        if rows.dtype == bool or not np.issubdtype(rows.dtype, np.integer):
            raise TypeError(f"indices must be integers, got {rows.dtype}")
        rows = rows.astype(np.int64, copy=False).reshape(-1)
        n = self._src.n_rows
        rows = np.where(rows < 0, rows + n, rows)
        bad = (rows < 0) | (rows >= n)
        if bad.any():
            raise IndexError(f"index {np.asarray(indices).reshape(-1)[np.argmax(bad)]} is out of range for "
                             f"{n} rows")
        return rows

    def __getitem__(self, i):
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"an index of ArrayDataset is an int, got {type(i).__name__}")
        outs = self._read(self._rows([i]))
        return _tensors(self._src.wrap([o[0, ...] for o in outs]), self._pin)

    def __getitems__(self, indices):
        outs = self._read(self._rows(indices))
        collated = _tensors(self._src.wrap(outs), self._pin)
        samples = _Batch(self._sample(collated, j) for j in range(len(outs[0])))
        samples.collated = collated
        return samples

    def _sample(self, collated, j):
        if isinstance(collated, dict):
            return {k: v[j] for k, v in collated.items()}
        if isinstance(collated, tuple):
            return tuple(v[j] for v in collated)
        return collated[j]

    @staticmethod
    def collate(batch):
        """collate_fn for DataLoader: the batch ``__getitems__`` read, as it
        is (no copy); anything else through torch's default collate."""
        if isinstance(batch, _Batch):
            return batch.collated
        return tud.default_collate(batch)

    def state_dict(self):
        """``{version, fingerprint}``: the position of a map-style dataset is its sampler's."""
        return {"version": STATE_VERSION, "fingerprint": self._src.identity()}

    def load_state_dict(self, state):
        """Check ``state`` was made on these files and datasets (ValueError naming what differs)."""
        if not isinstance(state, dict) or "fingerprint" not in state:
            raise ValueError("an ArrayDataset state is a dict with a fingerprint (from state_dict())")
        ours = self._src.identity()
        for field in ("files", "datasets", "shapes"):
            if state["fingerprint"].get(field) != ours[field]:
                raise ValueError(f"the state was made on another configuration: {field} differs "
                                 f"(state: {state['fingerprint'].get(field)!r}, this dataset: {ours[field]!r})")

    def __getstate__(self):
        return {"args": self._args, "opts": self._opts, "pin": self._pin,
                "files": self._src.identity()["files"]}

    def __setstate__(self, st):
        self._args, self._opts, self._pin = st["args"], st["opts"], st["pin"]
        self._src = Sources(*self._args)
        now = self._src.identity()["files"]
        if now != st["files"]:
            raise FileChangedError(errno.ESTALE, f"the files of this ArrayDataset are not those it was made on "
                                   f"({st['files']!r} -> {now!r}): make a new ArrayDataset to read them as they "
                                   f"are now", now[0][0])
        self._core = None
        self._pid = os.getpid()
