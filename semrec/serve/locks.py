"""A small write-preferring readers-writer lock: many concurrent recommendations, one catalogue update at a time."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class RWLock:
    """``with lock.read():`` may run alongside other readers; ``with lock.write():`` runs alone. A waiting writer
    blocks new readers, so a stream of requests cannot starve an item addition."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
