"""Where a step's memory goes: run one ``recsys`` command in this process and sample, every 0.25 s, its
resident memory and the innermost ``recsys`` frames of the main thread.

    RECSYS_STORAGE_BACKEND=local RECSYS_STORAGE_ROOT=/tmp/runs/s3/3000000/store \\
        .venv/bin/python bench/scale/profile_step.py --out /tmp/train.json -- train --date 2026-01-06

Prints a line whenever the innermost frame changes (or memory grows by 200 MB within one), then the peak; the
JSON holds every sample ``[seconds, rss_mb, [frames...]]``. A store kept by ``run.py --keep`` is the usual
input. The numbers are the process's own (no child processes) and include the sampler's small cost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import psutil


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="the samples, as JSON")
    p.add_argument("--every", type=float, default=0.25, help="seconds between samples")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the recsys command and its arguments")
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the recsys command after --")

    process, main_thread = psutil.Process(), threading.get_ident()
    samples: list[tuple[float, float, list[str]]] = []
    done = threading.Event()

    def sample() -> None:
        started = time.time()
        while not done.is_set():
            frame = sys._current_frames().get(main_thread)
            stack = [f"{os.path.basename(f.filename)}:{f.name}:{f.lineno}" for f in traceback.extract_stack(frame)
                     if "recsys" in f.filename] if frame is not None else []
            samples.append((round(time.time() - started, 2), process.memory_info().rss / 2**20, stack[-4:]))
            done.wait(args.every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    from recsys import cli

    try:
        code = cli.main(command)
    finally:
        done.set()
        sampler.join()
        args.out.write_text(json.dumps(samples))
        last, high = None, 0.0
        for seconds, rss, stack in samples:
            where = stack[-1] if stack else ""
            if where != last or rss > high + 200:
                print(f"{seconds:8.1f} s {rss:8.0f} MB  {' > '.join(stack[-3:])}")
                last = where
            high = max(high, rss)
        print(f"peak {max((s[1] for s in samples), default=0):.0f} MB over {len(samples)} samples")
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
