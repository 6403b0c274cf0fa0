"""The binding's calling conventions (src/python/): ReaderCore and submit()
take keywords only, io modes cross as the exported _core.IO_* codes, and
the user's io_mode strings map to them in one place (multiload/_io.py)
with the messages users have always seen."""

import numpy as np
import pytest

import multiload
from multiload import _core, _io

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    h5py = pytest.importorskip("h5py")
    fn = str(tmp_path_factory.mktemp("binding") / "b.h5")
    arr = np.arange(50 * 4, dtype="<i4").reshape(50, 4)
    with h5py.File(fn, "w") as f:
        f["x"] = arr
    return fn, arr


@pytest.fixture
def core():
    c = _core.ReaderCore(n_workers=2)
    yield c
    c.shutdown(False, 5.0)


def test_io_codes_are_the_cores():
    assert (_core.IO_AUTO, _core.IO_URING, _core.IO_PREAD) == (0, 1, 2)  # src/io.h ml_io_mode
    assert _io.IO_MODES == {None: _core.IO_AUTO, "auto": _core.IO_AUTO, "io_uring": _core.IO_URING,
                            "uring": _core.IO_URING, "pread": _core.IO_PREAD}
    assert _io.io_mode_code("pread", "x") == _core.IO_PREAD
    with pytest.raises(ValueError, match=r"^io_mode must be x, got 'disk'$"):
        _io.io_mode_code("disk", "x")


@pytest.mark.parametrize("bad", ["disk", 1, 0, True, "", "PREAD"])
def test_bad_io_mode_messages_unchanged(data, bad):
    fn, _ = data
    with pytest.raises(ValueError) as ei:
        multiload.Streamer(fn).get_queue("x", io_mode=bad)
    assert str(ei.value) == f"io_mode must be 'io_uring' or 'pread', got {bad!r}"
    with pytest.raises(ValueError) as ei:
        multiload.Reader(fn, io_mode=bad)
    assert str(ei.value) == f"io_mode must be 'io_uring', 'pread' or None, got {bad!r}"


def test_unhashable_io_mode_is_a_type_error(data):
    fn, _ = data
    with pytest.raises(TypeError):
        multiload.Streamer(fn).get_queue("x", io_mode=["pread"])
    with pytest.raises(TypeError):
        multiload.Reader(fn, io_mode=["pread"])


@pytest.mark.parametrize("mode", [None, "auto", "io_uring", "uring", "pread"])
def test_every_io_mode_reads(data, mode):
    fn, arr = data
    with multiload.Reader(fn, n_procs=1, io_mode=mode) as r:
        np.testing.assert_array_equal(r.read(r.get_dataset("x")[3:9]), arr[3:9])
    q = multiload.Streamer(fn).get_queue("x", block_size=10, n_procs=1, io_mode=mode, ordered=True)
    try:
        got = []
        for guard in q.iter():
            with guard as block:
                got.append(np.array(block))
    finally:
        q.close()
    np.testing.assert_array_equal(np.concatenate(got), arr)


def test_reader_core_takes_keywords_only():
    with pytest.raises(TypeError):
        _core.ReaderCore(1)
    with pytest.raises(TypeError, match="n_workers"):
        _core.ReaderCore()
    with pytest.raises(ValueError, match="n_workers must be >= 1"):
        _core.ReaderCore(n_workers=0)
    with pytest.raises(ValueError, match="io_mode"):
        _core.ReaderCore(n_workers=1, io_mode=7)
    c = _core.ReaderCore(n_workers=1, io_mode=_core.IO_PREAD, cache_bytes=1 << 20, inline_reads=True)
    assert c.shutdown(True, 5.0)


def test_submit_keywords(data, core):
    fn, arr = data
    lay = _core.Layout(fn, "x")
    dest = np.zeros((5, 4), "<i4")
    q = core.submit(lay, row0=10, n=5, dest=dest.view(np.uint8).reshape(-1))
    assert q.wait(10)
    q.check()
    np.testing.assert_array_equal(dest, arr[10:15])
    # rows, a column, and wrapped negative indices; keywords in any order
    col = np.zeros(3, "<i4")
    q = core.submit(lay, wrap=True, col_size=4, col_offset=8, dest=col.view(np.uint8),
                    rows=np.array([-1, 0, 7]), n=0, tag=5, notify=False)
    assert q.wait(10)
    q.check()
    np.testing.assert_array_equal(col, arr[[-1, 0, 7], 2])


def test_submit_notify_reports_tag(data, core):
    fn, arr = data
    lay = _core.Layout(fn, "x")
    dest = np.zeros(16, np.uint8)
    q = core.submit(lay, n=1, row0=2, dest=dest, tag=77, notify=True)
    assert q.wait(10)
    tags = []
    for _ in range(100):
        tags += core.pop_done(0.1)
        if tags:
            break
    assert tags == [77]
    np.testing.assert_array_equal(dest.view("<i4"), arr[2])


def test_submit_refuses_positional_and_unknown(data, core):
    fn, _ = data
    lay = _core.Layout(fn, "x")
    dest = np.zeros(16, np.uint8)
    with pytest.raises(TypeError, match="exactly 1 positional argument"):
        core.submit(lay, None, 0, 1, 0, 0, dest, 0, False)
    with pytest.raises(TypeError, match="exactly 1 positional argument"):
        core.submit(n=1, dest=dest)
    with pytest.raises(TypeError, match="unexpected keyword argument 'rowz'"):
        core.submit(lay, n=1, dest=dest, rowz=None)
    with pytest.raises(TypeError, match="missing required keyword argument 'n'"):
        core.submit(lay, dest=dest)
    with pytest.raises(TypeError, match="missing required keyword argument 'dest'"):
        core.submit(lay, n=1)
    with pytest.raises(TypeError):
        core.submit(lay, n="1", dest=dest)
    with pytest.raises(TypeError, match="needs a Layout"):
        core.submit(object(), n=1, dest=dest)
    with pytest.raises(IndexError):
        core.submit(lay, n=1, row0=50, dest=dest)


def test_layout_read_errors(data):
    fn, arr = data
    lay = _core.Layout(fn, "x")
    np.testing.assert_array_equal(lay.read(45, 50), arr[45:])
    assert lay.read(7, 7).shape == (0, 4)
    with pytest.raises(IndexError, match=r"rows 49\.\.51 outside dataset 'x' with 50 rows"):
        lay.read(49, 51)
    with pytest.raises(IndexError):
        lay.read(3, 2)
