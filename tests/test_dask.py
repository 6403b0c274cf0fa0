"""multiload.Array and multiload.dask.from_hdf5 on the real Dask schedulers:
threads, processes (a pool of spawned workers) and a real
``dask.distributed.LocalCluster(processes=True, n_workers=2,
threads_per_worker=1)`` started here. The truth is h5py's (or PyTables')
reading of the same files; the data are small integers stored as float64,
so sums and means are exact in any order of summation and compare equal.
"""

import concurrent.futures
import glob
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest
import tables

import multiload

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

import multiload.dask as mld  # noqa: E402

pytestmark = pytest.mark.timeout(180)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLS = 16
CHUNK = (512, COLS)
PARTS = (7000, 2500, 9001)  # rows of the files of the multi-file source (not multiples of 512)


def _write(path, data, **opts):
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, **opts)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """{'single', 'parts', 'compound', 'table', 'contiguous', 'element': path or list}, and the truths."""
    d = tmp_path_factory.mktemp("dask")
    rng = np.random.default_rng(9)
    out = {}
    whole = rng.integers(0, 1000, (sum(PARTS), COLS)).astype(np.float64)
    out["single"] = str(d / "single.h5")
    _write(out["single"], whole, chunks=CHUNK, compression="gzip", shuffle=True)
    out["parts"], start = [], 0
    for i, n in enumerate(PARTS):
        p = str(d / f"part{i}.h5")
        # the middle file has another chunk shape: chunk boundaries are per file
        _write(p, whole[start:start + n], chunks=(300, 8) if i == 1 else CHUNK, compression="gzip", shuffle=True)
        out["parts"].append(p)
        start += n
    out["contiguous"] = str(d / "contiguous.h5")
    _write(out["contiguous"], whole[:5000])
    comp = np.zeros(4000, dtype=[("a", "<i4"), ("b", "<f8", (3,)), ("c", "S4")])
    comp["a"] = np.arange(4000)
    comp["b"] = rng.integers(0, 100, (4000, 3))
    comp["c"] = [b"x%d" % (i % 100) for i in range(4000)]
    out["compound"] = str(d / "compound.h5")
    _write(out["compound"], comp, chunks=(256,), compression="gzip")
    out["table"] = str(d / "table.h5")
    with tables.open_file(out["table"], "w") as t:
        tab = t.create_table("/", "table", np.dtype([("id", "<i8"), ("v", "<f4", (4,))]),
                             filters=tables.Filters(complevel=4, complib="zlib", shuffle=True), chunkshape=(500,))
        rows = np.zeros(6000, tab.dtype)
        rows["id"] = np.arange(6000)
        rows["v"] = rng.integers(0, 50, (6000, 4))
        tab.append(rows)
    out["element"] = str(d / "element.h5")
    with h5py.File(out["element"], "w") as f:
        f.create_dataset("x", shape=(3000,), dtype=np.dtype(("<i4", (2, 3))), chunks=(100,))[...] = \
            rng.integers(0, 9, (3000, 2, 3))
    return out


def truth(src, path="x"):
    paths = src if isinstance(src, list) else [src]
    parts = []
    for p in paths:
        with h5py.File(p, "r") as f:
            parts.append(f[path][()])
    return np.concatenate(parts)


# ---------------------------------------------------------------- schedulers


@pytest.fixture(scope="module")
def process_pool():
    pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as c, \
            Client(c) as client:
        yield client


# The process pool and the cluster take seconds to start: `slow`, so the pread pass of
# `make test` (-m "not slow") leaves them out; the first pass runs them.
@pytest.fixture(params=["threads", pytest.param("processes", marks=pytest.mark.slow),
                        pytest.param("distributed", marks=pytest.mark.slow)])
def compute(request, process_pool):
    """compute(*collections) on one scheduler: numpy results."""
    if request.param == "threads":
        return lambda *xs: dask.compute(*xs, scheduler="threads")
    if request.param == "processes":
        return lambda *xs: dask.compute(*xs, scheduler="processes", pool=process_pool)
    client = request.getfixturevalue("cluster")
    return lambda *xs: client.compute(list(xs), sync=True)


@pytest.mark.parametrize("src", ["single", "parts"])
def test_reductions_and_selections_equal_h5py(data, compute, src):
    want = truth(data[src])
    with dask.config.set({"array.chunk-size": "200KiB"}):  # several chunks per file
        x = mld.from_hdf5(data[src], "/x")
    assert len(x.chunks[0]) > 3
    idx = np.array([5, len(want) - 1, 7000, 7000, 6999, 9500, 0])
    total, every7, taken, doubled = compute(x.sum(), x[::7].mean(axis=0), x[idx],
                                            x.map_blocks(lambda b: b * 2 + 1, dtype=x.dtype).sum(axis=0))
    assert total == want.sum()
    np.testing.assert_array_equal(every7, want[::7].mean(axis=0))
    np.testing.assert_array_equal(taken, want[idx])
    np.testing.assert_array_equal(doubled, (want * 2 + 1).sum(axis=0))


@pytest.mark.parametrize("src", ["compound", "table", "element", "contiguous"])
def test_other_layouts_and_types(data, compute, src):
    path = "/table" if src == "table" else "/x"
    if src == "table":
        with tables.open_file(data[src]) as t:
            want = t.root.table.read()
    else:
        want = truth(data[src])
    with dask.config.set({"array.chunk-size": "32KiB"}):
        x = mld.from_hdf5(data[src], path)
    assert len(x.chunks[0]) > 1
    assert x.shape == want.shape and x.dtype == want.dtype
    if want.dtype.names:
        f = want.dtype.names[0]
        whole, part, col = compute(x, x[17:2900:3], x[f].sum())
        assert col == want[f].sum()
    else:
        whole, part, col = compute(x, x[17:2900:3], x.sum(axis=0))
        np.testing.assert_array_equal(col, want.sum(axis=0))
    np.testing.assert_array_equal(whole, want)
    np.testing.assert_array_equal(part, want[17:2900:3])


# ---------------------------------------------------------------- the array and its chunks


def test_array_pickles_as_a_description(data):
    a = multiload.Array(data["parts"], "/x", n_procs=2)
    blob = pickle.dumps(a)
    assert len(blob) < 4096  # a description, not data
    b = pickle.loads(blob)
    want = truth(data["parts"])
    assert (b.shape, b.dtype, b.files, b.file_rows) == (a.shape, a.dtype, a.files, list(PARTS))
    np.testing.assert_array_equal(b[6990:7010], want[6990:7010])
    np.testing.assert_array_equal(b[[9500, 3, 18000]], want[[9500, 3, 18000]])
    np.testing.assert_array_equal(np.asarray(b), want)
    assert dask.base.tokenize(a) == dask.base.tokenize(b) == dask.base.tokenize(pickle.loads(blob))
    assert a.chunks is None and a.file_chunks == [CHUNK, (300, 8), CHUNK]  # the files differ
    assert multiload.Array(data["single"], "/x").chunks == CHUNK


def test_token_follows_the_file_identity(data, tmp_path):
    p = str(tmp_path / "copy.h5")
    shutil.copy(data["single"], p)
    x1, x2 = mld.from_hdf5(p, "/x"), mld.from_hdf5(p, "/x")
    assert x1.name == x2.name and x1.name.startswith("from-hdf5-")
    assert mld.from_hdf5(p, "/x", chunks={0: 1024}).name != x1.name
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert mld.from_hdf5(p, "/x").name != x1.name
    assert mld.from_hdf5(p, "/x", name="mine").name == "mine"


def test_auto_chunks_are_whole_rows_and_multiples_of_hdf5_chunks(data):
    x = mld.from_hdf5(data["parts"], "/x")
    assert x.chunks[1] == (COLS,)
    bounds = np.cumsum((0,) + x.chunks[0])
    starts = np.cumsum((0,) + PARTS)
    for i, (n, c) in enumerate(zip(PARTS, (512, 300, 512))):
        inside = [b - starts[i] for b in bounds if starts[i] <= b <= starts[i + 1]]
        assert inside[0] == 0 and inside[-1] == n  # no chunk straddles two files
        assert all(b % c == 0 for b in inside[:-1]), (i, inside)
    small = mld.from_hdf5(data["single"], "/x", chunks="auto")
    with dask.config.set({"array.chunk-size": "100KiB"}):
        many = mld.from_hdf5(data["single"], "/x")
    assert len(many.chunks[0]) > len(small.chunks[0])
    assert all(c % 512 == 0 for c in many.chunks[0][:-1])


def test_explicit_chunks_that_amplify_warn(data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mld.from_hdf5(data["single"], "/x", chunks=(1024, -1))  # multiples of the HDF5 chunk: quiet
    with pytest.warns(mld.ReadAmplificationWarning, match=r"about 1\.[0-9]+x") as w:
        x = mld.from_hdf5(data["single"], "/x", chunks=(700, -1))
    assert "inside HDF5 chunks" in str(w[0].message)
    with pytest.warns(mld.ReadAmplificationWarning, match=r"about 2\.00x.*whole rows") as w:
        mld.from_hdf5(data["single"], "/x", chunks=(1024, 8))
    # accepted all the same, and correct
    np.testing.assert_array_equal(x.compute(scheduler="threads"), truth(data["single"]))
    amp, _ = mld.amplification(multiload.Array(data["single"], "/x"), ((700,) * 26 + (301,), (COLS,)))
    touched = sum(-(-min(b, 18501) // 512) - a // 512 for a, b in zip(range(0, 18501, 700), range(700, 18501 + 700, 700)))
    assert amp == pytest.approx(touched / -(-18501 // 512))


def test_multi_file_sources(data, tmp_path):
    pattern = os.path.join(os.path.dirname(data["parts"][0]), "part*.h5")
    assert sorted(glob.glob(pattern)) == data["parts"]
    np.testing.assert_array_equal(mld.from_hdf5(pattern, "/x").compute(scheduler="threads"), truth(data["parts"]))
    odd = str(tmp_path / "odd.h5")
    _write(odd, np.zeros((10, COLS + 1)))
    with pytest.raises(ValueError, match="odd.h5"):
        mld.from_hdf5(data["parts"] + [odd], "/x")
    _write(odd, np.zeros((10, COLS), np.float32))
    with pytest.raises(ValueError, match="odd.h5.*float32"):
        mld.from_hdf5([data["single"], odd], "/x")
    with pytest.raises(FileNotFoundError):
        mld.from_hdf5(str(tmp_path / "none*.h5"), "/x")
    with pytest.raises(KeyError):
        mld.from_hdf5(data["single"], "/nope")


def test_variable_length_and_scalar_datasets_are_refused(tmp_path):
    p = str(tmp_path / "vl.h5")
    with h5py.File(p, "w") as f:
        f.create_dataset("s", data=[b"a", b"bc"], dtype=h5py.string_dtype())
        f.create_dataset("z", data=1.5)
    with pytest.raises(TypeError, match="variable-length"):
        mld.from_hdf5(p, "/s")
    with pytest.raises(TypeError, match="scalar"):
        mld.from_hdf5(p, "/z")


# ---------------------------------------------------------------- files released, errors from workers


def _can_lock_for_writing(path):
    try:
        with h5py.File(path, "a"):
            return True
    except BlockingIOError:
        return False


@pytest.mark.slow
def test_close_all_releases_the_files_for_writing(data, cluster, tmp_path):
    """dask/distributed#8452: after compute, the workers keep the file
    open and a writer cannot open it; close_all() on every worker and in
    the client releases it."""
    p = str(tmp_path / "rewrite.h5")
    shutil.copy(data["single"], p)
    cluster.run(multiload.close_all)  # what the tests before opened
    multiload.close_all()
    x = mld.from_hdf5(p, "/x", chunks={0: 4096})
    assert cluster.compute(x.sum(), sync=True) == truth(p).sum()
    assert x.sum().compute(scheduler="threads") == truth(p).sum()  # the client holds it open too
    if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() != "FALSE":
        assert not _can_lock_for_writing(p)  # what the issue is about: the readers still hold it
    closed = cluster.run(multiload.close_all)
    assert sorted(closed.values()) == [1, 1]  # each worker had opened the file once
    assert multiload.close_all() == 1
    with h5py.File(p, "a") as f:
        f["x"][0] = -1
    # The file changed: the array made on it refuses it, naming it.
    with pytest.raises(multiload.FileChangedError, match="rewrite.h5"):
        cluster.compute(x.sum(), sync=True)
    y = mld.from_hdf5(p, "/x", chunks={0: 4096})  # a new array reads the file as it is now
    assert cluster.compute(y[0, 0], sync=True) == -1
    cluster.run(multiload.close_all)


@pytest.mark.slow
def test_worker_errors_name_the_file_dataset_and_rows(data, cluster, tmp_path):
    p = str(tmp_path / "corrupt.h5")
    shutil.copy(data["single"], p)
    with h5py.File(p, "r") as f:
        info = f["x"].id.get_chunk_info(5)  # rows 2560..3072
    st = os.stat(p)
    with open(p, "r+b") as f:
        f.seek(info.byte_offset + info.size // 2)
        f.write(b"\xff" * 64)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and time: the identity holds
    x = mld.from_hdf5(p, "/x", chunks={0: 2048})
    for run in (lambda: cluster.compute(x.sum(), sync=True), lambda: x.sum().compute(scheduler="threads")):
        with pytest.raises(OSError) as e:
            run()
        msg = str(e.value)
        assert "corrupt.h5" in msg and "'/x'" in msg and "rows 2048:4096" in msg, msg
    cluster.run(multiload.close_all)
    multiload.close_all()


def test_import_multiload_imports_neither_dask_nor_ray():
    code = ("import sys, multiload; multiload.Array; multiload.close_all; "
            "print(sorted(m for m in ('dask', 'distributed', 'ray', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _rows_in_child(a, lo, hi):
    return os.getpid(), a[lo:hi]


@pytest.mark.slow
def test_array_inherited_over_fork_opens_its_own_reader(data):
    """A forked child (a fork-start pool) abandons its parent's Reader, whose
    threads do not exist there, and opens its own."""
    a = multiload.Array(data["single"], "/x", n_procs=2)
    want = truth(data["single"])
    np.testing.assert_array_equal(a[:100], want[:100])  # the parent's Reader is open and running
    with multiprocessing.get_context("fork").Pool(1) as pool:
        pid, got = pool.apply(_rows_in_child, (a, 5000, 9000))
    assert pid != os.getpid()
    np.testing.assert_array_equal(got, want[5000:9000])
    np.testing.assert_array_equal(a[9000:9100], want[9000:9100])  # the parent's still works


KEYS = [np.s_[:], np.s_[...], np.s_[()], np.s_[3], np.s_[-1], np.s_[6990:7010], np.s_[::7], np.s_[::-3],
        np.s_[18000:2:-5], np.s_[..., 1], np.s_[None, 3:9600, 2], np.s_[[5, 9600, 0, 7000, 7000]],
        np.s_[[5, 1], [2, 3]], np.s_[2:9000, [1, 2]], np.s_[2:9000, [1, 2], None], np.s_[[]], np.s_[50:40],
        np.s_[:, [0, 2]], np.s_[np.array([[1, 2], [3, 18000]])], np.s_[1:10000:2, ::-1], np.s_[..., None],
        np.s_[6000:8000, 0:16], np.s_[6000:8000, 0:16:1], np.s_[[7001, 2], :], np.s_[-9001:, 3:5]]


@pytest.mark.parametrize("src", ["single", "parts"])
@pytest.mark.parametrize("key", KEYS, ids=[str(i) for i in range(len(KEYS))])
def test_array_keys_are_numpys(data, src, key):
    a = multiload.Array(data[src], "/x")
    want = truth(data[src])[key]
    got = a[key]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("src", ["single", "parts"])
def test_array_masks_and_bad_keys(data, src):
    a, want = multiload.Array(data[src], "/x"), truth(data[src])
    mask = want[:, 0] > 500
    np.testing.assert_array_equal(a[mask], want[mask])
    np.testing.assert_array_equal(a[want > 900], want[want > 900])
    for bad in (np.s_[len(want)], np.s_[[0, len(want)]], np.s_[-len(want) - 1]):
        with pytest.raises(IndexError):
            a[bad]
    rows = list(a)  # iteration: the rows, in blocks
    assert len(rows) == len(want)
    np.testing.assert_array_equal(np.array(rows), want)


@pytest.mark.slow
def test_a_dask_workers_reader_has_the_workers_threads(cluster):
    from multiload.array import _engine_threads

    assert _engine_threads() is None  # the client: the Reader's default
    assert cluster.submit(_engine_threads, pure=False).result() == 1  # threads_per_worker=1
