"""Hazards a new user hit with the Streamer and Reader API (issue 11, "Bad
input"), each fixed and checked here against h5py's reading of the data:

1. a second ``for`` loop over an ended queue raises instead of yielding
   nothing (a cyclic queue keeps going; ``get()`` and ``iter()`` keep
   multitables' behaviour);
2. queues zipped by hand stay in step only with one block size, ordered
   (the documented recipe), and go out of step otherwise (the documented
   hazard);
3. the README's quick start streams every row, the last partial block too;
4. keyword arguments PyTables' open_file does not take raise TypeError; the
   ones it takes are accepted (checked against PyTables itself), and
   ``driver='H5FD_DIRECT'`` means ``direct=True`` for the Streamer's queues;
5. the all-slots-held RuntimeError says that a kept view pins its slot and
   how to copy.
"""

import inspect
import os
import pathlib
import re
import threading

import h5py
import numpy as np
import pytest

import multiload
from h5files import GET_TIMEOUT, assert_same

pytestmark = pytest.mark.timeout(60)

N = 1000          # rows of every dataset here
ROW = (4, 3)      # row shape of "images"
ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hz_file(tmp_path_factory):
    fn = str(tmp_path_factory.mktemp("hazards") / "hz.h5")
    images = np.arange(N * 12, dtype=np.float32).reshape((N,) + ROW)
    with h5py.File(fn, "w") as f:
        f["images"] = images
        f.create_dataset("labels", data=(np.arange(N) * 7 % 1009).astype(np.int32),
                         chunks=(64,), compression="gzip", shuffle=True)
        f.create_dataset("empty", shape=(0, 3), dtype=np.int16)
    return fn


@pytest.fixture(scope="module")
def truth(hz_file):
    with h5py.File(hz_file, "r") as f:
        return {name: f[name][...] for name in ("images", "labels", "empty")}


def _starts_and_rows(guards):
    out = []
    for g in guards:
        with g as block:
            out.append((g.start, block.copy()))
    return out


def _assert_pass(pairs, want, block_size, remainder):
    """pairs: (start, block) of one pass, any order; want: the dataset."""
    pairs = sorted(pairs, key=lambda p: p[0])
    stop = len(want) if remainder else len(want) - len(want) % block_size
    assert [s for s, _ in pairs] == list(range(0, stop, block_size))
    assert_same(np.concatenate([b for _, b in pairs]), want[:stop])


# ------------------------------------------------ 1. one pass per queue

@pytest.mark.parametrize("remainder", [False, True])
@pytest.mark.parametrize("ordered", [False, True])
def test_second_for_loop_over_an_ended_queue_raises(hz_file, truth, remainder, ordered):
    s = multiload.Streamer(hz_file)
    q = s.get_queue("images", n_procs=2, block_size=96, ordered=ordered, remainder=remainder)
    _assert_pass(_starts_and_rows(q), truth["images"], 96, remainder)
    for _ in range(2):
        with pytest.raises(RuntimeError, match=r"already ended .*one pass.*get_queue\(\).*cyclic=True"):
            for _g in q:
                pytest.fail("a second pass yielded a block")
    # next() keeps the iterator protocol: StopIteration again, no error.
    with pytest.raises(StopIteration):
        next(q)
    # multitables' get() and iter() are unchanged: QueueClosed, an empty loop.
    assert q.get() is multiload.QueueClosed
    assert list(q.iter()) == []
    q.close()
    # The next pass is a new queue, and it is whole.
    with s.get_queue("images", n_procs=2, block_size=96, ordered=ordered, remainder=remainder) as q2:
        _assert_pass(_starts_and_rows(q2), truth["images"], 96, remainder)


def test_second_loop_after_close_in_a_with_block_raises(hz_file, truth):
    with multiload.Streamer(hz_file).get_queue("labels", block_size=100, ordered=True) as q:
        got = np.concatenate([g.array.copy() for g in q])
    assert_same(got, truth["labels"])
    with pytest.raises(RuntimeError, match="already ended"):
        list(q)


def test_stopping_early_then_looping_again_goes_on(hz_file, truth):
    """Only the end makes a pass; a loop left with break resumes."""
    with multiload.Streamer(hz_file).get_queue("images", block_size=100, ordered=True) as q:
        first = []
        for g in q:
            first.append(_starts_and_rows([g])[0])
            if len(first) == 4:
                break
        rest = _starts_and_rows(q)
    _assert_pass(first + rest, truth["images"], 100, False)
    assert [s for s, _ in first] == [0, 100, 200, 300]


def test_cyclic_queue_keeps_going_across_loops(hz_file, truth):
    B = 300
    with multiload.Streamer(hz_file).get_queue("images", block_size=B, cyclic=True,
                                               ordered=True) as q:
        seen = []
        for _loop in range(3):
            for _k, g in zip(range(4), q):
                with g as block:
                    seen.append((g.index, block.copy()))
    assert [k for k, _ in seen] == list(range(12))
    for k, block in seen:
        assert_same(block, truth["images"][(np.arange(B) + k * B) % N])


def test_loop_after_get_reached_the_end_is_empty(hz_file, truth):
    """multitables-style code that drained with get() may still loop: empty."""
    q = multiload.Streamer(hz_file).get_queue("images", block_size=250)
    pairs = []
    while (g := q.get(timeout=GET_TIMEOUT)) is not multiload.QueueClosed:
        pairs += _starts_and_rows([g])
    _assert_pass(pairs, truth["images"], 250, False)
    assert list(q) == []
    with pytest.raises(RuntimeError, match="already ended"):
        list(q)
    q.close()


def test_empty_dataset_first_loop_empty_second_raises(hz_file, truth):
    q = multiload.Streamer(hz_file).get_queue("empty", block_size=10)
    assert truth["empty"].shape == (0, 3)
    assert list(q) == []
    with pytest.raises(RuntimeError, match="already ended"):
        list(q)


def test_other_threads_that_did_not_reach_the_end_get_an_empty_loop(hz_file, truth):
    """The check is per thread: consumers sharing a queue never raise."""
    q = multiload.Streamer(hz_file).get_queue("images", block_size=50, ordered=True)
    pairs = _starts_and_rows(q)            # the main thread drains the queue
    _assert_pass(pairs, truth["images"], 50, False)
    result = {}

    def late_consumer():
        try:
            result["blocks"] = list(q)
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e

    t = threading.Thread(target=late_consumer)
    t.start()
    t.join(GET_TIMEOUT)
    assert not t.is_alive()
    assert result == {"blocks": []}
    with pytest.raises(RuntimeError, match="already ended"):
        list(q)
    q.close()


# ------------------------------------------------ 2. zipping two queues

def test_zipped_queues_with_one_block_size_stay_in_step(hz_file, truth):
    with multiload.Streamer(hz_file) as s:
        qi = s.get_queue("images", n_procs=2, block_size=64, ordered=True, remainder=True)
        ql = s.get_queue("labels", n_procs=2, block_size=64, ordered=True, remainder=True)
        n = 0
        for gi, gl in zip(qi, ql):
            assert gi.start == gl.start == 64 * n
            with gi as x, gl as y:
                assert_same(x, truth["images"][gi.start:gi.start + 64])
                assert_same(y, truth["labels"][gl.start:gl.start + 64])
            n += 1
    assert n == -(-N // 64)


def test_zipped_queues_with_different_block_sizes_go_out_of_step(hz_file, truth):
    """The hazard docs/streamer.md warns about, as it is."""
    with multiload.Streamer(hz_file) as s:
        qi = s.get_queue("images", block_size=100, ordered=True)
        ql = s.get_queue("labels", block_size=250, ordered=True)
        pairs = [(gi.start, gl.start) for gi, gl in zip(qi, ql)]
    assert pairs == [(0, 0), (100, 250), (200, 500), (300, 750)]


def test_streamer_doc_says_how_to_zip():
    doc = (ROOT / "docs" / "streamer.md").read_text()
    section = doc[doc.index("### Zipping two queues"):]
    section = section[:section.index("\n#")]
    for words in ("different block sizes", "ordered=True", "BatchStream", "use one block size"):
        assert words in " ".join(section.split()), words


# ------------------------------------------------ 3. the README's quick start

def _readme_blocks():
    text = (ROOT / "README.md").read_text()
    start = text.index("## Quick start")
    section = text[start:text.index("\n## ", start + 1)]
    return re.findall(r"^```python\n(.*?)^```", section, re.M | re.S)


def test_readme_quick_start_streams_every_row(tmp_path, monkeypatch):
    """The README's examples run as written on a data.h5 with 1000 rows
    (1000 % 256 = 232 rows in the last block), and between them give every
    row: the first through remainder=True, the second through
    get_remainder."""
    monkeypatch.chdir(tmp_path)
    want = np.arange(N * 6, dtype=np.float64).reshape(N, 2, 3)
    with h5py.File("data.h5", "w") as f:
        f["images"] = want
    with h5py.File("data.h5", "r") as f:
        want = f["images"][...]
    blocks = _readme_blocks()
    assert len(blocks) == 3 and "remainder=True" in blocks[0]
    seen = []
    namespace = {"train_step": lambda block: seen.append(np.array(block))}   # one session
    for i, code in enumerate(blocks[:2]):
        seen.clear()
        exec(compile(code, f"README.md quick start example {i + 1}", "exec"), namespace)
        if i == 1:
            seen.append(namespace["tail"])
        got = np.concatenate(seen)
        order = np.argsort(got[:, 0, 0], kind="stable")    # the first example is unordered
        assert_same(got[order], want)
    exec(compile(blocks[2], "README.md quick start example 3", "exec"), namespace)


# ------------------------------------------------ 4. open_file keyword arguments

@pytest.mark.parametrize("make,kw,message", [
    (multiload.Reader, dict(n_proc=2),
     "Reader() got an unexpected keyword argument 'n_proc' (did you mean 'n_procs'?)"),
    (multiload.Streamer, dict(block_size=7),
     "Streamer() got an unexpected keyword argument 'block_size' "
     "('block_size' is an argument of Streamer.get_queue())"),
    (multiload.Streamer, dict(n_proc=2),
     "Streamer() got an unexpected keyword argument 'n_proc' "
     "(did you mean 'n_procs' of Streamer.get_queue()?)"),
    (multiload.Streamer, dict(library="tables"),
     "Streamer() got an unexpected keyword argument 'library'"),
    (multiload.Reader, dict(cache_byte=1 << 20),
     "Reader() got an unexpected keyword argument 'cache_byte' (did you mean 'cache_bytes'?)"),
    (multiload.Reader, dict(Title="x"),   # open_file's named parameters keep their case
     "Reader() got an unexpected keyword argument 'Title'"),
])
def test_unknown_keyword_arguments_raise_type_error(hz_file, make, kw, message):
    with pytest.raises(TypeError) as e:
        make(hz_file, **kw)
    assert str(e.value) == message


@pytest.mark.parametrize("make", [multiload.Reader, multiload.Streamer])
@pytest.mark.parametrize("kw,match", [
    (dict(mode="a"), r"mode='a'.*read-only"),
    (dict(mode="w"), r"mode='w'.*read-only"),
    (dict(root_uep="/sub"), r"root_uep='/sub' is not supported"),
    (dict(driver="H5FD_SPLIT"), r"driver='H5FD_SPLIT' is not supported"),
    (dict(DRIVER="H5FD_FAMILY"), r"DRIVER='H5FD_FAMILY' is not supported"),
    (dict(driver="H5FD_NOPE"), r"driver='H5FD_NOPE' is not supported"),
    (dict(driver_core_image=b"\x89HDF"), r"driver_core_image is not supported"),
])
def test_open_file_options_multiload_cannot_honour_raise_value_error(hz_file, make, kw, match):
    with pytest.raises(ValueError, match=match):
        make(hz_file, **kw)


def _pytables_open_file_names():
    """Every keyword tables.open_file takes, from PyTables itself."""
    tables = pytest.importorskip("tables")
    named = [p for p in inspect.signature(tables.open_file).parameters.values()
             if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "filename"]
    params = [k for k in vars(tables.parameters) if k.isupper() and not k.startswith("_")]
    assert {"mode", "title", "root_uep", "filters"} <= {p.name for p in named}
    assert "DRIVER" in params and "NODE_CACHE_SLOTS" in params
    return named, params


def _harmless_value(name):
    """A value of PyTables' parameter `name` that multiload accepts."""
    import tables
    if name == "DRIVER":
        return "H5FD_SEC2"
    if name == "DRIVER_CORE_IMAGE":
        return None
    return getattr(tables.parameters, name)


def test_every_keyword_open_file_takes_is_accepted(hz_file, truth):
    named, params = _pytables_open_file_names()
    kw = {p.name: p.default for p in named if p.name != "mode"}
    kw["mode"] = "r"
    for i, name in enumerate(params):
        # PyTables takes its parameters in any case (it upper-cases them).
        kw[name.lower() if i % 2 else name] = _harmless_value(name)
    s = multiload.Streamer(hz_file, **kw)
    with s.get_queue("images", block_size=128, ordered=True, remainder=True) as q:
        assert_same(np.concatenate([g.array.copy() for g in q]), truth["images"])
    with multiload.Reader(hz_file, 2, None, **kw) as r:
        assert_same(r.read(r.get_dataset("/labels")[::3]), truth["labels"][::3])


def test_multitables_signatures_still_work(hz_file, truth):
    """multitables 2.0.1: Streamer(filename, **kw_args) and
    Reader(filename, n_procs=4, notify=None, **kw_args), kw_args going to
    open_file (here the options its own users pass)."""
    s = multiload.Streamer(filename=hz_file, title="", filters=None, node_cache_slots=64)
    assert_same(np.array(list(s.get_generator("labels"))), truth["labels"])
    with multiload.Reader(filename=hz_file, n_procs=2, notify=None, driver="H5FD_SEC2",
                          root_uep="/", mode="r") as r:
        assert_same(r.read(r.get_dataset("/images")[[5, 1, 5]]), truth["images"][[5, 1, 5]])


@pytest.mark.parametrize("key", ["driver", "DRIVER"])
def test_driver_direct_makes_direct_the_queues_default(hz_file, truth, monkeypatch, key):
    import multiload.streamer as streamer_module
    checked = []
    real_check = streamer_module._check_direct
    monkeypatch.setattr(streamer_module, "_check_direct",
                        lambda fn: (checked.append(fn), real_check(fn)))
    s = multiload.Streamer(hz_file, **{key: "H5FD_DIRECT"})
    try:
        fd = os.open(hz_file, os.O_RDONLY | os.O_DIRECT)
        os.close(fd)
        supported = True
    except OSError:
        supported = False
    if supported:
        with s.get_queue("images", block_size=100, ordered=True, remainder=True) as q:
            assert_same(np.concatenate([g.array.copy() for g in q]), truth["images"])
        rows = list(s.get_generator("labels", block_size=100))
        assert_same(np.array(rows), truth["labels"])
        assert checked == [hz_file, hz_file]
    else:   # the queue asked for O_DIRECT, which this filesystem refuses
        with pytest.raises(OSError, match="direct=True: cannot open .* with O_DIRECT"):
            s.get_queue("images")
        assert checked == [hz_file]
    # An explicit direct=False still wins; a Streamer without the driver reads normally.
    checked.clear()
    with s.get_queue("labels", block_size=100, direct=False, ordered=True) as q:
        assert_same(np.concatenate([g.array.copy() for g in q]), truth["labels"][:N // 100 * 100])
    with multiload.Streamer(hz_file, driver="H5FD_SEC2").get_queue("labels", block_size=100) as q:
        assert q.get(timeout=GET_TIMEOUT) is not multiload.QueueClosed
    assert checked == []


def test_reader_accepts_driver_direct_and_reads_as_usual(hz_file, truth):
    """The Reader has no O_DIRECT mode: the driver is accepted and changes nothing."""
    with multiload.Reader(hz_file, n_procs=2, DRIVER="H5FD_DIRECT") as r:
        idx = np.array([999, 0, 17, 17, 500])
        assert_same(r.read(r.get_dataset("/images")[idx]), truth["images"][idx])
        assert_same(r.read(r.get_dataset("/labels")[10:900:7]), truth["labels"][10:900:7])


# ------------------------------------------------ 5. kept views pin slots

def test_all_slots_held_by_kept_views_says_so_and_how_to_copy(hz_file, truth):
    with multiload.Streamer(hz_file).get_queue("images", n_procs=1, block_size=100, read_ahead=3,
                                               ordered=True) as q:
        kept = [q.get(timeout=GET_TIMEOUT).array for _ in range(3)]   # the guards are dropped
        with pytest.raises(RuntimeError) as e:
            q.get(timeout=GET_TIMEOUT)
        message = str(e.value)
        assert message.startswith("every one of the queue's 3 slots is held by an unreleased guard")
        for words in ("view kept from a guard", "pins its slot", "guard.release()",
                      "np.array(block)", "block.copy()", "read_ahead"):
            assert words in message, words
        copies = [np.array(v) for v in kept]
        del kept                                   # the views go: the slots are free
        with q.get(timeout=GET_TIMEOUT) as block:
            assert_same(block, truth["images"][300:400])
    assert_same(np.concatenate(copies), truth["images"][:300])


def test_streamer_doc_says_a_kept_view_pins_its_slot():
    doc = " ".join((ROOT / "docs" / "streamer.md").read_text().split())
    assert "A kept **view** pins its slot" in doc
    assert "`np.array(block)` or `block.copy()`" in doc
