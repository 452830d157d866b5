"""What the benchmarks (and the hot-swap integration test) share: a free port, the CPU's name, and starting
``recsys serve`` and waiting until it is ready.

Import it with ``bench/`` on ``sys.path`` (the benchmarks put it there to import ``synthetic_store`` too).

**A benchmark measures the checkout it is run from.** The venv installs ``recsys`` in editable mode, pointing at
the checkout that created it, so a benchmark started from another worktree of the repository (to measure one
commit) would import that other checkout's code, uncommitted edits included, and record the worktree's commit.
Importing this module puts this checkout's root on ``sys.path`` and on the ``PYTHONPATH`` that child processes
inherit, after any entries the caller set (an explicit ``PYTHONPATH``, e.g. a ``git archive``, still comes first)
and before the venv's packages; :func:`git_state` records where ``recsys`` is imported from and refuses to
describe a checkout whose code is not the code that runs.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

READY_PATH = "/readyz"  # answers 200 once the service has loaded the champion
ROOT = Path(__file__).resolve().parents[1]


def _this_checkout_first() -> None:
    """This checkout's root on ``sys.path`` and the inherited ``PYTHONPATH``, after the caller's own entries."""
    root = str(ROOT)
    explicit = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in explicit:
        os.environ["PYTHONPATH"] = os.pathsep.join([*explicit, root])
    if root not in sys.path:
        sys.path.insert(1 + len(explicit), root)  # sys.path: the script's folder, PYTHONPATH, then the rest


_this_checkout_first()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :func:`platform.processor` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    *,
    every: float = 0.2,
    alive: Callable[[], None] | None = None,
    ignore: tuple[type[BaseException], ...] = (httpx.TransportError,),
) -> float:
    """Call ``check`` every ``every`` seconds until it returns True; the seconds that took.

    ``ignore`` are errors that mean "not yet" (a refused connection); ``alive`` raises if what is awaited
    died (then waiting is pointless). :class:`RuntimeError` after ``timeout`` seconds.
    """
    started = time.monotonic()
    while True:
        with contextlib.suppress(*ignore):
            if check():
                return time.monotonic() - started
        if alive is not None:
            alive()
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def running(proc: subprocess.Popen, name: str) -> Callable[[], None]:
    """An ``alive`` check for :func:`wait_until`: :class:`RuntimeError` once ``proc`` has exited."""

    def check() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}")

    return check


def serve_command(port: int, *options: str) -> list[str]:
    """``recsys serve`` on ``port`` with further command-line ``options``."""
    return [sys.executable, "-m", "recsys.cli", "serve", "--port", str(port), *options]


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Terminate ``proc``; kill it if it has not exited after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def recsys_serve(
    store_root: Path, *options: str, log: Path | None = None, timeout: float = 600
) -> Iterator[tuple[str, float]]:
    """``recsys serve`` over the local store at ``store_root`` on a free loopback port, ready.

    Yields its base URL and the seconds it took to become ready; stops it on leaving. Its output goes to
    ``log`` (default: discarded). :class:`RuntimeError` (with the log) if it exits or is not ready within
    ``timeout`` seconds.
    """
    port = free_port()
    env = {**os.environ, "RECSYS_STORAGE_BACKEND": "local", "RECSYS_STORAGE_ROOT": str(store_root)}
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("w")) if log is not None else subprocess.DEVNULL
        proc = subprocess.Popen(serve_command(port, *options), env=env, stdout=out, stderr=subprocess.STDOUT)
        stack.callback(stop, proc)
        base = f"http://127.0.0.1:{port}"
        try:
            seconds = wait_until(
                "recsys serve", lambda: httpx.get(base + READY_PATH, timeout=5).status_code == 200, timeout,
                alive=running(proc, "recsys serve"),
            )
        except RuntimeError as err:
            detail = f"; its output:\n{log.read_text()}" if log is not None else ""
            raise RuntimeError(f"recsys serve did not become ready: {err}{detail}") from err
        yield base, seconds


def git_state(root: Path | str) -> dict[str, Any]:
    """The commit a benchmark ran at and whether the tree had uncommitted changes (``None`` outside git)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    state: dict[str, Any] = {"commit": commit, "dirty": None if status is None else bool(status)}
    top = git("rev-parse", "--show-toplevel")
    source = recsys_source()
    if top is not None and source is not None:
        state["recsys_source"] = str(source)
        if not source.is_relative_to(Path(top).resolve()):
            raise RuntimeError(
                f"this benchmark imports recsys from {source}, not from the checkout it describes ({top}): its "
                f"commit would be recorded for other code; run it with PYTHONPATH={top}")
    return state


def recsys_source() -> Path | None:
    """The folder of the ``recsys`` package this process imports (or would import), None if there is none."""
    import importlib.util

    module = sys.modules.get("recsys")
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None:
        spec = importlib.util.find_spec("recsys")
        origin = spec.origin if spec is not None else None
    return Path(origin).resolve().parent if origin else None
