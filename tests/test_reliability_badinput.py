"""Bad-input corpus: every case is a test with its expected exception and a
check of its message. Files that cannot be streamed, objects that are not
datasets, types that cannot be read byte-exactly, invalid arguments, and
files that change under an open queue."""

import errno
import os
import shutil
import tempfile

import h5py
import numpy as np
import pytest

import multiload
import reliability_files as rf
from reliability_files import BLOCK, N

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """Directory with data.h5 (good datasets), bad.h5 (objects that cannot
    be streamed) and a few files that are not HDF5 at all."""
    p = tmp_path_factory.mktemp("badinput")
    data = rf.write_data_file(str(p / "data.h5"))
    with h5py.File(p / "bad.h5", "w") as f:
        f.create_group("group/sub")
        f.create_dataset("empty", shape=(0,), dtype="<f4")
        f.create_dataset("empty_chunked", shape=(0, 3), dtype="<i4", chunks=(8, 3), maxshape=(None, 3))
        f.create_dataset("scalar", data=np.float64(3.5))
        f.create_dataset("nullspace", data=h5py.Empty("f4"))
        f.create_dataset("vlen_str", data=["a", "bb", "ccc"], dtype=h5py.string_dtype())
        f.create_dataset("vlen_int", shape=(3,), dtype=h5py.vlen_dtype(np.int32))
        refs = f.create_dataset("refs", shape=(2,), dtype=h5py.ref_dtype)
        refs[0] = f["scalar"].ref
        f.create_dataset("ok", data=np.arange(10, dtype="<i4"))
        rr = f.create_dataset("regrefs", shape=(2,), dtype=h5py.regionref_dtype)
        rr[0] = f["ok"].regionref[2:5]
        f.create_dataset("opaque", data=np.zeros(4, dtype="V8"))
        f.create_dataset("compound_vlen", shape=(3,), dtype=np.dtype([("a", "<i4"), ("s", h5py.string_dtype())]))
        f["named_type"] = np.dtype("<i4")
        f["dangling"] = h5py.SoftLink("/nowhere")
        f["ext_missing_file"] = h5py.ExternalLink(str(p / "no_such_file.h5"), "/contig")
        f["ext_missing_path"] = h5py.ExternalLink(data, "/no_such_dataset")
        f["ext_ok"] = h5py.ExternalLink(data, "/gz")
    (p / "empty.h5").write_bytes(b"")
    (p / "text.h5").write_text("this is not an HDF5 file\n" * 100)
    import tables  # blosc2 is in no system HDF5: read through hdf5plugin (test below)
    with tables.open_file(str(p / "bad.h5"), "a") as h:
        h.create_carray("/", "blosc2", obj=np.arange(1000, dtype="<f4"),
                        filters=tables.Filters(5, "blosc2"), chunkshape=(64,))
    (p / "random.h5").write_bytes(np.random.default_rng(0).integers(0, 256, 10000, dtype=np.uint8).tobytes())
    sig = bytearray(open(data, "rb").read())
    sig[1:4] = b"XYZ"  # the signature
    (p / "badsig.h5").write_bytes(bytes(sig))
    sb = bytearray(open(data, "rb").read())
    sb[8] = 77  # superblock version no library knows
    (p / "badsbver.h5").write_bytes(bytes(sb))
    root = bytearray(open(data, "rb").read())
    root[64:96] = b"\xff" * 32  # version-0 superblock: root group symbol table entry
    (p / "badroot.h5").write_bytes(bytes(root))
    return p


def fn(d, name):
    return str(d / name)


def expect(exc, pattern, filename, path, **kw):
    with pytest.raises(exc, match=pattern) as ei:
        q = multiload.Streamer(filename).get_queue(path, **kw)
        q.close()
    return ei.value


# ---------------------------------------------------------------- files

def test_missing_file(d):
    e = expect(FileNotFoundError, "No such file", fn(d, "nope.h5"), "/contig")
    assert e.errno == errno.ENOENT and e.filename == fn(d, "nope.h5")


def test_missing_directory_in_path(d):
    e = expect(FileNotFoundError, "No such file", fn(d, "nodir/x.h5"), "/contig")
    assert e.errno == errno.ENOENT


def test_directory(d):
    e = expect(IsADirectoryError, "is a directory", str(d), "/contig")
    assert e.errno == errno.EISDIR


def test_empty_file(d):
    expect(OSError, r"empty\.h5' is not an HDF5 file", fn(d, "empty.h5"), "/x")


def test_text_file(d):
    expect(OSError, r"text\.h5' is not an HDF5 file", fn(d, "text.h5"), "/x")


def test_random_bytes(d):
    expect(OSError, r"random\.h5' is not an HDF5 file", fn(d, "random.h5"), "/x")


def test_superblock_signature_damaged(d):
    expect(OSError, r"badsig\.h5' is not an HDF5 file", fn(d, "badsig.h5"), "/contig")


def test_superblock_version_damaged(d):
    expect(OSError, r"(HDF5 cannot open|is not an HDF5 file).*badsbver\.h5|badsbver\.h5.*(damaged|not an HDF5)",
           fn(d, "badsbver.h5"), "/contig")


def test_root_group_damaged(d):
    expect(OSError, r"HDF5 cannot open '.*badroot\.h5' \(damaged", fn(d, "badroot.h5"), "/contig")


def test_filename_not_a_path(d):
    with pytest.raises(TypeError):
        multiload.Streamer(None)
    with pytest.raises(TypeError):
        multiload.Streamer(42)


def test_no_read_permission(d):
    """As a non-root user (uid/gid 65534 'nobody', in a forked child, since
    root bypasses permissions): PermissionError naming the file."""
    tmp = tempfile.mkdtemp(prefix="multiload-perm-")
    try:
        os.chmod(tmp, 0o755)
        target = os.path.join(tmp, "secret.h5")
        shutil.copy(fn(d, "data.h5"), target)
        os.chmod(target, 0o200)  # write-only: no read permission
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: drop to nobody, try to open, report, _exit
            code = 3
            try:
                os.close(r)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                try:
                    multiload.Streamer(target).get_queue("/contig")
                    msg = b"opened"
                except PermissionError as e:
                    msg = f"PermissionError {e.errno} {e}".encode()
                except BaseException as e:  # noqa: BLE001 - reported to the parent
                    msg = f"{type(e).__name__} {e}".encode()
                os.write(w, msg)
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        out = b""
        while chunk := os.read(r, 4096):
            out += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        msg = out.decode()
        assert msg.startswith(f"PermissionError {errno.EACCES} "), msg
        assert "Permission denied" in msg and "secret.h5" in msg, msg
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- objects

@pytest.mark.parametrize("path,exc,pattern", [
    ("/no_such_dataset", KeyError, r"no dataset '/no_such_dataset' in file '.*bad\.h5'"),
    ("group/nope", KeyError, r"no dataset 'group/nope'"),
    ("ok/deeper", KeyError, r"no dataset 'ok/deeper'"),
    ("", KeyError, r"no dataset ''"),
    ("/group", TypeError, r"'/group' in file '.*' is a group, not a dataset"),
    ("/group/sub", TypeError, r"is a group, not a dataset"),
    ("/", TypeError, r"'/' in file .* is a group"),
    ("named_type", TypeError, r"is a named datatype, not a dataset"),
    ("dangling", KeyError, r"no dataset 'dangling' .*dangling link"),
    ("ext_missing_file", KeyError, r"no dataset 'ext_missing_file' .*dangling link"),
    ("ext_missing_path", KeyError, r"no dataset 'ext_missing_path'"),
    ("scalar", TypeError, r"dataset 'scalar' .* is scalar or empty-typed and has no rows"),
    ("nullspace", TypeError, r"dataset 'nullspace' .* is scalar or empty-typed"),
    ("vlen_str", TypeError, r"unsupported datatype: variable-length string in dataset 'vlen_str'"),
    ("vlen_int", TypeError, r"unsupported datatype: variable-length sequence in dataset 'vlen_int'"),
    ("refs", TypeError, r"unsupported datatype: object/region reference in dataset 'refs'"),
    ("regrefs", TypeError, r"unsupported datatype: object/region reference in dataset 'regrefs'"),
    ("opaque", TypeError, r"unsupported datatype: opaque in dataset 'opaque'"),
    ("compound_vlen", TypeError, r"unsupported datatype: variable-length string in dataset 'compound_vlen'"),
])
def test_object(d, path, exc, pattern):
    e = expect(exc, pattern, fn(d, "bad.h5"), path)
    if exc is OSError:
        assert e.errno == errno.EIO


@pytest.mark.parametrize("path", ["empty", "empty_chunked"])
def test_zero_length_dataset_is_an_empty_stream(d, path):
    q = multiload.Streamer(fn(d, "bad.h5")).get_queue(path)
    assert q.n_blocks == 0
    assert q.get(timeout=rf.GET_TIMEOUT) is multiload.QueueClosed
    q.close()


def test_external_link_reads_the_linked_file(d):
    """Through an external link the data comes from the file it links to
    (a bug read the linking file at the target's offsets)."""
    q = multiload.Streamer(fn(d, "bad.h5")).get_queue("ext_ok", block_size=BLOCK, n_procs=2)
    with q:
        blocks, errors = rf.drain(q)
    assert errors == [] and len(blocks) == N // BLOCK
    rf.check_blocks(blocks, rf.values())


@pytest.mark.parametrize("path", [5, None, b"/contig", ["/contig"]])
def test_path_not_a_string(d, path):
    with pytest.raises(TypeError, match="path must be a str"):
        multiload.Streamer(fn(d, "data.h5")).get_queue(path)


def test_path_with_nul(d):
    with pytest.raises(ValueError, match="null"):
        multiload.Streamer(fn(d, "data.h5")).get_queue("/con\0tig")


# ---------------------------------------------------------------- arguments

@pytest.mark.parametrize("kw,pattern", [
    ({"n_procs": 0}, "n_procs must be a positive integer, got 0"),
    ({"n_procs": -1}, "n_procs must be a positive integer, got -1"),
    ({"n_procs": 1.5}, "n_procs must be a positive integer, got 1.5"),
    ({"n_procs": "2"}, "n_procs must be a positive integer, got '2'"),
    ({"n_procs": True}, "n_procs must be a positive integer, got True"),
    ({"n_procs": 2**32 + 1}, "n_procs must be at most 4294967295"),
    ({"read_ahead": 0}, "read_ahead must be a positive integer, got 0"),
    ({"read_ahead": -3}, "read_ahead must be a positive integer"),
    ({"read_ahead": 2.0}, "read_ahead must be a positive integer, got 2.0"),
    ({"read_ahead": 2**32}, "read_ahead must be at most 4294967295"),
    ({"block_size": 0}, "block_size must be a positive integer, got 0"),
    ({"block_size": -100}, "block_size must be a positive integer, got -100"),
    ({"block_size": "100"}, "block_size must be a positive integer, got '100'"),
    ({"block_size": np.float64(10)}, "block_size must be a positive integer"),
    ({"io_mode": "bogus"}, "io_mode must be 'io_uring' or 'pread', got 'bogus'"),
])
def test_invalid_argument(d, kw, pattern):
    expect(ValueError, pattern, fn(d, "data.h5"), "/contig", **kw)


def test_numpy_integers_are_accepted(d):
    q = multiload.Streamer(fn(d, "data.h5")).get_queue("/contig", n_procs=np.int64(2), read_ahead=np.uint8(3),
                                                       block_size=np.int32(BLOCK))
    with q:
        blocks, errors = rf.drain(q)
    assert errors == [] and len(blocks) == N // BLOCK


def test_block_size_larger_than_dataset_shrinks(d):
    q = multiload.Streamer(fn(d, "data.h5")).get_queue("/contig", block_size=2**70)
    with q:
        assert q.block_size == N
        blocks, errors = rf.drain(q)
    assert errors == [] and list(blocks) == [0]
    rf.check_blocks(blocks, rf.values(), block_size=N)


def test_huge_read_ahead_is_memory_error(d):
    e = expect(MemoryError, r"cannot allocate \d+ slots of \d+ bytes for dataset '/contig'", fn(d, "data.h5"),
               "/contig", read_ahead=2**32 - 1, block_size=N)
    assert "slots" in str(e)


@pytest.mark.parametrize("field,pattern", [
    ("nope", r"dataset 'table' of file .* has no field 'nope' \(fields: a, b\)"),
    ("A", r"has no field 'A'"),
])
def test_wrong_field(d, field, pattern):
    expect(KeyError, pattern, fn(d, "data.h5"), "table", field=field)


def test_field_of_a_non_table(d):
    expect(KeyError, r"has no field 'a' \(it is not a table\)", fn(d, "data.h5"), "contig", field="a")


@pytest.mark.parametrize("timeout,exc,pattern", [
    (-1, ValueError, "timeout must be a non-negative number or None"),
    ("1", TypeError, "must be real number"),
    ([], TypeError, "must be real number"),
])
def test_invalid_timeout(d, timeout, exc, pattern):
    q = multiload.Streamer(fn(d, "data.h5")).get_queue("/contig", block_size=BLOCK)
    with q:
        with pytest.raises(exc, match=pattern):
            q.get(timeout=timeout)
        assert q.get(timeout=rf.GET_TIMEOUT) is not multiload.QueueClosed  # still usable


def test_get_remainder_invalid_block_size(d):
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        multiload.Streamer(fn(d, "data.h5")).get_remainder("/contig", block_size=0)


# ---------------------------------------------------------------- files changing under a queue

@pytest.fixture
def own_copy(d, tmp_path):
    target = str(tmp_path / "live.h5")
    shutil.copy(fn(d, "data.h5"), target)
    return target


@pytest.mark.parametrize("path", ["contig", "gz"])
def test_file_deleted_while_open(own_copy, path):
    q = multiload.Streamer(own_copy).get_queue(path, n_procs=3, block_size=BLOCK)
    os.unlink(own_copy)
    with q:
        blocks, errors = rf.drain(q)
    assert errors == [] and len(blocks) == N // BLOCK
    rf.check_blocks(blocks, rf.values())


@pytest.mark.parametrize("path", ["contig", "gz"])
def test_file_replaced_while_open(own_copy, tmp_path, path):
    """Renaming another file over an open one: the queue keeps reading the
    file it opened (a bug read the new file's bytes at the old offsets)."""
    other = str(tmp_path / "other.h5")
    with h5py.File(other, "w") as f:
        f.create_dataset("pad", data=np.full(5000, 7, dtype="<i8"))
        f.create_dataset(path, data=-rf.values(), chunks=(rf.CHUNK, rf.COLS) if path == "gz" else None)
    q = multiload.Streamer(own_copy).get_queue(path, n_procs=3, block_size=BLOCK)
    os.replace(other, own_copy)
    with q:
        blocks, errors = rf.drain(q)
    assert errors == [] and len(blocks) == N // BLOCK
    rf.check_blocks(blocks, rf.values())
    # a new queue sees the new file
    q2 = multiload.Streamer(own_copy).get_queue(path, block_size=BLOCK)
    with q2:
        blocks2, errors2 = rf.drain(q2)
    assert errors2 == []
    rf.check_blocks(blocks2, -rf.values())


def test_file_truncated_while_open(own_copy):
    """Cut under an open queue: the blocks already read are exact, the later
    ones raise OSError naming them; never wrong data."""
    with h5py.File(own_copy, "r") as f:
        off = f["contig"].id.get_offset()
    q = multiload.Streamer(own_copy).get_queue("contig", n_procs=1, read_ahead=1, block_size=BLOCK, ordered=True)
    with q:
        with q.get(timeout=rf.GET_TIMEOUT) as first:
            assert np.array_equal(first, rf.values()[:BLOCK])
            os.truncate(own_copy, off + 5 * BLOCK * rf.COLS * 4)
        blocks, errors = rf.drain(q)
    rf.check_blocks(blocks, rf.values())
    bad = sorted(rf.block_of(e) for e in errors)
    assert errors and all(isinstance(e, OSError) and e.errno == errno.EIO for e in errors)
    assert "truncated" in str(errors[0]) and "'contig'" in str(errors[0])
    assert sorted(bad + list(blocks)) == list(range(1, N // BLOCK))
    assert max(blocks) < min(bad)



# ---------------------------------------------------------------- the Reader

@pytest.fixture(scope="module")
def reader(d):
    r = multiload.Reader(fn(d, "data.h5"), n_procs=2)
    yield r
    r.stop()


def _reader_case(r, case):
    a, t = r.get_dataset("contig"), r.get_dataset("table")
    st = a.create_stage(4)
    return {
        "stage too small": lambda: r.request(a[0:5], st),
        "table stage too small": lambda: r.request(t[0:9], t.create_stage(8)),
        "index past the end": lambda: r.request(a[N], st),
        "negative index past the start": lambda: r.request(a[-N - 1], st),
        "index list past the end": lambda: r.request(a[[0, N]], st),
        "float index": lambda: r.request(a[1.5], st),
        "dict index": lambda: r.request(a[{}], st),
        "field name on an array": lambda: r.request(a["x"], st),
        "two index arrays": lambda: r.request(a[:, [1, 2], [0, 1]], st),
        "wrong column": lambda: t["nope"],
        "wrong column through col()": lambda: t.col("nope"),
        "wrong column after rows": lambda: r.read(t[2:4]["nope"]),
        "stage shape with a None past the dataset's dimensions": lambda: a.create_stage((4, None, None)),
        "not a request": lambda: r.request(5, st),
        "missing dataset": lambda: r.get_dataset("/nope"),
        "n_procs 0": lambda: multiload.Reader(r._filename, n_procs=0),
    }[case]


@pytest.mark.parametrize("case,exc,pattern", [
    ("stage too small", multiload.SharedMemoryError,
     r"Stage is smaller than requested array: 64 < 80 .*dataset 'contig' of file '.*data.h5'"),
    ("table stage too small", multiload.SharedMemoryError, r"Stage is smaller than requested array: 96 < 108"),
    ("index past the end", IndexError, rf"index {N} is out of bounds for axis 0 with size {N} \(dataset 'contig'"),
    ("negative index past the start", IndexError, rf"index -{N + 1} is out of bounds for axis 0 with size {N}"),
    ("index list past the end", IndexError, rf"index {N} is out of bounds .*file '.*data.h5'"),
    ("float index", IndexError, r"only integers, slices .* are valid indices \(dataset 'contig'"),
    ("dict index", IndexError, r"only integers, slices .* are valid indices"),
    ("field name on an array", IndexError, r"field name 'x' on data without fields"),
    ("two index arrays", IndexError, r"only one index array is allowed per request"),
    ("wrong column", KeyError, r"column name 'nope' not in dataset 'table' \(columns: a, b\)"),
    ("wrong column through col()", KeyError, r"column name 'nope' not in dataset 'table'"),
    ("wrong column after rows", KeyError, r"column name 'nope'"),
    ("stage shape with a None past the dataset's dimensions", ValueError,
     r"stage dimension 2 is None, .* has 2 dimensions"),
    ("not a request", TypeError, r"a request is built by indexing a dataset"),
    ("missing dataset", KeyError, r"no dataset '/nope' in file '.*data.h5'"),
    ("n_procs 0", ValueError, r"n_procs must be a positive integer, got 0"),
])
def test_reader_bad_input(reader, case, exc, pattern):
    with pytest.raises(exc, match=pattern) as ei:
        _reader_case(reader, case)()
    if exc is KeyError and "column" in case:
        assert isinstance(ei.value, NameError)  # multitables raises NameError


def test_reader_closed(d):
    r = multiload.Reader(fn(d, "data.h5"), n_procs=1)
    a = r.get_dataset("contig")
    st = a.create_stage(4)
    r.close()
    with pytest.raises(RuntimeError, match="closed reader"):
        r.request(a[0], st)


def test_reader_busy_stage(reader):
    a = reader.get_dataset("contig")
    st = a.create_stage(4)
    fut = reader.request(a[0:4], st)
    with pytest.raises(RuntimeError, match="contig"):
        reader.request(a[4:8], st)
    np.testing.assert_array_equal(fut.get(), rf.values()[0:4])


def test_pytables_blosc2_reads_through_hdf5plugin(d):
    """PyTables' blosc2 is in no system HDF5: it reads through HDF5 with
    hdf5plugin's plugin, found by the core itself, exactly as PyTables reads
    it (a filter nobody can decode: test_filters_plugins.py)."""
    import tables
    import warnings
    with tables.open_file(fn(d, "bad.h5")) as h:
        ref = h.root.blosc2.read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", multiload.SlowPathWarning)
        with multiload.Reader(fn(d, "bad.h5")) as r:
            got = r.read(r.get_dataset("/blosc2")[:])
    assert got.tobytes() == ref.tobytes()
