"""Layout message version 4 and 5 chunk indices walked by the core itself
(src/chunk_index4.c, checked against HDF5 by src/h5chunks.c): every index
kind h5py writes with libver ('v110', 'latest') -- single chunk, implicit
(early allocation), fixed array, extensible array (the unlimited dimension
first or not), version 2 B-tree -- filtered (gzip) or not, all chunks
written or only some, partial edge chunks, 1-D to 3-D, read through the
Streamer and the Reader and compared with h5py; each must be walked
(not left to HDF5). Layout version 5 (HDF5 2.0, libver v200: filtered
chunks' sizes in sizeof_size bytes), which the HDF5 1.10 multiload links
cannot open, is walked without HDF5 through a test hook and compared with
h5py's own chunk list. Damaged copies of each index structure (bytes
flipped, checksums wrong, addresses past the end of the file, cycles)
give an error or h5py's data, never a crash or other data."""

import os
import struct

import numpy as np
import pytest
import h5py

import multiload

pytestmark = pytest.mark.timeout(300)

LATEST = ("v110", "latest")
RANKS = {1: ((1000,), (7,)), 2: ((101, 30), (7, 8)), 3: ((20, 9, 10), (3, 4, 5))}


def _maxshape(kind, shape):
    if kind == "farray":
        return None
    if kind == "earray":
        return (None,) + shape[1:]
    if kind == "earray_inner":  # the unlimited dimension is not the first
        return shape[:-1] + (None,)
    if kind == "btree2":
        return (None,) * len(shape) if len(shape) > 1 else None
    raise AssertionError(kind)


def _fill(d, data, written):
    if written == "all":
        d[...] = data
    else:  # the first third and the last quarter of every dimension; the rest never written
        lo = tuple(slice(0, max(1, s // 3)) for s in data.shape)
        hi = tuple(slice(s - max(1, s // 4), s) for s in data.shape)
        d[lo] = data[lo]
        d[hi] = data[hi]


def _cases():
    out = []
    for kind in ("farray", "earray", "earray_inner", "btree2"):
        for rank in (1, 2, 3):
            if kind == "btree2" and rank == 1:
                continue  # one unlimited dimension is an extensible array
            if kind == "earray_inner" and rank == 1:
                continue
            for gz in (False, True):
                for written in ("all", "some"):
                    out.append((kind, rank, gz, written))
    return out


CASES = _cases()


def _name(kind, rank, gz, written):
    return f"{kind}_{rank}d_{'gz' if gz else 'raw'}_{written}"


def _write_matrix(fn, libver=LATEST, gz_only=False):
    rng = np.random.default_rng(4)
    names = []
    with h5py.File(fn, "w", libver=libver) as f:
        for kind, rank, gz, written in CASES:
            if gz_only and not gz:
                continue
            shape, chunks = RANKS[rank]
            data = rng.integers(-2**31, 2**31 - 1, size=shape, dtype="<i4")
            kw = {"compression": "gzip", "shuffle": True} if gz else {}
            d = f.create_dataset(_name(kind, rank, gz, written), shape=shape, chunks=chunks, dtype="<i4",
                                 maxshape=_maxshape(kind, shape), fillvalue=-5, **kw)
            _fill(d, data, written)
            names.append(d.name[1:])
        for gz in ((True,) if gz_only else (False, True)):
            kw = {"compression": "gzip"} if gz else {}
            name = f"single_{'gz' if gz else 'raw'}"
            f.create_dataset(name, data=rng.integers(0, 99, size=(9, 10), dtype="<i2"), chunks=(9, 10), **kw)
            names.append(name)
        # Many chunks: paged fixed-array data blocks, paged extensible-array data blocks
        # (super blocks of 2048-element data blocks), multi-level v2 B-trees.
        big = rng.integers(0, 2**15, size=70_000, dtype="<i2")
        for gz in ((True,) if gz_only else (False, True)):
            kw = {"compression": "gzip"} if gz else {}
            sfx = "gz" if gz else "raw"
            d = f.create_dataset(f"farray_big_{sfx}", shape=big.shape, chunks=(4,), dtype="<i2", fillvalue=3, **kw)
            d[:30_000] = big[:30_000]
            d[50_000:] = big[50_000:]
            d = f.create_dataset(f"earray_big_{sfx}", shape=big.shape, maxshape=(None,), chunks=(1,), dtype="<i2",
                                 fillvalue=3, **kw)
            d[:40_000] = big[:40_000]
            d[68_000:] = big[68_000:]
            d = f.create_dataset(f"btree2_big_{sfx}", shape=(700, 100), maxshape=(None, None), chunks=(2, 3),
                                 dtype="<i2", fillvalue=3, **kw)
            d[:500] = big[:50_000].reshape(500, 100)
            names += [f"farray_big_{sfx}", f"earray_big_{sfx}", f"btree2_big_{sfx}"]
        if not gz_only:
            for rank in (1, 2, 3):  # implicit: early allocation, no filter
                shape, chunks = RANKS[rank]
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_chunk(chunks)
                dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
                name = f"implicit_{rank}d"
                h5py.h5d.create(f.id, name.encode(), h5py.h5t.STD_I32LE, h5py.h5s.create_simple(shape), dcpl=dcpl)
                f[name][...] = rng.integers(-99, 99, size=shape, dtype="<i4")
                names.append(name)
    return names


@pytest.fixture(scope="module")
def latest(tmp_path_factory):
    fn = str(tmp_path_factory.mktemp("index4") / "latest.h5")
    return fn, _write_matrix(fn)


def truth(fn, path):
    with h5py.File(fn, "r") as f:
        return f[path][...]


def stream(fn, path, block_size):
    s = multiload.Streamer(fn)
    out = []
    with s.get_queue(path, block_size=block_size, ordered=True, n_procs=2) as q:
        for guard in q:
            with guard as block:
                out.append(np.array(block, copy=True))
    rest = s.get_remainder(path, block_size)
    if rest is not None:
        out.append(rest)
    return np.concatenate(out)


def check_equal(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("case", [_name(*c) for c in CASES] + ["single_raw", "single_gz", "implicit_1d",
                                  "implicit_2d", "implicit_3d", "farray_big_raw", "farray_big_gz",
                                  "earray_big_raw", "earray_big_gz", "btree2_big_raw", "btree2_big_gz"])
def test_walked_and_equal(latest, case):
    fn, _ = latest
    state, why = multiload._core._chunk_table_state(fn, case)
    assert (state, why) == ("walked", None)
    want = truth(fn, case)
    check_equal(stream(fn, case, block_size=5), want)
    rng = np.random.default_rng(len(case))
    rows = rng.integers(0, len(want), size=min(200, len(want)))
    with multiload.Reader(fn, n_procs=2) as r:
        ds = r.get_dataset(case)
        check_equal(r.read(ds[:]), want)
        check_equal(r.read(ds[rows]), want[rows])


def _ohdr(fn, path):
    with h5py.File(fn, "r") as f:
        return h5py.h5o.get_info(f[path].id).addr


def _h5py_chunks(fn, path):
    """h5py's (HDF5 2.0's) chunk list: {linear index: (offset, size, mask)}."""
    out = {}
    with h5py.File(fn, "r") as f:
        d = f[path]
        grid = [-(-s // c) for s, c in zip(d.shape, d.chunks)]
        def one(info):  # H5Dchunk_iter: one pass (get_chunk_info(i) scans the index per call)
            lin = 0
            for o, c, g in zip(info.chunk_offset, d.chunks, grid):
                lin = lin * g + o // c
            out[lin] = (info.byte_offset, info.size, info.filter_mask)

        d.id.chunk_iter(one)
        assert len(out) == d.id.get_num_chunks()
        return out, d.shape, d.maxshape


@pytest.fixture(scope="module")
def v200(tmp_path_factory):
    fn = str(tmp_path_factory.mktemp("index5") / "v200.h5")
    return fn, _write_matrix(fn, libver=("v200", "latest"), gz_only=True)


@pytest.mark.parametrize("case", [_name(*c) for c in CASES if c[2] and c[0] != "earray_inner"] +
                         ["single_gz", "farray_big_gz", "earray_big_gz", "btree2_big_gz"])
def test_layout5_walk_equals_h5py(v200, case):
    """Layout version 5, without HDF5: every chunk h5py lists, no other.
    (An extensible array whose unlimited dimension is not the first is left
    out: HDF5's own chunk listing names its chunks wrongly.)"""
    fn, _ = v200
    want, shape, maxshape = _h5py_chunks(fn, case)
    version, kind, got = multiload._core._walk_chunk_index(fn, _ohdr(fn, case), 0, 8, 8, shape, maxshape)
    assert version == 5
    assert [g[0] for g in got] == sorted(want)
    for index, offset, size, mask in got:
        assert (offset, size, mask) == want[index]


KINDS = {"single": 1, "implicit": 2, "farray": 3, "earray": 4, "btree2": 5}  # as the format numbers them


def test_layout4_walk_equals_h5py(latest):
    """The same hook on layout version 4: the walk HDF5 1.10 is checked
    against gives h5py's (HDF5 2.0's) list too."""
    fn, names = latest
    for case in names:
        if "inner" in case:
            continue
        want, shape, maxshape = _h5py_chunks(fn, case)
        version, kind, got = multiload._core._walk_chunk_index(fn, _ohdr(fn, case), 0, 8, 8, shape, maxshape)
        assert version == 4, case
        assert kind == KINDS[case.split("_")[0]], case
        assert {g[0]: g[1:] for g in got} == want, case
        assert [g[0] for g in got] == sorted(want), case


# --- damaged copies ---------------------------------------------------------

SIGS = (b"FAHD", b"FADB", b"EAHD", b"EAIB", b"EASB", b"EADB", b"BTHD", b"BTIN", b"BTLF")


def _damage_base(fn):
    rng = np.random.default_rng(9)
    with h5py.File(fn, "w", libver=LATEST) as f:
        f.create_dataset("fa", data=rng.integers(0, 99, size=(3000, 4), dtype="<i4"), chunks=(2, 4))
        f.create_dataset("fz", data=rng.integers(0, 99, size=(3000, 4), dtype="<i4"), chunks=(2, 4),
                         compression="gzip")
        d = f.create_dataset("ea", shape=(3000, 4), maxshape=(None, 4), chunks=(1, 4), dtype="<i4")
        d[...] = rng.integers(0, 99, size=(3000, 4), dtype="<i4")
        d = f.create_dataset("bt", shape=(300, 40), maxshape=(None, None), chunks=(3, 4), dtype="<i4",
                             compression="gzip")
        d[...] = rng.integers(0, 99, size=(300, 40), dtype="<i4")


@pytest.mark.timeout(600)
def test_damaged_indices_never_wrong(tmp_path):
    """Bytes flipped in every kind of index structure, checksums fixed up
    or not, addresses pointed past the end of the file or back at the
    structure's own header (a cycle): streaming (in a subprocess) gives
    h5py's data, or a Python exception; never a crash, a hang, or other
    data."""
    import reliability_files as rf

    base = str(tmp_path / "base.h5")
    _damage_base(base)
    code = r'''
import os, sys, numpy as np, h5py, multiload
d = os.environ["DIR"]
base = os.path.join(d, "base.h5")
data = open(base, "rb").read()
sigs = %r
at = sorted(i for s in sigs for i in range(len(data)) if data.startswith(s, i))
rng = np.random.default_rng(5)
want = {}
with h5py.File(base, "r") as f:
    for p in ("fa", "fz", "ea", "bt"):
        want[p] = f[p][...]
outcomes = {}
for it in range(120):
    buf = bytearray(data)
    s = at[it %% len(at)]
    how = it %% 4
    if how == 0:      # flip a byte in the structure
        k = s + int(rng.integers(4, 64))
        buf[k] ^= int(rng.integers(1, 256))
    elif how == 1:    # a wrong checksum: flip a byte of a field, keep the old checksum
        buf[s + 5] ^= 0x01
    elif how == 2:    # an address past the end of the file (first 8-byte field after the prefix)
        buf[s + 8:s + 16] = (len(data) + 4096).to_bytes(8, "little")
    else:             # the structure's first address pointing at itself: a cycle
        buf[s + 8:s + 16] = s.to_bytes(8, "little")
    fn = os.path.join(d, f"damaged{it}.h5")
    open(fn, "wb").write(buf)
    for path in ("fa", "fz", "ea", "bt"):
        try:
            s_ = multiload.Streamer(fn)
            out = []
            with s_.get_queue(path, block_size=100, n_procs=2, ordered=True) as q:
                for g in q:
                    with g as b:
                        out.append(np.array(b, copy=True))
            got = np.concatenate(out)
            try:
                with h5py.File(fn, "r") as f:
                    ref = f[path][...]
            except Exception:
                ref = want[path]
            if got.tobytes() != ref.tobytes() and got.tobytes() != want[path].tobytes():
                print("WRONG", it, path, how, s)
                sys.exit(3)
            kind = "ok"
        except (OSError, KeyError, TypeError, ValueError, MemoryError, RuntimeError) as e:
            kind = type(e).__name__
        outcomes[kind] = outcomes.get(kind, 0) + 1
    os.unlink(fn)
print(sorted(outcomes.items()))
''' % (SIGS,)
    r = rf.run_python(code, timeout=560, env={"DIR": str(tmp_path)})
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert "ok" in r.stdout, r.stdout

