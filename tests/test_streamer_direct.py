"""direct=True (O_DIRECT through an aligned bounce buffer) returns exactly
what h5py reads, for contiguous and chunked data, wrapped cyclic blocks,
rows that straddle 4 KiB boundaries, and both I/O engines."""

import os

import h5py
import numpy as np
import pytest

import multiload
from h5files import supports_o_direct

pytestmark = pytest.mark.timeout(60)



@pytest.fixture(scope="module")
def direct_file(tmp_path_factory):
    # Row size 3*37*2 = 222 bytes: rows straddle 4 KiB pages, offsets unaligned.
    fn = str(tmp_path_factory.mktemp("direct") / "d.h5")
    rng = np.random.default_rng(7)
    data = rng.integers(-2**15, 2**15, size=(1001, 3, 37), dtype="<i2")
    with h5py.File(fn, "w") as f:
        f.attrs["pad"] = np.arange(77)  # shift the data off any alignment
        f["contig"] = data
        f.create_dataset("chunked", data=data, chunks=(64, 3, 37))
        f.create_dataset("deflate", data=data, chunks=(50, 3, 10), compression="gzip", shuffle=True)
    return fn, data


@pytest.mark.parametrize("path", ["contig", "chunked", "deflate"])
@pytest.mark.parametrize("io_mode", ["io_uring", "pread"])
@pytest.mark.parametrize("cyclic", [False, True])
def test_direct_equals_h5py(direct_file, path, io_mode, cyclic):
    fn, data = direct_file
    if not supports_o_direct(fn):
        with pytest.raises(OSError, match="O_DIRECT"):
            multiload.Streamer(fn).get_queue(path, direct=True)
        return
    B = 97
    q = multiload.Streamer(fn).get_queue(path, n_procs=2, block_size=B, ordered=True, cyclic=cyclic,
                                         remainder=not cyclic, io_mode=io_mode, direct=True)
    with q:
        n_blocks = 3 * len(data) // B if cyclic else q.n_blocks
        for k in range(n_blocks):
            g = q.get(timeout=30)
            assert g is not multiload.QueueClosed
            rows = np.arange(k * B, k * B + B) % len(data) if cyclic else np.arange(k * B, min(k * B + B, len(data)))
            with g as block:
                assert block.dtype == data.dtype
                np.testing.assert_array_equal(block, data[rows])
        if not cyclic:
            assert q.get(timeout=30) is multiload.QueueClosed


def test_direct_refused_names_the_file(tmp_path):
    """Where O_DIRECT is refused (tmpfs), get_queue says so at once."""
    fn = "/dev/shm/multiload-direct-test.h5"
    if not os.path.isdir("/dev/shm"):
        fn = str(tmp_path / "x.h5")
    with h5py.File(fn, "w") as f:
        f["x"] = np.arange(10)
    try:
        if supports_o_direct(fn):
            q = multiload.Streamer(fn).get_queue("x", direct=True)
            np.testing.assert_array_equal(q.get(timeout=30).array, np.arange(10))
            q.close()
        else:
            with pytest.raises(OSError, match="O_DIRECT") as e:
                multiload.Streamer(fn).get_queue("x", direct=True)
            assert e.value.filename == fn
    finally:
        os.unlink(fn)
