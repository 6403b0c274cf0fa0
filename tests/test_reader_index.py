"""Reader results equal numpy indexing of the whole dataset (read by h5py),
for random index expressions over generated arrays and tables."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import h5py
import multiload

pytestmark = pytest.mark.timeout(120)

SUB = np.dtype([("a", "<i4"), ("b", "<f8", (3,)), ("c", "S3")])


@pytest.fixture(scope="module")
def h5file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("reader") / "idx.h5")
    rng = np.random.default_rng(1)
    data = {
        "i4": rng.integers(-1000, 1000, size=(53, 4, 3)).astype("<i4"),
        "f8": rng.random((41,)),
        "u1": rng.integers(0, 255, size=(37, 6)).astype("u1"),
    }
    tab = np.zeros(47, dtype=SUB)
    tab["a"] = rng.integers(0, 100, 47)
    tab["b"] = rng.random((47, 3))
    tab["c"] = [b"x%02d" % i for i in range(47)]
    data["tab"] = tab
    with h5py.File(path, "w") as f:
        for name, arr in data.items():
            f.create_dataset(name + "_contig", data=arr)
            chunks = (5,) + arr.shape[1:-1] + ((2,) if arr.ndim > 1 else ())
            f.create_dataset(name + "_chunked", data=arr, chunks=chunks[: arr.ndim])
            f.create_dataset(name + "_deflate", data=arr, chunks=(7,) + arr.shape[1:], compression="gzip",
                             shuffle=True)
    return path, data


@pytest.fixture(scope="module")
def reader(h5file):
    with multiload.Reader(h5file[0], n_procs=2) as r:
        yield r


def index_strategy(shape):
    """A numpy index for an array of `shape`, with at most one index array
    (or a point selection)."""
    n = shape[0]
    ints = st.integers(-n, n - 1)
    sl = st.builds(slice, st.none() | st.integers(-n - 2, n + 2), st.none() | st.integers(-n - 2, n + 2),
                   st.none() | st.integers(1, 4) | st.integers(-4, -1))
    lists = st.lists(st.integers(-n, n - 1), min_size=0, max_size=12)
    arrs = lists.map(lambda l: np.array(l, dtype=np.int64))
    masks = st.lists(st.booleans(), min_size=n, max_size=n).map(np.array)
    first = st.one_of(ints, sl, lists, arrs, masks)
    inner = []
    for d in shape[1:]:
        inner.append(st.one_of(st.integers(-d, d - 1), st.builds(slice, st.none() | st.integers(-d, d),
                                                               st.none() | st.integers(-d, d),
                                                               st.none() | st.integers(1, 3))))
    rest = st.tuples(*inner) if inner else st.just(())

    def build(f, r, k, ell):
        key = (f,) + tuple(r[:k])
        if ell and len(key) < len(shape):
            key = key + (Ellipsis,)
        return key if len(key) > 1 else f

    return st.builds(build, first, rest, st.integers(0, len(shape) - 1), st.booleans())


def check(reader, h5file, name, key, col=None):
    path, data = h5file
    truth = data[name.rsplit("_", 1)[0]]
    if col is not None:
        truth = truth[col]
    expect = truth[key]
    ds = reader.get_dataset("/" + name)
    op = ds.col(col)[key] if col is not None else ds[key]
    got = reader.read(op)
    assert got.shape == np.shape(expect)
    assert got.dtype == np.asarray(expect).dtype
    np.testing.assert_array_equal(got, expect)
    # the same through a stage of exactly the result's size
    stage = multiload.reader.Stage(got.nbytes)
    op = ds.col(col)[key] if col is not None else ds[key]
    np.testing.assert_array_equal(reader.request(op, stage).get(), expect)


@pytest.mark.parametrize("layout", ["contig", "chunked", "deflate"])
@pytest.mark.parametrize("name", ["i4", "f8", "u1", "tab"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_index_matches_numpy(reader, h5file, name, layout, data):
    shape = h5file[1][name].shape
    key = data.draw(index_strategy(shape))
    check(reader, h5file, f"{name}_{layout}", key)


@pytest.mark.parametrize("layout", ["contig", "deflate"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_column_index_matches_numpy(reader, h5file, layout, data):
    col = data.draw(st.sampled_from(["a", "b", "c"]))
    shape = h5file[1]["tab"][col].shape
    key = data.draw(index_strategy(shape))
    check(reader, h5file, f"tab_{layout}", key, col=col)


@pytest.mark.parametrize("layout", ["contig", "chunked"])
def test_nd_lists_and_masks_where_pytables_fails(reader, h5file, layout):
    a = h5file[1]["i4"]
    rng = np.random.default_rng(3)
    for key in ([5, 1, 1, -2], np.array([[3, 4], [0, 52]]), a[:, 0, 0] > 0, (a[:, :, 0] > 0),
                (slice(None), [2, 0, 2]), (slice(2, 9), 1, [0, 2]), a > 100, ([1, 2], [3, 0], [2, 2]),
                (Ellipsis, 1), (rng.permutation(53)[:20], Ellipsis, slice(None, None, -1))):
        if isinstance(key, np.ndarray) and key.dtype == bool and key.ndim == 2:
            with pytest.raises(IndexError):  # a 2-D mask that is not the whole shape: two index arrays
                reader.read(reader.get_dataset(f"/i4_{layout}")[key])
            continue
        check(reader, h5file, f"i4_{layout}", key)


def test_chained_keys_follow_numpy(reader, h5file):
    a = h5file[1]["i4"]
    ds = reader.get_dataset("/i4_deflate")
    np.testing.assert_array_equal(reader.read(ds[3:40:3][::-1, 1:][[0, 2], 1]), a[3:40:3][::-1, 1:][[0, 2], 1])
    np.testing.assert_array_equal(reader.read(ds[5][2]), a[5][2])
    t = h5file[1]["tab"]
    tab = reader.get_dataset("/tab_chunked")
    np.testing.assert_array_equal(reader.read(tab[[4, 4, 0]]["b"][:, 1]), t[[4, 4, 0]]["b"][:, 1])
    np.testing.assert_array_equal(reader.read(tab[t["a"] > 50]["c"]), t[t["a"] > 50]["c"])
    got = reader.read(tab[-1])
    assert got.shape == () and got == t[-1]
