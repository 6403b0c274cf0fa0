"""Index expressions an audit found wrong, each against numpy on the same
file read by h5py (or PyTables for its read methods and nested columns):
string scalars, ``ds[None]``, ``where``/``read`` start rules, nested
columns, numpy keys (range, field lists, leading masks), scalar byte order,
stage shapes and the dataset named in IndexError."""

import numpy as np
import pytest

import h5py
import multiload
import tables

pytestmark = pytest.mark.timeout(120)

NEST = np.dtype([("a", "<i4"), ("c", [("x", "<f4"), ("y", "S3"), ("z", "<i2", (2,))]), ("d", ">f8")])


@pytest.fixture(scope="module")
def h5(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("more") / "more.h5")
    rng = np.random.default_rng(7)
    nest = np.zeros(30, NEST)
    nest["a"] = rng.permutation(30)
    nest["c"]["x"] = rng.random(30)
    nest["c"]["y"] = [b"y%d" % (i % 17) for i in range(30)]
    nest["c"]["y"][::7] = b""
    nest["c"]["z"] = rng.integers(-99, 99, (30, 2))
    nest["d"] = rng.random(30)
    with h5py.File(path, "w") as f:
        f["s"] = np.array([[b"abcdefg", b"hijklmn"]] * 10, dtype="S7")
        f["s1"] = np.array([b"abcdefg", b"hijklmn", b"ab", b""] * 5, dtype="S7")
        f["t"] = np.array([(1, b"abcdef"), (2, b"ab")] * 5, dtype=[("a", "i4"), ("n", "S6")])
        f["nest"] = nest
        f.create_dataset("nest_deflate", data=nest, chunks=(7,), compression="gzip", shuffle=True)
        f["be1"] = (np.arange(997) * 0.5).astype(">f8")
        f["be2"] = (np.arange(997 * 3) * 0.25).reshape(997, 3).astype(">f8")
        f["le1"] = (np.arange(997) * 0.5).astype("<f8")
        f["bei"] = np.arange(40, dtype=">i2").reshape(20, 2)
        f["a3"] = np.arange(20 * 4 * 3, dtype="<i4").reshape(20, 4, 3)
        f["be3"] = np.arange(20 * 4 * 3, dtype=">i8").reshape(20, 4, 3)
        f["nd"] = np.array([[(i, b"q%d" % j) for j in range(3)] for i in range(4)], dtype=[("p", "<i4"), ("q", "S2")])
    with tables.open_file(path, "a") as f:
        # PyTables takes one byte order per table
        t = f.create_table("/", "pt", nest.astype(NEST.newbyteorder("<")))
        t.cols._f_col("c/x").create_csindex()
        f.create_array("/", "parr", np.arange(50.0).reshape(25, 2))
        vl = f.create_vlarray("/", "vl", tables.Int32Atom())
        for i in range(9):
            vl.append(np.arange(i, dtype=np.int32))
    with h5py.File(path, "r") as f:
        data = {name: f[name][()] for name in f if isinstance(f[name], h5py.Dataset) and name != "vl"}
    return path, data


@pytest.fixture(scope="module")
def reader(h5):
    with multiload.Reader(h5[0], n_procs=2) as r:
        yield r


def same(got, expect, dtype=None):
    """got equals numpy's result: shape, dtype (``dtype`` when numpy's
    scalar would not say it, as a bytes scalar's length), values."""
    assert got.shape == np.shape(expect)
    assert got.dtype == (dtype if dtype is not None else np.asarray(expect).dtype), (got.dtype, expect)
    np.testing.assert_array_equal(got, expect)


def read_both(reader, make):
    """The result by reader.read() and by request() into an exact stage."""
    got = reader.read(make())
    stage = multiload.reader.Stage(got.nbytes)
    return got, reader.request(make(), stage).get()


# -- 1. a single string element keeps its length

def test_string_scalars_keep_their_length(reader, h5):
    data = h5[1]
    d, d1, t, nest = (reader.get_dataset(p) for p in ("/s", "/s1", "/t", "/nest"))
    cases = [
        (lambda: d[5, 1], data["s"][5, 1], "S7"),
        (lambda: d[5][1], data["s"][5][1], "S7"),
        (lambda: d[-1, 0], data["s"][-1, 0], "S7"),
        (lambda: d1[[3, 1]][0], data["s1"][[3, 1]][0], "S7"),
        (lambda: d1[3:5][1], data["s1"][3:5][1], "S7"),
        (lambda: d1[2], data["s1"][2], "S7"),  # b'ab' in an S7 dataset
        (lambda: d1[3], data["s1"][3], "S7"),  # b''
        (lambda: d1[1:9][::2][1], data["s1"][1:9][::2][1], "S7"),
        (lambda: t[[1, 2]]["n"][0], data["t"][[1, 2]]["n"][0], "S6"),
        (lambda: t[3]["n"], data["t"][3]["n"], "S6"),
        (lambda: t["n"][3], data["t"]["n"][3], "S6"),
        (lambda: nest["c"][5]["y"], data["nest"]["c"][5]["y"], "S3"),
        (lambda: nest[5]["c"]["y"], data["nest"][5]["c"]["y"], "S3"),
        (lambda: nest["c"]["y"][7], data["nest"]["c"]["y"][7], "S3"),  # b''
        (lambda: nest[[4, 2]][1]["c"]["y"], data["nest"][[4, 2]][1]["c"]["y"], "S3"),
    ]
    for make, expect, dt in cases:
        assert isinstance(expect, np.bytes_)
        for got in read_both(reader, make):
            same(got, expect, np.dtype(dt))
    stage = d.create_stage(1)
    np.testing.assert_array_equal(reader.request(d[5, 1], stage).get(), b"hijklmn")


def test_compound_scalars_keep_their_dtype(reader, h5):
    data = h5[1]
    t, nest = reader.get_dataset("/t"), reader.get_dataset("/nest")
    for make, expect in [(lambda: t[3], data["t"][3]), (lambda: t[[1, 2]][0], data["t"][[1, 2]][0]),
                         (lambda: nest[4]["c"], data["nest"][4]["c"]), (lambda: nest["c"][4], data["nest"]["c"][4]),
                         (lambda: nest[[3, 1]][0][1], data["nest"][[3, 1]][0][1])]:
        for got in read_both(reader, make):
            same(got, expect)


# -- 2. ds[None] is numpy's new axis

def test_none_is_a_new_axis(reader, h5):
    data = h5[1]
    for name, make, expect in [
        ("/a3", lambda a: a[None], lambda a: a[None]),
        ("/nest", lambda a: a[None], lambda a: a[None]),
        ("/a3", lambda a: a[None][0, 3], lambda a: a[None][0, 3]),
        ("/nest", lambda a: a["c"][None], lambda a: a["c"][None]),
        ("/nest", lambda a: a["d"][None][:, ::4], lambda a: a["d"][None][:, ::4]),
        ("/be1", lambda a: a[None, 3], lambda a: a[None, 3]),
        ("/a3", lambda a: a[(None,)], lambda a: a[(None,)]),
    ]:
        ds = reader.get_dataset(name)
        for got in read_both(reader, lambda: make(ds)):
            same(got, expect(data[name[1:]]))


# -- 3. where(start=) and read(start=) follow PyTables

def test_where_and_read_start_follow_pytables(reader, h5):
    path = h5[0]
    t, a = reader.get_dataset("/pt"), reader.get_dataset("/parr")
    with tables.open_file(path) as f:
        pt, pa = f.root.pt, f.root.parr
        for start in (0, 5, 29, -1, -3, -30, -31):
            kw = dict(start=start)
            same(reader.read(t.where("a >= 0", {}, **kw)), pt.read_where("a >= 0", {}, **kw))
            same(reader.read(t.where("a >= 0", {}, start=start, stop=None, step=2)),
                 pt.read_where("a >= 0", {}, start=start, step=2))
            same(reader.read(t.read(**kw)), pt.read(**kw))
            same(reader.read(t.read(field="d", **kw)), pt.read(field="d", **kw))
        for start in (0, 5, 24, -1, -3, -25, -26, -40):
            same(reader.read(a.read(start=start)), pa.read(start=start))
        for start in (30, 31):
            with pytest.raises(IndexError):
                pt.read_where("a >= 0", {}, start=start)
            with pytest.raises(IndexError, match=r"start of range .* \(dataset '/pt', file"):
                reader.read(t.where("a >= 0", {}, start=start))
            same(reader.read(t.read(start=start)), pt.read(start=start))  # Table.read: slice rules
        with pytest.raises(IndexError):
            pa.read(start=25)
        with pytest.raises(IndexError, match="start of range"):
            reader.read(a.read(start=25))
        for start in (3, 0, 29):  # PyTables' read_sorted(start=-n) raises OverflowError
            same(reader.read(t.read_sorted("c/x", start=start)), pt.read_sorted("c/x", start=start))
        vl = reader.get_dataset("/vl")
        for start in (2, -1, -3, 8):  # VLArray.read's step defaults to 1: start alone is start..end
            expect = f.root.vl.read(start=start)
            np.testing.assert_array_equal(reader.read(vl.read(start=start)), np.concatenate(expect))


# -- 4. nested columns, wherever a column name is accepted

def test_nested_columns_match_pytables(reader, h5):
    path = h5[0]
    t = reader.get_dataset("/pt")
    with tables.open_file(path) as f:
        pt = f.root.pt
        cases = [
            (t.col("c/x"), pt.col("c/x")),
            (t.col("c"), pt.col("c")),
            (t["c/z"], pt.col("c/z")),
            (t.read(0, 5, field="c/z"), pt.read(0, 5, field="c/z")),
            (t.read(3, 27, 4, field="c/y"), pt.read(3, 27, 4, field="c/y")),
            (t.read_coordinates([3, 1, 1, 29], field="c/x"), pt.read_coordinates([3, 1, 1, 29], field="c/x")),
            (t.read_sorted("c/x", field="c/y"), pt.read_sorted("c/x", field="c/y")),
            (t.read_sorted("c/x", checkCSI=True, start=4, stop=20, step=3),
             pt.read_sorted("c/x", checkCSI=True, start=4, stop=20, step=3)),
            (t["c"]["x"][3:9], pt.col("c")["x"][3:9]),
            (t["c"]["z"][[5, 2]], pt.col("c")["z"][[5, 2]]),
            (t["c"]["y"], pt.col("c")["y"]),
            (t["c"][2:6]["x"], pt.col("c")[2:6]["x"]),
            (t[2:6]["c"]["z"][:, 1], pt[2:6]["c"]["z"][:, 1]),
            (t.where("x > 0.5", condvars={"x": t.col("c/x")}),
             pt.read_where("x > 0.5", condvars={"x": pt.cols.c.x})),
            (t.where("(x > 0.3) & (a < lim)", condvars={"x": t.col("c/x"), "lim": 20}, start=3, stop=28, step=2),
             pt.read_where("(x > 0.3) & (a < lim)", condvars={"x": pt.cols.c.x, "lim": 20}, start=3, stop=28,
                           step=2)),
        ]
        for op, expect in cases:
            same(reader.read(op), expect)
        with pytest.raises(TypeError, match="nested column"):
            pt.read_where("x > 0", condvars={"x": pt.cols.c})
        with pytest.raises(TypeError, match="nested column"):
            t.where("x > 0", condvars={"x": t.col("c")})
        with pytest.raises(TypeError, match="nested column"):  # a compound column named in the condition
            pt.read_where("c > 0")
        with pytest.raises(TypeError, match="nested column"):
            reader.read(t.where("c > 0"))
        with pytest.raises(NotImplementedError, match="multidimensional"):
            t.where("x > 0", condvars={"x": t.col("c/z")})
        with pytest.raises(ValueError, match="not part of table"):
            t.where("x > 0", condvars={"x": reader.get_dataset("/nest").col("c/x")})
    for make in (lambda: t.col("c/nope"), lambda: t.read(field="c/x/deeper"), lambda: t.read_sorted("c/nope"),
                 lambda: reader.read(t["c"]["nope"]), lambda: reader.read(t[3:5]["c"]["nope"])):
        with pytest.raises(KeyError) as ei:
            make()
        assert isinstance(ei.value, NameError)


def test_fields_on_nd_compound_arrays(reader, h5):
    nd, data = reader.get_dataset("/nd"), h5[1]["nd"]
    for make, expect in [(lambda: nd["p"], data["p"]), (lambda: nd["q"][1, 2], data["q"][1, 2]),
                         (lambda: nd[1:3]["q"], data[1:3]["q"]), (lambda: nd[["p", "q"]], data[["p", "q"]])]:
        for got in read_both(reader, make):
            same(got, expect, np.dtype("S2") if isinstance(expect, np.bytes_) else None)
    with pytest.raises(KeyError):
        reader.read(nd["nope"])
    with pytest.raises(IndexError):  # a field name on an array without fields: numpy's IndexError
        reader.read(reader.get_dataset("/a3")["p"])


# -- 5. numpy keys: range, field lists, leading masks; stage shapes

def test_numpy_keys(reader, h5):
    data = h5[1]
    a3, nest = reader.get_dataset("/a3"), reader.get_dataset("/nest_deflate")
    m2 = data["a3"][:, :, 0] % 7 > 2
    cases = [
        (lambda: a3[range(3)], data["a3"][range(3)]),
        (lambda: a3[range(18, 2, -5), 1], data["a3"][range(18, 2, -5), 1]),
        (lambda: a3[np.array(4)], data["a3"][np.array(4)]),
        (lambda: a3[m2], data["a3"][m2]),
        (lambda: a3[m2, 1:], data["a3"][m2, 1:]),
        (lambda: a3[m2, ...], data["a3"][m2, ...]),
        (lambda: a3[data["a3"] > 100], data["a3"][data["a3"] > 100]),
        (lambda: nest[["a", "d"]], data["nest"][["a", "d"]]),
        (lambda: nest[["d", "a"]][3:9], data["nest"][["d", "a"]][3:9]),
        (lambda: nest[[4, 2]][["c", "a"]], data["nest"][[4, 2]][["c", "a"]]),
        (lambda: nest["c"][["y", "x"]], data["nest"]["c"][["y", "x"]]),
        (lambda: nest[6][["a", "d"]], data["nest"][6][["a", "d"]]),
    ]
    for make, expect in cases:
        for got in read_both(reader, make):
            same(got, expect)
    with pytest.raises(KeyError) as ei:
        reader.read(nest[["a", "nope"]])
    assert isinstance(ei.value, NameError)
    for bad in (lambda: a3[:, data["a3"][0] > 5], lambda: a3[:, [1, 2], [0, 1]], lambda: a3[1.5],
                lambda: a3[m2, [0, 1]], lambda: a3[{1: 2}]):
        with pytest.raises(IndexError):
            reader.read(bad())


def test_stage_shapes_count_bytes(reader):
    be2 = reader.get_dataset("/be2")  # (997, 3) float64
    assert be2.create_stage((10, 5, 2)).size_nbytes == 100 * 8  # more dimensions than the dataset
    assert be2.create_stage((10, None)).size_nbytes == 30 * 8
    assert be2.create_stage((10, -1, 4)).size_nbytes == 120 * 8
    assert be2.create_stage(7).size_nbytes == 21 * 8
    np.testing.assert_array_equal(reader.request(be2[:10, :2], be2.create_stage((2, 5, 2))).get(),
                                  reader.read(be2[:10, :2]))
    for bad in ((10, 5, None), (10, 3, -1), (-2,), (1.5,)):
        with pytest.raises(ValueError):
            be2.create_stage(bad)


# -- 6. scalars: numpy's type, whatever the byte order or dimensions

@pytest.mark.parametrize("inline", [True, False])
def test_scalars_are_numpy_scalars_dtype(h5, inline):
    data = h5[1]
    with multiload.Reader(h5[0], n_procs=2, inline_reads=inline) as r:
        for name, keys in [("be1", [3, -1, (5,), np.int64(7)]), ("le1", [3, -1]), ("be2", [(3, 1), (-1, -1)]),
                           ("bei", [(4, 1)]), ("be3", [(2, 3, 1)])]:
            ds = r.get_dataset("/" + name)
            for k in keys:
                expect = data[name][k]
                assert isinstance(expect, np.generic) and expect.dtype.isnative
                for got in read_both(r, lambda: ds[k]):
                    same(got, expect)
                with r.request(ds[k], ds.create_stage(1)).get_unsafe() as view:
                    same(view, expect)
        be1, be2, nest = r.get_dataset("/be1"), r.get_dataset("/be2"), r.get_dataset("/nest")
        for make, expect in [(lambda: be2[3][1], data["be2"][3][1]), (lambda: be1[[5, 9]][1], data["be1"][[5, 9]][1]),
                             (lambda: nest["d"][4], data["nest"]["d"][4]), (lambda: nest[4]["d"], data["nest"][4]["d"]),
                             (lambda: be1[3:9][2], data["be1"][3:9][2])]:
            for got in read_both(r, make):
                same(got, expect)
        # numpy gives 0-d arrays, which keep the file's byte order
        for make, expect in [(lambda: be1[3, ...], data["be1"][3, ...]), (lambda: be2[3, 1, ...], data["be2"][3, 1, ...]),
                             (lambda: be1[..., 3], data["be1"][..., 3])]:
            assert isinstance(expect, np.ndarray) and expect.dtype == np.dtype(">f8")
            for got in read_both(r, make):
                same(got, expect)
        # rows and slices keep the file's byte order, as numpy's arrays do
        same(r.read(be1[3:5]), data["be1"][3:5])
        same(r.read(be2[3]), data["be2"][3])


# -- 7. IndexError names the dataset and the file, after numpy's wording

def test_index_errors_name_dataset_and_file(reader, h5):
    path = h5[0]
    be1, a3 = reader.get_dataset("/be1"), reader.get_dataset("/a3")
    stage = a3.create_stage(20)
    for name, keys in [("be1", [997]), ("be1", [-998]), ("a3", [(slice(None), 99)]), ("a3", [([0, 20], 1)]),
                       ("a3", [3, 4]), ("a3", [1.5]), ("a3", [(slice(None), [1, 2], [0, 1])])]:
        ds = reader.get_dataset("/" + name)

        def make():
            op = ds
            for k in keys:
                op = op[k]
            return op

        numpy_msg = None
        if name != "a3" or keys[0] != (slice(None), [1, 2], [0, 1]):  # numpy takes that one
            with pytest.raises(IndexError) as ei:
                expect = h5[1][name]
                for k in keys:
                    expect = expect[k]
            numpy_msg = str(ei.value)
        for run in (lambda: reader.read(make()), lambda: reader.request(make(), stage)):
            with pytest.raises(IndexError) as ei:
                run()
            msg = str(ei.value)
            if numpy_msg is not None:
                assert msg.startswith(numpy_msg), (msg, numpy_msg)
            assert f"(dataset '/{name}', file {path!r})" in msg, msg
    # row lists go to C, which checks their bounds while copying them
    with pytest.raises(IndexError, match=r"^index 20 is out of bounds for axis 0 with size 20 \(dataset '/a3'"):
        reader.request(a3[[0, 20]], stage)
    with pytest.raises(IndexError, match=r"dataset '/a3', file"):
        a3[...]
