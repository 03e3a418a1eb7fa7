"""Threads sharing one index, and thread counts: reads concurrent, writes exclusive, every answer
that of some sequential order of the operations; no thread count crashes the process.

The threaded tests check outcomes only (never timing): every answer is compared with a replay
of the writers' logged operations, so they are deterministic in what they accept and can run
under ThreadSanitizer. A tiny switch interval makes the interpreter interleave the threads'
Python code often (the compiled calls release the GIL anyway).
"""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import hsrgeom

STRUCTURES = {
    "partition_tree": lambda p: hsrgeom.PartitionTree(p, leaf_size=4),
    "brute_force": hsrgeom.BruteForce,
}


@pytest.fixture
def interleave():
    """Switch threads every microsecond while the test runs."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _grid_points(rng, n, d=3):
    # small integers: every inner product with an integer normal is exact in float64, so the
    # replay's membership and top-k order are exact (and ties are common)
    return rng.integers(-8, 9, size=(n, d)).astype(np.float64)


def _run_threads(targets):
    """Runs the callables in threads started together; returns the exceptions they raised."""
    errors = []
    barrier = threading.Barrier(len(targets))

    def wrap(f):
        def run():
            try:
                barrier.wait()
                f()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(f)) for f in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.parametrize("kind", sorted(STRUCTURES))
def test_readers_and_writers_see_sequential_states(kind, interleave):
    # 2 writers (one inserts, one removes initial points: the state after any interleaving is
    # determined by how many operations of each were applied, (i, j)) and 8 readers; each read
    # must equal the replay at some (i, j) between the operations completed before it started
    # and those started before it ended.
    rng = np.random.default_rng(5)
    n0, d, n_ops, n_reads = 300, 3, 100, 120
    initial = _grid_points(rng, n0, d)
    index = STRUCTURES[kind](initial)
    batches = [_grid_points(rng, int(rng.integers(1, 13)), d) for _ in range(n_ops)]
    order = rng.permutation(n0)
    cuts = np.concatenate([[0], np.cumsum(rng.integers(1, 4, size=n_ops))])
    removals = [order[cuts[t]:cuts[t + 1]] for t in range(n_ops)]
    everything = np.concatenate([initial] + batches)
    total = len(everything)
    born = np.full(total, -1)  # id alive at (i, j) iff born < i and died >= j
    died = np.full(total, n_ops + 1)
    start = n0
    for t, bt in enumerate(batches):
        born[start : start + len(bt)] = t
        start += len(bt)
    for t, r in enumerate(removals):
        died[r] = t

    log = threading.Lock()
    counts = {"ins_started": 0, "ins_done": 0, "rem_started": 0, "rem_done": 0}
    given_ids = []

    def inserter():
        for bt in batches:
            with log:
                counts["ins_started"] += 1
            given_ids.append(index.insert(bt))
            with log:
                counts["ins_done"] += 1

    def remover():
        for r in removals:
            with log:
                counts["rem_started"] += 1
            index.remove(r)
            with log:
                counts["rem_done"] += 1

    records = []

    def reader(seed):
        r = np.random.default_rng(seed)
        m = 1 + seed % 4
        for step in range(n_reads):
            op = ("report", "count", "ids", "topk", "len")[step % 5]
            a = r.integers(-3, 4, size=(m, d)).astype(np.float64)
            b = r.integers(-10, 11, size=m).astype(np.float64)
            with log:
                i0, j0 = counts["ins_done"], counts["rem_done"]
            if op == "report":
                res = index.report(a, b)
                ans = res.split()
            elif op == "count":
                ans = index.count(a, b)
            elif op == "ids":
                ans = index.ids()
            elif op == "topk":
                ans = index.topk(a, 5)[1]
            else:
                ans = len(index)
            if op in ("report", "count", "topk"):
                assert len(index.stats) == m  # this thread's own last call
            with log:
                i1, j1 = counts["ins_started"], counts["rem_started"]
            records.append((op, a, b, ans, i0, i1, j0, j1))

    errors = _run_threads([inserter, remover] + [lambda s=s: reader(s) for s in range(8)])
    assert not errors, errors[:3]

    # the writers' results and the final state: the whole replay
    expect_ids = np.arange(n0, total, dtype=np.int64)
    assert np.array_equal(np.concatenate(given_ids), expect_ids)
    alive_end = died > n_ops
    assert index.n == len(index) == int(alive_end.sum())
    assert np.array_equal(index.ids(), np.flatnonzero(alive_end))
    assert np.array_equal(index.points(), everything[alive_end])

    # every read equals the replay at some (i, j) in its window
    for op, a, b, ans, i0, i1, j0, j1 in records:
        ok = False
        for i in range(i0, i1 + 1):
            for j in range(j0, j1 + 1):
                alive = (born < i) & (died >= j)
                if op == "len":
                    ok = ans == alive.sum()
                elif op == "ids":
                    ok = np.array_equal(ans, np.flatnonzero(alive))
                else:
                    s = everything @ a.T  # exact (small integers)
                    if op == "topk":
                        want = []
                        for q in range(len(a)):
                            ids = np.flatnonzero(alive)
                            want.append(ids[np.lexsort((ids, -s[ids, q]))[:5]])
                        ok = np.array_equal(ans, np.array(want))
                    else:
                        inside = [np.flatnonzero(alive & (s[:, q] >= b[q])) for q in range(len(a))]
                        if op == "count":
                            ok = np.array_equal(ans, [len(x) for x in inside])
                        else:
                            ok = all(np.array_equal(x, y) for x, y in zip(ans, inside))
                if ok:
                    break
            if ok:
                break
        assert ok, f"{op} answer matches no state between ({i0}, {j0}) and ({i1}, {j1})"


@pytest.mark.parametrize("kind", sorted(STRUCTURES))
def test_two_writers_insert(kind, interleave):
    # concurrent inserts: no lost points, no duplicate ids, exact final n
    rng = np.random.default_rng(1)
    d, n0, per_thread = 2, 50, 150
    for trial in range(4):
        index = STRUCTURES[kind](rng.random((n0, d)))
        mine = {0: [], 1: []}

        def writer(w):
            for s in range(per_thread):
                p = np.array([[w + 2.0, s + 3 * trial]])  # point encodes writer and step
                mine[w].append((index.insert(p)[0], p[0]))

        errors = _run_threads([lambda: writer(0), lambda: writer(1)])
        assert not errors, errors[:3]
        ids = np.array([i for w in mine for i, _ in mine[w]])
        assert len(np.unique(ids)) == len(ids) == 2 * per_thread
        assert np.array_equal(np.sort(ids), np.arange(n0, n0 + 2 * per_thread))
        assert index.n == n0 + 2 * per_thread
        pts, live = index.points(), index.ids()
        assert np.array_equal(live, np.arange(n0 + 2 * per_thread))
        for w in mine:
            for i, p in mine[w]:
                assert np.array_equal(pts[i], p)


def test_concurrent_removals_and_values(interleave):
    # two removers of disjoint ids and a writer attaching values: every removal is kept
    # (blocks of several sizes, so that removals rebuild blocks of both threads' ids)
    rng = np.random.default_rng(2)
    total = 1200
    pts = rng.random((total, 2))
    index = hsrgeom.PartitionTree(pts[:64], leaf_size=4)
    for k in range(64, total, 37):
        index.insert(pts[k : k + 37])
    ids = rng.permutation(total)
    part = [ids[:500], ids[500:1000]]

    def remover(w):
        for k in range(0, 500, 4):
            index.remove(part[w][k : k + 4])

    vals = np.arange(float(total))
    errors = _run_threads([lambda: remover(0), lambda: remover(1), lambda: index.attach_values(vals)])
    assert not errors, errors[:3]
    keep = np.sort(ids[1000:])
    assert index.n == 200 and np.array_equal(index.ids(), keep)
    assert np.array_equal(index.points(), pts[keep])
    s = index.sum(np.array([[1.0, 0.0]]), -1.0, "attached")
    assert s.counts[0] == 200 and s.sums[0] == vals[keep].sum()


def test_stats_are_per_thread():
    index = hsrgeom.PartitionTree(np.random.default_rng(3).random((500, 2)))
    first_done, second_done = threading.Event(), threading.Event()
    seen = {}

    def first():
        index.count(np.ones((3, 2)), 0.5)
        first_done.set()
        second_done.wait()
        seen["first"] = len(index.stats)

    def second():
        first_done.wait()
        index.count(np.ones((7, 2)), 0.5)
        second_done.set()
        seen["second"] = len(index.stats)

    errors = _run_threads([first, second])
    assert not errors
    assert seen == {"first": 3, "second": 7}
    assert len(index.stats) == 0  # the main thread has not queried it


def test_lock_reentrant_and_writer_preferring():
    from hsrgeom._sync import RWLock

    lock = RWLock()
    with lock.read:
        with lock.read:  # reentrant read
            pass
        with pytest.raises(RuntimeError):
            with lock.write:  # an upgrade would deadlock: refused
                pass
    with lock.write:
        with lock.read, lock.write:  # reads and writes inside a write
            pass
    # a waiting writer goes before readers arriving after it
    order = []
    reading, writer_waiting = threading.Event(), threading.Event()

    def first_reader():
        with lock.read:
            reading.set()
            writer_waiting.wait()
            while lock._waiting == 0:  # the writer is queued (a state, not a timing)
                threading.Event().wait(0.001)
            t = threading.Thread(target=late_reader)
            t.start()
            while not late_started.is_set():
                threading.Event().wait(0.001)
        t.join()

    late_started = threading.Event()

    def late_reader():
        late_started.set()
        with lock.read:
            order.append("late reader")

    def writer():
        reading.wait()
        writer_waiting.set()
        with lock.write:
            order.append("writer")

    errors = _run_threads([first_reader, writer])
    assert not errors
    assert order == ["writer", "late reader"]


# ---- thread counts ----------------------------------------------------------------------------
def _python(code, limit_mb=None):
    """Runs code in a fresh interpreter (``limit()`` there limits the address space to its
    current size + limit_mb MiB: less than a thread stack, no thread can start) and checks that
    it ends normally after printing "ok"."""
    prefix = ""
    if limit_mb is not None:
        prefix = textwrap.dedent(f"""
            import resource
            def limit():
                size = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize"))
                cap = size * 1024 + {limit_mb} * 2**20
                resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        """)
    r = subprocess.run([sys.executable, "-c", prefix + textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout[-500:], r.stderr[-2000:])


def test_n_threads_bound_is_a_value_error():
    _python("""
        import numpy as np, hsrgeom
        p = np.random.default_rng(0).random((20000, 3))
        cases = [(lambda v: hsrgeom.PartitionTree(p, n_threads=v), v, ValueError, "n_threads must be <= 4096")
                 for v in (100000, 4097, 2**31, 2**70)]
        cases += [(hsrgeom.set_num_threads, v, ValueError, "n must be in [0, 4096]") for v in (10**6, -1, 2**70)]
        cases += [(hsrgeom.set_num_threads, 2.0, TypeError, "n must be an integer")]
        for call, value, error, message in cases:
            try:
                call(value)
            except error as e:
                assert message in str(e), e
            else:
                raise AssertionError(value)
        print("ok")
    """)


def test_large_thread_counts_are_clamped():
    # the largest allowed counts run (with at most one thread per processor) and answer exactly
    _python("""
        import os, numpy as np, hsrgeom
        rng = np.random.default_rng(0)
        p = rng.random((60000, 4))
        a, b = rng.standard_normal((64, 4)), 0.3
        want = hsrgeom.PartitionTree(p, n_threads=1).count(a, b, n_threads=1)
        tree = hsrgeom.PartitionTree(p, n_threads=4096)
        assert np.array_equal(tree.count(a, b, n_threads=4096), want)
        assert np.array_equal(hsrgeom.BruteForce(p).count(a, b, n_threads=4096), want)
        hsrgeom.set_num_threads(4096)
        assert 1 <= hsrgeom.get_num_threads() <= os.cpu_count()
        assert np.array_equal(tree.count(a, b), want)
        print("ok")
    """)


def test_threads_under_an_address_space_limit():
    # no room for one more thread stack: libgomp would end the process ("Thread creation
    # failed"); every call must run on the threads that can start and answer exactly
    _python("""
        import numpy as np, hsrgeom
        rng = np.random.default_rng(0)
        p = rng.random((20000, 4))
        tp = rng.random((12500, 16))
        a, b = rng.standard_normal((64, 4)), 0.3
        bf = hsrgeom.BruteForce(p)
        want = bf.count(a, b, n_threads=1)
        want_t = hsrgeom.PartitionTree(tp, n_threads=1).count(np.ones((4, 16)), 8.0, n_threads=1)
        limit()
        got = bf.count(a, b, n_threads=1000)
        hsrgeom.set_num_threads(1000)
        got2 = bf.count(a, b)
        tree = hsrgeom.PartitionTree(tp, n_threads=64)   # a parallel build
        got_t = tree.count(np.ones((4, 16)), 8.0)
        assert np.array_equal(got, want) and np.array_equal(got2, want) and np.array_equal(got_t, want_t)
        print("ok")
    """, limit_mb=6)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two processors for a parallel region")
@pytest.mark.skipif("tsan" in os.environ.get("LD_PRELOAD", ""),
                    reason="the ThreadSanitizer build has no OpenMP, and TSan's fork support is partial")
def test_forked_children_answer_on_one_thread():
    # libgomp's threads do not survive fork(2): a child forked after a parallel build and
    # report waited forever in its first parallel region. A forked child (os.fork, and
    # multiprocessing's "fork" workers querying an index inherited from the parent) must answer
    # exactly, on one thread; the parent keeps its threads.
    _python("""
        import multiprocessing, os, time, numpy as np, hsrgeom
        rng = np.random.default_rng(0)
        p = rng.random((200000, 3), dtype=np.float32)
        a = rng.standard_normal((400, 3)).astype(np.float32)
        tree = hsrgeom.PartitionTree(p, n_threads=2)      # a parallel build
        want = tree.report(a, 0.6, n_threads=2)           # and a parallel report (the pool's blocks)
        want_sum = tree.sum(a, 0.6, n_threads=2).counts
        threads = hsrgeom.get_num_threads()

        pid = os.fork()
        if pid == 0:
            ok = hsrgeom.get_num_threads() == 1
            got = tree.report(a, 0.6, n_threads=2)
            ok = ok and np.array_equal(got.lims, want.lims) and np.array_equal(got.ids, want.ids)
            ok = ok and np.array_equal(tree.sum(a, 0.6, n_threads=2).counts, want_sum)
            ok = ok and np.array_equal(hsrgeom.PartitionTree(p, n_threads=2).report(a, 0.6).ids, want.ids)
            import hsrgeom.attention as att  # its kernel module loaded after the fork
            q, k, v = (rng.standard_normal((1, 2, r, c)) for r, c in ((64, 16), (20000, 16), (20000, 8)))
            got_att = att.relu_attention(q, k, v, bias=3.0)
            ok = ok and np.allclose(got_att, att.reference.relu_attention(q, k, v, bias=3.0), rtol=1e-9, atol=1e-9)
            os._exit(0 if ok else 3)
        deadline = time.time() + 60
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.time() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise AssertionError("the forked child hung")
            time.sleep(0.05)
        assert os.waitstatus_to_exitcode(status) == 0, status

        def counts(j):
            return tree.count(a[j:j + 100], 0.6, n_threads=2)
        with multiprocessing.get_context("fork").Pool(2) as pool:
            res = pool.map_async(counts, range(0, 400, 100))
            got = np.concatenate(res.get(timeout=60))
        assert np.array_equal(got, np.diff(want.lims))
        assert hsrgeom.get_num_threads() == threads  # the parent keeps its threads
        assert np.array_equal(tree.report(a, 0.6, n_threads=2).ids, want.ids)
        print("ok")
    """)
