"""Random rows copied from the file's memory mapping (the Reader's view of
contiguous data, src/reader_exec.c) and read inside request() (the one-row
path, ``_core.read_now``): every result equals h5py's reading of the same
rows, with the mapping (the default) and without it (MULTILOAD_MMAP=0, in
a subprocess: the variable is read once per process); a file truncated
under an open Reader gives an error naming it, never a crash; and the
decoded-chunk cache, sized from the dataset, decodes each chunk once per
dataset when it fits (stats() says the hit rate and what size would)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import h5py
import multiload

pytestmark = pytest.mark.timeout(120)

N, COLS = 6000, 48
TAB = np.dtype([("a", "<i4"), ("b", "<f8", (3,)), ("c", "S5")])


def write_file(path):
    rng = np.random.default_rng(7)
    with h5py.File(path, "w") as f:
        f.create_dataset("f4", data=rng.random((N, COLS), dtype=np.float32))
        f.create_dataset("i2", data=rng.integers(-999, 999, size=(N, 3, 5)).astype("<i2"))
        tab = np.zeros(N, dtype=TAB)
        tab["a"] = np.arange(N)
        tab["b"] = rng.random((N, 3))
        tab["c"] = [b"r%04d" % (i % 10000) for i in range(N)]
        f.create_dataset("tab", data=tab)
        f.create_dataset("be", data=rng.random((N, 4)).astype(">f8"))
        # Chunked, uncompressed: whole-row chunks (a view), partial-row chunks
        # (no view), chunks never written (their rows read as the fill value).
        f.create_dataset("c_rows", data=rng.random((N, COLS), dtype=np.float32), chunks=(50, COLS))
        f.create_dataset("c_tab", data=tab, chunks=(64,))
        f.create_dataset("c_part", data=rng.random((N, COLS), dtype=np.float32), chunks=(50, 16))
        sparse = f.create_dataset("c_sparse", shape=(N, 8), dtype="<i4", chunks=(100, 8), fillvalue=7)
        sparse[1000:1500] = rng.integers(0, 99, size=(500, 8))
        sparse[N - 37:] = 5
    return path


@pytest.fixture(scope="module")
def h5file(tmp_path_factory):
    return write_file(str(tmp_path_factory.mktemp("view") / "view.h5"))


def keys(n, seed=0):
    """Row selections of every kind the Reader plans differently."""
    rng = np.random.default_rng(seed)
    return [
        np.sort(rng.choice(n, 256, replace=False)),          # sorted, distinct: DIRECT
        rng.choice(n, 256, replace=False),                   # unsorted: SCATTER
        rng.integers(0, n, 300),                             # duplicates
        np.concatenate([np.arange(100, 180), [5, 5, n - 1]]),  # runs and repeats
        -rng.integers(1, n + 1, 64),                         # negative rows
        [int(rng.integers(0, n)) for _ in range(20)],        # a list
        np.arange(0, n, 37),                                 # strided
    ]


def check_gathers(path):
    """Every selection of every dataset equals h5py's; returns the stats
    (and those of a Reader of the chunked datasets alone)."""
    with h5py.File(path, "r") as f, multiload.Reader(path, n_procs=2) as r:
        for name in ("f4", "i2", "tab", "be", "c_rows", "c_tab", "c_part", "c_sparse"):
            want = f[name][()]
            ds = r.get_dataset(name)
            stage = ds.create_stage(400)
            for k in keys(len(want)):
                got = r.request(ds[k], stage).get()
                np.testing.assert_array_equal(got, want[np.asarray(k)])
            for i in list(range(0, 40)) + [-1, -N, N // 2]:  # single rows: the one-row path
                fut = r.request(ds[i], stage)
                np.testing.assert_array_equal(fut.get(), want[i])
            for a, b in ((0, 1), (17, 29), (N - 5, N)):  # small ranges
                np.testing.assert_array_equal(r.request(ds[a:b], stage).get(), want[a:b])
        for name in ("tab", "c_tab"):  # one column of a compound row (SCATTER / BANDS of column bytes)
            tab = r.get_dataset(name)
            st = tab.create_stage(400 * 8 * 3)
            for k in keys(N, seed=3):
                np.testing.assert_array_equal(r.request(tab.col("b")[k], st).get(), f[name]["b"][np.asarray(k)])
        stats = r.stats()
    with multiload.Reader(path, n_procs=2) as r:
        ds = r.get_dataset("c_rows")
        st = ds.create_stage(256 * COLS * 4)
        for k in keys(N, seed=9):
            r.request(ds[k], st).get()
        stats["chunked_mapped"] = r.stats()["mapped"]
    return stats


def test_gathers_from_the_mapping_equal_h5py(h5file):
    st = check_gathers(h5file)
    assert st["mapped"] > 0  # the rows came from the mapping
    assert st["chunked_mapped"] > 0  # whole-row chunks too
    assert st["inlined"] > 0  # and the single rows were read inside request()


def test_gathers_without_the_mapping_equal_h5py(h5file):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import test_reader_view as t; "
            "st = t.check_gathers(sys.argv[2]); assert st['mapped'] == st['chunked_mapped'] == 0, st; print('ok')")
    env = dict(os.environ, MULTILOAD_MMAP="0")
    p = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__), h5file], env=env,
                       capture_output=True, text=True, timeout=100)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_one_row_requests_are_done_at_once(h5file):
    with h5py.File(h5file, "r") as f, multiload.Reader(h5file, n_procs=1) as r:
        ds = r.get_dataset("f4")
        stage = ds.create_stage(COLS * 4)
        want = f["f4"][()]
        before = r.stats()["inlined"]
        for i in (3, 4000, -2):
            fut = r.request(ds[i], stage)
            assert fut.done() and not fut.cancel()  # read inside request(): nothing left to cancel
            assert fut.exception() is None
            np.testing.assert_array_equal(fut.result(), want[i])
            fut.get()  # after result(): its kept copy
        assert r.stats()["inlined"] == before + 3
        # The stage is lent until the result is taken, as for any request.
        fut = r.request(ds[5], stage)
        with pytest.raises(RuntimeError):
            r.request(ds[6], stage)
        np.testing.assert_array_equal(fut.get(), want[5])
        np.testing.assert_array_equal(r.request(ds[6], stage).get(), want[6])


def test_one_row_requests_with_notify(h5file):
    seen = []
    with multiload.Reader(h5file, n_procs=1, notify=seen.append) as r:
        ds = r.get_dataset("f4")
        stage = ds.create_stage(COLS * 4)
        for i in range(5):
            r.request(ds[i], stage).get()
    assert len([s for s in seen if s is not multiload.QueueClosed]) == 5


TRUNCATE = r"""
import os, sys, numpy as np, h5py, multiload
path = sys.argv[1]
with h5py.File(path, "r") as f:
    want = f["f4"][()]
    off = f["f4"].id.get_offset()
r = multiload.Reader(path, n_procs=2)
ds = r.get_dataset("f4")
stage = ds.create_stage(400 * want.shape[1] * 4)
rows = np.arange(0, len(want), 7)
np.testing.assert_array_equal(r.request(ds[rows], stage).get(), want[rows])  # maps the file
c = r.get_dataset("c_rows")  # opened before the cut: its object header goes with it
r.request(c[rows], stage).get()
cut = len(want) // 2
os.truncate(path, off + cut * want.shape[1] * 4)
kept = np.arange(0, cut - 64, 3)
for k in (kept, kept[::-1]):  # rows before the cut: still exact, from the mapping
    np.testing.assert_array_equal(r.request(ds[k], stage).get(), want[k])
errors = 0
# Rows in the cut page (which a mapping reads as zeros), past it, the last
# one; as lists, as one-row keys (the one-row path) and as a range.
for k in (np.arange(cut + 10, cut + 300, 5), np.array([cut + 5]), len(want) - 1, np.array([3, cut + 40, 1]),
          cut, cut + 1, cut + 20, slice(cut, cut + 3)):
    try:
        r.request(ds[k], stage).get()
    except OSError as e:
        assert path in str(e) and "'f4'" in str(e), str(e)
        errors += 1
assert errors == 8, errors
try:  # whole-row chunks, all past the cut now
    r.request(c[np.arange(0, 300, 3)], stage).get()
    raise SystemExit("no error for chunks past the end")
except OSError as e:
    assert path in str(e) and "'c_rows'" in str(e), str(e)
assert r.stats()["mapped"] > 0
r.close()
print("ok")
"""


def test_file_truncated_under_the_mapping(tmp_path):
    """Rows past the new end would be a SIGBUS in a plain memcpy: they give
    an OSError naming the file and dataset; rows before it stay exact. In a
    subprocess with faulthandler on (as pytest runs), whose SIGBUS handler
    must not see ours."""
    path = write_file(str(tmp_path / "cut.h5"))
    p = subprocess.run([sys.executable, "-X", "faulthandler", "-c", TRUNCATE, path],
                       capture_output=True, text=True, timeout=100)
    assert p.returncode == 0 and p.stdout.startswith("ok"), (p.returncode, p.stdout, p.stderr)
    assert "Fatal Python error" not in p.stderr, p.stderr


# ---- the decoded-chunk cache --------------------------------------------------


@pytest.fixture(scope="module")
def deflate_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cache") / "deflate.h5")
    rng = np.random.default_rng(2)
    with h5py.File(path, "w") as f:  # 4000 x 256 float32 = 4 MiB decoded, 16-row chunks (250 bands)
        f.create_dataset("d", data=rng.random((4000, 256), dtype=np.float32), chunks=(16, 256),
                         compression="gzip", shuffle=True)
    return path


def epochs(path, n_epochs, **kw):
    """Random 128-row batches covering the dataset n_epochs times; returns
    the stats after each epoch."""
    with h5py.File(path, "r") as f:
        want = f["d"][()]
    out = []
    with multiload.Reader(path, n_procs=2, **kw) as r:
        ds = r.get_dataset("d")
        stage = ds.create_stage(128 * 256 * 4)
        rng = np.random.default_rng(5)
        for _ in range(n_epochs):
            order = rng.permutation(len(want))
            for b in range(0, len(order), 128):
                idx = order[b:b + 128]
                np.testing.assert_array_equal(r.request(ds[idx], stage).get(), want[idx])
            out.append(r.stats())
    return out


def test_cache_sized_from_the_dataset_decodes_each_chunk_once(deflate_file):
    first, second = epochs(deflate_file, 2)
    assert first["cache_misses"] == 250  # every band decoded once in the first epoch ...
    assert second["cache_misses"] == 250  # ... and never again
    assert second["cache_evictions"] == 0 and second["cache_advice"] is None
    assert second["cache_hit_rate"] > 0.9
    assert second["cache_wanted"] == 4000 * 256 * 4 == second["cache_bytes"]


def test_cache_too_small_says_what_size_would_do(deflate_file):
    first, second = epochs(deflate_file, 2, cache_bytes=1 << 20)
    assert second["cache_limit"] == 1 << 20
    assert second["cache_evictions"] > 0 and second["cache_misses"] > 250
    advice = second["cache_advice"]
    assert advice and f"cache_bytes={4000 * 256 * 4}" in advice, advice


def test_cache_budget_caps_the_auto_size(deflate_file):
    (st,) = epochs(deflate_file, 1, cache_budget=1 << 20)
    assert st["cache_limit"] == 1 << 20 and st["cache_bytes"] <= 1 << 20


@pytest.mark.parametrize("bad", [-1, 1.5, "big", True])
def test_cache_sizes_are_checked(h5file, bad):
    for name in ("cache_bytes", "cache_budget"):
        with pytest.raises(ValueError, match=name):
            multiload.Reader(h5file, **{name: bad})
