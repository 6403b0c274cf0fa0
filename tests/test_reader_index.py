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
# a nested table: a compound column with a string member, a big-endian column
NEST = np.dtype([("a", "<i2"), ("c", [("x", "<f4"), ("y", "S3"), ("z", "<u2", (2,))]), ("d", ">f8")])


def _strings(rng, shape, width):
    """Fixed-length strings of every length 0..width (empty ones too)."""
    lengths = rng.integers(0, width + 1, size=shape)
    return np.array([b"abcdefghij"[:k] for k in lengths.ravel()], dtype=f"S{width}").reshape(shape)


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
    data["s7"] = _strings(rng, (31, 3), 7)
    data["s5"] = _strings(rng, (29,), 5)
    data["be8"] = rng.random(23).astype(">f8")
    data["bei4"] = rng.integers(-99, 99, size=(19, 5)).astype(">i4")
    nest = np.zeros(43, dtype=NEST)
    nest["a"] = rng.integers(-50, 50, 43)
    nest["c"]["x"] = rng.random(43)
    nest["c"]["y"] = _strings(rng, (43,), 3)
    nest["c"]["z"] = rng.integers(0, 999, size=(43, 2))
    nest["d"] = rng.random(43)
    data["nest"] = nest
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
    (or a point selection); numpy may refuse it (a None shifts the
    dimensions the later entries were drawn for), and then so must we."""
    n = shape[0]
    ints = st.integers(-n, n - 1)
    sl = st.builds(slice, st.none() | st.integers(-n - 2, n + 2), st.none() | st.integers(-n - 2, n + 2),
                   st.none() | st.integers(1, 4) | st.integers(-4, -1))
    lists = st.lists(st.integers(-n, n - 1), min_size=0, max_size=12)
    arrs = lists.map(lambda l: np.array(l, dtype=np.int64))
    masks = st.lists(st.booleans(), min_size=n, max_size=n).map(np.array)
    ranges = st.builds(range, st.integers(0, n), st.integers(0, n), st.integers(1, 3))
    first = [ints, sl, lists, arrs, masks, ranges, st.none()]
    if len(shape) > 1:  # a mask of the two leading dimensions is one index array
        m = n * shape[1]
        first.append(st.lists(st.booleans(), min_size=m, max_size=m).map(lambda l: np.array(l).reshape(shape[:2])))
    first = st.one_of(*first)
    inner = []
    for d in shape[1:]:
        slices = st.builds(slice, st.none() | st.integers(-d, d), st.none() | st.integers(-d, d),
                           st.none() | st.integers(1, 3))
        inner.append(st.one_of(st.integers(-d, d - 1), slices, st.none()) if d else slices)
    rest = st.tuples(*inner) if inner else st.just(())

    def build(f, r, k, ell):
        key = (f,) + tuple(r[:k])
        if ell and len(key) < len(shape):
            key = key + (Ellipsis,)
        return key if len(key) > 1 else f

    return st.builds(build, first, rest, st.integers(0, len(shape) - 1), st.booleans())


def _string_dtype(dt):
    """The fixed-length string type in dtype `dt` (the fixtures have at most one)."""
    if dt.names:
        found = [_string_dtype(dt[n]) for n in dt.names]
        return next((f for f in found if f is not None), None)
    base = dt.subdtype[0] if dt.subdtype else dt
    return base if base.kind == "S" else None


def expected_dtype(expect, source_dtype):
    """numpy's dtype of the result, except that a string scalar keeps its
    field's length (numpy's bytes scalar is as long as its value; the
    Reader's result is sized before the read)."""
    if isinstance(expect, np.bytes_):
        return _string_dtype(source_dtype)
    return np.asarray(expect).dtype


def assert_same(got, expect, source_dtype):
    assert got.shape == np.shape(expect)
    assert got.dtype == expected_dtype(expect, source_dtype), (got.dtype, np.asarray(expect).dtype)
    np.testing.assert_array_equal(got, expect)


def check(reader, h5file, name, key, col=None, more=()):
    """reader's ds[key][more...] (or ds.col(col)[key][more...]) equals
    numpy's on the data h5py wrote, read and through an exact stage."""
    path, data = h5file
    truth = data[name.rsplit("_", 1)[0]]
    source = truth.dtype
    if col is not None:
        for part in col.split("/"):
            truth = truth[part]
    ds = reader.get_dataset("/" + name)

    def op():
        o = ds.col(col)[key] if col is not None else ds[key]
        for k in more:
            o = o[k]
        return o

    try:
        expect = truth[key]
        for k in more:
            expect = expect[k]
    except IndexError:
        with pytest.raises(IndexError, match=f"dataset '/{name}', file"):
            reader.read(op())
        return

    got = reader.read(op())
    assert_same(got, expect, source)
    # the same through a stage of exactly the result's size
    stage = multiload.reader.Stage(got.nbytes)
    assert_same(reader.request(op(), stage).get(), expect, source)


@pytest.mark.parametrize("layout", ["contig", "chunked", "deflate"])
@pytest.mark.parametrize("name", ["i4", "f8", "u1", "tab", "s7", "s5", "be8", "bei4", "nest"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_index_matches_numpy(reader, h5file, name, layout, data):
    shape = h5file[1][name].shape
    key = data.draw(index_strategy(shape))
    check(reader, h5file, f"{name}_{layout}", key)


@pytest.mark.parametrize("layout", ["contig", "deflate"])
@pytest.mark.parametrize("name", ["tab", "nest"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_column_index_matches_numpy(reader, h5file, layout, name, data):
    cols = {"tab": ["a", "b", "c"], "nest": ["a", "c", "c/x", "c/y", "c/z", "d"]}[name]
    col = data.draw(st.sampled_from(cols))
    truth = h5file[1][name]
    for part in col.split("/"):
        truth = truth[part]
    key = data.draw(index_strategy(truth.shape))
    check(reader, h5file, f"{name}_{layout}", key, col=col)


def further_keys(data, result, depth):
    """Up to `depth` keys chained after the first: field names where the
    result has fields, index expressions otherwise."""
    keys = []
    for _ in range(depth):
        if isinstance(result, np.void) or (isinstance(result, np.ndarray) and result.dtype.names):
            k = data.draw(st.sampled_from(result.dtype.names))
        elif isinstance(result, np.ndarray) and result.ndim > 0 and result.shape[0] > 0:
            k = data.draw(index_strategy(result.shape))
        else:
            break
        keys.append(k)
        try:
            result = result[k]
        except IndexError:  # numpy refuses it: check() expects an IndexError
            break
    return keys


@pytest.mark.parametrize("layout", ["contig", "deflate"])
@pytest.mark.parametrize("name", ["i4", "tab", "s7", "s5", "be8", "bei4", "nest"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_chained_index_matches_numpy(reader, h5file, name, layout, data):
    truth = h5file[1][name]
    if truth.dtype.names and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(truth.dtype.names))  # ds['col'] first
    else:
        key = data.draw(index_strategy(truth.shape))
    try:
        first = truth[key]
    except IndexError:
        first = None  # numpy refuses the first key: no further ones
    more = further_keys(data, first, data.draw(st.integers(1, 3)))
    check(reader, h5file, f"{name}_{layout}", key, more=more)


@pytest.mark.parametrize("layout", ["contig", "chunked"])
def test_nd_lists_and_masks_where_pytables_fails(reader, h5file, layout):
    a = h5file[1]["i4"]
    rng = np.random.default_rng(3)
    for key in ([5, 1, 1, -2], np.array([[3, 4], [0, 52]]), a[:, 0, 0] > 0, (a[:, :, 0] > 0),
                (slice(None), [2, 0, 2]), (slice(2, 9), 1, [0, 2]), a > 100, ([1, 2], [3, 0], [2, 2]),
                (Ellipsis, 1), (rng.permutation(53)[:20], Ellipsis, slice(None, None, -1)),
                (a[:, :, 0] > 0, 2), (a[:, :, 0] > 0, Ellipsis), (Ellipsis, a > 0), range(3, 50, 7),
                (range(2), slice(None), 1), ((1, 2),)):
        check(reader, h5file, f"i4_{layout}", key)
    # A mask of k dimensions after the first counts as k index arrays
    # (PyTables refuses it; multitables' test_bad_indexing expects IndexError).
    for key in ((slice(None), a[0] > 0), (0, a[0] > 0), (Ellipsis, a[0, :, 0] > 0, 1)):
        if np.ndim(key[1]) == 1:
            check(reader, h5file, f"i4_{layout}", key)  # a 1-D mask is one array anywhere
            continue
        with pytest.raises(IndexError, match=f"dataset '/i4_{layout}'"):
            reader.read(reader.get_dataset(f"/i4_{layout}")[key])


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
