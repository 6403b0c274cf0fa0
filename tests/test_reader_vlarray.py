"""Variable-length arrays (PyTables VLArray) read by the C core, without
h5py, compared with PyTables reading the same file.

The truth for one row is PyTables' ``vlarray[i]``; for a selection of rows
it is those rows concatenated along the first axis (what multiload returns
for slices, lists and arrays of rows, PyTables returning a list of rows).
"""

import json
import os
import pickle
import subprocess
import sys
import threading
import warnings

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


def test_filter_hdf5_cannot_load(reader):
    """PyTables' blosc exists only in PyTables' own HDF5: refused at open
    with the filter named (multiload decodes blosc only for fixed-size data)."""
    with pytest.raises(OSError, match="blosc"):
        reader.get_dataset("/blosc")


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
    with pytest.raises(TypeError, match="variable-length string in dataset 'vlen_str'"):
        reader.get_dataset("vlen_str")
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
    assert _core.vlen_open(vlfile, "/vlen_str") is None
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
    """h5py is only a test dependency: with it hidden, VLArrays still read
    and a variable-length string dataset still raises TypeError."""
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
try:
    r.get_dataset("/vlen_str")
except TypeError as e:
    out["vlen_str"] = str(e)
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
    assert "variable-length string" in out["vlen_str"]
    assert out["attempts"] == []
