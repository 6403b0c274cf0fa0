"""Datasets of variable-length strings (h5py's ``string_dtype``, netCDF4's
``str``, the text fields of NeXus, NWB and anndata files), read as h5py 3
reads them: an object array of ``bytes``, ASCII and UTF-8 alike, whose
dtype is h5py's ``string_dtype`` (object, with the metadata ``{'vlen':
str}`` for UTF-8 and ``{'vlen': bytes}`` for ASCII), so that
``h5py.check_string_dtype(ds.dtype).encoding`` tells how to decode them.

The C core reads them (``_core.VLen.read_strings``: each element's
descriptor and global heap object checked, then one ``H5Dread`` under the
HDF5 lock) in the calling thread. A string is a Python object, which
cannot live in a ring slot or a stage: ``reader.read(expr)`` returns
them, ``reader.request`` refuses them (TypeError), ``Streamer.get_queue``
refuses them, ``Streamer.get_generator`` yields them row by row.

May import: numpy, :mod:`multiload.dataset`, :mod:`multiload.dataset_ops`,
:mod:`multiload._plan` (its key planning), :mod:`multiload._core`.
"""

import numpy as np

from . import _core
from . import dataset_ops as ops
from ._plan import _apply_key, _parts, _plan_head
from .dataset import VLenBase, _array_op
from .dataset_ops import _context

__all__ = ["VLStringDataset"]

_NOT_STAGED = ("variable-length strings are Python bytes objects, which cannot be read into a stage: "
               "read them with reader.read(expr)")


class VLStringDataset(VLenBase):
    """A dataset of variable-length strings, of any shape (0-d too).

    Indexing is numpy's, as for an :class:`ArrayDataset` (one index array
    per request), and ``reader.read(ds[key])`` returns what h5py's
    ``ds[key]`` returns: an object array of ``bytes`` (the dataset's own
    dtype, h5py's ``string_dtype``), or one ``bytes`` object for one
    element (``ds[i]`` of a 1-D dataset, ``ds[()]`` of a 0-d one). A string
    never written is ``b''`` (or the dataset's fill value), as in h5py.
    ``encoding`` is ``'utf-8'`` or ``'ascii'``: decode with it
    (``b.decode(ds.encoding)``, what h5py's ``asstr()`` does).
    """

    @property
    def encoding(self):
        """``'utf-8'`` or ``'ascii'``: the character set the file stores."""
        return "utf-8" if self.dtype.metadata["vlen"] is str else "ascii"

    def __len__(self):
        if not self.shape:
            raise TypeError(f"a 0-d dataset has no len() ({_context(self)})")
        return self.shape[0]

    def create_stage_natoms(self, size_natoms):
        raise TypeError(f"{_NOT_STAGED} ({_context(self)})")

    def read(self, start=None, stop=None, step=None):
        """Rows ``start:stop:step``, as PyTables' ``Array.read``: ``start``
        alone means the one row ``start``."""
        single = start is not None and stop is None and step is None
        return ops.ReadOpArray(self._path, None, start, stop, step, _single=single)

    def __getitem__(self, key):
        if key is Ellipsis and self.shape:
            raise IndexError(f"a single Ellipsis is not a request (PyTables does not support it); use [:] "
                             f"({_context(self)})")
        return _array_op(self._path, key)

    def _read_now(self, key):
        """What h5py's ``ds[key]`` gives, read now (reader.read)."""
        col, head, post = _parts(key, self)
        try:
            if col is not None:
                raise IndexError(f"field {col!r} of a dataset of strings, which has no fields")
            if not self.shape:  # 0-d: the one value, then numpy's indexing of a 0-d array
                res = self._vlen.read_strings(np.zeros(1, np.int64)).reshape(())
                keys = ([] if head is None else [head]) + list(post)
            else:
                h = _plan_head(self.shape, head)
                rows = h.rows if h.rows is not None else np.arange(h.row0, h.row0 + h.n, dtype=np.int64)
                res = self._vlen.read_strings(rows)
                keys = ([0] if h.scalar else []) + ([h.kprime] if h.kprime is not None else []) + list(post)
            for k in keys:
                res = _apply_key(res, k)
        except IndexError as e:
            raise IndexError(f"{e} ({_context(self)})") from None
        if self.shape and isinstance(res, np.ndarray) and res.ndim == 0:
            return res[()]  # h5py: one element of a dataset with a shape is its bytes (ds[..., 2] too)
        return res


def refuse_request(ds):
    """TypeError: a request into a stage of strings (reader.request)."""
    raise TypeError(f"{_NOT_STAGED} ({_context(ds)})")


def open_strings(filename, path):
    """The ``_core.VLen`` of dataset ``path`` when it holds variable-length
    strings, else None."""
    if not isinstance(path, str):
        return None
    vlen = _core.vlen_open(filename, path)
    return vlen if vlen is not None and vlen.is_string else None


def generate_rows(vlen, filename, path, cyclic=False, block_size=None, field=None):
    """Streamer.get_generator for strings: the rows, read ``block_size``
    at a time (default 1024) by the calling thread, one by one: ``bytes``
    for a 1-D dataset, an object array of the row's strings for an N-D
    one. Endless with ``cyclic``."""
    if field is not None:
        raise KeyError(f"dataset {path!r} of file {filename!r} has no field {field!r} (it holds "
                       "variable-length strings)")
    if not vlen.shape:
        raise TypeError(f"dataset {path!r} of file {filename!r} is scalar and has no rows to stream "
                        "(read it with Reader.read(ds[()]))")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int)
                                   or block_size < 1):
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    block = block_size or 1024
    n = vlen.shape[0]
    while True:
        for start in range(0, n, block):
            yield from vlen.read_strings(np.arange(start, min(n, start + block), dtype=np.int64))
        if not cyclic or n == 0:
            return
