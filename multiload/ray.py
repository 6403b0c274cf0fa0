"""``multiload.ray``: HDF5 datasets as Ray Data datasets, read by multiload.

``read_hdf5(paths, dataset)`` makes a Ray ``Dataset`` from a
:class:`HDF5Datasource`: one read task per range of rows, each range a
multiple of the HDF5 chunk's rows inside one file (so no two tasks decode
the same chunk), each task yielding blocks of about Ray's target block size
(``DataContext.target_max_block_size``). A task holds a
:class:`multiload.Array` -- a description of the files, pickled to the Ray
worker -- and reads through that worker's Reader, whose native threads
decode with the GIL released.

Rows and columns: the first axis becomes Ray's rows. A dataset of a plain
dtype is one column, ``data`` (the rest of each row its value: a tensor
column when rows have dimensions); a compound dataset -- a PyTables table,
an h5py structured array -- is one column per field (nested fields as
``outer/inner``, PyTables' column paths). ``include_paths=True`` adds the
file's path as the ``path`` column.

The argument names are those of Ray's proposed ``ray.data.read_hdf5``
(ray-project/ray#65760) where they mean the same (``paths``, ``dataset``,
``include_paths``, ``override_num_blocks``, ``concurrency``,
``ray_remote_args``), so code can switch between the two. Local files only
(no ``filesystem``); variable-length and scalar datasets are refused with
TypeError.

Needs the ``ray`` extra: ``pip install 'multiload[ray]'``.
"""

import functools
import math

import numpy as np

try:
    import ray
    import ray.data
    from ray.data.block import BlockAccessor, BlockMetadata
    from ray.data.context import DataContext
    from ray.data.datasource import Datasource, ReadTask
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError(f"multiload.ray needs Ray Data ({e}): pip install 'multiload[ray]'") from e

from .array import Array

__all__ = ["read_hdf5", "HDF5Datasource"]

_DEFAULT_BLOCK_BYTES = 128 << 20  # Ray's default target_max_block_size


def read_hdf5(paths, dataset, *, include_paths=False, override_num_blocks=None, concurrency=None,
              ray_remote_args=None, n_procs=None):
    """A Ray Data ``Dataset`` of dataset ``dataset`` in ``paths``, read by multiload.

    Parameters
    ----------
    paths : str, os.PathLike, glob pattern or list of them
        One file, or several whose rows are concatenated in order (a
        pattern's matches sorted); each must hold ``dataset`` with the same
        dtype and row shape (ValueError naming the file that differs).
    dataset : str
        The dataset's path in the file(s).
    include_paths : bool
        Add each row's file path as the column ``path``.
    override_num_blocks : int, optional
        How many read tasks to aim for (Ray's parallelism): the rows are cut
        into about that many ranges, each a multiple of the HDF5 chunk's
        rows and inside one file, and none smaller than Ray's
        ``target_min_block_size`` (1 MiB) unless a file is.
    concurrency : int, optional
        At most this many read tasks at once (Ray's).
    ray_remote_args : dict, optional
        Passed to the read tasks' ``ray.remote`` (``num_cpus``, ...).
    n_procs : int, optional
        Native threads of each file's Reader in every Ray worker process.

    Returns
    -------
    ray.data.Dataset
    """
    source = HDF5Datasource(paths, dataset, include_paths=include_paths, n_procs=n_procs)
    return ray.data.read_datasource(source, override_num_blocks=override_num_blocks, concurrency=concurrency,
                                    ray_remote_args=ray_remote_args)


class HDF5Datasource(Datasource):
    """A Ray Data ``Datasource`` over one HDF5 dataset in one or more files
    (see :func:`read_hdf5`, which takes the same arguments)."""

    def __init__(self, paths, dataset, *, include_paths=False, n_procs=None):
        self._array = Array(paths, dataset, n_procs=n_procs)
        self._include_paths = bool(include_paths)
        self._row_nbytes = self._array.dtype.itemsize * math.prod(self._array.shape[1:])

    def get_name(self):
        return "HDF5"

    def estimate_inmemory_data_size(self):
        """Rows times row bytes: the decoded size, what the blocks hold."""
        return self._array.shape[0] * self._row_nbytes

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        """One task per range of rows (a multiple of the HDF5 chunk's rows,
        inside one file); about ``parallelism`` of them."""
        arr = self._array
        ctx = data_context or DataContext.get_current()
        block_bytes = getattr(ctx, "target_max_block_size", None) or _DEFAULT_BLOCK_BYTES
        # Ray asks for 200 tasks or more by default: no task smaller than its minimum block size.
        min_rows = (getattr(ctx, "target_min_block_size", None) or 1) // max(1, self._row_nbytes)
        tasks = []
        for i, a, b, unit in task_ranges(arr, max(1, int(parallelism)), min_rows):
            block_rows = max(unit, block_bytes // max(1, self._row_nbytes) // unit * unit)
            meta = BlockMetadata(num_rows=b - a, size_bytes=(b - a) * self._row_nbytes, exec_stats=None,
                                 input_files=(arr.files[i],))
            read = functools.partial(_read_task, arr, i, a, b, block_rows, self._include_paths)
            kw = {} if per_task_row_limit is None else {"per_task_row_limit": per_task_row_limit}
            tasks.append(ReadTask(read, meta, **kw))
        return tasks


def task_ranges(arr, parallelism, min_rows=1):
    """``[(file, start, stop, unit)]``: the rows of :class:`multiload.Array`
    ``arr`` in about ``parallelism`` ranges of local rows (of at least
    ``min_rows``), each inside one file and a multiple of its HDF5 chunk's
    rows (``unit``; 1 for contiguous data) but for the file's last."""
    total = arr.shape[0]
    per_task = max(1, min_rows, -(-total // parallelism))
    out = []
    for i, n in enumerate(arr.file_rows):
        c = arr.file_chunks[i]
        unit = 1 if c is None else c[0]
        step = max(unit, -(-per_task // unit) * unit)
        out += [(i, a, min(n, a + step), unit) for a in range(0, n, step)]
    return out


def _read_task(arr, i, start, stop, block_rows, include_paths):
    """A read task: rows ``[start, stop)`` of file ``i`` of ``arr``, in
    blocks of ``block_rows`` rows."""
    base = int(arr._starts[i])
    for a in range(start, stop, block_rows):
        b = min(stop, a + block_rows)
        rows = arr[base + a:base + b]
        yield BlockAccessor.batch_to_block(columns(rows, arr.files[i] if include_paths else None))


def columns(rows, path=None):
    """The Ray columns of ``rows`` (a numpy array read by an Array): one
    per field of a compound (nested fields ``outer/inner``), else ``data``,
    each in native byte order; plus ``path`` when ``path`` is given."""
    cols = {}
    if rows.dtype.names is None:
        cols["data"] = _native(rows)
    else:
        _fields(rows, "", cols)
    if path is not None:
        cols["path"] = np.full(rows.shape[0], path, dtype=object)
    return cols


def _fields(rows, prefix, cols):
    for name in rows.dtype.names:
        col = rows[name]
        if col.dtype.names is not None and col.ndim == 1:
            _fields(col, f"{prefix}{name}/", cols)
        else:
            cols[prefix + name] = _native(np.ascontiguousarray(col))


def _native(a):
    """``a`` in native byte order: Arrow reads a buffer as native, so a
    big-endian dataset's values would come out byte-swapped."""
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))
