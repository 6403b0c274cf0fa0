"""Variable-length arrays (PyTables VLArray) read by the C core, without
h5py, compared with PyTables reading the same file.

The truth for one row is PyTables' ``vlarray[i]``; for a selection of rows
it is those rows concatenated along the first axis (what multiload returns
for slices, lists and arrays of rows, PyTables returning a list of rows).
"""

import errno
import json
import os
import pickle
import struct
import subprocess
import sys
import threading
import warnings
import zlib

import h5py
import numpy as np
import pytest
import tables
from hypothesis import given, settings
from hypothesis import strategies as hst

import multiload
from multiload import _core

pytestmark = pytest.mark.timeout(60)

N_ROWS = 40

# name -> (atom, byteorder, dtype of one element as numpy builds it)
ATOMS = {
    "i32": (tables.Int32Atom(), None, "<i4"),
    "f64": (tables.Float64Atom(), None, "<f8"),
    "i32be": (tables.Int32Atom(), "big", ">i4"),
    "f64be": (tables.Float64Atom(), "big", ">f8"),
    "u8": (tables.UInt8Atom(), None, "u1"),
    "i16x2": (tables.Int16Atom(shape=(2,)), None, ("<i2", (2,))),
    "f32x2x3": (tables.Float32Atom(shape=(2, 3)), None, ("<f4", (2, 3))),
    "c128": (tables.ComplexAtom(itemsize=16), None, "<c16"),
    "s4": (tables.StringAtom(itemsize=4), None, "S4"),
    "bool": (tables.BoolAtom(), None, "?"),
}


def _row(name, i, rng):
    """Row i of VLArray `name`: empty every 7th row, else 1..9 elements."""
    atom, _, dt = ATOMS[name]
    n = 0 if i % 7 == 3 else int(rng.integers(1, 10))
    shape = (n,) + tuple(atom.shape)
    if name == "s4":
        return np.array([b"r%d.%d" % (i, k) for k in range(n)], dtype="S4")
    if name == "bool":
        return rng.integers(0, 2, n).astype(bool)
    if name == "c128":
        return (rng.random(n) + 1j * rng.random(n)).astype("c16")
    return (rng.random(shape) * 100).astype(np.dtype(dt).base)


@pytest.fixture(scope="module")
def vlfile(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("vlarray") / "vl.h5")
    rng = np.random.default_rng(11)
    with tables.open_file(path, "w") as f:
        for name, (atom, order, _) in ATOMS.items():
            kw = {"byteorder": order} if order else {}
            vl = f.create_vlarray("/", name, atom, **kw)
            for i in range(N_ROWS):
                vl.append(_row(name, i, rng))
        z = f.create_vlarray("/", "zlib", tables.Int32Atom(), filters=tables.Filters(5, complib="zlib",
                                                                                        shuffle=True))
        for i in range(N_ROWS):
            z.append(np.arange(i % 5, dtype="i4") + i)
        b = f.create_vlarray("/", "blosc", tables.Int32Atom(), filters=tables.Filters(5, complib="blosc"))
        b.append(np.arange(3, dtype="i4"))
        f.create_vlarray("/", "empty", tables.Int32Atom())
        s = f.create_vlarray("/", "vlstring", tables.VLStringAtom())
        for w in (b"hello", b"", b"multiload", b"\x00\xffbytes"):
            s.append(w)
        u = f.create_vlarray("/", "vlunicode", tables.VLUnicodeAtom())
        for w in ("h\u00e9llo", "", "\u65e5\u672c"):
            u.append(w)
        o = f.create_vlarray("/", "object", tables.ObjectAtom())
        for w in ({"a": 1}, [1, 2, 3], "text"):
            o.append(w)
        f.create_array("/", "plain", np.arange(10))
    with h5py.File(path, "a") as f:
        f.create_dataset("vlen_str", data=["a", "bb", "ccc"], dtype=h5py.string_dtype())
        cmp = np.dtype([("a", "<i4"), ("b", ">f8")])
        d = f.create_dataset("vlen_cmp", (3,), dtype=h5py.vlen_dtype(cmp))
        d[0] = np.array([(1, 2.0), (3, 4.0)], dtype=cmp)
        d[2] = np.array([(5, 6.5)], dtype=cmp)
        d = f.create_dataset("vlen_2d", (2, 2), dtype=h5py.vlen_dtype(np.int32))
        d[0, 0] = np.arange(3)
        f.create_dataset("vlen_vlstr", (2,), dtype=h5py.vlen_dtype(np.dtype([("s", h5py.string_dtype())])))
        f.create_group("grp")
    return path


@pytest.fixture(scope="module")
def truth(vlfile):
    """truth[name] = list of PyTables' rows."""
    with warnings.catch_warnings():  # PyTables warns about the h5py-made datasets it cannot read
        warnings.simplefilter("ignore", UserWarning)
        with tables.open_file(vlfile) as f:
            return {n.name: [n[i] for i in range(len(n))] for n in f.root._f_iter_nodes("VLArray")}


@pytest.fixture
def reader(vlfile):
    r = multiload.Reader(vlfile, n_procs=2)
    yield r
    r.stop()


def _cat(rows, like):
    return np.concatenate(rows) if rows else np.zeros((0,) + like.shape[1:], like.dtype)


NUMERIC = [n for n in ATOMS]


@pytest.mark.parametrize("name", NUMERIC)
def test_rows_match_pytables(reader, truth, name):
    ds = reader.get_dataset("/" + name)
    rows = truth[name]
    assert ds.shape == (N_ROWS,)
    with h5py.File(reader._filename) as f:  # the dtype h5py reports
        assert ds.dtype == h5py.check_vlen_dtype(f[name].dtype)
    stage = ds.create_stage_natoms(100)
    for i in range(N_ROWS):
        got = reader.request(ds[i], stage).get()
        assert got.shape == rows[i].shape  # PyTables' shape, atom shape included (also for empty rows)
        np.testing.assert_array_equal(got, rows[i])
        if name.endswith("be"):
            assert got.dtype.byteorder == ">"  # the file's bytes, no conversion
    # The element dtype is h5py's, in the file's byte order (PyTables
    # converts big-endian rows to native; the values are the same). Bool
    # atoms are 8-bit bitfields in the file, which h5py (and so multiload)
    # reports as uint8.
    assert reader.read(ds[5]).dtype == (np.uint8 if name == "bool" else np.dtype(ATOMS[name][2]).base)


@pytest.mark.parametrize("name", ["i32", "i16x2", "f64be", "s4"])
def test_selections_concatenate(reader, truth, name):
    ds = reader.get_dataset("/" + name)
    rows = truth[name]
    big = ds.create_stage_natoms(N_ROWS * 10)
    like = rows[0]
    cases = {
        "int": (np.int64(4), rows[4]),
        "negative": (-1, rows[-1]),
        "slice": (slice(2, 30, 3), _cat(rows[2:30:3], like)),
        "negative step": (slice(None, None, -4), _cat(rows[::-4], like)),
        "empty slice": (slice(5, 5), _cat([], like)),
        "list with repeats": ([7, 2, 7, -3, 0, 2], _cat([rows[k] for k in [7, 2, 7, -3, 0, 2]], like)),
        "int array": (np.array([39, 1, 3, 3], dtype=np.int32), _cat([rows[k] for k in [39, 1, 3, 3]], like)),
        "empty list": ([], _cat([], like)),
        "mask": (np.arange(N_ROWS) % 5 == 1, _cat(rows[1::5], like)),
    }
    for what, (key, want) in cases.items():
        got = reader.request(ds[key], big).get()
        assert got.shape == want.shape, what
        np.testing.assert_array_equal(got, want, err_msg=what)
        np.testing.assert_array_equal(reader.read(ds[key]), want, err_msg=what)
    # ds.read(start, stop, step) is a slice; further keys index the result as numpy
    np.testing.assert_array_equal(reader.read(ds.read(3, 9)), _cat(rows[3:9], like))
    np.testing.assert_array_equal(reader.read(ds[3:9][::2]), _cat(rows[3:9], like)[::2])


def test_atom_shape_matches_pytables_read(reader, truth, vlfile):
    """PyTables' read(start, stop) gives a list of (len, 2) rows; multiload
    concatenates them along the first axis: (sum of lens, 2)."""
    ds = reader.get_dataset("/i16x2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with tables.open_file(vlfile) as f:
            parts = f.root.i16x2.read(0, 10)
    got = reader.read(ds[0:10])
    assert got.shape == (sum(len(p) for p in parts), 2)
    np.testing.assert_array_equal(got, np.concatenate(parts))
    assert ds.create_stage_natoms(3).size_nbytes == 3 * 2 * 2  # an atom is (2,) int16


def test_compressed_and_empty(reader, truth):
    z = reader.get_dataset("/zlib")
    np.testing.assert_array_equal(reader.read(z[::-1]), _cat(truth["zlib"][::-1], truth["zlib"][0]))
    e = reader.get_dataset("/empty")
    assert e.shape == (0,)
    assert reader.read(e[:]).shape == (0,)
    with pytest.raises(IndexError):
        reader.read(e[0])


def test_blosc_vlarray_reads_through_hdf5plugin(reader, truth):
    """PyTables' blosc is in no system HDF5; multiload decodes it natively
    only for fixed-size data. A blosc VLArray reads through HDF5 with
    hdf5plugin's blosc plugin, which the core finds by itself (a missing
    filter's error is tested in test_filters_plugins.py, in a child process
    with HDF5's plugins disabled)."""
    b = reader.get_dataset("/blosc")
    np.testing.assert_array_equal(reader.read(b[:]), _cat(truth["blosc"], truth["blosc"][0]))


def test_index_errors(reader):
    ds = reader.get_dataset("/i32")
    stage = ds.create_stage_natoms(100)
    for key in (N_ROWS, -N_ROWS - 1, [0, N_ROWS], np.array([-N_ROWS - 1])):
        with pytest.raises(IndexError):
            reader.request(ds[key], stage)
    for key in (1.5, [0.5], np.ones(3, bool), (1, 2)):
        with pytest.raises(IndexError):
            reader.request(ds[key], stage)
    with pytest.raises(IndexError):
        ds[...]
    # the stage is still free after the refusals
    np.testing.assert_array_equal(reader.request(ds[-N_ROWS], stage).get(), reader.read(ds[0]))


def test_stage_too_small(reader, truth):
    ds = reader.get_dataset("/i32")
    n = sum(len(r) for r in truth["i32"][:10])
    small = ds.create_stage_natoms(n - 1)
    with pytest.raises(multiload.SharedMemoryError):
        reader.request(ds[:10], small)
    exact = ds.create_stage_natoms(n)
    np.testing.assert_array_equal(reader.request(ds[:10], exact).get(), np.concatenate(truth["i32"][:10]))
    # refused, the small stage stays free and usable
    np.testing.assert_array_equal(reader.request(ds[0], small).get(), truth["i32"][0])


def test_vlstring_object_unicode_rows_are_their_elements(reader, truth):
    """PyTables' VLStringAtom and ObjectAtom are vlen of uint8 in the file
    (h5py says so too): multiload gives each row's bytes, which PyTables
    decodes (bytes) or unpickles. VLUnicodeAtom is vlen of uint32 (UCS-4)."""
    s = reader.get_dataset("/vlstring")
    assert s.dtype == np.uint8
    for i, want in enumerate(truth["vlstring"]):
        assert reader.read(s[i]).tobytes() == want
    assert reader.read(s[:]).tobytes() == b"".join(truth["vlstring"])
    o = reader.get_dataset("/object")
    for i, want in enumerate(truth["object"]):
        assert pickle.loads(reader.read(o[i]).tobytes()) == want
    u = reader.get_dataset("/vlunicode")
    assert u.dtype == np.uint32
    for i, want in enumerate(truth["vlunicode"]):
        assert reader.read(u[i]).astype("<u4").tobytes().decode("utf-32-le") == want


def test_compound_elements_as_h5py(reader, vlfile):
    ds = reader.get_dataset("/vlen_cmp")
    with h5py.File(vlfile) as f:
        d = f["vlen_cmp"]
        assert ds.dtype == h5py.check_vlen_dtype(d.dtype)
        want = [d[i] for i in range(3)]
    for i in range(3):
        np.testing.assert_array_equal(reader.read(ds[i]), want[i])
    np.testing.assert_array_equal(reader.read(ds[[2, 0]]), np.concatenate([want[2], want[0]]))


def test_refused_types_raise_typeerror_naming_them(reader):
    with pytest.raises(TypeError, match="variable-length string in the elements of variable-length dataset"):
        reader.get_dataset("vlen_vlstr")
    with pytest.raises(TypeError, match="has 2 dimensions"):
        reader.get_dataset("vlen_2d")
    with pytest.raises(TypeError, match="is a group"):
        reader.get_dataset("grp")
    with pytest.raises(KeyError):
        reader.get_dataset("nope")
    assert type(reader.get_dataset("/plain")).__name__ == "ArrayDataset"


def test_core_binding(vlfile, truth):
    assert _core.vlen_open(vlfile, "/plain") is None
    assert _core.vlen_open(vlfile, "/grp") is None
    assert _core.vlen_open(vlfile, "/vlen_str").is_string  # tests/test_vlen_strings.py reads them
    with pytest.raises(FileNotFoundError):
        _core.vlen_open(vlfile + ".missing", "/i32")
    with pytest.raises(OSError):
        _core.vlen_open(__file__, "/i32")
    v = _core.vlen_open(vlfile, "/i32")
    counts, data = v.read(np.array([5, 3, 5], dtype=np.int64))
    rows = truth["i32"]
    np.testing.assert_array_equal(counts, [len(rows[5]), len(rows[3]), len(rows[5])])
    np.testing.assert_array_equal(data, np.concatenate([rows[5], rows[3], rows[5]]))
    with pytest.raises(IndexError):
        v.read([N_ROWS])
    with pytest.raises(IndexError):
        v.read([-1])  # the binding takes rows already wrapped
    with pytest.raises(TypeError):
        v.read([1.5])
    with pytest.raises(TypeError):
        type(v)()


@settings(max_examples=60, deadline=None)
@given(hst.lists(hst.integers(-N_ROWS, N_ROWS - 1), max_size=30))
def test_row_lists_property(vlfile, truth, rows):
    with multiload.Reader(vlfile, n_procs=1) as r:
        ds = r.get_dataset("/i16x2")
        want = _cat([truth["i16x2"][k] for k in rows], truth["i16x2"][0])
        np.testing.assert_array_equal(r.read(ds[rows]), want)


def test_threads_read_vlarrays_beside_native_reads(vlfile, truth):
    """VLArray reads (HDF5 under the lock) from several threads while the
    workers read a fixed-size dataset: each gets its own rows."""
    errors = []
    with multiload.Reader(vlfile, n_procs=2) as r:
        ds = r.get_dataset("/f64be")
        plain = r.get_dataset("/plain")

        def work(seed):
            rng = np.random.default_rng(seed)
            try:
                for _ in range(60):
                    k = rng.integers(0, N_ROWS, 5)
                    np.testing.assert_array_equal(r.read(ds[k]), _cat([truth["f64be"][j] for j in k],
                                                                      truth["f64be"][0]))
                    np.testing.assert_array_equal(r.read(plain[k % 10]), k % 10)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors, errors[0]


def test_without_h5py(vlfile, truth):
    """h5py is only a test dependency: with it hidden, VLArrays and
    variable-length strings still read."""
    code = f"""
import json, sys
attempts = []

class NoH5py:  # records, and refuses, every import of h5py (even one caught by the importer)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "h5py":
            attempts.append(name)
            raise ImportError("h5py is hidden")

sys.modules.pop("h5py", None)
sys.meta_path.insert(0, NoH5py())
import multiload
r = multiload.Reader({vlfile!r}, n_procs=1)
ds = r.get_dataset("/i32")
out = {{"row": r.read(ds[4]).tolist(), "rows": r.read(ds[[3, 1, 3]]).tolist(),
        "staged": r.request(ds[-1], ds.create_stage_natoms(20)).get().tolist()}}
s = r.get_dataset("/vlen_str")
out["vlen_str"] = [b.decode() for b in r.read(s[:])]
out["vlen_str_meta"] = s.dtype.metadata["vlen"].__name__
r.stop()
out["attempts"] = attempts
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = truth["i32"]
    assert out["row"] == rows[4].tolist()
    assert out["rows"] == np.concatenate([rows[3], rows[1], rows[3]]).tolist()
    assert out["staged"] == rows[-1].tolist()
    with h5py.File(vlfile) as f:
        assert out["vlen_str"] == f["vlen_str"].asstr()[:].tolist()
        assert out["vlen_str_meta"] == f["vlen_str"].dtype.metadata["vlen"].__name__
    assert out["attempts"] == []


# -- Damaged global heaps (issue 10, finding 3) ------------------------------
#
# A row's descriptor in the dataset is (4-byte element count, collection
# address, 4-byte object index); the collection ("GCOL", version 1, size)
# holds the objects (2-byte index, refcount, 4 reserved, 8-byte size, data
# padded to 8). HDF5 1.10.8's H5HG_read trusts all of it (asserts only), so
# each damage below crashed or read out of bounds before multiload checked
# the heap itself; now each is OSError(EIO) naming the file, the dataset and
# the row, and the rows the damage does not touch still read.

HEAP_ROWS = 30
HEAP_ROW = 16  # the row whose descriptor or object is damaged: 4 elements


def _heap_row(i):
    return np.arange(i % 6, dtype="<i4") + 100 * i  # row 16: 4 elements, 16 bytes


def _write_heap_file(fn, kind):
    """A 30-row vlen-of-int32 dataset "/vl": a PyTables VLArray, chunked (8
    rows a chunk), plain or zlib+shuffle; or h5py's, contiguous or chunked
    with gzip, shuffle and fletcher32."""
    rows = [_heap_row(i) for i in range(HEAP_ROWS)]
    if kind in ("tables", "tables_zlib"):
        filters = tables.Filters(5, complib="zlib", shuffle=True) if kind == "tables_zlib" else None
        with tables.open_file(fn, "w") as f:
            vl = f.create_vlarray("/", "vl", tables.Int32Atom(), chunkshape=(8,), filters=filters)
            for r in rows:
                vl.append(r)
    else:
        kw = dict(chunks=(8,), compression="gzip", shuffle=True) if kind == "h5py_gzip" else {}
        with h5py.File(fn, "w") as f:
            d = f.create_dataset("vl", (HEAP_ROWS,), dtype=h5py.vlen_dtype("<i4"), **kw)
            for i, r in enumerate(rows):
                d[i] = r
    return rows


def _collections(fn):
    """{address: (size, {index: (object header offset, object size)})} of
    every global heap collection (8-byte lengths, no user block)."""
    data = open(fn, "rb").read()
    out, at = {}, data.find(b"GCOL")
    while at >= 0:
        size = struct.unpack_from("<Q", data, at + 8)[0]
        objs, p = {}, at + 16
        while p + 16 <= at + size:
            idx, _, _, osz = struct.unpack_from("<HHIQ", data, p)
            objs[idx] = (p, osz)
            p += osz if idx == 0 else 16 + (osz + 7) // 8 * 8
        out[at] = (size, objs)
        at = data.find(b"GCOL", at + 16)
    return out


def _patch(fn, offset, raw):
    with open(fn, "r+b") as f:
        f.seek(offset)
        f.write(raw)


class _Descriptors:
    """The descriptors of "/vl" as stored, to read and rewrite: in place
    for contiguous and unfiltered chunks; a filtered chunk is decoded,
    patched and written back whole (h5py's direct chunk I/O)."""

    def __init__(self, fn):
        self.fn = fn
        with h5py.File(fn, "r") as f:
            d = f["vl"]
            self.chunk = d.chunks[0] if d.chunks else None
            self.filtered = bool(d.compression or d.shuffle or d.fletcher32)
            self.fletcher32 = d.fletcher32
            if self.chunk is None:
                self.base = d.id.get_offset()

    def _chunk(self, row):
        with h5py.File(self.fn, "r") as f:
            info = f["vl"].id.get_chunk_info_by_coord((row // self.chunk * self.chunk,))
            if not self.filtered:
                return info.byte_offset, None
            self.mask, raw = f["vl"].id.read_direct_chunk((row // self.chunk * self.chunk,))
        body = np.frombuffer(zlib.decompress(raw[:-4] if self.fletcher32 else raw), np.uint8)
        if not self.mask & 1:  # shuffle, filter 0, applied (PyTables' fails on write: skipped)
            body = body.reshape(16, -1).T
        return None, bytearray(body.tobytes())

    def get(self, row):
        """(count, address, index) of `row`."""
        if self.chunk is None:
            with open(self.fn, "rb") as f:
                f.seek(self.base + 16 * row)
                return struct.unpack("<IQI", f.read(16))
        off, chunk = self._chunk(row)
        if chunk is None:
            with open(self.fn, "rb") as f:
                f.seek(off + 16 * (row % self.chunk))
                return struct.unpack("<IQI", f.read(16))
        return struct.unpack_from("<IQI", chunk, 16 * (row % self.chunk))

    def set(self, row, count=None, addr=None, idx=None):
        old = self.get(row)
        new = struct.pack("<IQI", *(o if n is None else n for o, n in zip(old, (count, addr, idx))))
        if self.chunk is None:
            return _patch(self.fn, self.base + 16 * row, new)
        off, chunk = self._chunk(row)
        if chunk is None:
            return _patch(self.fn, off + 16 * (row % self.chunk), new)
        k = 16 * (row % self.chunk)
        chunk[k:k + 16] = new
        body = np.frombuffer(bytes(chunk), np.uint8)
        if not self.mask & 1:
            body = body.reshape(-1, 16).T
        raw = zlib.compress(body.tobytes(), 5)
        if self.fletcher32:
            raw += struct.pack("<I", _fletcher32(raw))
        with h5py.File(self.fn, "r+") as f:
            f["vl"].id.write_direct_chunk((row // self.chunk * self.chunk,), raw, self.mask)


def _fletcher32(data):
    """HDF5's Fletcher-32 (16-bit big-endian words, an odd last byte as the high byte)."""
    s1 = s2 = 0
    words = [data[i] << 8 | data[i + 1] for i in range(0, len(data) - 1, 2)]
    if len(data) % 2:
        words.append(data[-1] << 8)
    for w in words:
        s1 = (s1 + w) % 65535
        s2 = (s2 + s1) % 65535
    return s2 << 16 | s1


def _damage(fn, what):
    """Damage "/vl" of fn in one way; returns the rows that must still read."""
    desc = _Descriptors(fn)
    count, addr, idx = desc.get(HEAP_ROW)
    assert count == 4
    heaps = _collections(fn)
    size, objs = heaps[addr]
    obj_at, obj_size = objs[idx]
    assert obj_size == 16
    file_size = os.path.getsize(fn)
    others = [r for r in range(HEAP_ROWS) if r != HEAP_ROW]
    if what == "index past the objects":
        desc.set(HEAP_ROW, idx=max(objs) + 1000)
    elif what == "index of the free space":
        desc.set(HEAP_ROW, idx=0)
    elif what == "index past 16 bits":
        desc.set(HEAP_ROW, idx=idx + 65536)
    elif what == "object index changed":  # the descriptor's index is then absent
        _patch(fn, obj_at, struct.pack("<H", 65000))
        return [r for r in others if desc.get(r)[1] != addr or desc.get(r)[2] < 65000]
    elif what == "object size past the collection":
        _patch(fn, obj_at + 8, struct.pack("<Q", 1 << 40))
        return []
    elif what == "object size wraps":
        _patch(fn, obj_at + 8, struct.pack("<Q", 2**64 - 8))
        return []
    elif what == "object larger than its row":  # 16 bytes for a row of 3 int32
        desc.set(HEAP_ROW, count=3)
    elif what == "object smaller than its row":  # the same padded size: the walk is intact
        _patch(fn, obj_at + 8, struct.pack("<Q", 10))
    elif what == "empty row with an object":  # a count of 0 still makes HDF5 copy the object
        desc.set(HEAP_ROW, count=0)
    elif what == "free space of size 0":  # HDF5's walk stays in place forever
        _patch(fn, objs[0][0] + 8, struct.pack("<Q", 0))
        return []
    elif what == "collection size past the file":
        _patch(fn, addr + 8, struct.pack("<Q", file_size * 4))
        return []
    elif what == "collection size below 4096":
        _patch(fn, addr + 8, struct.pack("<Q", 2048))
        return []
    elif what == "collection size off the objects":
        _patch(fn, addr + 8, struct.pack("<Q", size + 4096))
        return []
    elif what == "collection signature":
        _patch(fn, addr, b"GCOX")
        return []
    elif what == "collection version":
        _patch(fn, addr + 4, b"\x02")
        return []
    elif what == "collection address past the file":
        desc.set(HEAP_ROW, addr=file_size + 4096)
    elif what == "collection address undefined":
        desc.set(HEAP_ROW, addr=2**64 - 1)
    elif what == "collection address elsewhere":  # the superblock: no collection there
        desc.set(HEAP_ROW, addr=8)
    elif what == "collection address inside a collection":
        desc.set(HEAP_ROW, addr=addr + 16)
    else:
        raise AssertionError(what)
    return others


HEAP_DAMAGE = ["index past the objects", "index of the free space", "index past 16 bits", "object index changed",
               "object size past the collection", "object size wraps", "object larger than its row",
               "object smaller than its row", "empty row with an object", "free space of size 0",
               "collection size past the file",
               "collection size below 4096", "collection size off the objects", "collection signature",
               "collection version", "collection address past the file", "collection address undefined",
               "collection address elsewhere", "collection address inside a collection"]


def _check_corrupt(e, fn, row=HEAP_ROW):
    assert e.errno == errno.EIO, e
    assert e.filename == fn, e
    assert "'vl'" in str(e) or "'/vl'" in str(e), e
    assert f"row {row}" in str(e), e


@pytest.mark.parametrize("kind", ["tables", "tables_zlib", "h5py", "h5py_gzip"])
@pytest.mark.parametrize("what", HEAP_DAMAGE)
def test_damaged_heap_is_corrupt_data(tmp_path, kind, what):
    fn = str(tmp_path / f"{kind}.h5")
    rows = _write_heap_file(fn, kind)
    intact = _damage(fn, what)
    v = _core.vlen_open(fn, "/vl")
    with pytest.raises(OSError) as e:
        v.read(np.array([HEAP_ROW], dtype=np.int64))
    _check_corrupt(e.value, fn)
    with pytest.raises(OSError) as e:  # among other rows, in any order: the row is named
        v.read(np.array([HEAP_ROWS - 1, HEAP_ROW, 0, HEAP_ROW], dtype=np.int64))
    _check_corrupt(e.value, fn)
    if intact:  # the rows the damage leaves alone still read, exactly
        counts, data = v.read(np.array(intact, dtype=np.int64))
        np.testing.assert_array_equal(counts, [len(rows[r]) for r in intact])
        np.testing.assert_array_equal(data, np.concatenate([rows[r] for r in intact]))
    with multiload.Reader(fn, n_procs=1) as r:  # the Reader raises the same
        ds = r.get_dataset("/vl")
        with pytest.raises(OSError) as e:
            r.read(ds[HEAP_ROW])
        _check_corrupt(e.value, fn)


@pytest.mark.parametrize("kind", ["tables", "tables_zlib", "h5py", "h5py_gzip"])
def test_intact_heap_reads_like_pytables(tmp_path, kind):
    """The checks refuse nothing HDF5 wrote: every row as PyTables (or, for
    h5py's datasets, which PyTables does not open, h5py) reads it."""
    fn = str(tmp_path / f"{kind}.h5")
    rows = _write_heap_file(fn, kind)
    if kind.startswith("tables"):
        with tables.open_file(fn) as f:
            want = [f.root.vl[i] for i in range(HEAP_ROWS)]
    else:
        with h5py.File(fn, "r") as f:
            want = list(f["vl"][:])
    for a, b in zip(want, rows):
        np.testing.assert_array_equal(a, b)
    v = _core.vlen_open(fn, "/vl")
    order = np.array(list(range(HEAP_ROWS)) + [29, 0, 13, 13, 7], dtype=np.int64)
    counts, data = v.read(order)
    np.testing.assert_array_equal(counts, [len(want[r]) for r in order])
    np.testing.assert_array_equal(data, np.concatenate([want[r] for r in order]))


def test_many_collections(tmp_path):
    """Rows too large to share a collection (one collection each, many
    descriptors, 64 KiB rows): read whole and in pieces."""
    fn = str(tmp_path / "big.h5")
    rows = [np.arange(16384 + i, dtype="<i4") * (i + 1) for i in range(40)]
    with tables.open_file(fn, "w") as f:
        vl = f.create_vlarray("/", "vl", tables.Int32Atom(), chunkshape=(16,))
        for r in rows:
            vl.append(r)
    assert len(_collections(fn)) >= 20
    v = _core.vlen_open(fn, "/vl")
    counts, data = v.read(np.arange(40, dtype=np.int64)[::-3].copy())
    np.testing.assert_array_equal(counts, [len(rows[r]) for r in range(40)[::-3]])
    np.testing.assert_array_equal(data, np.concatenate(rows[::-3]))


def test_compact_vlen_is_refused(tmp_path):
    """A compact dataset's descriptors live in its object header, which
    HDF5 1.10 gives no way to read raw: its heap references cannot be
    checked before HDF5 follows them, so the dataset is refused."""
    fn = str(tmp_path / "compact.h5")
    with h5py.File(fn, "w") as f:
        tid = h5py.h5t.vlen_create(h5py.h5t.STD_I32LE)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        space = h5py.h5s.create_simple((4,))
        h5py.h5d.create(f.id, b"vl", tid, space, dcpl=dcpl).close()
        f["vl"][1] = np.arange(3, dtype="<i4")
    with pytest.raises(TypeError, match="compact"):
        _core.vlen_open(fn, "/vl")
