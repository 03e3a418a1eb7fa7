"""The readers-writer lock (``hsrgeom._sync.RWLock``) wakes every waiter it must, and only then.

A release notifies only when a reader or a writer waits (``_waiting``, ``_rwaiting``, counted
under the mutex before waiting). These tests put threads into the waiting states on purpose
(polling the lock's counters: states, not timings) and check that each one is woken: a lost
wake-up shows as a thread still alive after a generous join timeout (a failure, not a hang).
"""
import sys
import threading

import numpy as np

import hsrgeom
from hsrgeom._sync import RWLock

JOIN = 60.0  # seconds: only reached when a wake-up was lost


def _wait_until(cond, what):
    for _ in range(60_000):
        if cond():
            return
        threading.Event().wait(0.001)
    raise AssertionError(f"never reached: {what}")


def _start(target, name=None):
    errors = []

    def run():
        try:
            target()
        except BaseException as e:  # noqa: BLE001 (reported by the test)
            errors.append(e)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t, errors


def _join_all(threads):
    for t, errors in threads:
        t.join(JOIN)
        assert not t.is_alive(), "a waiter was never woken (lost wake-up)"
        assert not errors, errors


class _CountingCondition:
    """A Condition that counts notify_all calls and each thread's calls of wait (a count is
    taken with the mutex held, which the real wait releases atomically: once a thread's count
    has risen, nobody can release the lock before that thread waits)."""

    def __init__(self, cond):
        self._cond, self.notified, self.waits = cond, 0, {}

    def wait(self, *a):
        me = threading.current_thread().name
        self.waits[me] = self.waits.get(me, 0) + 1
        return self._cond.wait(*a)

    def notify_all(self):
        self.notified += 1
        self._cond.notify_all()


def test_reader_queued_behind_a_writer_is_woken_by_its_release():
    # R1 reads; W waits for R1; R2 arrives after W and waits behind it (writer-preferring).
    # R1's release wakes W (and R2, which waits again: W holds the lock or still waits). W's
    # release must wake R2, though no writer waits any more.
    lock = RWLock()
    cond = lock._cond = _CountingCondition(lock._cond)
    order = []
    held, gate = threading.Event(), threading.Event()

    def writer():
        lock.acquire_write()
        order.append("W")
        held.set()
        gate.wait(JOIN)
        lock.release_write()

    def late_reader():
        lock.acquire_read()
        order.append("R2")
        lock.release_read()

    lock.acquire_read()  # R1 (this thread)
    w = _start(writer)
    _wait_until(lambda: lock._waiting == 1, "the writer waits")
    r2 = _start(late_reader, "R2")
    _wait_until(lambda: lock._rwaiting == 1, "the late reader waits")
    lock.release_read()
    held.wait(JOIN)
    _wait_until(lambda: cond.waits.get("R2", 0) >= 2, "the late reader waits again")
    gate.set()
    _join_all([w, r2])
    assert order == ["W", "R2"]
    assert (lock._waiting, lock._rwaiting, lock._writer, lock._readers) == (0, 0, None, {})


def test_readers_and_writers_queued_behind_a_writer_are_all_woken():
    lock = RWLock()
    done = []
    lock.acquire_write()
    threads = []
    for i in range(3):
        threads.append(_start(lambda i=i: (lock.acquire_read(), done.append(f"r{i}"), lock.release_read())))
    _wait_until(lambda: lock._rwaiting == 3, "three readers wait")
    for i in range(2):
        threads.append(_start(lambda i=i: (lock.acquire_write(), done.append(f"w{i}"), lock.release_write())))
    _wait_until(lambda: lock._waiting == 2, "two writers wait")
    lock.release_write()
    _join_all(threads)
    assert sorted(done) == ["r0", "r1", "r2", "w0", "w1"]
    assert (lock._waiting, lock._rwaiting, lock._writer, lock._readers) == (0, 0, None, {})


def test_interrupted_writer_releases_the_readers_it_held_back():
    # a writer that stops waiting (an exception in wait, e.g. KeyboardInterrupt) must wake the
    # readers that queued behind it
    lock = RWLock()
    lock.acquire_read()
    gate = threading.Event()

    class Interrupting(_CountingCondition):
        def wait(self, *a):
            if threading.current_thread().name == "writer":
                lock._mutex.release()  # as Condition.wait: the mutex is free while waiting
                gate.wait(JOIN)
                lock._mutex.acquire()
                raise KeyboardInterrupt
            return self._cond.wait(*a)

    lock._cond = Interrupting(lock._cond)
    errors = []

    def writer():
        try:
            lock.acquire_write()
        except KeyboardInterrupt:
            errors.append("interrupted")

    tw = threading.Thread(target=writer, name="writer", daemon=True)
    tw.start()
    _wait_until(lambda: lock._waiting == 1, "the writer waits")
    r2 = _start(lambda: (lock.acquire_read(), lock.release_read()))
    _wait_until(lambda: lock._rwaiting == 1, "the late reader waits")
    gate.set()
    tw.join(JOIN)
    _join_all([r2])
    assert errors == ["interrupted"]
    lock.release_read()
    assert (lock._waiting, lock._rwaiting, lock._readers) == (0, 0, {})


def test_uncontended_release_notifies_nobody():
    lock = RWLock()
    cond = lock._cond = _CountingCondition(lock._cond)
    for _ in range(10):
        with lock.write:
            with lock.read:
                pass
        with lock.read:
            pass
    assert cond.notified == 0
    # with a waiter, the release notifies
    lock.acquire_write()
    r = _start(lambda: (lock.acquire_read(), lock.release_read()))
    _wait_until(lambda: lock._rwaiting == 1, "a reader waits")
    lock.release_write()
    _join_all([r])
    assert cond.notified == 1


def test_many_readers_and_writers_on_an_index_all_finish():
    # inserts and queries from several threads on one dynamic index, switching threads every
    # microsecond: every thread finishes (a lost wake-up would leave one waiting) and the final
    # state holds every insert
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        _writers_and_readers()
    finally:
        sys.setswitchinterval(old)


def _writers_and_readers():
    rng = np.random.default_rng(3)
    index = hsrgeom.PartitionTree(rng.standard_normal((300, 2)), leaf_size=4)
    a = np.array([[1.0, 0.0]])
    threads = []
    for w in range(3):
        pts = rng.standard_normal((40, 2))

        def write(pts=pts):
            for p in pts:
                index.insert(p[None, :])

        threads.append(_start(write))
    for _ in range(4):
        threads.append(_start(lambda: [index.count(a, np.array([0.0])) for _ in range(60)]))
    _join_all(threads)
    assert index.n == 300 + 3 * 40
    x = index.points()
    assert int(index.count(a, np.array([0.0]))[0]) == int(np.sum(x[:, 0] >= 0.0))
