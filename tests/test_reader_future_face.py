"""The seams of the Python Reader (issue 17, seam 8), each against an
independent truth:

* the Future face of a Request: made lazily through the public
  ``Future.__init__`` and completed through ``set_result`` /
  ``set_exception`` / ``cancel``; stdlib helpers (``wait``,
  ``as_completed``) see the Request itself; every public Future method is
  overridden; the one-row fast path never makes the face;
* the stage-ownership rule (multiload/stage.py): a loan ends once, a stage
  whose writer is busy stays lent until the writer is done, for a stage and
  for a pool;
* the planner (multiload/_plan.py): the fast plan of every expression it
  takes equals the generic plan, and both give numpy's result;
* the module map (docs/design.md, "Map of the tree"): each module imports only what it
  may.

Bounds below are generous "returns within N s" checks, not timings."""

import ast
import concurrent.futures
import os
import threading

import numpy as np
import pytest

import multiload
from multiload import _plan, request, stage as stage_mod
from multiload.request import Request

import reliability_files as rf
from reliability_files import faults

pytestmark = pytest.mark.timeout(120)

_FUT = concurrent.futures.Future
ROWS, COLS = 500, 4


@pytest.fixture(scope="module")
def h5(tmp_path_factory):
    import h5py

    path = str(tmp_path_factory.mktemp("face") / "face.h5")
    arr = np.arange(ROWS * COLS, dtype="<i4").reshape(ROWS, COLS)
    big = arr.astype(">f8")
    with h5py.File(path, "w") as f:
        f["arr"] = arr
        f["big1"] = big[:, 0]  # a 1-D big-endian dataset: ds[i] is a native-order scalar
        f.create_dataset("gz", data=arr, chunks=(32, COLS), compression="gzip")
        f["tab"] = np.array([(i, i * 0.5) for i in range(ROWS)], dtype=[("a", "<i4"), ("b", "<f8")])
        tab = f["tab"][:]
    return path, {"arr": arr, "big1": big[:, 0], "gz": arr, "tab": tab}


# ---------------------------------------------------------------- the Future face

def test_every_public_future_method_is_overridden():
    """Future's own methods read the state a Request makes lazily: none of
    them may run on a Request (a new public method in a CPython release
    fails here instead of misbehaving)."""
    public = [n for n in dir(_FUT) if not n.startswith("_") and callable(getattr(_FUT, n))]
    assert public
    for name in public:
        assert getattr(Request, name) is not getattr(_FUT, name), name


def test_future_fields_are_only_lazy_descriptors():
    """Every attribute a Future instance has is, on the Request class, the
    lazy descriptor -- no plain class default stands in for Future state."""
    fields = set(vars(_FUT()))
    assert fields == set(request._FUTURE_FIELDS)
    for name in fields:
        assert isinstance(Request.__dict__[name], request._FaceField), name


def test_fast_path_makes_no_face_and_stdlib_wait_does(h5):
    with multiload.Reader(h5[0], n_procs=2) as r:
        a = r.get_dataset("/arr")
        s = a.create_stage(1)
        f = r.request(a[3], s)
        np.testing.assert_array_equal(f.get(), h5[1]["arr"][3])
        assert not set(vars(f)) & set(request._FUTURE_FIELDS), "get() made the Future state"
        # done before anyone looked: wait() makes the face, settled at once
        g = r.request(a[4], s)
        assert g.done()
        done, not_done = concurrent.futures.wait([g], timeout=rf.GET_TIMEOUT)
        assert done == {g} and not not_done
        assert next(iter(done)) is g
        assert isinstance(g, concurrent.futures.Future) and isinstance(g, multiload.reader.Request)
        np.testing.assert_array_equal(g.result(), h5[1]["arr"][4])


def test_stdlib_helpers_see_the_requests_themselves(h5):
    """wait() and as_completed() on requests still queued behind a slowed
    read: they return and yield the Request objects (not some inner
    future), with every outcome -- results, a cancellation, an error."""
    with faults("slow~1:300"):
        r = multiload.Reader(h5[0], n_procs=1, inline_reads=False)
        a = r.get_dataset("/arr")
        fs = [r.request(a[i:i + 5], a.create_stage(5)) for i in range(0, 40, 5)]
        queued = fs[-1]
        assert queued.cancel()
        seen = list(concurrent.futures.as_completed(fs, timeout=rf.GET_TIMEOUT))
        assert {id(x) for x in seen} == {id(x) for x in fs} and len(seen) == len(fs)
        assert all(type(x) is Request for x in seen)
        done, not_done = concurrent.futures.wait(fs, timeout=rf.GET_TIMEOUT)
        assert done == set(fs) and not not_done
        assert queued.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            queued.result()
        for i, f in enumerate(fs[:-1]):
            np.testing.assert_array_equal(f.result(), h5[1]["arr"][i * 5:i * 5 + 5])
        # an error outcome, seen by wait() on a request stopped in its read
        f = r.request(a[0:5], a.create_stage(5))
        r.stop()
        done, _ = concurrent.futures.wait([f], timeout=rf.GET_TIMEOUT)
        assert done == {f}
        assert isinstance(f.exception(), multiload.QueueClosedException)
    assert r._core.join(20)


def test_many_threads_make_the_face_at_once(h5):
    """Threads racing to make the face of the same requests while they
    complete: each request is settled once (a second set_result would raise
    InvalidStateError in a callback-free thread, and wait() would hang)."""
    with multiload.Reader(h5[0], n_procs=2, inline_reads=False) as r:
        g = r.get_dataset("/gz")
        for _ in range(5):
            fs = [r.request(g[i * 7:i * 7 + 40], g.create_stage(40)) for i in range(8)]
            errors, results = [], []

            def waiter():
                try:
                    results.append(concurrent.futures.wait(fs, timeout=rf.GET_TIMEOUT))
                except BaseException as e:  # noqa: BLE001 - handed to the test
                    errors.append(e)

            ts = [threading.Thread(target=waiter) for _ in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(rf.GET_TIMEOUT + 5)
            assert not errors and len(results) == 4
            assert all(done == set(fs) for done, _ in results)
            for i, f in enumerate(fs):
                np.testing.assert_array_equal(f.get(), h5[1]["gz"][i * 7:i * 7 + 40])


def test_future_completion_methods_are_refused(h5):
    with multiload.Reader(h5[0], n_procs=1) as r:
        a = r.get_dataset("/arr")
        f = r.request(a[0], a.create_stage(1))
        for call in (lambda: f.set_result(1), lambda: f.set_exception(ValueError()), f.set_running_or_notify_cancel):
            with pytest.raises(RuntimeError):
                call()
        f.get()


# ---------------------------------------------------------------- stage ownership

class _Writer:
    """Stands in for a C request: busy() until told otherwise."""

    def __init__(self):
        self.writing = True

    def busy(self):
        return self.writing


def test_a_loan_ends_once():
    s = multiload.reader.Stage(16)
    loan = s._lend()
    assert loan == [s]
    stage_mod.end_loan(loan)
    stage_mod.end_loan(loan)  # nothing: the stage is not freed twice
    again = s._lend()
    with pytest.raises(RuntimeError, match="already fielding"):
        s._lend()
    stage_mod.end_loan(again)


def test_a_stage_whose_writer_is_busy_stays_lent():
    s = multiload.reader.Stage(16)
    w = _Writer()
    stage_mod.end_loan(s._lend(), w)
    with pytest.raises(RuntimeError, match="already fielding"):
        s._lend()
    w.writing = False
    stage_mod.end_loan(s._lend())  # the next lend finds the writer done
    done = _Writer()
    done.writing = False
    stage_mod.end_loan(s._lend(), done)  # a writer done already: free at once
    stage_mod.end_loan(s._lend())


def test_a_pool_takes_back_a_stage_once_its_writer_is_done(h5):
    with multiload.Reader(h5[0], n_procs=1) as r:
        a = r.get_dataset("/arr")
        pool = a.create_stage_pool(1, 2, timeout=0.3)
        w = _Writer()
        l1, l2 = pool._lend(), pool._lend()
        s1 = l1[0]
        stage_mod.end_loan(l1, w)
        with pytest.raises(Exception) as ei:  # queue.Empty after the pool's timeout
            pool._lend()
        assert type(ei.value).__name__ == "Empty"
        w.writing = False
        l3 = pool._lend()
        assert l3[0] is s1
        stage_mod.end_loan(l2)
        stage_mod.end_loan(l3)
        # and the futures that use the pool still read right
        np.testing.assert_array_equal(r.request(a[7], pool).get(), h5[1]["arr"][7])


# ---------------------------------------------------------------- the planner

KEYS = [0, 5, -1, -ROWS, slice(None), slice(3, 40), slice(40, 3, -2), slice(None, None, 7), [3, 1, 1, -2],
        np.array([0, ROWS - 1, 7], dtype=np.int64), np.array([-1, -3], dtype=np.int32), np.arange(0, ROWS, 13)]


@pytest.mark.parametrize("name", ["arr", "big1", "gz"])
@pytest.mark.parametrize("k", range(len(KEYS)))
def test_fast_plan_equals_generic_plan_and_numpy(h5, name, k):
    key = KEYS[k]
    with multiload.Reader(h5[0], n_procs=2) as r:
        ds = r.get_dataset("/" + name)
        op = ds[key]
        fast = _plan._fast_plan(ds, op)
        generic = _plan._make_plan(ds, *_plan._parts(op, ds))
        truth = h5[1][name][key]
        truth = np.asarray(truth)
        assert generic.shape == truth.shape and generic.dtype == truth.dtype
        if fast is not None:
            assert (fast.shape, fast.dtype, fast.nbytes) == (generic.shape, generic.dtype, generic.nbytes)
        got = r.read(op)
        assert got.shape == truth.shape and got.dtype == truth.dtype
        np.testing.assert_array_equal(got, truth)
        res = r.request(ds[key], ds.create_stage(max(1, truth.size))).get()
        np.testing.assert_array_equal(res, truth)
        assert res.dtype == truth.dtype


def test_plan_is_the_one_entry_for_every_expression(h5):
    """plan() takes every expression kind and gives numpy's shape/dtype."""
    with multiload.Reader(h5[0], n_procs=2) as r:
        t = r.get_dataset("/tab")
        a = r.get_dataset("/arr")
        tab = h5[1]["tab"]
        cases = [(t["a"][3:9], tab["a"][3:9]), (t[[4, 2]]["b"], tab[[4, 2]]["b"]),
                 (t.read_coordinates([9, 1], field="a"), tab["a"][[9, 1]]),
                 (t.read_sorted("b", start=2, stop=6), tab[np.argsort(tab["b"], kind="stable")[2:6]]),
                 (t.where("a > 490"), tab[tab["a"] > 490]),
                 (a[None][:, 3:5], h5[1]["arr"][None][:, 3:5]), (a[..., 1], h5[1]["arr"][..., 1])]
        for op, truth in cases:
            p = _plan.plan(r._dataset_for(op), op)
            assert (p.shape, p.dtype) == (truth.shape, truth.dtype), op
            np.testing.assert_array_equal(r.read(op), truth)
        with pytest.raises(IndexError, match=r"out of bounds .*dataset '/arr', file "):
            _plan.plan(a, a[ROWS])


# ---------------------------------------------------------------- the module map

#: module -> the package modules it may import (docs/design.md, "Map of the tree")
ALLOWED = {
    "dataset_ops": set(),
    "_args": set(),
    "_proxy": set(),
    "_request_pool": set(),
    "stage": {"_args", "_signals", "_handle"},
    "dataset": {"dataset_ops", "stage"},
    "_handle": {"_signals"},
    "_plan": {"dataset_ops", "dataset"},
    "request": {"_signals", "_proxy", "_request_pool", "stage", "_handle", "_aio"},
    "_aio": set(),
    "_notify": {"_signals"},
    "_io": {"_core"},
    "reader": {"_core", "_args", "_io", "_signals", "_notify", "_plan", "dataset", "dataset_ops", "request", "stage",
               "_handle", "vlstring", "budget", "_live_writers"},
    "vlstring": {"_core", "_plan", "dataset", "dataset_ops"},
    "budget": {"_core"},
    "_live_writers": {"_signals"},
    "writer": {"_core", "_aio", "_live_writers", "budget"},
}


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_module_imports_follow_the_map(module):
    path = os.path.join(os.path.dirname(multiload.__file__), module + ".py")
    tree = ast.parse(open(path).read())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                used.add(node.module.split(".")[0])
            else:
                used.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            used.update(a.name.split(".")[1] for a in node.names if a.name.startswith("multiload."))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("multiload"):
            used.add(node.module.split(".")[1] if "." in node.module else "")
    assert used <= ALLOWED[module], f"{module} imports {sorted(used - ALLOWED[module])}"
