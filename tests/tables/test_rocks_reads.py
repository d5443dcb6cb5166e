"""Reading state keeps the GIL: a worker's other thread (faust's consumer) never gets it in the
middle of a read, so a read never waits out the interpreter's switch interval to resume."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from tables.rocks import RocksStore

KEYS = [f"key-{i:06d}".encode() for i in range(2000)]


def test_get_many_returns_each_keys_value_in_order(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "db")
    try:
        store.write({k: k[::-1] for k in KEYS[::2]})
        assert store.get_many(KEYS[:4]) == [KEYS[0][::-1], None, KEYS[2][::-1], None]
        assert store.get_many([]) == []
    finally:
        store.close()


def test_get_many_does_not_let_another_thread_run(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "db")
    store.write({k: b"v" * 100 for k in KEYS})
    ran = [0]
    stop = threading.Event()

    def run_python() -> None:
        while not stop.is_set():
            ran[0] += 1

    interval = sys.getswitchinterval()
    # Long turns: the other thread only runs during a read if the read gives the GIL up.
    sys.setswitchinterval(0.05)
    thread = threading.Thread(target=run_python, daemon=True)
    thread.start()
    try:
        while not ran[0]:
            stop.wait(0.001)  # let the thread start
        # A forced switch (every 50 ms) can land in one read (~2 ms); not in all of them.
        kept = []
        for _ in range(20):
            before = ran[0]
            store.get_many(KEYS)
            kept.append(ran[0] == before)
        assert any(kept), "every read let the other thread run: it releases the GIL"
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
        store.close()
