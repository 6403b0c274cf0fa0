"""Files written by a newer HDF5 (h5py 3.16 bundles HDF5 2.0) with each
libver lower bound, read by multiload (which links HDF5 1.10.8) and
compared byte for byte with h5py's own read (docs/newer-hdf5.md).

HDF5 1.10.8 refuses compound, enum and bool datasets from libver v112 on
(datatype message version 4) and filtered chunked datasets at v200
(layout message version 5): multiload opens those itself from the object
header (src/h5native.c). Every dataset is read both ways: as opened by
default (HDF5 where it can, natively where it cannot) and with
MULTILOAD_NATIVE_OPEN=always (every dataset natively), through the
Reader, the Streamer and get_generator. What neither reads is refused
with an error naming the dataset and the reason."""

import os
import random
import subprocess
import sys

import h5py
import numpy as np
import pytest
from h5py import h5d, h5p, h5s, h5t

import multiload

pytestmark = pytest.mark.timeout(300)

LIBVERS = ["earliest", "v108", "v110", "v112", "v114", "v200"]
KINDS = ["int", "float", "bool", "enum", "compound", "string", "array"]
STORAGES = ["contig", "chunk", "gzip", "compact"]
N = 53  # rows: the last chunk of 7 is partial


def _data(kind):
    r = np.arange(N)
    if kind == "int":
        return (r * 7 - 100).astype("<i4")
    if kind == "float":
        return (r * 0.5 - 3).astype(">f8")
    if kind == "bool":
        return r % 3 == 0
    if kind == "enum":
        return (r % 3).astype("u1")
    if kind == "compound":
        a = np.zeros(N, dtype=[("a", "<i2"), ("b", ">f4"), ("c", "S3"), ("d", "<u2", (2,))])
        a["a"], a["b"], a["c"], a["d"] = r - 20, r * 1.5, [b"x%d" % i for i in r], np.stack([r, r + 1], 1)
        return a
    if kind == "string":
        return np.array([b"str%d" % i for i in r], dtype="S6")
    if kind == "array":
        return np.arange(N * 6, dtype="<i2").reshape(N, 2, 3)
    raise ValueError(kind)


def _dtype(kind, d):
    return h5py.enum_dtype({"R": 0, "G": 1, "B": 2}, basetype="u1") if kind == "enum" else d.dtype


def _write(f, name, kind, storage):
    d = _data(kind)
    dt = _dtype(kind, d)
    chunks = (7,) + d.shape[1:]
    if storage == "contig":
        f.create_dataset(name, data=d, dtype=dt)
    elif storage == "chunk":
        f.create_dataset(name, data=d, dtype=dt, chunks=chunks)
    elif storage == "gzip":
        f.create_dataset(name, data=d, dtype=dt, chunks=chunks, compression="gzip", shuffle=True)
    else:
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_layout(h5d.COMPACT)
        ds = h5d.create(f.id, name.encode(), h5t.py_create(dt, logical=True), h5s.create_simple(d.shape),
                        dcpl=dcpl)
        ds.write(h5s.ALL, h5s.ALL, np.ascontiguousarray(d))


def _write_extras(f):
    """Fill values, unwritten chunks and 2-D chunk grids, natively read too."""
    f.create_dataset("fill_chunked", shape=(40, 6), chunks=(8, 4), dtype="<i4", fillvalue=-7)
    f["fill_chunked"][8:16] = np.arange(48).reshape(8, 6)
    f.create_dataset("fill_contig", shape=(20,), dtype=">f4", fillvalue=2.5)
    f.create_dataset("fill_compound", shape=(30,), chunks=(8,), dtype=[("a", "<i4"), ("b", "<f8")],
                     fillvalue=np.array((3, 4.5), dtype=[("a", "<i4"), ("b", "<f8")]))
    f["fill_compound"][0:8] = np.zeros(8, dtype=[("a", "<i4"), ("b", "<f8")])
    f.create_dataset("grid2d", data=np.arange(23 * 17, dtype="<u2").reshape(23, 17), chunks=(5, 4),
                     compression="gzip", fletcher32=True)
    f.create_dataset("bool2d", data=(np.arange(30 * 5).reshape(30, 5) % 4 == 1), chunks=(4, 5),
                     compression="lzf")


EXTRAS = ["fill_chunked", "fill_contig", "fill_compound", "grid2d", "bool2d"]


@pytest.fixture(scope="module")
def newer(tmp_path_factory):
    d = tmp_path_factory.mktemp("newer")
    out = {}
    for lv in LIBVERS:
        fn = str(d / ("%s.h5" % lv))
        with h5py.File(fn, "w", libver=(lv, "latest")) as f:
            for k in KINDS:
                for s in STORAGES:
                    _write(f, "%s_%s" % (k, s), k, s)
            _write_extras(f)
        out[lv] = fn
    return out


def _truth(fn, name):
    with h5py.File(fn, "r") as f:
        return f[name][()]


def _check(got, ref, native_order=False):
    """got equals h5py's ref: the same dtype (or, where the API hands
    numbers out in the machine's order, ref's dtype in that order), shape
    and bytes."""
    if native_order and got.dtype != ref.dtype:
        assert got.dtype == ref.dtype.newbyteorder("=")
        ref = ref.astype(got.dtype)
    assert got.dtype == ref.dtype
    assert got.shape == ref.shape
    assert got.tobytes() == np.ascontiguousarray(ref).tobytes()


def _read_all_ways(fn, name, ref):
    r = multiload.Reader(fn, n_procs=2)
    try:
        ds = r.get_dataset("/" + name)
        _check(r.read(ds[:]), ref)
        idx = list(range(len(ref) - 1, -1, -3))
        _check(r.read(ds[idx]), ref[idx])
    finally:
        r.close()
    st = multiload.Streamer(fn)
    try:
        q = st.get_queue("/" + name, ordered=True, remainder=True, block_size=10, n_procs=2)
        with q:
            got = np.concatenate([g.array.copy() for g in q])
            _check(got, ref, native_order=True)
        rows = list(st.get_generator("/" + name, block_size=9, n_procs=2))
        # rows come as numpy scalars (a bytes scalar as long as its value): as the queue's dtype
        _check(np.array(rows, dtype=got.dtype), ref, native_order=True)
    finally:
        st.close()


CASES = [(lv, "%s_%s" % (k, s)) for lv in LIBVERS for k in KINDS for s in STORAGES] + \
        [(lv, e) for lv in LIBVERS for e in EXTRAS]


@pytest.mark.parametrize("native", [False, True], ids=["default", "native"])
@pytest.mark.parametrize("lv,name", CASES)
def test_reads_as_h5py(newer, lv, name, native, monkeypatch):
    if native:
        monkeypatch.setenv("MULTILOAD_NATIVE_OPEN", "always")
    fn = newer[lv]
    _read_all_ways(fn, name, _truth(fn, name))


# ---- refusals: types and filters neither opener reads ----

@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    d = tmp_path_factory.mktemp("refused")
    out = {}
    for lv in ("v112", "v200"):
        fn = str(d / ("%s.h5" % lv))
        with h5py.File(fn, "w", libver=(lv, "latest")) as f:
            f.create_dataset("opaque", data=np.zeros(5, dtype="V4"))
            f.create_dataset("vlen_str", data=["a", "bc"], dtype=h5py.string_dtype())
            f.create_dataset("vlen_in_compound", shape=(3,),
                             dtype=[("a", "<i4"), ("s", h5py.string_dtype())])
            f.create_dataset("scaleoffset", data=np.arange(40, dtype="<i4"), chunks=(8,), scaleoffset=0)
            dcpl = h5p.create(h5p.DATASET_CREATE)
            dcpl.set_chunk((8,))
            dcpl.set_filter(h5py.h5z.FILTER_NBIT)
            ct = np.dtype([("a", "<i4"), ("b", "<i2")])
            ds = h5d.create(f.id, b"nbit_compound", h5t.py_create(ct), h5s.create_simple((40,)), dcpl=dcpl)
            ds.write(h5s.ALL, h5s.ALL, np.zeros(40, dtype=ct))
            f.create_dataset("scalar_compound", data=np.array((1, 2.0), dtype=[("a", "<i4"), ("b", "<f8")]))
            f.create_dataset("f16_compound", data=np.zeros(4, dtype=[("a", "<f2"), ("b", "<i8")]))
        out[lv] = fn
    return out


@pytest.mark.parametrize("lv", ["v112", "v200"])
@pytest.mark.parametrize("name,exc,words", [
    ("opaque", TypeError, "opaque"),
    ("vlen_str", TypeError, "variable-length string"),
    ("vlen_in_compound", TypeError, "variable-length string"),
    ("scalar_compound", TypeError, "scalar"),
])
@pytest.mark.parametrize("native", [False, True], ids=["default", "native"])
def test_refusals(refused, lv, name, exc, words, native, monkeypatch):
    if native:
        monkeypatch.setenv("MULTILOAD_NATIVE_OPEN", "always")
    with pytest.raises(exc, match=words) as e:
        multiload.Streamer(refused[lv]).get_queue("/" + name)
    assert name in str(e.value)
    # The Reader tries a refused type as a VLArray next, which needs HDF5
    # to open the dataset: for one only the native open reads, its error
    # is HDF5's refusal, naming the dataset (docs/newer-hdf5.md).
    r = multiload.Reader(refused[lv])
    if name == "vlen_str":
        # The Reader reads variable-length strings (through HDF5), as h5py does.
        with h5py.File(refused[lv], "r") as f:
            ref = f["/" + name][()]
        assert list(r.read(r.get_dataset("/" + name)[:])) == list(ref)
    else:
        with pytest.raises((exc, OSError), match=name):
            r.get_dataset("/" + name)
    r.close()


def test_filter_multiload_cannot_decode_is_refused_at_open(refused):
    # a compound (datatype v4) behind n-bit: HDF5 1.10.8 cannot open it,
    # and there is no slow path for a natively opened dataset
    with pytest.raises(OSError, match="nbit.*does not decode natively") as e:
        multiload.Reader(refused["v112"]).get_dataset("/nbit_compound")
    assert "nbit_compound" in str(e.value)


def test_filter_hdf5_can_decode_still_reads_through_hdf5(refused, monkeypatch):
    # an int behind scale-offset opens in HDF5 (slow path, as before); only
    # with every dataset natively opened is it refused
    ref = _truth(refused["v112"], "scaleoffset")
    r = multiload.Reader(refused["v112"])
    _check(r.read(r.get_dataset("/scaleoffset")[:]), ref)
    r.close()
    monkeypatch.setenv("MULTILOAD_NATIVE_OPEN", "always")
    with pytest.raises(OSError, match="does not decode natively"):
        multiload.Reader(refused["v112"]).get_dataset("/scaleoffset")


@pytest.mark.parametrize("lv", ["v112", "v200"])
def test_float16_compound_as_h5py(refused, lv):
    ref = _truth(refused[lv], "f16_compound")
    r = multiload.Reader(refused[lv])
    _check(r.read(r.get_dataset("/f16_compound")[:]), ref)
    r.close()


# ---- damaged copies: clear errors, never a crash or wrong data ----

FUZZ = os.path.join(os.path.dirname(__file__), "..", "fuzz", "native.py")


@pytest.mark.parametrize("lv", ["v112", "v200"])
def test_damaged_headers(newer, tmp_path, lv):
    """Bytes of the natively opened datasets' messages flipped (checksums
    recomputed, so the decoders see them): fuzz/native.py reads every case
    in a child process and compares what multiload returns with h5py.
    50 cases per file here (about 10 s), MULTILOAD_NATIVE_FUZZ_CASES under
    ASan (make check-asan: 20, each case is a slow ASan process): the volume
    belongs to `python fuzz/native.py --cases N` runs (docs/fuzzing.md)."""
    cases = os.environ.get("MULTILOAD_NATIVE_FUZZ_CASES", "50")
    out = subprocess.run([sys.executable, FUZZ, "--seed-file", newer[lv], "--cases", cases, "--seed",
                          str(random.Random(lv).randrange(1 << 30)), "--work", str(tmp_path)],
                         capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "findings: 0" in out.stdout, out.stdout[-3000:]
