"""multiload.Order against an independent pure-Python reading of its
contract (src/order.c's and src/perm.c's opening comments, version 1).

The reference below is written from the documented definition only (no
numpy, no multiload); GOLDEN holds its first rows for a few orders, so a
change to either side shows up as a changed known answer.
"""

import pickle
from collections import Counter

import pytest

import multiload
from multiload import Order

M64 = (1 << 64) - 1
G = 0x9E3779B97F4A7C15
H = 0xD1B54A32D192ED03


def mix(x):
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    x ^= x >> 31
    return x


class RefPerm:
    def __init__(self, n, seed, epoch, salt):
        self.n = n
        self.w = 0
        while (1 << self.w) < n:
            self.w += 1
        base = (mix(mix((seed + G) & M64) ^ epoch) + salt * H) & M64
        self.key = [mix((base + (i + 1) * G) & M64) for i in range(6)]

    def _e(self, x):
        r = self.w // 2
        l = self.w - r
        for k in self.key:
            hi, lo = x >> r, x & ((1 << r) - 1)
            x = (lo << l) | ((hi ^ mix(lo ^ k)) & ((1 << l) - 1))
            l, r = r, l
        return x

    def __call__(self, i):
        y = self._e(i)
        while y >= self.n:
            y = self._e(y)
        return y


class RefOrder:
    def __init__(self, n_rows, block_rows, seed, epoch, shuffle="none", window_rows=None,
                 num_streams=None, global_batch=1, tail="drop"):
        self.N, self.B, self.seed, self.epoch = n_rows, block_rows, seed, epoch
        self.shuffle, self.tail, self.GB = shuffle, tail, global_batch
        self.S = num_streams or 1
        self.W = (window_rows or 8 * block_rows) if shuffle == "window" else None
        self.F = self.N // self.B
        self.L = self.F // self.S * self.B
        self.body = self.S * self.L
        if shuffle in ("block", "window"):
            self.pb = RefPerm(self.F, seed, epoch, 0)
        if shuffle == "global":
            self.pr = RefPerm(self.N, seed, epoch, 0)
        self.steps = self.N // self.GB if tail == "drop" else -(-self.N // self.GB)

    def seq(self, j):
        if self.shuffle in ("block", "window") and j // self.B < self.F:
            return self.pb(j // self.B) * self.B + j % self.B
        if self.shuffle == "global":
            return self.pr(j)
        return j

    def wmove(self, s, length, o):
        if self.shuffle != "window":
            return o
        w = o // self.W
        m = min(self.W, length - w * self.W)
        salt = (1 + w * (self.S + 1) + s) & M64
        return w * self.W + RefPerm(m, self.seed, self.epoch, salt)(o % self.W)

    def locate(self, k):
        """(segment, offset) of position k: a stream s < S, or the tail S."""
        T = self.N - self.body
        if self.shuffle == "none":
            return (k % self.S, k // self.S) if k < self.body else (self.S, k - self.body)
        return (self.S, k) if k < T else (k % self.S, (k - T) // self.S)

    def seg_row(self, s, o):
        """The row at offset o of segment s, after the window move."""
        if s == self.S:
            return self.seq(self.body + self.wmove(s, self.N - self.body, o))
        return self.seq(s * self.L + self.wmove(s, self.L, o))

    def row(self, k):
        return self.seg_row(*self.locate(k))

    def batch(self, t, r, R):
        """(rows, valid) of rank r's batch t."""
        b = self.GB // R
        ks = [t * self.GB + r + i * R for i in range(b)]
        if self.tail == "uneven":
            ks = [k for k in ks if k < self.N]
        return [self.row(k % self.N) for k in ks], [k < self.N for k in ks]


def make(n, **kw):
    kw.setdefault("seed", 0)
    kw.setdefault("epoch", 0)
    return Order(n, **kw), RefOrder(n, kw["block_rows"], kw["seed"], kw["epoch"], kw.get("shuffle", "none"),
                                    kw.get("window_rows"), kw.get("num_streams"), kw["global_batch"],
                                    kw.get("tail", "drop"))


# The first 16 rows of a few orders, from RefOrder (version 1).
GOLDEN_PARAMS = {
    "none": dict(n_rows=1003, block_rows=8, seed=7, epoch=0, shuffle="none", num_streams=4, global_batch=32),
    "block": dict(n_rows=1003, block_rows=8, seed=7, epoch=0, shuffle="block", num_streams=4, global_batch=32),
    "window": dict(n_rows=1003, block_rows=8, seed=7, epoch=1, shuffle="window", window_rows=32,
                   num_streams=4, global_batch=32),
    "global": dict(n_rows=1003, block_rows=8, seed=7, epoch=2, shuffle="global", num_streams=4, global_batch=32),
    "global_2^40": dict(n_rows=1 << 40, block_rows=1024, seed=12345, epoch=3, shuffle="global", num_streams=8,
                        global_batch=256),
}
GOLDEN = {
    "none": [0, 248, 496, 744, 1, 249, 497, 745, 2, 250, 498, 746, 3, 251, 499, 747],
    "block": [288, 289, 290, 291, 292, 293, 294, 295, 1000, 1001, 1002, 872, 560, 976, 600, 873],
    "window": [144, 1000, 151, 1001, 150, 145, 146, 1002, 148, 147, 149, 843, 775, 862, 543, 25],
    "global": [341, 981, 431, 619, 791, 7, 695, 715, 729, 95, 40, 816, 79, 300, 13, 952],
    "global_2^40": [443842090270, 235269115091, 1027981664101, 405087990277, 810409693029, 1026216323762,
                    359938203654, 860065787728, 1003103679027, 1096167412752, 1001838170654, 800632083197,
                    740545251322, 318028703960, 852386193840, 941819145285],
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_vectors(name):
    p = dict(GOLDEN_PARAMS[name])
    ref = RefOrder(p["n_rows"], p["block_rows"], p["seed"], p["epoch"], p["shuffle"], p.get("window_rows"),
                   p["num_streams"], p["global_batch"])
    assert [ref.row(k) for k in range(16)] == GOLDEN[name]
    o = Order(p.pop("n_rows"), **p)
    assert [o.row(k) for k in range(16)] == GOLDEN[name]


CASES = [
    (n, B, shuffle, S, GB, tail)
    for n, B in [(0, 3), (1, 1), (7, 3), (64, 4), (250, 8), (1001, 16), (37, 100)]
    for shuffle in ["none", "block", "window", "global"]
    for S, GB in [(1, 1), (4, 8), (8, 24)]
    for tail in ["drop", "pad", "uneven"]
]


@pytest.mark.parametrize("n,B,shuffle,S,GB,tail", CASES)
def test_matches_reference(n, B, shuffle, S, GB, tail):
    kw = dict(block_rows=B, seed=n * 31 + S, epoch=GB, shuffle=shuffle, num_streams=S, global_batch=GB, tail=tail)
    if shuffle == "window":
        kw["window_rows"] = 2 * B
    o, ref = make(n, **kw)
    assert [o.row(k) for k in range(n)] == [ref.row(k) for k in range(n)]
    assert sorted(o.row(k) for k in range(n)) == list(range(n))  # a bijection
    assert o.steps_per_epoch == ref.steps
    for R in [R for R in (1, 2, 4) if S % R == 0 and GB % R == 0]:
        for r in range(R):
            for t in range(o.steps(r, R)):
                got = o.local_batch(t, r, R)
                want_rows, want_valid = ref.batch(t, r, R)
                if tail == "pad":
                    assert got[0].dtype == "int64" and got[1].dtype == bool
                    assert got[0].tolist() == want_rows and got[1].tolist() == want_valid
                else:
                    assert got.dtype == "int64" and got.tolist() == want_rows


def epoch_rows(o, R, tail):
    """{rank: [(rows, valid) per step]} for world size R."""
    out = {}
    for r in range(R):
        steps = []
        for t in range(o.steps(r, R)):
            b = o.local_batch(t, r, R)
            steps.append((b[0].tolist(), b[1].tolist()) if tail == "pad" else (b.tolist(), [True] * len(b)))
        out[r] = steps
    return out


@pytest.mark.parametrize("shuffle", ["none", "block", "window", "global"])
@pytest.mark.parametrize("n", [1000, 1003, 37])
def test_exactly_once_drop(shuffle, n):
    GB = 40
    o = Order(n, block_rows=8, seed=3, epoch=1, shuffle=shuffle, num_streams=8, global_batch=GB, tail="drop")
    for R in (1, 2, 4, 8):
        e = epoch_rows(o, R, "drop")
        assert {len(s) for s in e.values()} == {o.steps_per_epoch} == {n // GB}
        rows = [x for s in e.values() for b, _ in s for x in b]
        assert all(len(b) == GB // R for s in e.values() for b, _ in s)  # equal length
        c = Counter(rows)
        assert max(c.values(), default=1) == 1  # each row at most once
        assert n - len(c) < GB and set(c) <= set(range(n))  # fewer than one global batch dropped


@pytest.mark.parametrize("shuffle", ["none", "block", "window", "global"])
@pytest.mark.parametrize("n", [1000, 1003, 37, 5])
def test_at_least_once_pad(shuffle, n):
    GB = 40
    o = Order(n, block_rows=8, seed=3, epoch=1, shuffle=shuffle, num_streams=8, global_batch=GB, tail="pad")
    for R in (1, 2, 4, 8):
        e = epoch_rows(o, R, "pad")
        assert {len(s) for s in e.values()} == {o.steps_per_epoch} == {-(-n // GB)}
        assert all(len(b) == GB // R == len(v) for s in e.values() for b, v in s)
        valid = [x for s in e.values() for b, v in s for x, ok in zip(b, v) if ok]
        repeats = [x for s in e.values() for b, v in s for x, ok in zip(b, v) if not ok]
        assert sorted(valid) == list(range(n))  # valid marks each row exactly once
        assert len(repeats) == -(-n // GB) * GB - n  # and the rest are the repeats


@pytest.mark.parametrize("shuffle", ["none", "window", "global"])
@pytest.mark.parametrize("n", [1000, 1003, 37, 5])
def test_uneven_nothing_dropped_or_repeated(shuffle, n):
    GB = 40
    o = Order(n, block_rows=8, seed=3, epoch=1, shuffle=shuffle, num_streams=8, global_batch=GB, tail="uneven")
    for R in (1, 2, 4, 8):
        e = epoch_rows(o, R, "uneven")
        rows = [x for s in e.values() for b, _ in s for x in b]
        assert sorted(rows) == list(range(n))
        counts = [len(s) for s in e.values()]
        assert max(counts) == o.steps_per_epoch and max(counts) - min(counts) <= 1
        assert all(0 < len(b) <= GB // R for s in e.values() for b, _ in s)


@pytest.mark.parametrize("shuffle", ["none", "block", "window", "global"])
@pytest.mark.parametrize("S", [4, 8])
@pytest.mark.parametrize("tail", ["drop", "pad", "uneven"])
def test_global_sequence_independent_of_world_size(shuffle, S, tail):
    n, GB = 1234, 16
    o = Order(n, block_rows=8, seed=11, epoch=5, shuffle=shuffle, num_streams=S, global_batch=GB, tail=tail)
    seqs = []
    for R in (1, 2, 4):
        e = epoch_rows(o, R, tail)
        glob = []
        for t in range(o.steps_per_epoch):
            batch = {}
            for r in range(R):
                if t < len(e[r]):
                    rows, valid = e[r][t]
                    for i, (x, ok) in enumerate(zip(rows, valid)):
                        batch[t * GB + r + i * R] = (x, ok)  # the position each rank's row holds
            glob.append([batch[k] for k in sorted(batch)])
        seqs.append(glob)
    assert seqs[0] == seqs[1] == seqs[2]


def test_rank_reads_its_own_streams():
    """In the body of the epoch, rank r's rows come only from streams s = r (mod R)."""
    n, B, S, GB, R = 4096, 16, 8, 32, 4
    o = Order(n + 5, block_rows=B, seed=2, epoch=0, shuffle="block", num_streams=S, global_batch=GB)
    ref = RefOrder(n + 5, B, 2, 0, "block", None, S, GB)
    stream_of = {}
    for k in range(n + 5):
        s, _ = ref.locate(k)
        if s < S:
            stream_of[ref.row(k)] = s
    for r in range(R):
        for t in range(o.steps(r, R)):
            for x in o.local_batch(t, r, R).tolist():
                if x in stream_of:
                    assert stream_of[x] % R == r


def test_window_keeps_rows_in_window():
    n, B, S, W = 3000, 8, 4, 32
    kw = dict(block_rows=B, seed=9, epoch=4, num_streams=S, global_batch=8)
    w = Order(n, shuffle="window", window_rows=W, **kw)
    ref = RefOrder(n, B, 9, 4, "block", None, S, 8)  # the same blocks, rows not moved in windows
    assert w.stream_rows == ref.L
    moved = 0
    for k in range(n):
        s, off = ref.locate(k)
        length = ref.L if s < S else n - S * ref.L
        start = off // W * W
        window = {ref.seg_row(s, j) for j in range(start, min(start + W, length))}
        assert w.row(k) in window
        moved += w.row(k) != ref.seg_row(s, off)
    assert moved > n // 2  # and it does shuffle


def test_default_window_is_eight_blocks():
    assert Order(100, block_rows=3, seed=0, epoch=0, shuffle="window", global_batch=1).window_rows == 24
    assert Order(100, block_rows=3, seed=0, epoch=0, shuffle="block", global_batch=1).window_rows is None


@pytest.mark.parametrize("shuffle", ["block", "window", "global"])
def test_epochs_and_seeds_differ(shuffle):
    kw = dict(block_rows=4, shuffle=shuffle, num_streams=2, global_batch=10)
    first = lambda o: [o.row(k) for k in range(200)]  # noqa: E731
    e = [first(Order(2000, seed=1, epoch=ep, **kw)) for ep in range(4)]
    assert len({tuple(x) for x in e}) == 4
    assert first(Order(2000, seed=2, epoch=0, **kw)) != e[0]
    assert first(Order(2000, seed=1, epoch=0, **kw)) == e[0]  # and the same parameters agree


def test_drop_drops_different_rows_each_epoch():
    kw = dict(block_rows=1, seed=5, shuffle="global", num_streams=2, global_batch=64)
    dropped = []
    for ep in range(3):
        o = Order(1000, epoch=ep, **kw)
        seen = {x for t in range(o.steps_per_epoch) for x in o.local_batch(t).tolist()}
        dropped.append(frozenset(range(1000)) - seen)
    assert len(set(dropped)) == 3 and all(len(d) == 1000 % 64 for d in dropped)


@pytest.mark.parametrize("shuffle", ["block", "window"])
def test_drop_keeps_the_short_block_and_varies(shuffle):
    """The tail (with the short block) comes first, so drop drops the streams' ends, not it."""
    n, B, GB = 1003, 8, 64  # short block: rows 1000..1002; 1003 % 64 = 43 rows dropped
    dropped = []
    for ep in range(3):
        o = Order(n, block_rows=B, seed=5, epoch=ep, shuffle=shuffle, num_streams=4, global_batch=GB)
        seen = {x for t in range(o.steps_per_epoch) for x in o.local_batch(t).tolist()}
        assert {1000, 1001, 1002} <= seen
        dropped.append(frozenset(range(n)) - seen)
    assert len(set(dropped)) == 3 and all(len(d) == n % GB for d in dropped)


def test_row_agrees_with_local_batch():
    o = Order(999, block_rows=5, seed=1, epoch=1, shuffle="window", num_streams=4, global_batch=12, tail="pad")
    for R in (1, 2, 4):
        for r in range(R):
            for t in range(o.steps_per_epoch):
                rows, valid = o.local_batch(t, r, R)
                ks = [t * 12 + r + i * R for i in range(12 // R)]
                assert rows.tolist() == [o.row(k % 999) for k in ks]
                assert valid.tolist() == [k < 999 for k in ks]


def test_huge_order_is_o1():
    n = 1 << 40
    o = Order(n, block_rows=4096, seed=1, epoch=0, shuffle="global", num_streams=8, global_batch=512)
    ref = RefOrder(n, 4096, 1, 0, "global", None, 8, 512)
    for k in (0, 1, 12345678901, n - 1):
        assert o.row(k) == ref.row(k) and 0 <= o.row(k) < n
    assert o.steps_per_epoch == n // 512
    assert o.local_batch(o.steps_per_epoch - 1, 7, 8).tolist() == ref.batch(o.steps_per_epoch - 1, 7, 8)[0]
    w = Order(n, block_rows=4096, seed=1, epoch=0, shuffle="window", num_streams=8, global_batch=512)
    wref = RefOrder(n, 4096, 1, 0, "window", None, 8, 512)
    assert [w.row(k) for k in (0, n // 2, n - 1)] == [wref.row(k) for k in (0, n // 2, n - 1)]


def test_pickles_as_parameters():
    o = Order(500, block_rows=4, seed=3, epoch=2, shuffle="window", num_streams=4, global_batch=8)
    p = pickle.loads(pickle.dumps(o))
    assert [p.row(k) for k in range(500)] == [o.row(k) for k in range(500)]
    assert repr(p) == repr(o)


BASE = dict(block_rows=4, seed=0, epoch=0, global_batch=8)


@pytest.mark.parametrize("change,match", [
    (dict(block_rows=0), "block_rows must be >= 1"),
    (dict(global_batch=0), "global_batch must be >= 1"),
    (dict(n_rows=-1), "n_rows must be >= 0"),
    (dict(seed=-1), "seed must be >= 0"),
    (dict(shuffle="rows"), "shuffle must be 'none', 'block', 'window' or 'global'"),
    (dict(tail="wrap"), "tail must be 'drop', 'pad' or 'uneven'"),
    (dict(shuffle="window", window_rows=0), "window_rows must be >= 1"),
    (dict(shuffle="window", window_rows=6), r"window_rows \(6\) must be a multiple of block_rows \(4\)"),
    (dict(shuffle="block", window_rows=8), "window_rows applies only to shuffle='window'"),
    (dict(num_streams=0), "num_streams must be >= 1"),
    (dict(version=2), "version must be 1"),
    (dict(version=0), "version must be 1"),
])
def test_bad_parameters(change, match):
    kw = dict(BASE, n_rows=100)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        Order(kw.pop("n_rows"), **kw)


def test_bad_shards_and_steps():
    o = Order(100, num_streams=4, **BASE)
    with pytest.raises(ValueError, match=r"rank \(2\) must be in \[0, world_size\)"):
        o.local_batch(0, 2, 2)
    with pytest.raises(ValueError, match=r"rank \(-1\) must be in \[0, world_size\)"):
        o.local_batch(0, -1, 2)
    with pytest.raises(ValueError, match="world_size must be >= 1"):
        o.steps(0, 0)
    with pytest.raises(ValueError, match=r"world_size \(3\) must divide num_streams \(4\)"):
        o.local_batch(0, 0, 3)
    o8 = Order(100, num_streams=16, **BASE)
    with pytest.raises(ValueError, match=r"global_batch \(8\) must be divisible by world_size \(16\)"):
        o8.local_batch(0, 0, 16)
    with pytest.raises(IndexError):
        o.local_batch(o.steps_per_epoch)
    with pytest.raises(IndexError):
        o.local_batch(-1)
    with pytest.raises(IndexError):
        o.row(100)
    with pytest.raises(IndexError):
        o.row(-1)
    with pytest.raises(TypeError):
        Order(10.5, **BASE)


def test_exported():
    assert multiload.Order is Order and "Order" in multiload.__all__
