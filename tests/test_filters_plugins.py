"""Filters from outside HDF5 and filter pipelines in any order.

hdf5plugin's zstd, lz4, bzip2 and bitshuffle (plain, LZ4, zstd) are decoded
natively in the workers; blosc2 and zfp read through HDF5's slow path with
hdf5plugin's plugins, found without HDF5_PLUGIN_PATH. fletcher32 need not be
the last filter (netCDF-C writes [fletcher32, deflate]). Every read equals
h5py's (with hdf5plugin registered in h5py's own HDF5); damaged or crafted
chunks raise OSError naming the block, never crash or return other bytes.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import warnings

import h5py
import hdf5plugin
import netCDF4
import numpy as np
import pytest
from h5py import h5d, h5p, h5s, h5t

import multiload

pytestmark = pytest.mark.timeout(120)

COMPOUND = np.dtype([("a", "<i4"), ("b", "<f8"), ("c", "u1")])
DTYPES = ["u1", "<i2", "<f4", "<f8", COMPOUND]
SHAPES = {"1d": ((1003,), (100,)), "2d": ((203, 7), (50, 3))}  # partial edge chunks in every dimension
# name: (hdf5plugin filter, does shuffle apply, native)
FILTERS = {
    "zstd": (hdf5plugin.Zstd(clevel=5), True, True),
    "lz4": (hdf5plugin.LZ4(nbytes=1000), True, True),  # several lz4 blocks per chunk
    "bzip2": (hdf5plugin.BZip2(blocksize=5), True, True),
    "bshuf": (hdf5plugin.Bitshuffle(cname="none"), False, True),
    "bshuf_lz4": (hdf5plugin.Bitshuffle(cname="lz4"), False, True),
    "bshuf_zstd": (hdf5plugin.Bitshuffle(cname="zstd", clevel=3), False, True),
    "blosc2": (hdf5plugin.Blosc2(cname="zstd", filters=hdf5plugin.Blosc2.SHUFFLE), False, False),
    "blosc2_bit": (hdf5plugin.Blosc2(cname="lz4", filters=hdf5plugin.Blosc2.BITSHUFFLE), False, False),
}


def dtype_name(dt):
    return "compound" if np.dtype(dt).names else np.dtype(dt).str.lstrip("<|")


def make_data(shape, dt, rng):
    dt = np.dtype(dt)
    walk = np.cumsum(rng.integers(-3, 4, shape), axis=0)
    if dt.names:
        out = np.zeros(shape, dt)
        out["a"] = walk
        out["b"] = walk * 0.25
        out["c"] = rng.integers(0, 256, shape)
        return out
    return walk.astype(dt) if dt.kind != "f" else (walk * 0.125).astype(dt)


@pytest.fixture(scope="module")
def plugin_file(tmp_path_factory):
    fn = str(tmp_path_factory.mktemp("plugins") / "plugins.h5")
    rng = np.random.default_rng(11)
    names = []
    with h5py.File(fn, "w") as f:
        for fname, (flt, shuffles, _) in FILTERS.items():
            for shuffle in (False, True) if shuffles else (False,):
                for dt in DTYPES:
                    for sname, (shape, chunks) in SHAPES.items():
                        name = f"{fname}{'_shuf' if shuffle else ''}_{dtype_name(dt)}_{sname}"
                        f.create_dataset(name, data=make_data(shape, dt, rng), chunks=chunks, shuffle=shuffle,
                                         **flt)
                        names.append(name)
        for dt in ("<f4", "<f8", "<i4"):  # zfp: numbers only, reversible so every value is kept
            for sname, (shape, chunks) in SHAPES.items():
                name = f"zfp_{dtype_name(dt)}_{sname}"
                f.create_dataset(name, data=make_data(shape, dt, rng), chunks=chunks, **hdf5plugin.Zfp(reversible=True))
                names.append(name)
    return fn, names


def is_native(name):
    return not name.startswith(("blosc2", "zfp"))


def stream(fn, path, **kw):
    q = multiload.Streamer(fn).get_queue(path, n_procs=2, ordered=True, remainder=True, **kw)
    with q:
        return np.concatenate([g.array.copy() for g in q])


def h5py_read(fn, path, sel=()):
    with h5py.File(fn) as f:
        return f[path][sel]


def dataset_names():
    """The names plugin_file makes (computed the same way, for parametrize)."""
    out = []
    for fname, (_, shuffles, _) in FILTERS.items():
        for shuffle in (False, True) if shuffles else (False,):
            for dt in DTYPES:
                for sname in SHAPES:
                    out.append(f"{fname}{'_shuf' if shuffle else ''}_{dtype_name(dt)}_{sname}")
    for dt in ("<f4", "<f8", "<i4"):
        for sname in SHAPES:
            out.append(f"zfp_{dtype_name(dt)}_{sname}")
    return out


@pytest.mark.parametrize("name", dataset_names())
def test_streamer_equals_h5py(plugin_file, name):
    fn, names = plugin_file
    assert name in names
    ref = h5py_read(fn, name)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = stream(fn, name, block_size=37)
    slow = [w for w in seen if issubclass(w.category, multiload.SlowPathWarning)]
    assert bool(slow) == (not is_native(name)), [str(w.message) for w in slow]
    assert out.dtype == ref.dtype and out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("name", [n for n in dataset_names() if "_f8_" in n or "compound" in n or "_u1_2d" in n])
def test_reader_equals_h5py(plugin_file, name):
    fn, _ = plugin_file
    ref = h5py_read(fn, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", multiload.SlowPathWarning)
        r = multiload.Reader(fn, n_procs=2)
        try:
            ds = r.get_dataset(name)
            stage = ds.create_stage(150)
            np.testing.assert_array_equal(r.request(ds[13:163], stage).get(), ref[13:163])
            np.testing.assert_array_equal(r.read(ds[95:len(ref)]), ref[95:])
            np.testing.assert_array_equal(r.read(ds[::7]), ref[::7])
        finally:
            r.stop()


# --- bitshuffle's transpose, byte for byte, over element sizes, block sizes and chunk lengths ---

BSHUF_SIZES = [1, 2, 3, 4, 5, 7, 8, 12, 16, 24]
BSHUF_BLOCKS = [0, 8, 136]
BSHUF_CHUNKS = [5, 9, 131, 1003]


@pytest.fixture(scope="module")
def bshuf_file(tmp_path_factory):
    fn = str(tmp_path_factory.mktemp("bshuf") / "bshuf.h5")
    rng = np.random.default_rng(5)
    names = []
    with h5py.File(fn, "w") as f:
        for size in BSHUF_SIZES:
            dt = np.dtype([(f"b{i}", "u1") for i in range(size)])  # a compound of `size` bytes
            for block in BSHUF_BLOCKS:
                for chunk in BSHUF_CHUNKS:
                    for cname in ("none", "lz4", "zstd"):
                        if cname == "zstd" and block == 136:
                            continue
                        raw = rng.integers(0, 256, (2 * chunk + 3) * size, dtype=np.uint8)
                        raw[: len(raw) // 2] &= 0x0F  # half compressible, half noise
                        name = f"s{size}_b{block}_c{chunk}_{cname}"
                        f.create_dataset(name, data=raw.view(dt), chunks=(chunk,),
                                         **hdf5plugin.Bitshuffle(nelems=block, cname=cname))
                        names.append(name)
    return fn, names


def test_bitshuffle_every_byte(bshuf_file):
    fn, names = bshuf_file
    wrong = []
    with h5py.File(fn) as f:
        for name in names:
            ref = f[name][:]
            out = stream(fn, name, block_size=64)
            if out.dtype != ref.dtype or out.tobytes() != ref.tobytes():
                wrong.append(name)
    assert not wrong, wrong


# --- damaged and crafted chunks ---


def chunk_info(fn, path, i):
    with h5py.File(fn) as f:
        return f[path].id.get_chunk_info(i)


def patched(fn, tmp_path, path, chunk, edits):
    """A copy of fn with chunk `chunk` of path changed: edits is [(offset in the chunk, bytes)]."""
    bad = str(tmp_path / "bad.h5")
    shutil.copy(fn, bad)
    info = chunk_info(fn, path, chunk)
    with open(bad, "r+b") as out:
        for off, data in edits:
            assert off + len(data) <= info.size
            out.seek(info.byte_offset + off)
            out.write(data)
    return bad


def assert_block_fails(bad, path, n_rows=100):
    """Streaming path raises OSError for exactly the damaged chunk's block (chunk 2, rows 200..300)."""
    q = multiload.Streamer(bad).get_queue(path, n_procs=2, ordered=True, block_size=n_rows)
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
    assert len(errors) == 1, errors
    assert "block 2" in str(errors[0]) and path in str(errors[0]) and errors[0].filename == bad
    assert good == q.n_blocks - 1


CRAFTED = {
    # lz4: 8-byte original size, 4-byte block size, then per block a 4-byte compressed size
    "lz4_orig_huge": ("lz4_i2_1d", [(0, struct.pack(">Q", 1 << 62))]),
    "lz4_orig_short": ("lz4_i2_1d", [(0, struct.pack(">Q", 100))]),
    "lz4_block_zero": ("lz4_i2_1d", [(8, struct.pack(">I", 0))]),
    "lz4_csize_huge": ("lz4_i2_1d", [(12, struct.pack(">I", 0xFFFFFFF0))]),
    "lz4_csize_short": ("lz4_i2_1d", [(12, struct.pack(">I", 3))]),
    # bitshuffle + lz4 / zstd: the same header (block size in bytes), then per block its size
    "bshuf_total": ("bshuf_lz4_i2_1d", [(0, struct.pack(">Q", 202))]),
    "bshuf_block_odd": ("bshuf_lz4_i2_1d", [(8, struct.pack(">I", 2 * 12))]),
    "bshuf_csize_huge": ("bshuf_lz4_i2_1d", [(12, struct.pack(">I", 0x7FFFFFFF))]),
    "bshuf_zstd_csize": ("bshuf_zstd_f8_1d", [(12, struct.pack(">I", 5))]),
    # zstd: the frame's magic number and its header
    "zstd_magic": ("zstd_f8_1d", [(0, b"\0\0\0\0")]),
    "zstd_frame": ("zstd_f8_1d", [(4, b"\xff\xff\xff\xff\xff\xff")]),
    # bzip2: the block's header and CRC
    "bzip2_body": ("bzip2_f8_1d", [(10, b"\x55" * 40)]),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_chunk_raises(plugin_file, tmp_path, case):
    fn, _ = plugin_file
    path, edits = CRAFTED[case]
    bad = patched(fn, tmp_path, path, 2, edits)
    assert_block_fails(bad, path)
    r = multiload.Reader(bad, n_procs=2)
    try:
        ds = r.get_dataset(path)
        np.testing.assert_array_equal(r.read(ds[0:200]), h5py_read(fn, path, slice(0, 200)))
        with pytest.raises(OSError, match="corrupt|decode|checksum"):
            r.read(ds[150:250])
    finally:
        r.stop()


def test_damaged_plain_bitshuffle_reads_as_h5py(plugin_file, tmp_path):
    """Plain bitshuffle has no header or checksum: scrambled bytes decode,
    and to exactly what h5py's plugin makes of them."""
    fn, _ = plugin_file
    path = "bshuf_compound_1d"
    bad = patched(fn, tmp_path, path, 2, [(7, bytes(range(200, 250)))])
    ref = h5py_read(bad, path)
    assert not np.array_equal(ref, h5py_read(fn, path))
    np.testing.assert_array_equal(stream(bad, path, block_size=100), ref)


# --- the slow path finds hdf5plugin's plugins by itself; missing filters are named ---

CHILD = r"""
import json, sys, warnings
import numpy as np
import multiload
warnings.simplefilter("ignore", multiload.SlowPathWarning)
fn, out, names = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
res = {}
for name in names:
    try:
        q = multiload.Streamer(fn).get_queue(name, n_procs=2, ordered=True, remainder=True, block_size=64)
        with q:
            np.save(f"{out}/{name}.npy", np.concatenate([g.array.copy() for g in q]))
        res[name] = "ok"
    except OSError as e:
        res[name] = str(e)
res["imported"] = sorted(m for m in ("h5py", "hdf5plugin") if m in sys.modules)
print(json.dumps(res))
"""


def run_child(fn, out, names, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDF5_PLUGIN")}
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(multiload.__file__))]
                                        + [p for p in [env.get("PYTHONPATH")] if p])
    r = subprocess.run([sys.executable, "-c", CHILD, fn, str(out), json.dumps(names)], env=env,
                       capture_output=True, text=True, timeout=100)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


SLOW = ["blosc2_f8_2d", "blosc2_bit_compound_1d", "zfp_f4_1d", "zfp_f8_2d", "zfp_i4_2d"]


def test_slow_path_finds_hdf5plugin(plugin_file, tmp_path):
    """Without HDF5_PLUGIN_PATH and without importing hdf5plugin (or h5py),
    blosc2 and zfp read exactly through HDF5 1.10 with hdf5plugin's plugins."""
    fn, _ = plugin_file
    res = run_child(fn, tmp_path, SLOW)
    assert res.pop("imported") == []
    assert res == {n: "ok" for n in SLOW}
    for name in SLOW:
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), h5py_read(fn, name))


def test_missing_filter_names_its_package(plugin_file, tmp_path):
    """With HDF5's plugins disabled ("::"), a filter neither multiload nor
    HDF5 decodes is refused at open with its id, name and package."""
    fn, _ = plugin_file
    res = run_child(fn, tmp_path, ["blosc2_f8_1d", "zfp_f8_1d", "zstd_f8_1d"], HDF5_PLUGIN_PRELOAD="::")
    assert "filter 32026 (blosc2), which is not available: pip install hdf5plugin" in res["blosc2_f8_1d"]
    assert "blosc2_f8_1d" in res["blosc2_f8_1d"]
    assert "filter 32013 (zfp), which is not available: pip install hdf5plugin" in res["zfp_f8_1d"]
    assert res["zstd_f8_1d"] == "ok"  # native: no plugin needed
    np.testing.assert_array_equal(np.load(tmp_path / "zstd_f8_1d.npy"), h5py_read(fn, "zstd_f8_1d"))


# --- fletcher32 anywhere in the pipeline ---

# HDF5 filter ids in pipeline (write) order
ORDERS = {"f_d": [3, 1], "f_s_d": [3, 2, 1], "s_f_d": [2, 3, 1], "d_f": [1, 3], "f_s": [3, 2], "f": [3],
          "f_zstd": [3, 32015], "f_lz4": [3, 32004], "f_bzip2_f": [3, 307, 3]}


def set_filter(dcpl, fid):
    if fid == 1:
        dcpl.set_deflate(4)
    elif fid == 2:
        dcpl.set_shuffle()
    elif fid == 3:
        dcpl.set_fletcher32()
    else:  # hdf5plugin's, by id and options
        flt = {32015: hdf5plugin.Zstd(), 32004: hdf5plugin.LZ4(nbytes=512), 307: hdf5plugin.BZip2()}[fid]
        dcpl.set_filter(flt.filter_id, 0, flt.filter_options)


@pytest.fixture(scope="module")
def fletcher_file(tmp_path_factory):
    fn = str(tmp_path_factory.mktemp("fletcher") / "fletcher.h5")
    rng = np.random.default_rng(2)
    with h5py.File(fn, "w") as f:
        for oname, order in ORDERS.items():
            for dt in ("<i4", "<f8", COMPOUND):
                for sname, (shape, chunks) in SHAPES.items():
                    data = make_data(shape, dt, rng)
                    dcpl = h5p.create(h5p.DATASET_CREATE)
                    dcpl.set_chunk(chunks)
                    for fid in order:
                        set_filter(dcpl, fid)
                    tid = h5t.py_create(np.dtype(dt), logical=True)
                    d = h5d.create(f.id, f"{oname}_{dtype_name(dt)}_{sname}".encode(), tid, h5s.create_simple(shape),
                                   dcpl=dcpl)
                    d.write(h5s.ALL, h5s.ALL, data)
    with h5py.File(fn) as f:  # the pipelines are what was asked
        for oname, order in ORDERS.items():
            plist = f[f"{oname}_i4_1d"].id.get_create_plist()
            assert [plist.get_filter(i)[0] for i in range(plist.get_nfilters())] == order
    return fn


@pytest.mark.parametrize("oname", sorted(ORDERS))
def test_fletcher32_any_position(fletcher_file, oname):
    fn = fletcher_file
    for dt in ("i4", "f8", "compound"):
        for sname in SHAPES:
            name = f"{oname}_{dt}_{sname}"
            ref = h5py_read(fn, name)
            with warnings.catch_warnings():
                warnings.simplefilter("error", multiload.SlowPathWarning)  # native
                np.testing.assert_array_equal(stream(fn, name, block_size=33), ref)
            r = multiload.Reader(fn, n_procs=2)
            try:
                np.testing.assert_array_equal(r.read(r.get_dataset(name)[40:190]), ref[40:190])
            finally:
                r.stop()


@pytest.mark.parametrize("oname", ["f_s", "f_d", "f_s_d", "f_zstd"])
def test_fletcher32_damage_raises(fletcher_file, tmp_path, oname):
    """A changed byte under the checksum fails the chunk, as in h5py."""
    fn = fletcher_file
    path = f"{oname}_i4_1d"
    size = chunk_info(fn, path, 2).size
    bad = patched(fn, tmp_path, path, 2, [(size // 2, b"\x13\x37")])
    if oname != "f_zstd":  # hdf5plugin's zstd plugin crashes h5py on this chunk (frame size unchecked)
        with h5py.File(bad) as f:
            with pytest.raises(OSError):
                f[path][200:300]
    assert_block_fails(bad, path)
    if oname == "f_s":  # nothing but the checksum can notice
        with pytest.raises(OSError, match="fletcher32 checksum mismatch"):
            stream(bad, path, block_size=100)


def test_netcdf4_fletcher32(tmp_path):
    """netCDF-C writes fletcher32 first ([fletcher32, shuffle, deflate])."""
    fn = str(tmp_path / "nc.nc")
    rng = np.random.default_rng(9)
    with netCDF4.Dataset(fn, "w") as nc:
        nc.createDimension("t", None)
        nc.createDimension("x", 13)
        v = nc.createVariable("temp", "f4", ("t", "x"), zlib=True, fletcher32=True, chunksizes=(64, 13))
        v[:] = rng.standard_normal((1000, 13)).astype("f4")
        w = nc.createVariable("count", "i2", ("t",), zlib=True, shuffle=False, fletcher32=True, chunksizes=(100,))
        w[:] = rng.integers(-500, 500, 1000)
    with h5py.File(fn) as f:
        plist = f["temp"].id.get_create_plist()
        assert plist.get_filter(0)[0] == 3  # fletcher32 first
        for name in ("temp", "count"):
            ref = f[name][:]
            np.testing.assert_array_equal(stream(fn, name, block_size=100), ref)
            r = multiload.Reader(fn, n_procs=2)
            try:
                np.testing.assert_array_equal(r.read(r.get_dataset(name)[5:905]), ref[5:905])
            finally:
                r.stop()
