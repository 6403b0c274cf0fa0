"""Stored types that are not the bytes numpy reads, converted as HDF5
converts them into the dtype h5py reports (issue 12 items 1, 2 and 8):

- integers of reduced precision or with a bit offset (plain, through the
  n-bit filter, inside compounds and arrays, big-endian, with fill values):
  h5py's values, never the raw bit containers;
- space-padded and NUL-terminated fixed strings: h5py's NUL-padded bytes;
- PyTables' Time64 columns: the float64 PyTables reads, to the bit.

Every test reads through the Streamer, the Reader and get_remainder-style
full reads, and compares with h5py (PyTables for Time64)."""

import ctypes
import glob
import os
import warnings

import h5py
import numpy as np
import pytest
import tables
from h5py import h5d, h5f, h5p, h5s, h5t, h5z

import multiload

pytestmark = pytest.mark.timeout(120)

N = 1000


def h5file(fn, libver=None):
    """An h5py file for writing types with unused bits: HDF5 2.0 refuses them
    unless the file access list relaxes that check (H5F_RFIC_UNUSUAL_NUM_UNUSED_NUMERIC_BITS),
    which h5py does not wrap: called on h5py's own HDF5 through ctypes."""
    lib = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(h5py.__file__) + ".libs", "libhdf5-*.so*"))[0])
    fapl = h5p.create(h5p.FILE_ACCESS)
    assert lib.H5Pset_relax_file_integrity_checks(ctypes.c_int64(fapl.id), ctypes.c_uint64(1)) == 0
    if libver:
        fapl.set_libver_bounds(libver, h5f.LIBVER_LATEST)
    return h5py.File(h5f.create(fn.encode(), h5f.ACC_TRUNC, fapl=fapl))


def int_type(size, signed, precision, offset, big_endian=False):
    base = {(1, True): h5t.STD_I8LE, (1, False): h5t.STD_U8LE, (2, True): h5t.STD_I16LE,
            (2, False): h5t.STD_U16LE, (4, True): h5t.STD_I32LE, (4, False): h5t.STD_U32LE,
            (8, True): h5t.STD_I64LE, (8, False): h5t.STD_U64LE}[(size, signed)]
    t = base.copy()
    if big_endian:
        t.set_order(h5t.ORDER_BE)
    t.set_precision(precision)
    t.set_offset(offset)
    return t


def values(size, signed, precision):
    """Values that fit `precision` bits, from HDF5's own range ends too."""
    lo, hi = (-(1 << (precision - 1)), (1 << (precision - 1)) - 1) if signed else (0, (1 << precision) - 1)
    rng = np.random.default_rng(precision * 31 + size)
    v = rng.integers(lo, hi, size=N, endpoint=True, dtype=np.int64 if signed or precision < 64 else np.uint64)
    v[:4] = [lo, hi, 0, hi if signed else lo]
    return v.astype(np.dtype(f"{'i' if signed else 'u'}{size}"))


def create(f, name, ftype, shape, data, mtype, chunks=None, nbit=False, compact=False, fill=None,
           write=True):
    dcpl = h5p.create(h5p.DATASET_CREATE)
    if chunks:
        dcpl.set_chunk(chunks)
        if nbit:
            dcpl.set_filter(h5z.FILTER_NBIT)
    if compact:
        dcpl.set_layout(h5d.COMPACT)
    if fill is not None:
        dcpl.set_fill_value(fill)
    d = h5d.create(f.id, name.encode(), ftype, h5s.create_simple(shape), dcpl=dcpl)
    if write:
        d.write(h5s.ALL, h5s.ALL, data, mtype=mtype)
    return d


def stream(fn, path, block=64):
    q = multiload.Streamer(fn).get_queue(path, ordered=True, remainder=True, block_size=block, n_procs=2)
    with q:
        return np.concatenate([g.array.copy() for g in q])


def reader_read(fn, path, key):
    with multiload.Reader(fn) as r:
        ds = r.get_dataset(path)
        return np.asarray(r.read(ds[key]))


def same(out, ref):
    """Equal to the byte, in h5py's dtype (the Streamer hands out numeric
    data in the machine's byte order: compared after the same cast)."""
    assert out.dtype.newbyteorder("=") == ref.dtype.newbyteorder("=")
    assert out.astype(ref.dtype).tobytes() == ref.tobytes()


def check_all(fn, path):
    with h5py.File(fn, "r") as f:
        ref = f[path][()]
    same(stream(fn, path), ref)
    for key in (slice(0, len(ref)), slice(3, 517), slice(990, 1000)):
        got = reader_read(fn, path, key)
        assert got.dtype == ref.dtype
        assert got.tobytes() == ref[key].tobytes(), (path, key)
    rows = np.array([999, 0, 500, 7, 7, 123])
    got = reader_read(fn, path, rows)
    assert got.tobytes() == ref[rows].tobytes(), path
    return ref


INT_CASES = [(4, True, 12, 2), (4, False, 12, 2), (4, True, 16, 5), (2, True, 7, 3), (2, False, 9, 0),
             (1, True, 3, 4), (1, False, 5, 1), (8, True, 40, 7), (8, False, 33, 30), (4, True, 31, 1)]


@pytest.fixture(scope="module")
def int_file(tmp_path_factory):
    fn = str(tmp_path_factory.mktemp("conv") / "ints.h5")
    with h5file(fn) as f:
        for size, signed, prec, off in INT_CASES:
            v = values(size, signed, prec)
            mt = h5t.py_create(v.dtype)
            for be in (False, True):
                tag = f"{'i' if signed else 'u'}{size}_p{prec}_o{off}{'_be' if be else ''}"
                ft = int_type(size, signed, prec, off, be)
                create(f, "contig_" + tag, ft, (N,), v, mt)
                create(f, "chunk_" + tag, ft, (N,), v, mt, chunks=(100,))
                create(f, "nbit_" + tag, ft, (N,), v, mt, chunks=(128,), nbit=True)
            create(f, f"compact_{'i' if signed else 'u'}{size}_p{prec}_o{off}", int_type(size, signed, prec, off),
                   (N,), v, mt, compact=True)
        # 2-D, a fill value for chunks never written, partial edge chunks
        v = values(4, True, 12)
        ft = int_type(4, True, 12, 2)
        create(f, "fill2d", ft, (N, 3), None, h5t.NATIVE_INT32, chunks=(64, 2), nbit=True,
               fill=np.array(-7, "<i4"), write=False).close()
        f["fill2d"][:300] = np.stack([v[:300]] * 3, axis=1)  # the rest: chunks never written
    return fn


@pytest.mark.parametrize("case", INT_CASES, ids=lambda c: f"{'i' if c[1] else 'u'}{c[0]}_p{c[2]}_o{c[3]}")
@pytest.mark.parametrize("store", ["contig", "chunk", "nbit"])
@pytest.mark.parametrize("be", [False, True], ids=["le", "be"])
def test_reduced_precision_integers(int_file, case, store, be):
    size, signed, prec, off = case
    path = f"{store}_{'i' if signed else 'u'}{size}_p{prec}_o{off}{'_be' if be else ''}"
    ref = check_all(int_file, path)
    np.testing.assert_array_equal(ref, values(size, signed, prec))  # the writer's values, h5py agrees


@pytest.mark.parametrize("case", INT_CASES, ids=lambda c: f"{'i' if c[1] else 'u'}{c[0]}_p{c[2]}_o{c[3]}")
def test_reduced_precision_compact(int_file, case):
    size, signed, prec, off = case
    check_all(int_file, f"compact_{'i' if signed else 'u'}{size}_p{prec}_o{off}")


def test_fill_value_of_a_reduced_precision_type(int_file):
    ref = check_all(int_file, "fill2d")
    assert (ref[300:] == -7).all()


def test_h5ex_nbit_example_value(tmp_path):
    """HDF5's own h5ex_d_nbit: 32-bit integers, precision 16, offset 5, n-bit filter."""
    fn = str(tmp_path / "nbit.h5")
    data = (np.arange(32 * 64, dtype="<i4").reshape(32, 64) - 500)
    with h5file(fn) as f:
        create(f, "DS1", int_type(4, True, 16, 5, big_endian=True), (32, 64), data, h5t.NATIVE_INT32,
               chunks=(4, 8), nbit=True)
    ref = check_all_2d(fn, "DS1")
    assert ref[0, 0] == -500


def check_all_2d(fn, path):
    with h5py.File(fn, "r") as f:
        ref = f[path][()]
    same(stream(fn, path, block=5), ref)
    got = reader_read(fn, path, slice(1, 30))
    assert got.tobytes() == ref[1:30].tobytes()
    return ref


@pytest.fixture(scope="module")
def nested_file(tmp_path_factory):
    """Reduced-precision integers and padded strings inside compounds and arrays."""
    fn = str(tmp_path_factory.mktemp("conv") / "nested.h5")
    a = int_type(2, True, 10, 3)
    s = h5t.C_S1.copy()
    s.set_size(7)
    s.set_strpad(h5t.STR_SPACEPAD)
    arr = h5t.array_create(int_type(4, False, 20, 4), (2, 3))
    ct = h5t.create(h5t.COMPOUND, 2 + 7 + 24 + 8)
    ct.insert(b"a", 0, a)
    ct.insert(b"s", 2, s)
    ct.insert(b"arr", 9, arr)
    ct.insert(b"f", 33, h5t.IEEE_F64LE)
    mdt = np.dtype([("a", "<i2"), ("s", "S7"), ("arr", "<u4", (2, 3)), ("f", "<f8")])
    v = np.zeros(N, mdt)
    v["a"] = values(2, True, 10)
    v["s"] = [b"x%d" % i if i % 3 else b"" for i in range(N)]
    v["arr"] = values(4, False, 20)[np.arange(N * 6) % N].reshape(N, 2, 3)
    v["f"] = np.arange(N) / 7
    with h5file(fn) as f:
        mt = h5t.py_create(mdt)
        create(f, "contig", ct, (N,), v, mt)
        create(f, "chunk", ct, (N,), v, mt, chunks=(50,))
        create(f, "array_of_int", arr, (N,), v["arr"].copy(), h5t.array_create(h5t.STD_U32LE, (2, 3)))
    return fn


@pytest.mark.parametrize("path", ["contig", "chunk", "array_of_int"])
def test_nested_conversions(nested_file, path):
    check_all(nested_file, path)


STRINGS = [b"ab cd ef1", b"", b"x", b"full-length", b"  lead", b"tail  ", b"a\x00b"]


@pytest.fixture(scope="module")
def string_file(tmp_path_factory):
    fn = str(tmp_path_factory.mktemp("conv") / "strings.h5")
    v = np.array([STRINGS[i % len(STRINGS)] for i in range(N)], "S11")
    with h5py.File(fn, "w") as f:
        for pad, name in ((h5t.STR_SPACEPAD, "space"), (h5t.STR_NULLTERM, "nullterm"), (h5t.STR_NULLPAD, "nullpad")):
            for cset in (h5t.CSET_ASCII, h5t.CSET_UTF8):
                t = h5t.C_S1.copy()
                t.set_size(11)
                t.set_strpad(pad)
                t.set_cset(cset)
                # Written through HDF5's conversion from h5py's NUL-padded type: padding as the type says.
                mt = h5t.C_S1.copy()
                mt.set_size(11)
                mt.set_strpad(h5t.STR_NULLPAD)
                mt.set_cset(cset)
                tag = f"{name}_{'utf8' if cset == h5t.CSET_UTF8 else 'ascii'}"
                create(f, tag, t, (N,), v, mt)
                create(f, "chunk_" + tag, t, (N,), v, mt, chunks=(64,))
                # Raw bytes, no conversion: text after a terminator, spaces then NULs.
                raw = np.array([b"ab\x00junk", b"abc   \x00\x00", b"\x00xyz", b"12345678901"] * (N // 4), "S11")
                create(f, "raw_" + tag, t, (N,), raw, t)
    return fn


@pytest.mark.parametrize("pad", ["space", "nullterm", "nullpad"])
@pytest.mark.parametrize("cset", ["ascii", "utf8"])
@pytest.mark.parametrize("kind", ["", "chunk_", "raw_"])
def test_string_padding(string_file, pad, cset, kind):
    ref = check_all(string_file, f"{kind}{pad}_{cset}")
    # The character set as h5py names it, on the dataset's and the result's dtype.
    with multiload.Reader(string_file) as r:
        ds = r.get_dataset(f"{kind}{pad}_{cset}")
        for dt in (ds.dtype, np.asarray(r.read(ds[0:5])).dtype):
            assert h5py.check_string_dtype(dt) == h5py.check_string_dtype(ref.dtype)
    if pad == "space" and kind == "":
        assert ref[0] == b"ab cd ef1"  # the example: h5py drops the padding


def test_time64_columns_to_the_bit(tmp_path):
    fn = str(tmp_path / "t64.h5")
    rng = np.random.default_rng(5)
    secs = rng.integers(-2**31, 2**31 - 1, size=N)
    usec = rng.integers(0, 999999, size=N)
    t = secs + usec * 1e-6
    t[:6] = [0.0, -3.75, 1.5e9 + 0.25, 1234567.125, -0.000001, 2**31 - 1 + 0.999999]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tables.open_file(fn, "w") as f:
            for order in ("little", "big"):
                tb = f.create_table("/", f"t_{order}", {"t": tables.Time64Col(pos=0), "x": tables.Int32Col(pos=1)},
                                    byteorder=order)
                tb.append([(float(x), i) for i, x in enumerate(t)])
                a = f.create_carray("/", f"a_{order}", atom=tables.Time64Atom(), shape=(N,), byteorder=order)
                a[:] = t
    for order in ("little", "big"):
        with tables.open_file(fn) as f:
            ref = f.get_node(f"/t_{order}").read()
            ref_a = f.get_node(f"/a_{order}").read()
        same(stream(fn, f"/a_{order}"), ref_a)
        same(reader_read(fn, f"/a_{order}", slice(0, N)), ref_a)
        same(stream(fn, f"/t_{order}"), ref)
        same(reader_read(fn, f"/t_{order}", slice(2, 900)), ref[2:900])  # PyTables: native order
        # The other column through field= reads too (the whole table used to be refused).
        q = multiload.Streamer(fn).get_queue(f"/t_{order}", field="x", ordered=True, remainder=True,
                                             block_size=100, n_procs=2)
        with q:
            xs = np.concatenate([g.array.copy() for g in q])
        np.testing.assert_array_equal(xs, ref["x"])


def test_non_ieee_float_is_refused_by_layout(tmp_path):
    """A float layout HDF5 would round into an IEEE float on read: refused
    with a TypeError naming the layout, never handed out raw."""
    fn = str(tmp_path / "f.h5")
    t = h5t.IEEE_F32LE.copy()
    t.set_fields(31, 20, 11, 0, 20)  # sign 31, 11 exponent bits at 20, 20 mantissa bits at 0
    t.set_ebias(1023)
    with h5file(fn) as f:
        create(f, "x", t, (10,), np.linspace(-2, 2, 10).astype("<f4"), h5t.NATIVE_FLOAT)
    with h5py.File(fn, "r") as f:
        assert np.allclose(f["x"][()], np.linspace(-2, 2, 10), atol=1e-5)  # h5py reads it, converted
    with pytest.raises(TypeError, match=r"non-IEEE layout \(sign bit 31, 11 exponent bits at 20.*'x'") as e:
        multiload.Streamer(fn).get_queue("x")
    assert "f.h5" in str(e.value)
    with pytest.raises(TypeError, match="non-IEEE"):
        multiload.Reader(fn).get_dataset("x")


def test_scalars_are_converted_too(tmp_path):
    """0-d datasets (the Reader's ds[()]) go through the same conversion."""
    fn = str(tmp_path / "scalars.h5")
    t = h5t.C_S1.copy()
    t.set_size(8)
    t.set_strpad(h5t.STR_SPACEPAD)
    mt = h5t.C_S1.copy()
    mt.set_size(8)
    mt.set_strpad(h5t.STR_NULLPAD)
    with h5file(fn) as f:
        h5d.create(f.id, b"s", t, h5s.create(h5s.SCALAR)).write(h5s.ALL, h5s.ALL, np.array(b"ab c", "S8"), mtype=mt)
        h5d.create(f.id, b"i", int_type(4, True, 12, 2), h5s.create(h5s.SCALAR)).write(
            h5s.ALL, h5s.ALL, np.array(-500, "<i4"), mtype=h5t.NATIVE_INT32)
    with h5py.File(fn, "r") as f, multiload.Reader(fn) as r:
        for name in ("s", "i"):
            ref = f[name][()]
            got = r.read(r.get_dataset(name)[()])
            assert type(got) is type(ref) and got == ref and np.asarray(got).tobytes() == np.asarray(ref).tobytes()


def test_conversions_in_files_only_the_native_open_reads(tmp_path):
    """A compound written with libver v112 (datatype message version 4, which
    HDF5 1.10.8 cannot open: src/h5native.c opens it) holding a reduced-
    precision integer and a space-padded string: converted the same way."""
    fn = str(tmp_path / "v112.h5")
    s = h5t.C_S1.copy()
    s.set_size(6)
    s.set_strpad(h5t.STR_SPACEPAD)
    ct = h5t.create(h5t.COMPOUND, 10)
    ct.insert(b"i", 0, int_type(4, True, 12, 2))
    ct.insert(b"s", 4, s)
    mdt = np.dtype([("i", "<i4"), ("s", "S6")])
    v = np.zeros(N, mdt)
    v["i"] = values(4, True, 12)
    v["s"] = [b"ab %d" % (i % 10) for i in range(N)]
    with h5file(fn, h5f.LIBVER_V112) as f:
        create(f, "contig", ct, (N,), v, h5t.py_create(mdt))
        create(f, "chunk", ct, (N,), v, h5t.py_create(mdt), chunks=(64,))
    for path in ("contig", "chunk"):
        check_all(fn, path)
