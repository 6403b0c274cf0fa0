"""PyTables column types h5py cannot read: Time32 streams as int32, as
PyTables reads it; Time64 (stored as seconds<<32 | microseconds) streams as
the float64 PyTables converts it to. Enum and bool columns match h5py's
dtypes."""

import warnings

import h5py
import numpy as np
import pytest
import tables

import multiload

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pt_file(tmp_path_factory):
    fn = str(tmp_path_factory.mktemp("types") / "types.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tables.open_file(fn, "w") as f:
            t = f.create_table("/", "time32", {"t": tables.Time32Col(pos=0), "x": tables.Int16Col(pos=1)})
            t.append([(i * 1000, -i) for i in range(500)])
            t = f.create_table("/", "time64", {"t": tables.Time64Col(pos=0)})
            t.append([(1.5,), (2.25,)])
            t = f.create_table("/", "mixed", {
                "b": tables.BoolCol(pos=0),
                "e": tables.EnumCol(["a", "b", "c"], "a", base="uint8", pos=1),
                "s": tables.StringCol(5, pos=2),
                "c": tables.ComplexCol(16, pos=3),
                "u": tables.UInt16Col(shape=(2, 2), pos=4)})
            r = t.row
            for i in range(300):
                r["b"], r["e"], r["s"], r["c"], r["u"] = i % 2 == 0, i % 3, b"r%d" % i, 1 + 2j * i, [[1, 2], [3, i]]
                r.append()
            t.flush()
    return fn


def stream(fn, path):
    q = multiload.Streamer(fn).get_queue(path, ordered=True, remainder=True, block_size=64, n_procs=2)
    with q:
        return np.concatenate([g.array.copy() for g in q])


def test_time32_reads_as_pytables_reads_it(pt_file):
    with tables.open_file(pt_file) as f:
        ref = f.root.time32.read()
    out = stream(pt_file, "/time32")
    assert out.dtype == ref.dtype
    np.testing.assert_array_equal(out, ref)


def test_time64_reads_as_pytables_reads_it(pt_file):
    with tables.open_file(pt_file) as f:
        ref = f.root.time64.read()
    out = stream(pt_file, "/time64")
    assert out.dtype == ref.dtype
    assert out.tobytes() == ref.tobytes()


def test_bool_enum_string_complex_subarray_columns_match_h5py(pt_file):
    with h5py.File(pt_file) as f:
        ref = f["mixed"][:]
    out = stream(pt_file, "/mixed")
    assert out.dtype == ref.dtype
    np.testing.assert_array_equal(out, ref)
    with tables.open_file(pt_file) as f:  # and the same values PyTables reads
        pt = f.root.mixed.read()
    for name in pt.dtype.names:
        np.testing.assert_array_equal(out[name].astype(pt.dtype[name].base), pt[name])
