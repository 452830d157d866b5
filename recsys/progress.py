"""Progress of long commands (landing days, generating data, retraining, benchmarks) on a terminal.

A bar with the items done, the rate and the time left is drawn on ``stderr`` only when it is a terminal;
in logs (Airflow tasks, CI, a redirect) nothing is written, so logs stay one line per event. Built on tqdm
(already installed: Great Expectations depends on it), whose bar and rate/ETA arithmetic is well tested;
while a bar is shown, log records are printed above it instead of through it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import IO, Any, TypeVar

T = TypeVar("T")


def is_terminal(stream: IO[str] | None = None) -> bool:
    """True if ``stream`` (default ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


@contextmanager
def bar(total: int | None, desc: str, unit: str = "item", stream: IO[str] | None = None) -> Iterator[Any]:
    """A progress bar to ``update(n)`` by hand (``total`` items of ``unit``; None: unknown, no time left).

    Disabled (every call a no-op) unless ``stream`` (default ``sys.stderr``) is a terminal.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    stream = sys.stderr if stream is None else stream
    enabled = is_terminal(stream)
    with ExitStack() as stack:
        progress = stack.enter_context(
            tqdm(total=total, desc=desc, unit=unit, file=stream, disable=not enabled, dynamic_ncols=True,
                 mininterval=0.5, smoothing=0.1)
        )
        if enabled:
            stack.enter_context(logging_redirect_tqdm(tqdm_class=tqdm))
        yield progress


def progress(items: Iterable[T], desc: str, unit: str = "item", total: int | None = None,
             stream: IO[str] | None = None) -> Iterator[T]:
    """Yield ``items`` and show how many are done, the rate and the time left on a terminal.

    ``total`` defaults to ``len(items)`` when it has one. Nothing is written unless ``stream`` (default
    ``sys.stderr``) is a terminal.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with bar(total, desc, unit, stream) as shown:
        for item in items:
            yield item
            shown.update(1)


def note(text: str, stream: IO[str] | None = None) -> None:
    """Print a line to ``stream`` (default ``sys.stdout``) above any progress bar shown, never through it."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stdout if stream is None else stream)
