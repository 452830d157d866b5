"""Peak RSS of ranking every item for many users (evaluation's Scorer.top_k), by block size.

    nice -n 10 .venv/bin/python bench/scale/topk_blocks.py USERS BLOCK

Random 64-d tables of 200k items; prints the seconds and the process's peak RSS. With BLOCK = USERS the
users are scored in one dense matrix, as evaluation did before blocks (issue 14).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recsys.serving.index import Scorer


def main() -> None:
    users, block = int(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(0)
    items, dim = 200_000, 64
    ids = [f"c{n}" for n in range(users)]
    scorer = Scorer(rng.standard_normal((users + 1, dim), dtype=np.float32),
                    rng.standard_normal((items, dim), dtype=np.float32),
                    dict(zip(ids, range(1, users + 1), strict=True)), np.array([f"i{r}" for r in range(items)], object))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    started = time.perf_counter()
    scorer.top_k(ids, 20, block=block)
    print(f"users={users} block={block} top_k {time.perf_counter() - started:.1f} s, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB (before {before:.2f} GB)")


if __name__ == "__main__":
    main()
