"""The files and datasets a training feed reads, as one logical dataset.

``Sources(source, datasets)`` resolves ``source`` (a path, a list of
paths, or a glob) into files, opens each named dataset in each file as a
``_core.Layout`` and checks that they line up:

- in each file, every named dataset has the same number of rows (they are
  read in lockstep: row i of each belongs together);
- across files, each dataset has the same dtype and row shape as in the
  first file (the files are concatenated along the first axis).

It maps a range of logical rows to the pieces of files that hold them, and
says what identifies the files for a resume fingerprint. No I/O beyond
opening the datasets.

May import: numpy, ``_core``, ``_handle``.
"""

import glob
import math
import os

import numpy as np

from . import _core
from ._handle import FileIdentity
from ._live_writers import flush_for_read as _flush_for_read

__all__ = ["Sources", "file_identity"]

_GLOB_CHARS = frozenset("*?[")


def file_identity(path):
    """What says a file is still the one a state was made on:
    ``[absolute path, size, mtime_ns]`` (:class:`multiload._handle.FileIdentity`
    as plain data, JSON-safe)."""
    return [os.path.abspath(path), *FileIdentity.of(path)]


def _resolve_files(source):
    """The list of file paths ``source`` names, in order. A glob (a string
    with ``*``, ``?`` or ``[`` that is not itself a file) is expanded and
    sorted; a glob that matches nothing is FileNotFoundError."""
    if isinstance(source, (str, bytes, os.PathLike)):
        items = [source]
    else:
        try:
            items = list(source)
        except TypeError:
            raise TypeError(f"source must be a path, a glob or a list of paths, not {type(source).__name__}") \
                from None
        if not items:
            raise ValueError("source is an empty list: give at least one file")
    files = []
    for item in items:
        if not isinstance(item, (str, bytes, os.PathLike)):
            raise TypeError(f"source must be a path, a glob or a list of paths; got an item {item!r}")
        path = os.fsdecode(os.fspath(item))
        if not os.path.exists(path) and _GLOB_CHARS & set(path):
            matched = sorted(glob.glob(path))
            if not matched:
                raise FileNotFoundError(2, "the glob matches no file", path)
            files.extend(matched)
        elif not os.path.exists(path):
            raise FileNotFoundError(2, "No such file", path)
        else:
            files.append(path)
    return files


def _dataset_paths(datasets):
    """(names, paths, kind): kind is 'dict' (a mapping of names to paths),
    'tuple' (a sequence of paths) or 'single' (one path)."""
    if isinstance(datasets, str):
        return [datasets], [datasets], "single"
    if hasattr(datasets, "keys"):
        names = list(datasets.keys())
        paths = [datasets[k] for k in names]
        kind = "dict"
        if "valid" in names:
            raise ValueError("'valid' cannot name a dataset: a batch under tail='pad' holds the valid mask there")
    else:
        try:
            paths = list(datasets)
        except TypeError:
            raise TypeError(f"datasets must be a dataset path, a sequence of paths or a mapping of names to "
                            f"paths, not {type(datasets).__name__}") from None
        names = list(range(len(paths)))
        kind = "tuple"
    if not paths:
        raise ValueError("datasets is empty: name at least one dataset")
    for p in paths:
        if not isinstance(p, str):
            raise TypeError(f"a dataset path must be a string, got {p!r}")
    return names, paths, kind


class Sources:
    """The datasets of ``datasets`` in every file of ``source``, checked to
    line up (see the module docstring)."""

    def __init__(self, source, datasets):
        self.files = _resolve_files(source)
        self.names, self.paths, self.kind = _dataset_paths(datasets)
        # layouts[f][d]: dataset d of file f
        self.layouts = []
        file_rows = []
        for f in self.files:
            _flush_for_read(f)  # a live Writer of this process: its rows first (docs/writer.md)
            row = [_core.Layout(f, p) for p in self.paths]
            n = row[0].shape[0] if row[0].shape else None
            for p, L in zip(self.paths, row):
                if not L.shape:
                    raise ValueError(f"dataset {p!r} in file {f!r} is a scalar: a training feed reads rows")
                if L.shape[0] != n:
                    raise ValueError(f"datasets of different lengths in file {f!r}: {self.paths[0]!r} has {n} "
                                     f"rows, {p!r} has {L.shape[0]}; datasets read together must have the same "
                                     f"number of rows")
            if self.layouts:
                for p, L, L0 in zip(self.paths, row, self.layouts[0]):
                    if L.dtype != L0.dtype:
                        raise ValueError(f"dataset {p!r} in file {f!r} has dtype {L.dtype}, but {L0.dtype} in "
                                         f"{self.files[0]!r}: files concatenated must agree")
                    if tuple(L.shape[1:]) != tuple(L0.shape[1:]):
                        raise ValueError(f"dataset {p!r} in file {f!r} has rows of shape {tuple(L.shape[1:])}, "
                                         f"but {tuple(L0.shape[1:])} in {self.files[0]!r}: files concatenated "
                                         f"must agree")
            self.layouts.append(row)
            file_rows.append(n)
        self.file_rows = file_rows
        #: starts[f]: the logical row of file f's first row; starts[-1] = n_rows
        self.starts = np.concatenate([[0], np.cumsum(np.array(file_rows, dtype=np.int64))]).astype(np.int64)
        self.n_rows = int(self.starts[-1])
        first = self.layouts[0]
        self.dtypes = [L.dtype for L in first]
        self.row_shapes = [tuple(L.shape[1:]) for L in first]
        self.row_bytes = [int(L.row_bytes) for L in first]

    def chunk_rows(self):
        """The rows of one chunk of each dataset (1 where not chunked), over
        every file: the least common multiple per dataset."""
        out = []
        for d in range(len(self.paths)):
            m = 1
            for row in self.layouts:
                c = row[d].chunks
                m = math.lcm(m, int(c[0]) if c else 1)
            out.append(m)
        return out

    def pieces(self, row0, n):
        """The file pieces holding logical rows ``[row0, row0+n)``: a list of
        ``(file index, local first row, count, offset into the range)``."""
        out = []
        f = int(np.searchsorted(self.starts, row0, side="right")) - 1
        done = 0
        while done < n:
            local = row0 + done - int(self.starts[f])
            take = min(n - done, self.file_rows[f] - local)
            if take > 0:
                out.append((f, local, take, done))
                done += take
            f += 1
        return out

    def split_rows(self, rows):
        """Group logical ``rows`` (an int64 array, any order) by file: a list
        of ``(file index, positions into rows, local rows)``."""
        if len(self.files) == 1:
            return [(0, None, rows)]
        f_of = np.searchsorted(self.starts, rows, side="right") - 1
        out = []
        for f in np.unique(f_of):
            pos = np.nonzero(f_of == f)[0]
            out.append((int(f), pos, rows[pos] - self.starts[f]))
        return out

    def identity(self):
        """Plain data that says which files and datasets these are."""
        return {
            "files": [file_identity(f) for f in self.files],
            "datasets": [[str(n), p] for n, p in zip(self.names, self.paths)],
            "shapes": [[str(dt), [self.n_rows, *shape]] for dt, shape in zip(self.dtypes, self.row_shapes)],
        }

    def wrap(self, arrays):
        """The batch of ``arrays`` (one per dataset) in the caller's shape:
        a dict, a tuple, or the one array."""
        if self.kind == "dict":
            return dict(zip(self.names, arrays))
        if self.kind == "tuple":
            return tuple(arrays)
        return arrays[0]
