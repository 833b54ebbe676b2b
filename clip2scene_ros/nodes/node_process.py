"""A segment_node (or any ROS node) as a subprocess whose log lines are kept, to wait for messages.

Used by ``clip2scene replay`` to start the node it plays a bag into, and by the tests.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise TimeoutError at the deadline."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"condition not met within {timeout:.1f} s")
        time.sleep(interval)


class NodeProcess:
    """A node subprocess whose combined stdout/stderr lines are collected in the background.

    It runs in its own process group and ``stop`` signals the whole group, as Ctrl-C in a terminal
    does: wrappers such as ``ros2 run`` leave forwarding the signal to the terminal.
    """

    def __init__(self, cmd: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.cmd = list(cmd)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            self.cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            start_new_session=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def mark(self) -> int:
        with self._lock:
            return len(self.lines)

    def log(self, start: int = 0) -> str:
        with self._lock:
            return "\n".join(self.lines[start:])

    def wait_for_log(self, pattern: str, timeout: float, start: int = 0) -> str:
        """First line (from index ``start``) matching the regex; fails early if the process died."""
        rx = re.compile(pattern)

        def find() -> str | None:
            with self._lock:
                for line in self.lines[start:]:
                    if rx.search(line):
                        return line
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}; log:\n{self.log()[-4000:]}")
            return None

        try:
            return wait_until(find, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no log line matching {pattern!r} within {timeout:.0f} s; log tail:\n{self.log(start)[-3000:]}"
            ) from None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the group this object created (its id is the child's pid)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT (Ctrl-C) to the process group; SIGKILL after ``timeout`` s. Returns the exit status."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGINT)  # rclpy and launch shut down cleanly on it
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout)
        self._reader.join(timeout)
        return self.proc.returncode
