"""An approximate nearest-neighbour index (HNSW, faiss) for large catalogs.

Exact search reads the whole [N, d] item table for every query: at 1M items and d=32 that is 128 MB
per query, 25-90 ms on this 2-core machine depending on load. An HNSW graph answers top-100 in about
a millisecond with recall@100 >= 0.95 of the exact search (bench/serving_latency/README.md). The
service uses it only for catalogs of at least ``ann_min_items`` items; smaller ones stay exact.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from recsys.errors import RecsysError

log = logging.getLogger(__name__)

HNSW_M = 32  # graph degree
EF_CONSTRUCTION = 80
EF_SEARCH = 1024  # recall@100 >= 0.95 at 1M items (bench/serving_latency; 256 gave 0.91)


class AnnUnavailable(RecsysError, RuntimeError):
    """The approximate index cannot be built here (faiss is not installed)."""


class HnswIndex:
    """Inner-product HNSW over ``vectors`` [N, d]; :meth:`search` returns row indices into ``vectors``."""

    def __init__(self, vectors: np.ndarray, ef_search: int = EF_SEARCH) -> None:
        try:
            import faiss
        except ImportError as err:
            raise AnnUnavailable("faiss-cpu is not installed; install it or serve with exact search") from err
        self._faiss = faiss
        started = time.perf_counter()
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # build on every core (in the background loader)
        index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        index.hnsw.efSearch = ef_search
        faiss.omp_set_num_threads(1)  # one query at a time per request thread
        self.index = index
        self.ef_search = ef_search
        self.build_seconds = time.perf_counter() - started
        log.info("HNSW index over %d items built in %.1f s", len(vectors), self.build_seconds)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and inner products of about the ``k`` best items for one query [d], best first."""
        scores, rows = self.index.search(np.ascontiguousarray(query[None, :], dtype=np.float32), k)
        keep = rows[0] >= 0
        return rows[0][keep], scores[0][keep]
