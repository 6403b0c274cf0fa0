"""Crafted files (issue 10): each finding of the fuzzing campaign as a
regression test. A hostile file must never crash, read outside a buffer,
hang or return bytes HDF5 would not: every block multiload hands out equals
h5py's read of the same rows, and every refusal is an exception naming the
file and the dataset."""

import errno
import json
import os
import struct

import h5py
import numpy as np
import pytest

import multiload
import hostile_files as hf
import reliability_files as rf
from hostile_files import CHUNK, FILL, ROWS

pytestmark = pytest.mark.timeout(120)

BLOCK = 50  # 5 chunks a block


def stream(fn, path, io_mode="pread", block=BLOCK):
    q = multiload.Streamer(fn).get_queue(path, block_size=block, n_procs=2, io_mode=io_mode)
    with q:
        return rf.drain(q)


def h5py_rows(fn, path, start, stop):
    """h5py's rows, or the exception it raises for them."""
    try:
        with h5py.File(fn, "r") as f:
            return f[path][start:stop]
    except Exception as e:  # noqa: BLE001 - compared with multiload's outcome
        return e


def check_like_hdf5(fn, path, blocks, errors, block=BLOCK):
    """Every block handed out equals h5py's rows; every error is an OSError
    naming the file and dataset."""
    for index, (start, data) in blocks.items():
        want = h5py_rows(fn, path, start, start + len(data))
        assert not isinstance(want, Exception), f"block {index}: multiload read rows HDF5 refuses ({want})"
        assert np.array_equal(data, want), f"block {index}: bytes differ from HDF5's"
    for e in errors:
        assert isinstance(e, OSError), repr(e)
        assert fn in str(e) and f"'{path}'" in str(e), str(e)


# -- 1, 2: compact datasets whose sizes overflow or disagree ---------------

def compact_data():
    """13 rows of 11 int32: 572 bytes, a shape no other field of the file has."""
    return np.arange(13 * 11, dtype="<i4").reshape(13, 11)


@pytest.mark.parametrize("rows", [2**62, 2**60 + 1, 2**32])
def test_compact_rows_overflow_is_refused(tmp_path, rows):
    """The dataspace claims `rows` rows of a 44-byte compact dataset: the
    product wraps (2^62 * 44 > 2^64) or needs far more than the message
    stores. Refused at open, before HDF5 reads anything."""
    data = compact_data()
    fn = hf.write_compact(str(tmp_path / "compact.h5"), data)
    hf.set_dims(fn, (13, 11), (rows, 11))
    with pytest.raises((ValueError, OSError)) as exc:
        multiload.Streamer(fn).get_queue("c", block_size=4)
    msg = str(exc.value)
    assert fn in msg and "'c'" in msg, msg
    assert "too large" in msg or "stores 572 bytes" in msg, msg
    with pytest.raises((ValueError, OSError)):
        multiload.Reader(fn).get_dataset("c")


@pytest.mark.parametrize("stored", [0, 1, 568, 576])
def test_compact_stored_size_disagreeing_is_refused(tmp_path, stored):
    """The layout message's stored size no longer matches the dataspace:
    HDF5 1.10.8 reads past its own buffer on this. Refused, naming both sizes."""
    data = compact_data()
    fn = hf.write_compact(str(tmp_path / "compact.h5"), data)
    hf.patch(fn, hf.compact_size_at(fn, data), struct.pack("<H", stored))
    with pytest.raises(OSError) as exc:
        multiload.Streamer(fn).get_queue("c", block_size=4)
    assert exc.value.errno == errno.EIO
    msg = str(exc.value)
    assert fn in msg and "'c'" in msg, msg
    # Below the data's size, the open refuses it; larger than the message holds, the pre-check
    # (1.10.8 would copy past the message); in between, HDF5 1.10.8 refuses to open it.
    assert (f"stores {stored} bytes, but its shape needs 572" in msg or "cannot open" in msg
            or "the compact data passes the layout message's end" in msg), msg


def test_compact_rows_raised_is_refused(tmp_path):
    data = compact_data()
    fn = hf.write_compact(str(tmp_path / "compact.h5"), data)
    hf.set_dims(fn, (13, 11), (14, 11))
    with pytest.raises(OSError, match="stores 572 bytes, but its shape needs 616"):
        multiload.Streamer(fn).get_queue("c", block_size=4)


def test_compact_intact_still_reads(tmp_path):
    data = compact_data()
    fn = hf.write_compact(str(tmp_path / "compact.h5"), data)
    blocks, errors = stream(fn, "c", block=4)
    assert errors == []
    rf.check_blocks(blocks, data, block_size=4)


def test_contiguous_shape_overflow_is_refused(tmp_path):
    fn = str(tmp_path / "contig.h5")
    with h5py.File(fn, "w") as f:
        f.create_dataset("x", data=np.zeros((12345, 8), "<f8"))
    hf.set_dims(fn, (12345, 8), (2**61, 8))
    with pytest.raises((ValueError, OSError), match="too large|stores"):
        multiload.Streamer(fn).get_queue("x")


def test_block_size_larger_than_any_memory_does_not_wrap(tmp_path):
    """A block of 2^62 rows of 64 bytes would wrap a 64-bit slot size: the
    block holds the dataset's 100 rows instead."""
    fn = str(tmp_path / "contig.h5")
    data = np.arange(800, dtype="<f8").reshape(100, 8)
    with h5py.File(fn, "w") as f:
        f.create_dataset("x", data=data)
    q = multiload.Streamer(fn).get_queue("x", block_size=2**62)
    with q:
        blocks, errors = rf.drain(q)
    assert errors == [] and list(blocks) == [0]
    assert np.array_equal(blocks[0][1], data)


# -- 4: chunk index keys inconsistent -----------------------------------------

def damaged_btree(tmp_path, how, **kw):
    fn = hf.write_chunked(str(tmp_path / "btree.h5"), **kw)
    nodes = hf.btree_nodes(fn)
    assert sorted(nodes) == [0, 1] and len(nodes[1]) == 1, nodes
    root = nodes[1][0]
    assert hf.read_key(fn, root, 1)[2:] == (570, 0) and hf.read_key(fn, root, 2)[2:] == (990, 4)
    how(fn, root)
    return fn


BTREE_DAMAGE = {
    # Root's middle key moved right: chunks 57..59 lie outside the first
    # child's bounds, and descent by key does not find them (HDF5: fill).
    "middle key raised": lambda fn, root: hf.set_key(fn, root, 1, row=600),
    # ... moved left: chunk 56 sits in the first leaf beyond its bound.
    "middle key lowered": lambda fn, root: hf.set_key(fn, root, 1, row=560),
    # Root's right-most key lowered: descent finds nothing at or past it.
    "right-most key lowered": lambda fn, root: hf.set_key(fn, root, 2, row=800, elem=0),
    # An internal key with a non-zero element-size offset.
    "element offset in internal key": lambda fn, root: hf.set_key(fn, root, 1, elem=4),
    # A leaf key off its chunk's alignment (HDF5 would round it).
    "unaligned leaf key": lambda fn, root: hf.set_key(fn, hf.btree_nodes(fn)[0][1], 3, row=603),
}


@pytest.mark.parametrize("io_mode", rf.IO_MODES)
@pytest.mark.parametrize("damage", sorted(BTREE_DAMAGE))
@pytest.mark.parametrize("filters", ["plain", "gzip"])
def test_btree_keys_inconsistent(tmp_path, damage, filters, io_mode):
    kw = {"compression": "gzip"} if filters == "gzip" else {}
    fn = damaged_btree(tmp_path, BTREE_DAMAGE[damage], **kw)
    blocks, errors = stream(fn, "d", io_mode)
    check_like_hdf5(fn, "d", blocks, errors)
    # The Reader's random access reads through the same table.
    r = multiload.Reader(fn, n_procs=2)
    try:
        ds = r.get_dataset("d")
        stage = ds.create_stage(CHUNK)
        for c in range(ROWS // CHUNK):
            want = h5py_rows(fn, "d", c * CHUNK, (c + 1) * CHUNK)
            try:
                got = r.request(ds[c * CHUNK:(c + 1) * CHUNK], stage).get()
            except OSError as e:
                assert fn in str(e), str(e)
                continue
            assert not isinstance(want, Exception), f"chunk {c}: read where HDF5 refuses"
            assert np.array_equal(got, want), f"chunk {c}: bytes differ from HDF5's"
    finally:
        r.stop()


def test_btree_damage_that_hdf5_reads_as_fill_never_gives_chunk_bytes(tmp_path):
    """The case the fuzzer found: HDF5 returns the fill value for rows
    570..600, which the old walk returned as the chunks' bytes."""
    fn = damaged_btree(tmp_path, BTREE_DAMAGE["middle key raised"])
    want = h5py_rows(fn, "d", 570, 600)
    assert np.array_equal(want, np.full(30, FILL, "f4")), "HDF5 itself should read fill here"
    blocks, errors = stream(fn, "d")
    got = blocks.get(570 // BLOCK)
    assert got is None or np.array_equal(got[1][20:], np.full(30, FILL, "f4"))


# -- 5: a defined chunk address with a stored size of 0 -----------------------

@pytest.mark.parametrize("io_mode", rf.IO_MODES)
def test_chunk_stored_size_zero_is_corrupt(tmp_path, io_mode):
    fn = hf.write_chunked(str(tmp_path / "zero.h5"), compression="gzip")
    key = hf.chunk_key_of(fn, "d", 23)
    hf.patch(fn, key, struct.pack("<I", 0))
    assert isinstance(h5py_rows(fn, "d", 230, 240), Exception)  # HDF5 raises
    blocks, errors = stream(fn, "d", io_mode)
    assert sorted(rf.block_of(e) for e in errors) == [230 // BLOCK], errors
    msg = str(errors[0])
    assert "stored size of 0" in msg and "chunk 23 " in msg and fn in msg, msg
    check_like_hdf5(fn, "d", blocks, errors)


# -- 6: filter parameters HDF5 refuses -----------------------------------------

@pytest.mark.parametrize("name,kw,value", [
    ("shuffle", {"shuffle": True, "compression": "gzip"}, 0),
    ("deflate", {"compression": "gzip"}, 10),
])
def test_invalid_filter_parameters_refused_at_open(tmp_path, name, kw, value):
    fn = hf.write_chunked(str(tmp_path / "filter.h5"), **kw)
    hf.patch(fn, hf.filter_value_at(fn, name), struct.pack("<I", value))
    assert isinstance(h5py_rows(fn, "d", 0, 10), Exception)  # HDF5 refuses every chunk
    with pytest.raises(OSError) as exc:
        multiload.Streamer(fn).get_queue("d", block_size=BLOCK)
    msg = str(exc.value)
    assert f"invalid parameters for filter '{name}'" in msg and fn in msg and "'d'" in msg, msg


# -- 7: the superblock's end-of-file address before the data ------------------

@pytest.mark.parametrize("io_mode", rf.IO_MODES)
def test_reads_past_eoa_contiguous(tmp_path, io_mode):
    fn = str(tmp_path / "eoa.h5")
    data = np.arange(ROWS * 4, dtype="<i4").reshape(ROWS, 4)
    with h5py.File(fn, "w") as f:
        off = f.create_dataset("x", data=data).id.get_offset()
    cut = 610  # rows before it lie inside the EOA
    hf.set_eoa(fn, off + cut * 16 + 3)
    assert os.path.getsize(fn) >= off + ROWS * 16  # the bytes are there; HDF5 will not read them
    # HDF5 1.10.8 refuses the whole dataset ("invalid dataset size"). As for a
    # file cut short (issue 6), multiload reads the rows inside the EOA,
    # which are the file's own bytes, and raises for each block past it.
    assert isinstance(h5py_rows(fn, "x", 0, ROWS), Exception)
    blocks, errors = stream(fn, "x", io_mode)
    assert sorted(blocks) == list(range(cut // BLOCK))
    assert sorted(rf.block_of(e) for e in errors) == list(range(cut // BLOCK, ROWS // BLOCK))
    assert all("file truncated" in str(e) and fn in str(e) for e in errors)
    rf.check_blocks(blocks, data, block_size=BLOCK)
    r = multiload.Reader(fn, n_procs=1)
    try:
        ds = r.get_dataset("x")
        st = ds.create_stage(10)
        np.testing.assert_array_equal(r.request(ds[0:10], st).get(), data[0:10])
        with pytest.raises(OSError, match="truncated"):
            r.request(ds[900:910], st).get()
        with pytest.raises(OSError, match="truncated"):
            r.request(ds[[1, 950]], st).get()
    finally:
        r.stop()


@pytest.mark.parametrize("io_mode", rf.IO_MODES)
def test_reads_past_eoa_chunked(tmp_path, io_mode):
    fn = hf.write_chunked(str(tmp_path / "eoa.h5"), compression="gzip")
    with h5py.File(fn, "r") as f:
        spans = [f["d"].id.get_chunk_info(i) for i in range(ROWS // CHUNK)]
    last = max(spans, key=lambda c: c.byte_offset)
    hf.set_eoa(fn, last.byte_offset + last.size // 2)
    blocks, errors = stream(fn, "d", io_mode)
    assert [rf.block_of(e) for e in errors] == [last.chunk_offset[0] // BLOCK], errors
    assert "past the end of the file" in str(errors[0])
    check_like_hdf5(fn, "d", blocks, errors)


# -- 8: a huge claimed chunk grid over a tiny file -----------------------------

def test_huge_claimed_grid_costs_what_the_index_holds(tmp_path):
    """A 1-D dataset of 100 written chunks whose dataspace claims 2^32 rows
    (4.3e8 chunks): the chunk table is sized by the chunks written."""
    fn = str(tmp_path / "sparse.h5")
    with h5py.File(fn, "w") as f:
        f.create_dataset("d", data=hf.values(), chunks=(CHUNK,), maxshape=(None,), fillvalue=FILL)
    hf.set_dims(fn, (ROWS,), (2**32,))
    assert os.path.getsize(fn) < 64 * 1024
    code = f"""
import json, resource, multiload
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
r = multiload.Reader({fn!r}, n_procs=1)
ds = r.get_dataset("d")
st = ds.create_stage(200)
out = {{"head": r.request(ds[0:200], st).get().tolist(),
        "tail": r.request(ds[2**32 - 200:2**32], st).get().tolist(),
        "mid": r.request(ds[[5, 2**31, 999]], st).get().tolist()}}
r.stop()
out["grew"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps(out))
"""
    proc = rf.run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["grew"] < 200 * 1024, f"RSS grew {got['grew']} KiB"
    with h5py.File(fn, "r") as f:
        d = f["d"]
        assert got["head"] == d[0:200].tolist()
        assert got["tail"] == d[2**32 - 200:].tolist() == [FILL] * 200
        assert got["mid"] == [float(d[5]), float(d[2**31]), float(d[999])]


# -- found by the fuzz campaign ---------------------------------------------

@pytest.mark.parametrize("size", [1, 2, 8])
def test_fill_value_of_another_size_is_refused(tmp_path, size):
    """The fill value message declares a value of `size` bytes for 4-byte
    elements: HDF5 1.10.8's H5Pget_fill_value copies 4 bytes out of it (a
    heap overflow). Refused at open, naming both sizes; h5py is not asked
    (it would take the process with it)."""
    fn = hf.write_chunked(str(tmp_path / "fill.h5"))
    raw = open(fn, "rb").read()
    pat = struct.pack("<I", 4) + struct.pack("<f", FILL)
    hits = [i for i in range(len(raw)) if raw.startswith(pat, i)]
    assert 1 <= len(hits) <= 2, hits  # the fill value message, and the old one h5py writes beside it
    for at in hits:
        hf.patch(fn, at, struct.pack("<I", size))
    with pytest.raises(OSError) as exc:
        multiload.Streamer(fn).get_queue("d", block_size=BLOCK)
    msg = str(exc.value)
    # larger than the message holds: the pre-check refuses it before HDF5 copies it
    assert (f"is {size} bytes for 4-byte elements" in msg or f"the fill value ({size} bytes) passes the end of its "
            "message" in msg) and fn in msg and "'d'" in msg, msg


def test_latest_libver_indices_read_as_hdf5_reads(tmp_path):
    """Fixed array, extensible array, v2 B-tree, single chunk: chunks are
    located and read by HDF5's descent by key, byte for byte h5py's."""
    fn = str(tmp_path / "latest.h5")
    v = np.arange(300 * 4, dtype="<i4").reshape(300, 4)
    with h5py.File(fn, "w", libver="latest") as f:
        f.create_dataset("farray", data=v, chunks=(7, 4))
        # (unfiltered: h5py's HDF5 writes filtered layout-4 chunks 1.10 cannot open)
        f.create_dataset("earray", data=v, chunks=(7, 4), maxshape=(None, 4))
        f.create_dataset("btree2", data=v, chunks=(7, 3), maxshape=(None, None))
        f.create_dataset("single", data=v, chunks=(300, 4))
    for path in ("farray", "earray", "btree2", "single"):
        blocks, errors = stream(fn, path, block=64)
        assert errors == []
        rf.check_blocks(blocks, v, block_size=64)


# -- HDF5's own n-bit and scale-offset filters (the slow path) ---------------

def write_nbit(fn, name, data, tid=None, chunk=25):
    """`name`: `data` in chunks of `chunk` rows through HDF5's n-bit filter,
    with the file type `tid` (default: data's own)."""
    with h5py.File(fn, "a") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((chunk,) + data.shape[1:])
        dcpl.set_filter(5, 0)  # H5Z_FILTER_NBIT
        tid = tid or h5py.h5t.py_create(data.dtype)
        dsid = h5py.h5d.create(f.id, name.encode(), tid, h5py.h5s.create_simple(data.shape), dcpl=dcpl)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data))
    return fn


def read_all(fn, path):
    r = multiload.Reader(fn, n_procs=2)
    try:
        ds = r.get_dataset(path)
        return r.read(ds[0:len(ds)])
    finally:
        r.close()


def test_nbit_and_scaleoffset_valid_files_read_as_hdf5_reads(tmp_path):
    """Every n-bit parameter list set_local writes (full precision, so
    'nothing to compress'; a 12-bit unsigned integer; a compound of an
    integer, a float and a string; an array) and scale-offset on integers
    and floats pass the open-time check and read as h5py reads them."""
    fn = str(tmp_path / "nbit.h5")
    n = 200
    write_nbit(fn, "full", np.arange(n, dtype="<i4"))
    t12 = h5py.h5t.STD_U16LE.copy()
    t12.set_precision(12)  # (an offset too would be read raw: the slow path does not convert)
    write_nbit(fn, "i12", np.arange(n, dtype="<u2") * 20, tid=t12)
    comp = np.zeros(n, dtype=[("a", "<i4"), ("b", "<f8"), ("s", "S3")])
    comp["a"], comp["b"], comp["s"] = np.arange(n), np.arange(n) / 3, b"xyz"
    write_nbit(fn, "compound", comp)
    write_nbit(fn, "array", np.arange(n * 3, dtype=">u2").reshape(n, 3))
    with h5py.File(fn, "a") as f:
        f.create_dataset("so_int", data=np.arange(n, dtype="<i4") * 7, chunks=(30,), scaleoffset=0)
        f.create_dataset("so_float", data=np.arange(n, dtype="<f8") / 7, chunks=(30,), scaleoffset=3)
    with h5py.File(fn, "r") as f:
        for path in ("full", "i12", "compound", "array", "so_int", "so_float"):
            got, want = (np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<")))
                         for a in (read_all(fn, path), f[path][()]))
            assert got.tobytes() == want.tobytes(), path


@pytest.mark.parametrize("minbits, why", [(200, "bit width exceeds"), (31, "fewer stored bytes")])
def test_scaleoffset_chunk_header_damaged_is_refused(tmp_path, minbits, why):
    """A scale-offset chunk whose header claims more bits per value than
    its type has, or than its stored bytes hold: HDF5 1.10.8 decodes past
    its buffer (it only asserts). The chunk is refused naming it; the
    other chunks still read as h5py reads them."""
    fn = str(tmp_path / "so.h5")
    v = np.arange(300, dtype="<i4")
    with h5py.File(fn, "w") as f:
        f.create_dataset("so", data=v, chunks=(30,), scaleoffset=0)
    with h5py.File(fn, "r") as f:
        at = f["so"].id.get_chunk_info(0).byte_offset
    hf.patch(fn, at, struct.pack("<I", minbits))
    r = multiload.Reader(fn, n_procs=2)
    try:
        ds = r.get_dataset("so")
        with pytest.raises(OSError) as exc:
            r.read(ds[0:30])
        msg = str(exc.value)
        assert why in msg and "chunk 0" in msg and fn in msg and "'so'" in msg, msg
        assert r.read(ds[30:300]).tolist() == v[30:].tolist()
    finally:
        r.close()


def test_nbit_parameters_that_do_not_describe_the_type_are_refused(tmp_path):
    """n-bit's datatype size parameter changed (fuzz seed 7 case 2970): the
    open refuses the dataset, naming the filter and what is wrong."""
    fn = write_nbit(str(tmp_path / "nb.h5"), "d", np.arange(100, dtype="<i4"))
    raw = open(fn, "rb").read()
    # n-bit's values for an <i4: count 8, flag, 25 elements, atomic, size 4, LE, precision 32, offset 0
    at = hf.find_unique(raw, struct.pack("<8I", 8, 1, 25, 1, 4, 0, 32, 0), "n-bit parameters")
    hf.patch(fn, at + 16, struct.pack("<I", 40))
    with pytest.raises(OSError) as exc:
        multiload.Reader(fn, n_procs=2).get_dataset("d")
    msg = str(exc.value)
    assert "filter 'nbit'" in msg and "do not describe the datatype" in msg and fn in msg, msg


# -- the pre-check of what HDF5 reads to open a dataset (src/h5precheck.c) ----

@pytest.mark.parametrize("libver", ["earliest", "latest"])
def test_precheck_passes_valid_files_of_every_kind(tmp_path, libver):
    """h5py's files (its own, newer HDF5) of both formats: nested, compact
    and dense groups, a group of 300 names (a two-level B-tree in the
    earliest format), soft links, an external link, attributes, every
    layout and a named (committed) datatype open and read as h5py reads
    them: the pre-check refuses none of them."""
    fn, other = str(tmp_path / "valid.h5"), str(tmp_path / "other.h5")
    v = np.arange(120, dtype="<i4").reshape(40, 3)
    with h5py.File(other, "w") as f:
        f["x"] = v + 1
    with h5py.File(fn, "w", libver=libver) as f:
        # (filtered only in the earliest format: h5py's HDF5 writes filtered layout-4 chunks 1.10 cannot open)
        f.create_dataset("g1/g2/chunked", data=v, chunks=(7, 3),
                         **({"compression": "gzip", "shuffle": True} if libver == "earliest" else {}))
        f.create_dataset("contig", data=v)
        f["contig"].attrs["a"] = np.arange(50)
        for i in range(300):
            f.create_dataset("many/d%03d" % ((i * 37) % 300), data=v[:2])
        f["soft"] = h5py.SoftLink("/g1/g2/chunked")
        f["g1/rel"] = h5py.SoftLink("g2/chunked")
        f["ext"] = h5py.ExternalLink(other, "/x")
        f["named_t"] = np.dtype([("a", "<i4"), ("b", "<f8")])
        f.create_dataset("named", data=np.zeros(10, dtype=f["named_t"].dtype), dtype=f["named_t"])
        f.create_dataset("fill", shape=(30,), dtype="<f8", chunks=(4,), fillvalue=2.5)
    with h5py.File(fn, "r") as f:
        # (a committed type in the latest format is one HDF5 1.10.8 cannot open, pre-check or not)
        for path in ("g1/g2/chunked", "contig", "many/d000", "many/d150", "many/d299", "soft", "g1/rel", "ext",
                     "fill", "/g1/./g2//chunked") + (("named",) if libver == "earliest" else ()):
            want = f[path][()]
            got = read_all(fn, path)
            assert got.tobytes() == np.ascontiguousarray(want).tobytes(), path


def test_precheck_refuses_a_damaged_group_heap(tmp_path):
    """The root group's local heap data address undefined (fuzz seed 9 case
    4861): HDF5 1.10.8 crashes looking the dataset up. Refused before
    H5Fopen with OSError (EIO) naming the file, the dataset and the heap."""
    fn = hf.write_chunked(str(tmp_path / "heap.h5"))
    raw = open(fn, "rb").read()
    at = hf.find_unique(raw, b"HEAP", "local heap")
    hf.patch(fn, at + 24, b"\xff" * 8)
    with pytest.raises(OSError) as exc:
        multiload.Reader(fn, n_procs=2).get_dataset("d")
    assert exc.value.errno == errno.EIO
    msg = str(exc.value)
    assert "the file is damaged" in msg and "local heap" in msg and fn in msg and "'d'" in msg, msg


def test_fill_time_is_honoured(tmp_path):
    """HDF5 fills never-written rows only at fill time "alloc" or "ifset":
    at "never" it leaves them as its buffer held them (undefined: refused,
    naming the file), and at a fill time it does not know (a damaged fill
    message, fuzz seed 8 case 6940) it writes zeros, not the fill value."""
    fn = str(tmp_path / "ft.h5")
    with h5py.File(fn, "w") as f:
        for name, when in (("never", h5py.h5d.FILL_TIME_NEVER), ("ifset", h5py.h5d.FILL_TIME_IFSET)):
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_chunk((10,))
            dcpl.set_fill_value(np.array(2.5, dtype="<f4"))
            dcpl.set_fill_time(when)
            ds = h5py.h5d.create(f.id, name.encode(), h5py.h5t.IEEE_F32LE, h5py.h5s.create_simple((40,)), dcpl=dcpl)
            fsel = ds.get_space()
            fsel.select_hyperslab((0,), (10,))
            ds.write(h5py.h5s.create_simple((10,)), fsel, np.arange(10, dtype="<f4"))
    r = multiload.Reader(fn, n_procs=2)
    try:
        ds = r.get_dataset("never")
        assert r.read(ds[0:10]).tolist() == list(range(10))
        with pytest.raises(OSError) as exc:
            r.read(ds[10:20])
        assert fn in str(exc.value), str(exc.value)
        ds = r.get_dataset("ifset")
        assert r.read(ds[10:20]).tolist() == [2.5] * 10
    finally:
        r.close()
