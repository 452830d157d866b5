"""Fault injection shared by tests: a crash at a publish point of the serving index."""

from __future__ import annotations

from typing import Any

import pytest

from recsys.serving.deploy import refresh_index
from recsys.storage.layout import INDEX_META_FILE


def refresh_index_killed_before_index_json(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``refresh_index`` and crash it between ``index.parquet`` and ``index.json`` (issue 18 #5)."""
    real = type(store).write_json

    def killed(self: Any, path: str, obj: Any) -> None:
        if path.endswith(INDEX_META_FILE):
            raise OSError("killed between index.parquet and index.json")
        real(self, path, obj)

    with monkeypatch.context() as patch:
        patch.setattr(type(store), "write_json", killed)
        with pytest.raises(OSError, match="killed"):
            refresh_index(store)
