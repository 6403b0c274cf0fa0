"""Variable-length strings (h5py's string_dtype, netCDF4's str) read by the
C core, compared with h5py reading the same file: ``reader.read(ds[key])``
is h5py's ``f[name][key]`` (object arrays of bytes, or one bytes object),
the dtype is h5py's (``h5py.check_string_dtype`` works on it), and
``Streamer.get_generator`` yields h5py's rows. Damaged descriptors and
heaps raise OSError(EIO) naming the file, the dataset and the element.
"""

import errno
import os
import pickle
import struct
import zlib

import h5py
import numpy as np
import pytest

import multiload
from multiload import _core

pytestmark = pytest.mark.timeout(120)

UTF8 = h5py.string_dtype("utf-8")
ASCII = h5py.string_dtype("ascii")


def _words(n, seed, utf8=True):
    """n strings: empty ones, short ones, non-ASCII ones (UTF-8), a long one."""
    rng = np.random.default_rng(seed)
    alphabet = "abcdefghij" + ("éü漢字\u00df" if utf8 else "XYZ")
    out = []
    for i in range(n):
        if i % 9 == 4:
            out.append("")
        elif i % 97 == 50:
            out.append("L" * 5000 + str(i))  # past 4096 bytes: a collection of its own
        else:
            k = int(rng.integers(1, 12))
            out.append("".join(rng.choice(list(alphabet), k)) + str(i))
    return np.array(out if utf8 else [s.encode() for s in out], dtype=object)


# name -> (writer kwargs, data or None): every dataset of the file
def _write(fn):
    with h5py.File(fn, "w") as f:
        f.create_dataset("utf8", data=_words(60, 1), dtype=UTF8)
        f.create_dataset("ascii", data=_words(40, 2, utf8=False), dtype=ASCII)
        f.create_dataset("gzip", data=_words(300, 3), dtype=UTF8, chunks=(16,), compression="gzip")
        f.create_dataset("filters", data=_words(100, 4), dtype=UTF8, chunks=(10,), compression="gzip", shuffle=True)
        f.create_dataset("many", data=_words(9000, 5), dtype=UTF8)  # more than one span of descriptors
        f.create_dataset("nd3", data=_words(5 * 3 * 4, 6).reshape(5, 3, 4), dtype=UTF8, chunks=(2, 2, 3),
                         compression="gzip")  # edge chunks on every axis
        f.create_dataset("nd2_contig", data=_words(7 * 5, 7, utf8=False).reshape(7, 5), dtype=ASCII)
        f.create_dataset("unwritten", shape=(6,), dtype=UTF8)  # never written: null elements
        d = f.create_dataset("partly", shape=(40,), dtype=UTF8, chunks=(8,))  # some chunks never written
        d[3] = "three"
        d[20:23] = ["x", "", "yy"]
        f.create_dataset("fill", shape=(30,), dtype=UTF8, chunks=(8,), fillvalue="zz")  # never written
        f.create_dataset("fill_contig", shape=(4, 2), dtype=UTF8, fillvalue="fill é")
        d = f.create_dataset("fill_partly", shape=(30,), dtype=UTF8, chunks=(8,), fillvalue="zz")
        d[9] = "nine"
        d = f.create_dataset("nulls", shape=(12,), dtype=UTF8)  # written, with elements left null
        d[1] = "one"
        f.create_dataset("scalar", data="a NeXus title, ü", dtype=UTF8)
        f.create_dataset("scalar_ascii", data=b"ascii scalar", dtype=ASCII)
        f.create_dataset("scalar_empty", data="", dtype=UTF8)
        f.create_dataset("empty", shape=(0,), dtype=UTF8)
        f.create_dataset("empty_chunked", shape=(0, 3), dtype=UTF8, chunks=(4, 3), maxshape=(None, 3))
        f.create_dataset("zero_inner", shape=(3, 0), dtype=UTF8)
        f.create_dataset("resized", shape=(5,), dtype=UTF8, chunks=(2,), maxshape=(None,))
        f["resized"][:] = ["a", "b", "c", "d", "e"]
        f["resized"].resize((12,))
        f.create_dataset("cmp", shape=(3,), dtype=np.dtype([("a", "<i4"), ("s", UTF8)]))
        inner = np.dtype([("p", "<f4"), ("name", ASCII)])
        f.create_dataset("cmp_nested", shape=(2,), dtype=np.dtype([("a", "<i4"), ("inner", inner)]))
        f.create_dataset("fixed", data=np.array([b"ab", b"cd"], dtype="S2"))


NAMES = ["utf8", "ascii", "gzip", "filters", "many", "nd3", "nd2_contig", "unwritten", "partly", "fill",
         "fill_contig", "nulls",
         "scalar", "scalar_ascii", "scalar_empty", "empty", "empty_chunked", "zero_inner", "resized"]


@pytest.fixture(scope="module")
def sfile(tmp_path_factory):
    fn = str(tmp_path_factory.mktemp("vlstr") / "strings.h5")
    _write(fn)
    return fn


@pytest.fixture(scope="module")
def reader(sfile):
    r = multiload.Reader(sfile, n_procs=2)
    yield r
    r.close()


def _same(got, want):
    """Equal as h5py gives them: a bytes object, or an object array of
    bytes of the same shape and dtype (its metadata too)."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), (type(got), want)
        assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype)
        assert got.dtype.metadata == want.dtype.metadata, (got.dtype.metadata, want.dtype.metadata)
        assert all(type(x) is bytes for x in got.flat)
        assert got.tolist() == want.tolist()
    else:
        assert type(got) is type(want) is bytes, (got, want)
        assert got == want


@pytest.mark.parametrize("name", NAMES)
def test_whole_dataset_and_dtype_as_h5py(reader, sfile, name):
    ds = reader.get_dataset(name)
    with h5py.File(sfile) as f:
        d = f[name]
        assert ds.shape == d.shape
        assert ds.dtype == d.dtype and ds.dtype.metadata == d.dtype.metadata
        assert h5py.check_string_dtype(ds.dtype) == h5py.check_string_dtype(d.dtype)
        assert ds.encoding == h5py.check_string_dtype(d.dtype).encoding
        _same(reader.read(ds[()]), d[()])
        if d.shape:
            _same(reader.read(ds[:]), d[:])
            # asstr(): the user's decoding with the stored encoding gives h5py's str
            got = np.vectorize(lambda b: b.decode(ds.encoding), otypes=[object])(reader.read(ds[:]))
            assert got.tolist() == d.asstr()[:].tolist()
        else:
            _same(reader.read(ds[...]), d[...])
            assert reader.read(ds[()]).decode(ds.encoding) == d.asstr()[()]


KEYS_1D = [0, -1, 5, slice(None), slice(2, 9), slice(None, None, 3), slice(8, 1, -2), slice(5, 5), [3, 0, 3, 7],
           np.array([9, 2, 2, 0]), np.array([], dtype=np.int64), (slice(1, 6),), (Ellipsis, 2), (4, Ellipsis)]


def _h5py_truth(d, key):
    """h5py's d[key]; for the keys h5py refuses (unsorted or repeated
    lists, negative steps), numpy's indexing of h5py's whole read."""
    try:
        return d[key]
    except (TypeError, ValueError, IndexError):
        want = d[:][key]
        return want[()] if isinstance(want, np.ndarray) and want.ndim == 0 else want


@pytest.mark.parametrize("name", ["utf8", "ascii", "gzip", "filters", "many", "partly", "fill", "nulls", "resized"])
@pytest.mark.parametrize("k", range(len(KEYS_1D)))
def test_keys_1d_as_h5py(reader, sfile, name, k):
    key = KEYS_1D[k]
    ds = reader.get_dataset(name)
    with h5py.File(sfile) as f:
        want = _h5py_truth(f[name], key)
    _same(reader.read(ds[key]), want)


def test_partly_written_fill_value_fails_as_in_h5py(reader, sfile):
    """Chunks never written beside written ones, with a variable-length
    fill value: HDF5 (1.10.8 as 2.0) refuses to read them from a file
    opened read-only ("no write intent on file"): an OSError, as h5py's."""
    with h5py.File(sfile) as f:
        with pytest.raises(OSError):
            f["fill_partly"][:]
    ds = reader.get_dataset("fill_partly")
    with pytest.raises(OSError, match="fill_partly"):
        reader.read(ds[:])


def test_bool_mask_and_read_methods(reader, sfile):
    ds = reader.get_dataset("gzip")
    with h5py.File(sfile) as f:
        d = f["gzip"]
        mask = np.arange(d.shape[0]) % 7 == 2
        _same(reader.read(ds[mask]), d[mask])
        _same(reader.read(ds.read(4)), d[4:5])  # PyTables: read(start) is the one row start:start+1
        _same(reader.read(ds.read(10, 40, 3)), d[10:40:3])
        _same(reader.read(ds[10:50][::4]), d[10:50][::4])  # further keys: numpy's, on the result


KEYS_ND = [1, -1, (2, 1), (2, 1, 3), (slice(None), 1), (slice(1, 4), slice(None), 2), (Ellipsis, 0),
           (1, Ellipsis), (slice(None, None, 2),), (np.array([4, 0, 4]),), (slice(None), np.array([2, 0])),
           ("mask",), (slice(0, 5, 2), 0, slice(1, 3))]


@pytest.mark.parametrize("name", ["nd3", "nd2_contig"])
@pytest.mark.parametrize("k", range(len(KEYS_ND)))
def test_keys_nd_as_h5py(reader, sfile, name, k):
    key = KEYS_ND[k]
    ds = reader.get_dataset(name)
    with h5py.File(sfile) as f:
        d = f[name]
        if len(d.shape) == 2 and isinstance(key, tuple) and len(key) == 3:
            key = key[:2]
        if isinstance(key, tuple) and isinstance(key[0], str):
            key = (np.arange(d.shape[0]) % 2 == 0,)
        want = _h5py_truth(d, key)
    _same(reader.read(ds[key]), want)


def test_index_errors(reader):
    ds = reader.get_dataset("nd3")
    with pytest.raises(IndexError, match="out of bounds.*nd3"):
        reader.read(ds[5])
    with pytest.raises(IndexError, match="nd3"):
        reader.read(ds[0, 0, 0, 0])
    s = reader.get_dataset("scalar")
    with pytest.raises(IndexError, match="scalar"):
        reader.read(s[0])
    with pytest.raises(TypeError, match="0-d"):
        len(s)
    u = reader.get_dataset("utf8")
    with pytest.raises(IndexError, match="out of bounds"):
        reader.read(u[[0, 60]])


def test_requests_into_stages_are_refused(reader):
    ds = reader.get_dataset("utf8")
    stage = reader.get_dataset("/fixed").create_stage(2)
    with pytest.raises(TypeError, match="cannot be read into a stage.*reader.read"):
        reader.request(ds[0:2], stage)
    with pytest.raises(TypeError, match="stage"):
        ds.create_stage_natoms(4)


def test_streamer_get_queue_refuses_and_get_generator_yields_h5py_rows(sfile):
    s = multiload.Streamer(sfile)
    with pytest.raises(TypeError, match="variable-length string in dataset 'utf8'.*get_generator"):
        s.get_queue("utf8")
    with h5py.File(sfile) as f:
        for name in ("utf8", "gzip", "nd3", "unwritten", "fill", "empty"):
            want = list(f[name][:])
            got = list(s.get_generator(name, block_size=7))
            assert len(got) == len(want)
            for g, w in zip(got, want):
                _same(g, w)
        want = list(f["ascii"][:])
    gen = s.get_generator("ascii", cyclic=True, block_size=16)
    got = [next(gen) for _ in range(2 * len(want) + 3)]
    gen.close()
    assert got == want + want + want[:3]
    with pytest.raises(TypeError, match="scalar"):
        list(s.get_generator("scalar"))
    with pytest.raises(KeyError, match="no field"):
        list(s.get_generator("utf8", field="x"))


def test_strings_in_compounds_are_refused_naming_the_field(reader, sfile):
    with pytest.raises(TypeError, match=r"variable-length string in field 's' of the compound of dataset 'cmp'"):
        reader.get_dataset("cmp")
    with pytest.raises(TypeError, match=r"field 'inner/name' of the compound of dataset 'cmp_nested'"):
        reader.get_dataset("cmp_nested")


def test_pickled_proxy_reads_the_same(reader, sfile):
    ds = reader.get_dataset("nd3")
    r2, ds2 = pickle.loads(pickle.dumps((reader, ds)))
    with h5py.File(sfile) as f:
        _same(r2.read(ds2[1:3]), f["nd3"][1:3])
    r2.close()


def test_core_binding(sfile):
    v = _core.vlen_open(sfile, "/nd3")
    assert v.is_string and v.encoding == "utf-8" and v.shape == (5, 3, 4)
    with h5py.File(sfile) as f:
        want = f["nd3"][:]
    got = v.read_strings(np.array([4, 1, 4], dtype=np.int64))
    assert got.tolist() == want[[4, 1, 4]].tolist()
    with pytest.raises(IndexError):
        v.read_strings(np.array([5], dtype=np.int64))
    with pytest.raises(TypeError, match="read_strings"):
        v.read(np.array([0], dtype=np.int64))
    assert _core.vlen_open(sfile, "/fixed") is None


def test_netcdf4_str_variables(tmp_path):
    import netCDF4
    fn = str(tmp_path / "nc.nc")
    with netCDF4.Dataset(fn, "w") as nc:
        nc.createDimension("x", 5)
        nc.createDimension("y", 3)
        v = nc.createVariable("names", str, ("x",))
        v[:] = np.array(["alpha", "", "ünï", "d", "e" * 300], dtype=object)
        w = nc.createVariable("grid", str, ("x", "y"), zlib=True)
        w[:] = np.array([[f"g{i}{j}" for j in range(3)] for i in range(5)], dtype=object)
        s = nc.createVariable("title", str, ())
        s[0] = "a netCDF title"
        nc.createVariable("unwritten", str, ("x",))
    with h5py.File(fn) as f, multiload.Reader(fn, n_procs=1) as r:
        for name in ("names", "grid", "title", "unwritten"):
            ds = r.get_dataset(name)
            assert ds.dtype.metadata == f[name].dtype.metadata
            _same(r.read(ds[()]), f[name][()])
        _same(r.read(r.get_dataset("grid")[3:1:-1, 2]), f["grid"][:][3:1:-1, 2])


# ---------------------------------------------------------------- damaged files

DAMAGED_ROW = 5  # a 4-byte string: "w5xy"


def _write_damage_file(fn, kind):
    words = [f"w{i}xy".encode() if i != 7 else b"" for i in range(20)]
    kw = {"contig": {}, "chunked": dict(chunks=(8,)), "gzip": dict(chunks=(8,), compression="gzip")}[kind]
    with h5py.File(fn, "w") as f:
        f.create_dataset("s", data=np.array(words, dtype=object), dtype=ASCII, **kw)
    return words


def _collections(fn):
    """{address: (size, {index: (object header offset, object size)})}."""
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


def _desc(fn, row, new=None):
    """(count, address, index) of row `row` of "/s"; with `new`, replace
    it (a gzip chunk is decompressed, patched and written back)."""
    with h5py.File(fn, "r") as f:
        d = f["s"]
        if d.chunks is None:
            off, raw = d.id.get_offset() + 16 * row, None
        else:
            c = (row // 8 * 8,)
            if d.compression:
                mask, raw = d.id.read_direct_chunk(c)
                raw = bytearray(zlib.decompress(raw))
                off = 16 * (row % 8)
            else:
                off, raw = d.id.get_chunk_info_by_coord(c).byte_offset + 16 * (row % 8), None
    if raw is None:
        with open(fn, "rb") as fh:
            fh.seek(off)
            old = struct.unpack("<IQI", fh.read(16))
    else:
        old = struct.unpack_from("<IQI", raw, off)
    if new is None:
        return old
    packed = struct.pack("<IQI", *(o if n is None else n for o, n in zip(old, new)))
    if raw is None:
        _patch(fn, off, packed)
    else:
        raw[off:off + 16] = packed
        with h5py.File(fn, "r+") as f:
            f["s"].id.write_direct_chunk((row // 8 * 8,), zlib.compress(bytes(raw), 5), mask)
    return old


def _damage(fn, what):
    """Damage row DAMAGED_ROW's string in one way."""
    count, addr, idx = _desc(fn, DAMAGED_ROW)
    assert count == 4
    size, objs = _collections(fn)[addr]
    obj_at, obj_size = objs[idx]
    assert obj_size == 4
    if what == "collection signature":
        _patch(fn, addr, b"XCOL")
    elif what == "collection size past the file":
        _patch(fn, addr + 8, struct.pack("<Q", os.path.getsize(fn) * 4))
    elif what == "object size past the collection":
        _patch(fn, obj_at + 8, struct.pack("<Q", 1 << 40))
    elif what == "object longer than its string":  # the same padded size: the walk is intact
        _patch(fn, obj_at + 8, struct.pack("<Q", 7))
    elif what == "string longer than its object":
        _desc(fn, DAMAGED_ROW, (40, None, None))
    elif what == "index absent":
        _desc(fn, DAMAGED_ROW, (None, None, max(objs) + 100))
    elif what == "index of the free space":
        _desc(fn, DAMAGED_ROW, (None, None, 0))
    elif what == "address past the file":
        _desc(fn, DAMAGED_ROW, (None, os.path.getsize(fn) + 8192, None))
    elif what == "address elsewhere":
        _desc(fn, DAMAGED_ROW, (None, 8, None))
    elif what == "address inside the collection":
        _desc(fn, DAMAGED_ROW, (None, addr + 16, None))
    else:
        raise AssertionError(what)
    # whole-collection damage touches every row; the rest only row 5
    return what.startswith(("collection", "object size"))


DAMAGE = ["collection signature", "collection size past the file", "object size past the collection",
          "object longer than its string", "string longer than its object", "index absent",
          "index of the free space", "address past the file", "address elsewhere", "address inside the collection"]


@pytest.mark.parametrize("kind", ["contig", "chunked", "gzip"])
@pytest.mark.parametrize("what", DAMAGE)
def test_damaged_heap_is_corrupt_data(tmp_path, kind, what):
    fn = str(tmp_path / f"{kind}.h5")
    words = _write_damage_file(fn, kind)
    whole = _damage(fn, what)
    with multiload.Reader(fn, n_procs=1) as r:
        ds = r.get_dataset("s")
        for key in (DAMAGED_ROW, slice(None), [19, DAMAGED_ROW, 0]):
            with pytest.raises(OSError) as e:
                r.read(ds[key])
            assert e.value.errno == errno.EIO and e.value.filename == fn, e.value
            assert "'s'" in str(e.value) and "row" in str(e.value), e.value
        if not whole:  # what the damage leaves alone still reads, as h5py reads the intact file
            rows = [i for i in range(20) if i != DAMAGED_ROW]
            assert r.read(ds[rows]).tolist() == [words[i] for i in rows]
    with pytest.raises(OSError, match=r"row \d+" if whole else "row 5"):
        list(multiload.Streamer(fn).get_generator("s", block_size=4))


@pytest.mark.parametrize("kind", ["contig", "chunked", "gzip"])
def test_intact_damage_files_read_as_h5py(tmp_path, kind):
    fn = str(tmp_path / f"{kind}.h5")
    _write_damage_file(fn, kind)
    with h5py.File(fn) as f, multiload.Reader(fn, n_procs=1) as r:
        _same(r.read(r.get_dataset("s")[:]), f["s"][:])


def test_damaged_nd_chunk_names_the_element(tmp_path):
    """In an N-D dataset the error names the element's coordinates."""
    fn = str(tmp_path / "nd.h5")
    with h5py.File(fn, "w") as f:
        f.create_dataset("s", data=np.array([[f"e{i}{j}" for j in range(4)] for i in range(6)], dtype=object),
                         dtype=ASCII, chunks=(4, 2))
        off = f["s"].id.get_chunk_info_by_coord((4, 2)).byte_offset  # elements [4..5, 2..3]
    # element [5, 3]: local index 1 * 2 + 1 of its chunk
    with open(fn, "rb") as fh:
        fh.seek(off + 16 * 3)
        count, addr, idx = struct.unpack("<IQI", fh.read(16))
    _patch(fn, off + 16 * 3, struct.pack("<IQI", count, addr, idx + 500))
    with multiload.Reader(fn, n_procs=1) as r:
        ds = r.get_dataset("s")
        with pytest.raises(OSError, match=r"element \[5, 3\].*object \d+ is not in"):
            r.read(ds[5])
        with h5py.File(fn) as f:
            _same(r.read(ds[:5]), f["s"][:5])  # the other rows are intact


def test_compact_strings_are_refused(tmp_path):
    """Compact storage keeps the descriptors in the object header, which
    HDF5 1.10 gives no raw access to: refused (TypeError), never read
    unchecked. (h5py reads the same dataset.)"""
    fn = str(tmp_path / "compact.h5")
    with h5py.File(fn, "w") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        tid = h5py.h5t.py_create(UTF8, logical=True)
        h5py.h5d.create(f.id, b"s", tid, h5py.h5s.create_simple((3,)), dcpl=dcpl).close()
        f["s"][0] = "x"
    with h5py.File(fn) as f:
        assert f["s"][0] == b"x"
    with multiload.Reader(fn, n_procs=1) as r:
        with pytest.raises(TypeError, match="compact storage"):
            r.get_dataset("s")
