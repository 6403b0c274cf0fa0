"""The Reader's datasets under generic code: np.asarray, list(), for loops,
len, ndim, attrs, and a TypeError at once for what a dataset cannot do.

Indexing a dataset builds a lazy request and never raises IndexError, so
before these methods existed Python's old sequence protocol made
``np.asarray(ds)``, ``list(ds)`` and ``for row in ds`` loop forever. Every
test has a timeout, so a hang fails instead of stalling the run. The truth
is h5py's reading of the same file.
"""

import h5py
import numpy as np
import pytest
import tables

import multiload

pytestmark = pytest.mark.timeout(60)

ROWS = 5000


@pytest.fixture(scope="module")
def fn(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("generic") / "generic.h5")
    rng = np.random.default_rng(14)
    with h5py.File(path, "w") as f:
        x = f.create_dataset("x", data=rng.integers(0, 1 << 30, (ROWS, 3)), chunks=(64, 3), compression="gzip",
                             shuffle=True)
        x.attrs["units"] = "m"
        x.attrs["scale"] = np.arange(3.0)
        f.create_dataset("flat", data=rng.normal(size=ROWS))  # contiguous, 1-D
        f.create_dataset("big_endian", data=np.arange(100, dtype=">i4"))
        f.create_dataset("scalar", data=3.5)
        f.create_dataset("scalar_compound", data=np.array((1, 2.0), dtype=[("a", "i4"), ("b", "f8")]))
        f.create_dataset("compound", data=np.array([(i, (i / 2, -i)) for i in range(300)],
                                                   dtype=[("a", "i4"), ("b", "f8", (2,))]))
        f.create_dataset("strings", data=[b"ab", b"", b"cde" * 50], dtype=h5py.string_dtype())
        f.create_dataset("strings0d", data=b"hello", dtype=h5py.string_dtype(encoding="ascii"))
        f.create_dataset("element", shape=(10,), dtype=np.dtype(("i4", (2, 3))))[...] = \
            np.arange(60).reshape(10, 2, 3)
        f.create_dataset("empty", shape=(0, 4), dtype="f4")
    with tables.open_file(path, "a") as t:
        vl = t.create_vlarray("/", "vl", tables.Int32Atom())
        for i in range(40):
            vl.append(np.arange(i) * 3)
        tab = t.create_table("/", "table", np.dtype([("id", "i8"), ("v", "f4", (4,))]))
        rows = np.zeros(700, tab.dtype)
        rows["id"] = np.arange(700)
        rows["v"] = np.arange(2800).reshape(700, 4)
        tab.append(rows)
    return path


@pytest.fixture(scope="module")
def reader(fn):
    r = multiload.Reader(fn, n_procs=2)
    yield r
    r.close(wait=True)


@pytest.fixture(scope="module")
def h5(fn):
    with h5py.File(fn, "r") as f:
        yield f


ARRAYS = ["x", "flat", "big_endian", "compound", "table", "element", "empty"]


@pytest.mark.parametrize("name", ARRAYS)
def test_asarray_is_the_whole_dataset(reader, h5, name):
    ds = reader.get_dataset("/" + name)
    got = np.asarray(ds)
    want = h5[name][()]
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert ds.ndim == h5[name].ndim  # h5py's: the dataset's own dimensions
    assert len(ds) == len(h5[name])


@pytest.mark.parametrize("name", ARRAYS)
def test_iteration_gives_the_rows(reader, h5, name):
    ds = reader.get_dataset("/" + name)
    want = list(h5[name][()])
    got = list(ds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert type(g) is type(w)
        np.testing.assert_array_equal(g, w)
    assert sum(1 for _ in ds) == len(want)  # a for loop ends


def test_iteration_crosses_read_blocks(reader, h5, monkeypatch):
    # Blocks of 1 MiB hold every row of the small files: make them 100 bytes.
    monkeypatch.setattr(multiload.dataset, "_ITER_BYTES", 100)
    ds = reader.get_dataset("/x")
    np.testing.assert_array_equal(np.array(list(ds)), h5["x"][()])


def test_dtype_argument(reader, h5):
    got = np.asarray(reader.get_dataset("/x"), dtype=np.float64)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, h5["x"][()].astype(np.float64))


def test_copy_false_is_refused(reader):
    with pytest.raises(ValueError, match="copy"):
        np.asarray(reader.get_dataset("/x"), copy=False)


def test_scalar_datasets(reader, h5):
    for name in ("scalar", "scalar_compound"):
        ds = reader.get_dataset("/" + name)
        got = np.asarray(ds)
        want = np.asarray(h5[name][()])
        assert got.shape == () and got.dtype == want.dtype
        assert got.tobytes() == want.tobytes()
        assert ds.ndim == 0
        with pytest.raises(TypeError, match="scalar"):
            iter(ds).__next__()
        with pytest.raises(TypeError, match="scalar"):
            len(ds)


def test_variable_length_arrays_read_as_h5py_reads_them(reader, h5):
    ds = reader.get_dataset("/vl")
    want = h5["vl"][()]
    got = np.asarray(ds)
    assert got.dtype == object and got.shape == want.shape
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
        assert g.dtype == w.dtype
    rows = list(ds)
    assert len(rows) == len(want)
    for g, w in zip(rows, want):
        np.testing.assert_array_equal(g, w)


def test_variable_length_strings(reader, h5):
    ds = reader.get_dataset("/strings")
    np.testing.assert_array_equal(np.asarray(ds), h5["strings"][()])
    assert list(ds) == list(h5["strings"][()])
    ds0 = reader.get_dataset("/strings0d")
    got = np.asarray(ds0)
    assert got.shape == () and got[()] == h5["strings0d"][()]
    with pytest.raises(TypeError):
        list(ds0)


def test_attrs(reader, h5):
    attrs = reader.get_dataset("/x").attrs
    assert set(attrs) == set(h5["x"].attrs)
    assert attrs["units"] == h5["x"].attrs["units"]
    np.testing.assert_array_equal(attrs["scale"], h5["x"].attrs["scale"])
    assert dict(reader.get_dataset("/flat").attrs) == {}
    with pytest.raises(TypeError):
        attrs["units"] = "km"  # a read-only mapping


@pytest.mark.parametrize("what, call", [
    ("reversed", lambda ds: reversed(ds)),
    ("in", lambda ds: 3 in ds),
    ("setitem", lambda ds: ds.__setitem__(0, 1)),
    ("arithmetic", lambda ds: ds + 1),
    ("float", lambda ds: float(ds)),
    ("index", lambda ds: [1, 2][ds]),
])
def test_what_a_dataset_cannot_do_is_a_type_error_at_once(reader, what, call):
    with pytest.raises(TypeError):
        call(reader.get_dataset("/x"))


def test_closed_reader_refuses(fn):
    r = multiload.Reader(fn, n_procs=1)
    ds, vl = r.get_dataset("/x"), r.get_dataset("/vl")
    r.close(wait=True)
    for d in (ds, vl):
        with pytest.raises(RuntimeError, match="closed"):
            np.asarray(d)
        with pytest.raises(RuntimeError, match="closed"):
            list(d)
