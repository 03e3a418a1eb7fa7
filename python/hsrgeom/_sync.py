"""Thread safety of an index: a per-index readers-writer lock and the decorators that take it.

Contract: every public read of an index holds its lock for reading (reads run concurrently),
every write holds it for writing (alone); see :class:`hsrgeom.Index` (threads).
"""
from __future__ import annotations

import functools
import threading
from threading import get_ident


class RWLock:
    """Readers-writer lock of one index: reads run concurrently, a write runs alone.

    Writer-preferring: once a writer waits, new readers wait behind it, so a stream of readers
    cannot starve writers. Reentrant per thread: a thread holding the lock (read or write) may
    take it again for reading, and a writer again for writing (public methods call one
    another); a reader asking to write raises RuntimeError instead of deadlocking.
    ``acquire_read``/``release_read`` and ``acquire_write``/``release_write`` in pairs, or
    ``with lock.read:`` and ``with lock.write:``.
    """

    __slots__ = ("_mutex", "_cond", "_readers", "_writer", "_depth", "_waiting", "_rwaiting", "read", "write")

    def __init__(self):
        self._mutex = threading.Lock()  # guards the fields below (taken directly: cheaper than the Condition's)
        self._cond = threading.Condition(self._mutex)
        self._readers = {}  # thread id -> how many times it holds the read lock
        self._writer = None  # thread id holding the write lock
        self._depth = 0  # holds of the writer (write and read)
        self._waiting = 0  # writers waiting
        self._rwaiting = 0  # readers waiting (a release notifies only when someone waits)
        self.read = _Side(self.acquire_read, self.release_read)
        self.write = _Side(self.acquire_write, self.release_write)

    def acquire_read(self):
        me = get_ident()
        with self._mutex:
            if self._writer == me:
                self._depth += 1
                return
            held = self._readers.get(me)
            if held is None:
                if self._writer is not None or self._waiting:
                    self._rwaiting += 1
                    try:
                        while self._writer is not None or self._waiting:
                            self._cond.wait()
                    finally:
                        self._rwaiting -= 1
                held = 0
            self._readers[me] = held + 1

    def release_read(self):
        me = get_ident()
        with self._mutex:
            if self._writer == me:
                self._depth -= 1
                return
            held = self._readers[me] - 1
            if held:
                self._readers[me] = held
            else:
                del self._readers[me]
                if not self._readers and self._waiting:
                    self._cond.notify_all()

    def acquire_write(self):
        me = get_ident()
        with self._mutex:
            if self._writer == me:
                self._depth += 1
                return
            if me in self._readers:
                raise RuntimeError("an index cannot be modified from inside one of its own read operations")
            self._waiting += 1
            try:
                while self._writer is not None or self._readers:
                    self._cond.wait()
            except BaseException:  # e.g. KeyboardInterrupt: release the readers it held back
                self._waiting -= 1
                if self._rwaiting:
                    self._cond.notify_all()
                raise
            self._waiting -= 1
            self._writer, self._depth = me, 1

    def release_write(self):
        with self._mutex:
            self._depth -= 1
            if self._depth == 0:
                self._writer = None
                # every waiter (reader or writer) counted itself under the mutex before waiting:
                # with none, nobody can miss this release
                if self._waiting or self._rwaiting:
                    self._cond.notify_all()


class _Side:
    """One side of an RWLock as a context manager."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire, release):
        self._acquire, self._release = acquire, release

    def __enter__(self):
        self._acquire()

    def __exit__(self, *exc):
        self._release()


def _holding(acquire, release):
    """Decorator: the method runs holding the index's lock (RWLock.acquire_read/_write: with
    other reads, or alone), see Index (threads)."""
    def decorate(method):
        @functools.wraps(method)
        def locked(self, *args, **kwargs):
            rw = self._rw
            acquire(rw)
            try:
                return method(self, *args, **kwargs)
            finally:
                release(rw)
        return locked
    return decorate


reader = _holding(RWLock.acquire_read, RWLock.release_read)
writer = _holding(RWLock.acquire_write, RWLock.release_write)
