"""``multiload.dask``: HDF5 datasets as Dask arrays, read by multiload.

``from_hdf5(source, dataset)`` wraps a :class:`multiload.Array` (one
dataset in one file or several concatenated along the first axis) in a
Dask array. The graph holds the Array's description, not a file handle:
every worker process (threads, ``processes``, ``dask.distributed``) opens
the files itself, read-only, once, on its first task, and reads through a
Reader whose native threads decode with the GIL released -- so no lock is
taken (``lock=False``). ``multiload.close_all()`` releases the files
afterwards (``client.run(multiload.close_all)`` on a cluster). See
docs/scale-out.md.

Chunks default to whole rows and a number of rows that is a multiple of
the HDF5 chunk's, about Dask's ``array.chunk-size`` in bytes, and never
straddle two files: each HDF5 chunk is then decoded by exactly one task.
Other chunks are accepted with a :class:`ReadAmplificationWarning` that
says how much more than the dataset the compute reads.

Needs the ``dask`` extra: ``pip install 'multiload[dask]'``.
"""

import math
import warnings

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.array.core import PerformanceWarning, normalize_chunks
    from dask.base import tokenize
    from dask.utils import parse_bytes
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError(f"multiload.dask needs Dask ({e}): pip install 'multiload[dask]'") from e

from .array import Array

__all__ = ["from_hdf5", "ReadAmplificationWarning"]


class ReadAmplificationWarning(PerformanceWarning):
    """Dask chunks that make the compute read (decode) more than the dataset:
    not whole rows, or row boundaries inside HDF5 chunks."""


def from_hdf5(source, dataset, chunks="auto", *, name=None, n_procs=None):
    """A Dask array of dataset ``dataset`` of ``source``, read by multiload.

    Parameters
    ----------
    source : str, os.PathLike, glob pattern or list of them
        One file, or several concatenated along the first axis (a pattern's
        matches sorted): each must hold ``dataset`` with the same dtype and
        row shape (ValueError naming the file that differs).
    dataset : str
        The dataset's path in the file(s).
    chunks : "auto", int, tuple or dict
        ``"auto"``: whole rows, a multiple of the HDF5 chunk's rows, about
        ``dask.config.get("array.chunk-size")`` bytes per chunk, cut at
        every file's end. Anything else is Dask's chunks argument (``-1``,
        ``"auto"`` per axis, explicit sizes), normalised with the HDF5
        chunk shape as the previous chunks; chunks that split rows or cut
        inside HDF5 chunks are accepted with a
        :class:`ReadAmplificationWarning` stating the read amplification.
    name : str, False or None
        The graph's key name. None: ``"from-hdf5-<token>"``, the token from
        the files' identity (path, size, modification time), the dataset
        and the chunks -- deterministic and without reading data. False: a
        random name.
    n_procs : int, optional
        Native threads of each file's Reader in every worker process.

    Returns
    -------
    dask.array.Array

    Raises
    ------
    FileNotFoundError, KeyError, TypeError, ValueError
        As :class:`multiload.Array`; ValueError for chunks Dask refuses.
    """
    arr = Array(source, dataset, n_procs=n_procs)
    chunks = dask_chunks(arr, chunks)
    if name is None:
        name = "from-hdf5-" + tokenize(arr, chunks)
    return da.from_array(arr, chunks=chunks, name=name, lock=False, asarray=False, fancy=True,
                         meta=np.empty((0,) * arr.ndim, dtype=arr.dtype), inline_array=False)


def dask_chunks(arr, chunks="auto"):
    """The Dask chunks :func:`from_hdf5` uses for :class:`multiload.Array`
    ``arr`` (a tuple of tuples); warns when ``chunks`` amplifies reads."""
    if isinstance(chunks, str) and chunks == "auto":
        return _auto_chunks(arr)
    out = normalize_chunks(chunks, arr.shape, dtype=arr.dtype, previous_chunks=arr.chunks)
    amp, why = amplification(arr, out)
    if amp > 1.0 + 1e-9:
        chunk = arr.chunks or arr.file_chunks
        warnings.warn(
            f"multiload.dask.from_hdf5: Dask chunks {_brief(out)} on dataset {arr.dataset!r} (HDF5 chunks {chunk}) "
            f"{why}: the compute reads and decodes about {amp:.2f}x the dataset's bytes. chunks='auto' gives whole "
            "rows, a multiple of the HDF5 chunk's rows, which reads each HDF5 chunk once",
            ReadAmplificationWarning, stacklevel=3)
    return out


def _row_nbytes(arr):
    return arr.dtype.itemsize * math.prod(arr.shape[1:])


def _chunk_rows(arr, i):
    """File ``i``'s HDF5 chunk rows (1: contiguous storage)."""
    c = arr.file_chunks[i]
    return 1 if c is None else c[0]


def _auto_chunks(arr):
    target = parse_bytes(dask.config.get("array.chunk-size"))
    want = max(1, target // max(1, _row_nbytes(arr)))
    rows = []
    for i, n in enumerate(arr.file_rows):
        c = _chunk_rows(arr, i)
        step = max(c, want // c * c)
        rows += [step] * (n // step) + ([n % step] if n % step else [])
    return (tuple(rows) or (0,),) + tuple((d,) for d in arr.shape[1:])


def amplification(arr, chunks):
    """(bytes read ÷ dataset bytes, why) for Dask chunks ``chunks`` (a
    tuple of tuples) over ``arr``: a task reads whole rows (the Reader's
    unit) and decodes every HDF5 chunk its rows touch, so each split of
    another axis reads the rows again, and a row boundary inside an HDF5
    chunk decodes that chunk twice. Contiguous data is read by rows, with
    no amplification along the first axis."""
    why, factor = [], 1.0
    touched = ideal = 0
    starts = np.cumsum((0,) + tuple(arr.file_rows))
    bounds = np.cumsum((0,) + tuple(chunks[0]))
    for i, n in enumerate(arr.file_rows):
        c = _chunk_rows(arr, i)
        if n == 0:
            continue
        ideal += -(-n // c)
        a, b = int(starts[i]), int(starts[i + 1])
        for g0, g1 in zip(bounds[:-1], bounds[1:]):
            l0, l1 = max(int(g0), a) - a, min(int(g1), b) - a
            if l1 > l0:
                touched += -(-l1 // c) - l0 // c
    if ideal and touched > ideal:
        factor *= touched / ideal
        why.append("cut the first axis inside HDF5 chunks")
    for axis, cs in enumerate(chunks[1:], start=1):
        if len(cs) > 1:
            factor *= len(cs)
            why.append(f"split rows along axis {axis} into {len(cs)} (each task reads whole rows)")
    return factor, " and ".join(why)


def _brief(chunks):
    """Chunks for a message: each axis's first sizes."""
    return "(" + ", ".join(str(c) if len(c) <= 3 else f"({c[0]}, {c[1]}, ... {len(c)} chunks)"
                           for c in chunks) + ")"
