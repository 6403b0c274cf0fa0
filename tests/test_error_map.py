"""The exception each core error code becomes (src/python/errors.c).

Walks every code of the core's one error table (src/error.h ML_ERRNO_MAP,
read back through _core._error_codes()) and the errno range, and pins the
class, args, errno, message and filename users get. Written against the
binding before the error table carried the Python classes, so it pins that
behaviour: a new code must be added here with the class it maps to.
"""

import errno

import numpy as np
import pytest

import multiload
from multiload import _core
from multiload._signals import OutOfMemoryError

pytestmark = pytest.mark.timeout(60)

# name -> the class users get, and whether it is an OSError(errno, msg,
# filename) (True: with EIO) or a class built from the message alone.
EXPECTED = {
    "ML_EHDF5": (OSError, errno.EIO),
    "ML_ENOTHDF5": (OSError, None),
    "ML_ENOTFOUND": (KeyError, None),
    "ML_ENOTDSET": (TypeError, None),
    "ML_ETYPE": (TypeError, None),
    "ML_ESHAPE": (TypeError, None),
    "ML_ECORRUPT": (OSError, errno.EIO),
    "ML_ECHECKSUM": (OSError, errno.EIO),
    "ML_ETRUNC": (OSError, errno.EIO),
    "ML_ECLOSED": (RuntimeError, None),
    "ML_EEND": (RuntimeError, None),
    "ML_EDEADLOCK": (RuntimeError, None),
    "ML_EFILTER": (OSError, errno.EIO),
    "ML_EINVAL": (ValueError, None),
}

TABLE = _core._error_codes()


def raised(code, msg="", filename=None):
    with pytest.raises(BaseException) as ei:
        _core._raise_error(code, msg, filename)
    return ei.value


def test_table_is_pinned_whole():
    names = [name for name, _, _ in TABLE]
    assert sorted(names) == sorted(EXPECTED)
    values = [value for _, value, _ in TABLE]
    assert len(set(values)) == len(values)
    assert all(v > 4095 for v in values)  # far from any errno


@pytest.mark.parametrize("name,value,message", TABLE, ids=[t[0] for t in TABLE])
@pytest.mark.parametrize("msg", ["", "dataset '/x' of file 'f.h5': detail"])
@pytest.mark.parametrize("filename", [None, "/tmp/f.h5"])
def test_core_code(name, value, message, msg, filename):
    cls, eno = EXPECTED[name]
    e = raised(-value, msg, filename)
    text = msg or message  # an empty detail falls back to the table's message
    assert type(e) is cls
    if eno is None:
        assert e.args == (text,)
        if cls is OSError:
            assert e.errno is None and e.filename is None
    else:
        assert e.errno == eno and e.strerror == text and e.filename == filename
        assert e.args == (eno, text)


@pytest.mark.parametrize("eno,cls", [
    (errno.ENOENT, FileNotFoundError), (errno.EACCES, PermissionError), (errno.EIO, OSError),
    (errno.EISDIR, IsADirectoryError), (errno.ECANCELED, OSError), (errno.EINVAL, OSError),
    (errno.ENOSPC, OSError), (errno.EAGAIN, BlockingIOError), (4095, OSError),
])
@pytest.mark.parametrize("msg", ["", "reading 'x' failed"])
@pytest.mark.parametrize("filename", [None, "/tmp/f.h5"])
def test_errno_code(eno, cls, msg, filename):
    e = raised(-eno, msg, filename)
    assert type(e) is cls
    assert e.errno == eno and e.filename == filename
    if msg:
        assert e.strerror == msg
    else:
        assert e.strerror  # strerror(eno), the C library's words
        assert e.strerror != msg


@pytest.mark.parametrize("msg", ["", "no memory for 8 GiB of read-ahead"])
@pytest.mark.parametrize("filename", [None, "/tmp/f.h5"])
def test_enomem(msg, filename):
    e = raised(-errno.ENOMEM, msg, filename)
    assert type(e) is OutOfMemoryError
    assert isinstance(e, MemoryError) and isinstance(e, OSError)
    assert e.errno == errno.ENOMEM and e.filename == filename
    assert e.strerror == (msg or "Cannot allocate memory")


@pytest.mark.parametrize("code", [0, 1, 10000, -20000, -10000, -10015, 2**31 - 1, -2**31 + 1])
def test_no_such_code(code):
    e = raised(code, "detail")
    assert type(e) is RuntimeError and e.args == ("detail",)
    e = raised(code)
    assert type(e) is RuntimeError
    assert e.args == (("success" if code == 0 else "unknown error"),)


# ---- codes that surface differently at a particular call (ReaderCore.submit)

@pytest.fixture
def layout(tmp_path):
    h5py = pytest.importorskip("h5py")
    fn = str(tmp_path / "e.h5")
    with h5py.File(fn, "w") as f:
        f["x"] = np.arange(40, dtype="<i4").reshape(10, 4)
    return _core.Layout(fn, "x")


def submit(core, layout, row0=0, n=1, dest=None):
    dest = np.zeros(16, np.uint8) if dest is None else dest
    return core.submit(layout, rows=None, row0=row0, n=n, dest=dest)


def test_submit_to_closed_reader(layout):
    core = _core.ReaderCore(n_workers=1)
    assert core.shutdown(True, 5.0)
    with pytest.raises(RuntimeError) as ei:
        submit(core, layout)
    assert type(ei.value) is RuntimeError
    assert ei.value.args == ("Attempt to request data from a closed reader.",)


def test_submit_out_of_range_is_index_error(layout):
    core = _core.ReaderCore(n_workers=1)
    try:
        with pytest.raises(IndexError) as ei:
            submit(core, layout, row0=9, n=2)
        assert type(ei.value) is IndexError
        assert len(ei.value.args) == 1 and ei.value.args[0]  # the core's detail
        with pytest.raises(IndexError):
            submit(core, layout, n=1, dest=np.zeros(3, np.uint8))  # too small a dest
    finally:
        core.shutdown(False, 5.0)


def test_layout_open_errors(tmp_path, layout):
    with pytest.raises(FileNotFoundError) as ei:
        _core.Layout(str(tmp_path / "missing.h5"), "x")
    assert ei.value.errno == errno.ENOENT and ei.value.filename == str(tmp_path / "missing.h5")
    with pytest.raises(KeyError):
        _core.Layout(layout_file(tmp_path), "nope")


def layout_file(tmp_path):
    return str(tmp_path / "e.h5")
