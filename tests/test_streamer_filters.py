"""Filters that live outside the system HDF5: PyTables' blosc (every codec,
byte- and bit-shuffle) and h5py's lzf are decoded natively, in parallel,
and every block equals what PyTables / h5py read. Damaged blosc and lzf
chunks raise OSError naming the block; they never crash or return wrong
bytes."""

import errno
import warnings

import h5py
import numpy as np
import pytest
import tables

import multiload

pytestmark = pytest.mark.timeout(60)

N = 3001
BLOSC = [("blosc", {}), ("blosc:lz4", {}), ("blosc:lz4hc", {"bitshuffle": True}),
         ("blosc:zlib", {"shuffle": False}), ("blosc:zstd", {})]


@pytest.fixture(scope="module")
def filter_file(tmp_path_factory):
    fn = str(tmp_path_factory.mktemp("filters") / "filters.h5")
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.standard_normal((N, 7)), axis=0).astype("<f8")
    rows = np.zeros(N, dtype=[("x", "<f4"), ("label", "<i8"), ("v", "<u2", (3,))])
    rows["x"] = walk[:, 0]
    rows["label"] = np.arange(N)
    rows["v"] = rng.integers(0, 2**16, (N, 3))
    with tables.open_file(fn, "w") as h:
        for i, (complib, kw) in enumerate(BLOSC):
            h.create_carray("/", f"carray{i}", obj=walk, chunkshape=(100, 7),
                            filters=tables.Filters(5, complib, **kw))
        t = h.create_table("/", "table", rows.dtype, filters=tables.Filters(5, "blosc"), chunkshape=(64,))
        t.append(rows)
    with h5py.File(fn, "a") as f:
        f.create_dataset("lzf", data=walk.astype("<f4"), chunks=(64, 7), compression="lzf")
        f.create_dataset("lzf_shuffle", data=walk, chunks=(50, 3), compression="lzf", shuffle=True)
        f.create_dataset("lzf_noise", data=rng.integers(0, 2**63, (N, 2)), chunks=(32, 2), compression="lzf")
    return fn, walk, rows


def stream_all(fn, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native: no SlowPathWarning
        q = multiload.Streamer(fn).get_queue(path, ordered=True, remainder=True, **kw)
    with q:
        blocks = [g.array.copy() for g in q]
    return np.concatenate(blocks)


@pytest.mark.parametrize("i", range(len(BLOSC)))
@pytest.mark.parametrize("n_procs", [1, 2])
def test_pytables_blosc_carray(filter_file, i, n_procs):
    fn, walk, _ = filter_file
    with tables.open_file(fn) as h:
        ref = h.get_node(f"/carray{i}")[:]
    out = stream_all(fn, f"/carray{i}", n_procs=n_procs, block_size=333)
    assert out.dtype == ref.dtype
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("field", [None, "v"])
def test_pytables_blosc_table(filter_file, field):
    fn, _, rows = filter_file
    with tables.open_file(fn) as h:
        ref = h.root.table.read()
    out = stream_all(fn, "/table", n_procs=2, block_size=100, field=field)
    ref = ref if field is None else ref[field]
    assert out.dtype == ref.dtype
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("path", ["lzf", "lzf_shuffle", "lzf_noise"])
def test_h5py_lzf(filter_file, path):
    fn, _, _ = filter_file
    with h5py.File(fn) as f:
        ref = f[path][:]
    out = stream_all(fn, path, n_procs=2, block_size=250)
    assert out.dtype == ref.dtype
    np.testing.assert_array_equal(out, ref)


def damage_chunk(fn, bad, path):
    """Copy fn to bad with chunk 2 of path scrambled past blosc's header."""
    with open(fn, "rb") as src:
        data = bytearray(src.read())
    with h5py.File(fn) as f:
        info = f[path].id.get_chunk_info(2)
    # Scramble the chunk's payload (past blosc's 16-byte header).
    for k in range(16, min(info.size, 400)):
        data[info.byte_offset + k] ^= 0x5A
    with open(bad, "wb") as out:
        out.write(bytes(data))


def test_damaged_blosc_chunk_raises(filter_file, tmp_path):
    fn, _, _ = filter_file
    bad, path = str(tmp_path / "bad.h5"), "/carray0"
    damage_chunk(fn, bad, path)
    q = multiload.Streamer(bad).get_queue(path, n_procs=2, ordered=True, block_size=100)
    errors, good = [], 0
    with q:
        while True:
            try:
                g = q.get(timeout=30)
            except OSError as e:
                errors.append(e)
                continue
            if g is multiload.QueueClosed:
                break
            good += 1
            g.release()
    assert len(errors) == 1
    e = errors[0]
    assert e.errno == errno.EIO and e.filename == bad
    assert "block 2" in str(e) and path.strip("/") in str(e)
    assert good == q.n_blocks - 1


def test_damaged_lzf_chunk_reads_as_h5py_reads_it(filter_file, tmp_path):
    """LZF carries no checksum: a scrambled stream may still decode to the
    right length. Then multiload returns exactly what h5py returns; where
    decoding fails, both raise (multiload naming the block)."""
    fn, _, _ = filter_file
    bad, path = str(tmp_path / "bad.h5"), "lzf"
    damage_chunk(fn, bad, path)
    with h5py.File(bad) as f:
        try:
            ref, ref_error = f[path][128:192], None
        except OSError as e:
            ref, ref_error = None, e
    q = multiload.Streamer(bad).get_queue(path, n_procs=2, ordered=True, block_size=64)
    with q:
        for _ in range(2):
            q.get(timeout=30).release()
        if ref_error is None:
            with q.get(timeout=30) as block:
                np.testing.assert_array_equal(block, ref)
        else:
            with pytest.raises(OSError, match="block 2"):
                q.get(timeout=30)
