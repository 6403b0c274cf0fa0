"""Bad input (issue 3, "Bad input"): each case raises the right exception
type with a message that names the file, the dataset and what is wrong."""

import errno
import warnings
import os

import h5py
import numpy as np
import pytest

import multiload
from h5files import GET_TIMEOUT, N, assert_same

pytestmark = pytest.mark.timeout(60)


def test_missing_file(tmp_path):
    fn = str(tmp_path / "nope.h5")
    s = multiload.Streamer(fn)  # like multitables, the file is opened per queue
    with pytest.raises(FileNotFoundError) as e:
        s.get_queue("/x")
    assert e.value.errno == errno.ENOENT
    assert e.value.filename == fn
    assert "nope.h5" in str(e.value)
    with pytest.raises(FileNotFoundError):
        s.get_remainder("/x", 10)
    with pytest.raises(FileNotFoundError):
        next(s.get_generator("/x"))


@pytest.mark.parametrize("content,what", [
    (b"", "not an HDF5 file"),
    (b"hello, not HDF5\n" * 100, "not an HDF5 file"),
    (b"\x89HDF\r\n\x1a\n", "HDF5 cannot open"),  # a signature and nothing after it
])
def test_not_hdf5(tmp_path, content, what):
    fn = tmp_path / "text.h5"
    fn.write_bytes(content)
    with pytest.raises(OSError, match=what) as e:
        multiload.Streamer(str(fn)).get_queue("/x")
    assert "text.h5" in str(e.value)
    assert not isinstance(e.value, FileNotFoundError)


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(IsADirectoryError, match="directory"):
        multiload.Streamer(str(tmp_path)).get_queue("/x")


@pytest.mark.parametrize("path", ["/missing", "/group/missing", "nope/deeper", "/dangling"])
def test_missing_path(bad_file, path):
    with pytest.raises(KeyError) as e:
        multiload.Streamer(bad_file).get_queue(path)
    msg = str(e.value)
    assert path in msg and "bad.h5" in msg
    with pytest.raises(KeyError, match=path):
        multiload.Streamer(bad_file).get_remainder(path, 10)


def test_path_must_be_a_string(bad_file):
    with pytest.raises(TypeError, match="str"):
        multiload.Streamer(bad_file).get_queue(42)


@pytest.mark.parametrize("path", ["/group", "/group/sub", "/"])
def test_group(bad_file, path):
    with pytest.raises(TypeError, match="group") as e:
        multiload.Streamer(bad_file).get_queue(path)
    assert path in str(e.value) and "bad.h5" in str(e.value)


BAD_COUNTS = [0, -1, 1.5, 2.0, True, False, "2", b"2", np.float64(2.0), [2]]


@pytest.mark.parametrize("value", BAD_COUNTS, ids=repr)
@pytest.mark.parametrize("arg", ["n_procs", "read_ahead", "block_size"])
def test_bad_counts(bad_file, arg, value):
    s = multiload.Streamer(bad_file)
    with pytest.raises(ValueError, match=arg):
        s.get_queue("/ok", **{arg: value})
    with pytest.raises(ValueError, match=arg):
        next(s.get_generator("/ok", **{arg: value}))
    if arg == "block_size":
        with pytest.raises(ValueError, match=arg):
            s.get_remainder("/ok", value)


@pytest.mark.parametrize("arg", ["n_procs", "read_ahead", "block_size"])
def test_numpy_integers_are_fine(bad_file, arg):
    q = multiload.Streamer(bad_file).get_queue("/ok", ordered=True, **{arg: np.int64(3)})
    blocks = [g.array.copy() for g in q]
    with h5py.File(bad_file, "r") as f:
        np.testing.assert_array_equal(np.concatenate(blocks), f["ok"][:sum(len(b) for b in blocks)])


@pytest.mark.parametrize("path,shape", [("/empty", (0,)), ("/empty_chunked", (0, 3))])
@pytest.mark.parametrize("cyclic", [False, True])
def test_zero_rows_gives_a_closed_queue(bad_file, path, shape, cyclic):
    s = multiload.Streamer(bad_file)
    q = s.get_queue(path, cyclic=cyclic, n_procs=2, block_size=10)
    assert q.get(timeout=GET_TIMEOUT) is multiload.QueueClosed
    assert q.get() is multiload.QueueClosed
    assert list(q) == []
    assert q.n_blocks in (0, None)
    assert q.n_blocks == 0
    q.close()
    assert list(s.get_generator(path, cyclic=cyclic)) == []
    with h5py.File(bad_file, "r") as f:
        want = f[path][:]
    assert_same(s.get_remainder(path, 10), want)
    assert want.shape == shape


@pytest.mark.parametrize("path,what", [
    ("/vlen_str", "variable-length string"),
    ("/vlen_int", "variable-length"),
    ("/refs", "reference"),
    ("/opaque", "opaque"),
    ("/compound_vlen", "variable-length string"),
    ("/scalar", "scalar"),
])
def test_unsupported_type(bad_file, path, what):
    with pytest.raises(TypeError, match=what) as e:
        multiload.Streamer(bad_file).get_queue(path)
    assert path.lstrip("/") in str(e.value) and "bad.h5" in str(e.value)


@pytest.mark.parametrize("path,native", [("/blosc2", False), ("/bzip2", True)])
def test_pytables_blosc2_and_bzip2(bad_file, path, native):
    """PyTables' blosc2 and bzip2 are in no system HDF5: bzip2 is decoded
    natively, blosc2 through HDF5 with hdf5plugin's plugin, which the core
    finds by itself (SlowPathWarning). A filter nobody can decode is refused
    up front naming it and its package: test_filters_plugins.py, in a child
    process with HDF5's plugins disabled."""
    import tables
    with tables.open_file(bad_file) as h:
        ref = h.get_node(path).read()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with multiload.Streamer(bad_file).get_queue(path, ordered=True, remainder=True, block_size=16) as q:
            got = np.concatenate([g.array.copy() for g in q])
    assert got.tobytes() == ref.tobytes()
    slow = [w for w in caught if issubclass(w.category, multiload.SlowPathWarning)]
    assert bool(slow) is not native


@pytest.mark.parametrize("field", ["nope", "A", ""])
def test_bad_field(files, field):
    s = multiload.Streamer(files["api"])
    with pytest.raises(KeyError, match=repr(field)) as e:
        s.get_queue("/table", field=field)
    assert "/table" in str(e.value)
    with pytest.raises(KeyError, match="nope"):
        s.get_remainder("/table", 10, field="nope")
    with pytest.raises(KeyError, match="nope"):
        next(s.get_generator("/table", field="nope"))


def test_field_of_a_plain_dataset(files):
    with pytest.raises(KeyError, match="not a table"):
        multiload.Streamer(files["api"]).get_queue("/seq", field="a")


# ------------------------------------------------------------ damaged data

def _corrupt_chunk(fn, path, index, at=0):
    """Flip bytes in the middle of chunk `index` of a chunked dataset."""
    with h5py.File(fn, "r") as f:
        info = f[path].id.get_chunk_info(index)
    with open(fn, "r+b") as fh:
        pos = info.byte_offset + at + info.size // 2
        fh.seek(pos)
        old = fh.read(4)
        fh.seek(pos)
        fh.write(bytes(b ^ 0x5A for b in old))


@pytest.fixture
def damaged(tmp_path):
    fn = str(tmp_path / "damaged.h5")
    data = np.arange(N * 2, dtype="<i4").reshape(N, 2)
    with h5py.File(fn, "w") as f:
        f.create_dataset("fletcher", data=data, chunks=(50, 2), fletcher32=True)
        f.create_dataset("deflate", data=data, chunks=(50, 2), compression="gzip")
    _corrupt_chunk(fn, "fletcher", 3)
    _corrupt_chunk(fn, "deflate", 5)
    return fn, data


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("path,bad_block,what", [("fletcher", 3, "checksum"),
                                                  ("deflate", 5, "decode")])
def test_damaged_chunk_reaches_get(damaged, ordered, path, bad_block, what):
    """The error travels with its block to get() as OSError naming the file,
    dataset and block; every other block still arrives intact."""
    fn, data = damaged
    q = multiload.Streamer(fn).get_queue(path, n_procs=2, block_size=50, ordered=ordered)
    good, errors = {}, []
    while True:
        try:
            g = q.get(timeout=GET_TIMEOUT)
        except OSError as e:
            errors.append(e)
            continue
        if g is multiload.QueueClosed:
            break
        with g as block:
            good[g.index] = block.copy()
    assert len(errors) == 1
    e = errors[0]
    assert e.errno == errno.EIO
    assert e.filename == fn
    msg = str(e)
    assert f"block {bad_block}" in msg and path in msg and what in msg
    assert sorted(good) == [k for k in range(N // 50) if k != bad_block]
    for k, block in good.items():
        assert_same(block, data[k * 50:(k + 1) * 50])
    st = q.stats()
    assert st["errors"] == 1 and st["blocks"] == N // 50


def test_truncated_file(tmp_path):
    fn = str(tmp_path / "trunc.h5")
    with h5py.File(fn, "w") as f:
        f.create_dataset("x", data=np.arange(100000, dtype="<f8"))
        offset = f["x"].id.get_offset()
    os.truncate(fn, offset + 1000)
    with pytest.raises(OSError) as e:
        q = multiload.Streamer(fn).get_queue("x", block_size=10000, n_procs=2, ordered=True)
        for g in q:
            g.release()
    assert "trunc.h5" in str(e.value)
