"""Generators for the test file matrix.

Every dataset the Streamer tests read is described by a :class:`Case`: the
file it lives in, its HDF5 path, and what the tests should expect of it.
The files are written once per test session (see conftest.py) with h5py
and PyTables, and kept small (a few MB in all) so the suite stays fast.

The truth the tests compare with is always h5py's reading of the same rows,
never multiload's own reader.
"""

import dataclasses
import os

import h5py
import numpy as np
import tables

#: Rows of most matrix datasets. 100 divides it, 64 and 37 do not.
N = 1000

#: Block sizes the matrix tests use: one that divides N and two that do not
#: (and that chunk rows 7, 16 and 37 do not divide either).
BLOCK_DIVIDES = 100
BLOCK_REMAINDER = 64


@dataclasses.dataclass(frozen=True)
class Case:
    """One dataset of the matrix."""

    name: str            # test id
    file: str            # key of the file in the session's file dict
    path: str            # HDF5 path
    slow: bool = False   # streams through the slow path (SlowPathWarning)
    fields: tuple = ()   # columns worth streaming with field=

    def __str__(self):
        return self.name


def _rng(seed):
    return np.random.default_rng(seed)


def _values(dtype, shape, seed):
    """Deterministic data of any plain dtype, spanning its range."""
    dtype = np.dtype(dtype)
    rng = _rng(seed)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype.newbyteorder("="),
                            endpoint=True).astype(dtype)
    if dtype.kind == "f":
        v = rng.standard_normal(size=shape) * 1000
        return v.astype(dtype)
    if dtype.kind == "c":
        v = rng.standard_normal(size=shape) + 1j * rng.standard_normal(size=shape)
        return v.astype(dtype)
    if dtype.kind == "S":
        letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype="S1")
        raw = rng.choice(letters, size=tuple(shape) + (dtype.itemsize,))
        out = raw.view(f"S{dtype.itemsize}").reshape(shape)
        # some shorter strings, so NUL padding is exercised
        flat = out.reshape(-1)
        flat[::3] = b"x"
        return out
    raise AssertionError(f"no generator for {dtype}")


def _structured(dtype, n, seed):
    """Deterministic rows of a (possibly nested) structured dtype."""
    out = np.zeros(n, dtype=dtype)
    for i, name in enumerate(dtype.names):
        sub, _ = dtype.fields[name][:2]
        if sub.names:
            out[name] = _structured(sub, n, seed + i)
        elif sub.subdtype is not None:
            base, shape = sub.subdtype
            out[name] = _values(base, (n,) + shape, seed + i)
        else:
            out[name] = _values(sub, (n,), seed + i)
    return out


# ---------------------------------------------------------------- h5py files

#: Dtypes streamed as 1-D datasets, contiguous and chunked.
PLAIN_DTYPES = [
    "i1", "u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8",
    ">i2", ">u2", ">i4", ">u4", ">i8", ">u8", ">f2", ">f4", ">f8",
    "?", "S7", "<c8", ">c16",
]

NESTED = np.dtype([
    ("id", "<i4"),
    ("pos", [("x", "<f4"), ("y", ">f8"), ("tag", "S3")]),
    ("vec", ">i2", (3,)),
    ("flag", "?"),
])

ALIGNED = np.dtype({"names": ["a", "b", "c"], "formats": ["u1", "<f8", "<i2"]}, align=True)


def _dtype_id(dt):
    return np.dtype(dt).str.replace("<", "le").replace(">", "be").replace("|", "")


def write_h5py_matrix(fn):
    """The h5py part of the matrix; returns its Cases."""
    cases = []
    with h5py.File(fn, "w") as f:
        for i, dt in enumerate(PLAIN_DTYPES):
            data = _values(dt, (N,), 100 + i)
            did = _dtype_id(dt)
            f.create_dataset(f"contig/{did}", data=data)
            cases.append(Case(f"contig-{did}", "matrix", f"/contig/{did}"))
            # chunk rows 37: divides neither 100 nor 64
            f.create_dataset(f"chunked/{did}", data=data, chunks=(37,))
            cases.append(Case(f"chunked-{did}", "matrix", f"/chunked/{did}"))
            if dt in ("i1", "<u2", ">i4", "<f4", ">f8", "<i8", "?", "S7", "<c8"):
                f.create_dataset(f"deflate/{did}", data=data, chunks=(37,), compression="gzip",
                                 compression_opts=4, shuffle=True)
                cases.append(Case(f"deflate-shuffle-{did}", "matrix", f"/deflate/{did}"))

        # 2-D
        d2 = _values("<f4", (N, 5), 7)
        f.create_dataset("2d/contig", data=d2)
        f.create_dataset("2d/chunked", data=d2, chunks=(7, 5))
        f.create_dataset("2d/deflate", data=d2, chunks=(16, 5), compression="gzip", shuffle=True)
        f.create_dataset("2d/partial_cols", data=d2, chunks=(16, 2), compression="gzip", shuffle=True)
        f.create_dataset("2d/fletcher", data=d2, chunks=(7, 5), fletcher32=True)
        f.create_dataset("2d/fletcher_deflate", data=d2, chunks=(37, 3), fletcher32=True,
                         compression="gzip", shuffle=True)
        f.create_dataset("2d/be_i8", data=_values(">i8", (N, 3), 8), chunks=(64, 3),
                         compression="gzip", shuffle=True, fletcher32=True)
        for name in ("contig", "chunked", "deflate", "partial_cols", "fletcher", "fletcher_deflate",
                     "be_i8"):
            cases.append(Case(f"2d-{name}", "matrix", f"/2d/{name}"))

        # 3-D
        d3 = _values("<i2", (N, 4, 3), 9)
        f.create_dataset("3d/contig", data=d3)
        f.create_dataset("3d/chunked", data=d3, chunks=(10, 2, 3), shuffle=True, compression="gzip")
        f.create_dataset("3d/whole_rows", data=_values(">u4", (N, 2, 2), 10), chunks=(16, 2, 2),
                         fletcher32=True)
        for name in ("contig", "chunked", "whole_rows"):
            cases.append(Case(f"3d-{name}", "matrix", f"/3d/{name}"))

        # Partly unallocated chunks with a user fill value: only some chunks
        # are written, the rest must read as the fill value.
        u = f.create_dataset("fill/chunked", shape=(N,), dtype="<i4", chunks=(16,), fillvalue=-77)
        u[100:180] = np.arange(80)
        u[500:503] = 5
        u[990:] = 9
        u = f.create_dataset("fill/deflate2d", shape=(N, 3), dtype=">f8", chunks=(37, 2),
                             fillvalue=1.5, compression="gzip", shuffle=True)
        u[10:50, 0:2] = 3.25
        u[600:700, 2] = -1.0
        u = f.create_dataset("fill/fletcher", shape=(N,), dtype="<u2", chunks=(64,), fillvalue=4242,
                             fletcher32=True)
        u[200:300] = 7
        # contiguous, never written: all fill
        f.create_dataset("fill/contig_empty", shape=(N,), dtype="<f4", fillvalue=2.5)
        # chunked, never written, zero fill
        f.create_dataset("fill/chunked_zero", shape=(N, 2), dtype="<i8", chunks=(50, 2))
        for name in ("chunked", "deflate2d", "fletcher", "contig_empty", "chunked_zero"):
            cases.append(Case(f"fill-{name}", "matrix", f"/fill/{name}"))

        # Compact layout
        _compact(f, "compact/i4", _values("<i4", (200,), 11))
        _compact(f, "compact/f8_2d", _values(">f8", (150, 3), 12))
        cases.append(Case("compact-i4", "matrix", "/compact/i4"))
        cases.append(Case("compact-f8-2d", "matrix", "/compact/f8_2d"))

        # A filter multiload does not decode natively but HDF5 does: slow path.
        f.create_dataset("slow/scaleoffset_i4", data=_values("<i4", (N,), 13) // 1000, chunks=(37,),
                         scaleoffset=0)
        f.create_dataset("slow/scaleoffset_2d", data=_values("<i2", (N, 3), 14), chunks=(64, 3),
                         scaleoffset=0, shuffle=True)
        cases.append(Case("slow-scaleoffset-i4", "matrix", "/slow/scaleoffset_i4", slow=True))
        cases.append(Case("slow-scaleoffset-2d", "matrix", "/slow/scaleoffset_2d", slow=True))

        # Compound types written by h5py: nested, aligned (padding), complex.
        f.create_dataset("compound/nested", data=_structured(NESTED, N, 20))
        f.create_dataset("compound/nested_chunked", data=_structured(NESTED, N, 21), chunks=(37,),
                         compression="gzip", shuffle=True)
        f.create_dataset("compound/aligned", data=_structured(ALIGNED, N, 22), chunks=(16,))
        cases.append(Case("h5py-nested", "matrix", "/compound/nested", fields=("pos", "vec")))
        cases.append(Case("h5py-nested-chunked", "matrix", "/compound/nested_chunked",
                          fields=("id", "pos", "flag")))
        cases.append(Case("h5py-aligned", "matrix", "/compound/aligned", fields=("b", "c")))

        # Enum other than bool: read as its base integer.
        et = h5py.enum_dtype({"RED": 0, "GREEN": 1, "BLUE": 42}, basetype="i1")
        f.create_dataset("enum/color", data=np.array([0, 1, 42] * 333 + [1], dtype="i1"), dtype=et)
        cases.append(Case("enum-i1", "matrix", "/enum/color"))

        # Odd sizes: fewer rows than a block, one row, a prime row count.
        f.create_dataset("odd/one_row", data=_values("<f8", (1, 4), 30))
        f.create_dataset("odd/prime", data=_values("<u4", (997,), 31), chunks=(16,))
        f.create_dataset("odd/small", data=_values("<i2", (10, 2), 32), chunks=(3, 2),
                         compression="gzip")
        cases.append(Case("odd-one-row", "matrix", "/odd/one_row"))
        cases.append(Case("odd-prime", "matrix", "/odd/prime"))
        cases.append(Case("odd-small", "matrix", "/odd/small"))
    return cases


def _compact(f, name, data):
    """Write `data` as a compact-layout dataset (h5py has no keyword for it)."""
    grp, _, leaf = name.rpartition("/")
    g = f.require_group(grp)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    space = h5py.h5s.create_simple(data.shape)
    tid = h5py.h5t.py_create(data.dtype, logical=True)
    dsid = h5py.h5d.create(g.id, leaf.encode(), tid, space, dcpl=dcpl)
    dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, data)
    dsid.close()
    assert f[name].id.get_create_plist().get_layout() == h5py.h5d.COMPACT


# ------------------------------------------------------------ PyTables files

class Point(tables.IsDescription):
    x = tables.Float32Col(pos=0)
    y = tables.Float32Col(pos=1)


class Row(tables.IsDescription):
    i8 = tables.Int8Col(pos=0)
    u8 = tables.UInt8Col(pos=1)
    i16 = tables.Int16Col(pos=2)
    u16 = tables.UInt16Col(pos=3)
    i32 = tables.Int32Col(pos=4)
    u32 = tables.UInt32Col(pos=5)
    i64 = tables.Int64Col(pos=6)
    u64 = tables.UInt64Col(pos=7)
    f16 = tables.Float16Col(pos=8)
    f32 = tables.Float32Col(pos=9)
    f64 = tables.Float64Col(pos=10)
    flag = tables.BoolCol(pos=11)
    name = tables.StringCol(6, pos=12)
    mat = tables.Float32Col(shape=(2, 3), pos=13)   # sub-array column
    ids = tables.Int16Col(shape=(4,), pos=14)       # sub-array column
    c64 = tables.ComplexCol(8, pos=15)
    point = Point()                                 # nested column


TABLE_FIELDS = ("i8", "u64", "f16", "flag", "name", "mat", "ids", "point")


def write_tables_matrix(fn):
    """The PyTables part of the matrix; returns its Cases."""
    cases = []
    with tables.open_file(fn, "w") as h:
        rows = _structured(tables.description.Description(Row().columns)._v_dtype, N, 40)
        plain = h.create_table("/", "plain", Row, expectedrows=N, chunkshape=(37,))
        plain.append(rows)
        z = h.create_table("/", "zlib", Row, chunkshape=(16,),
                           filters=tables.Filters(complevel=5, complib="zlib", shuffle=True))
        z.append(rows)
        fl = h.create_table("/", "fletcher", Row, chunkshape=(64,),
                            filters=tables.Filters(complevel=1, complib="zlib", shuffle=False,
                                                   fletcher32=True))
        fl.append(rows)
        # A table whose last rows are appended in a second batch.
        t2 = h.create_table("/", "appended", Row, chunkshape=(100,))
        t2.append(rows[:N - 123])
        t2.append(rows[N - 123:])
        for name in ("plain", "zlib", "fletcher", "appended"):
            cases.append(Case(f"tables-{name}", "tables", f"/{name}", fields=TABLE_FIELDS))

        h.create_array("/", "array", _values("<f8", (N, 2), 41))
        h.create_carray("/", "carray", obj=_values(">i4", (N, 3), 42), chunkshape=(37, 3),
                        filters=tables.Filters(complevel=3, complib="zlib", shuffle=True))
        ea = h.create_earray("/", "earray", atom=tables.UInt16Atom(), shape=(0, 4), chunkshape=(16, 4),
                             filters=tables.Filters(complevel=1, complib="zlib"))
        ea.append(_values("<u2", (N - 10, 4), 43))
        ea.append(_values("<u2", (10, 4), 44))
        g = h.create_group("/", "deep")
        h.create_carray(g, "bool", obj=_values("?", (N,), 45), chunkshape=(64,))
        for name in ("array", "carray", "earray", "deep/bool"):
            cases.append(Case(f"tables-{name.replace('/', '-')}", "tables", f"/{name}"))
    return cases


# ------------------------------------------------------------ other files

def write_api_file(fn):
    """Datasets the API tests use."""
    with h5py.File(fn, "w") as f:
        f.create_dataset("seq", data=np.arange(N, dtype="<i8"))
        f.create_dataset("seq2d", data=np.arange(N * 4, dtype="<f4").reshape(N, 4), chunks=(16, 4),
                         compression="gzip", shuffle=True)
        # Large enough (raw bytes > 1 MiB) that the default block size is
        # a whole number of chunks, yet tiny on disk (compressible).
        big = (np.arange(10000 * 128) % 251).astype("u1").reshape(10000, 128)
        f.create_dataset("bigchunked", data=big, chunks=(7, 128), compression="gzip")
        f.create_dataset("bigcontig", data=np.arange(200000, dtype="<f4"))
        t = np.zeros(N, dtype=[("a", "<i4"), ("b", "<f8", (2,)), ("s", "S4")])
        t["a"] = np.arange(N)
        t["b"] = np.arange(2 * N).reshape(N, 2) * 0.5
        t["s"] = [str(i).encode() for i in range(N)]
        f.create_dataset("table", data=t, chunks=(37,))


def write_bad_file(fn):
    """Objects that cannot be streamed."""
    with h5py.File(fn, "w") as f:
        f.create_group("group/sub")
        f.create_dataset("empty", shape=(0,), dtype="<f4")
        f.create_dataset("empty_chunked", shape=(0, 3), dtype="<i4", chunks=(8, 3), maxshape=(None, 3))
        f.create_dataset("scalar", data=np.float64(3.5))
        f.create_dataset("vlen_str", data=["a", "bb", "ccc"], dtype=h5py.string_dtype())
        f.create_dataset("vlen_int", shape=(3,), dtype=h5py.vlen_dtype(np.int32))
        refs = f.create_dataset("refs", shape=(2,), dtype=h5py.ref_dtype)
        refs[0] = f["scalar"].ref
        f.create_dataset("opaque", data=np.zeros(4, dtype="V8"))
        f.create_dataset("ok", data=np.arange(10, dtype="<i4"))
        f.create_dataset("lzf", data=np.arange(N, dtype="<f4"), chunks=(64,), compression="lzf")
        cmp_vlen = np.dtype([("a", "<i4"), ("s", h5py.string_dtype())])
        f.create_dataset("compound_vlen", shape=(3,), dtype=cmp_vlen)
        f["dangling"] = h5py.SoftLink("/nowhere")
    # multitables users' usual compression: PyTables' built-in blosc, which
    # the system HDF5 cannot load (multiload decodes it natively).
    with tables.open_file(fn, "a") as h:
        t = h.create_table("/", "blosc", {"a": tables.Int32Col(), "b": tables.Float64Col()},
                           filters=tables.Filters(5, "blosc"), chunkshape=(16,))
        t.append([(i, i / 2) for i in range(100)])
        # Blosc2 and bzip2 exist only inside PyTables' own HDF5: neither
        # multiload nor the system HDF5 can decode them.
        for name, complib in (("blosc2", "blosc2"), ("bzip2", "bzip2")):
            t = h.create_table("/", name, {"a": tables.Int32Col(), "b": tables.Float64Col()},
                               filters=tables.Filters(5, complib), chunkshape=(16,))
            t.append([(i, i / 2) for i in range(100)])


def write_all(directory):
    """Write every file into `directory`; return ({key: filename}, [Case])."""
    files = {
        "matrix": os.path.join(directory, "matrix.h5"),
        "tables": os.path.join(directory, "tables.h5"),
        "api": os.path.join(directory, "api.h5"),
        "bad": os.path.join(directory, "bad.h5"),
    }
    cases = write_h5py_matrix(files["matrix"]) + write_tables_matrix(files["tables"])
    write_api_file(files["api"])
    write_bad_file(files["bad"])
    return files, cases


_SESSION = None


def session_files():
    """Write the files once per process into a fresh temporary directory.

    Returns (directory, {key: filename}, [Case]). Parametrisation needs the
    cases at collection time, so this is a process-wide cache; the
    directory is removed when the process exits.
    """
    global _SESSION
    if _SESSION is None:
        import atexit
        import shutil
        import tempfile
        d = tempfile.mkdtemp(prefix="multiload-tests-")
        atexit.register(shutil.rmtree, d, True)
        files, cases = write_all(d)
        _SESSION = (d, files, cases)
    return _SESSION


def case_list():
    """The matrix cases (writes the session's files on first use)."""
    return session_files()[2]


def read_truth(files, case, start=0, stop=None):
    """h5py's reading of rows [start, stop) of a case."""
    with h5py.File(files[case.file], "r") as f:
        ds = f[case.path]
        stop = ds.shape[0] if stop is None else stop
        return ds[start:stop]


# ------------------------------------------------------------ checking

#: Seconds any single get() may wait in a test before it counts as a hang.
GET_TIMEOUT = 30


def assert_same(block, expected, what=""):
    """Equal values AND dtype; plain dtypes are also compared bit for bit
    (structured ones may differ in padding bytes, which carry no value)."""
    assert block.dtype == expected.dtype, f"{what}: dtype {block.dtype} != {expected.dtype}"
    assert block.shape == expected.shape, f"{what}: shape {block.shape} != {expected.shape}"
    np.testing.assert_array_equal(block, expected, err_msg=what)
    if block.dtype.fields is None:
        assert np.ascontiguousarray(block).tobytes() == np.ascontiguousarray(expected).tobytes(), what


def drain(queue, limit=None):
    """Take blocks until QueueClosed: [(index, start, rows, copy of data)].

    Every get() is bounded by GET_TIMEOUT and the number of blocks by
    `limit` (default: n_blocks + 1), so a library bug fails, never hangs.
    """
    from multiload import QueueClosed
    if limit is None:
        limit = queue.n_blocks + 1
    out = []
    while True:
        guard = queue.get(timeout=GET_TIMEOUT)
        if guard is QueueClosed:
            return out
        assert len(out) < limit, f"queue handed out more than {limit} blocks"
        with guard as block:
            out.append((guard.index, guard.start, guard.rows, np.array(block, copy=True)))


def take(queue, count):
    """Take exactly `count` blocks (for endless queues), as drain() does."""
    from multiload import QueueClosed
    out = []
    for _ in range(count):
        guard = queue.get(timeout=GET_TIMEOUT)
        assert guard is not QueueClosed, f"cyclic queue closed after {len(out)} blocks"
        with guard as block:
            out.append((guard.index, guard.start, guard.rows, np.array(block, copy=True)))
    return out


def supports_o_direct(path):
    """True if the filesystem holding `path` lets it be opened with O_DIRECT (tmpfs does not)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    return True
