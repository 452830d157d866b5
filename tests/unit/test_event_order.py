"""The order of event-driven runs (recsys.streaming.days): which closed days a day waits for, which day is next.

Tiny stores: closed days are ``raw/events/dt=D/_SUCCESS``; what was processed is written into the registry
the way evaluate and deploy write it.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from recsys import registry
from recsys.config import Settings
from recsys.storage import layout
from recsys.storage.local import LocalStore
from recsys.streaming import days

D1, D2, D3, D4 = (date(2026, 11, n) for n in (1, 2, 3, 4))


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(storage_root=str(tmp_path / "store"), schedule_start="2026-11-01")


def close(store: LocalStore, *closed: date) -> None:
    for day in closed:
        store.write_bytes(f"{layout.raw_events(day)}/part-0.parquet", b"x")
        store.mark_success(layout.raw_events(day))


def decide(store: LocalStore, day: date, version: int | None, blessed: bool, deployed: bool = False) -> None:
    def change(reg: registry.Registry) -> None:
        reg["decisions"][day.isoformat()] = {"date": day.isoformat(), "candidate_version": version,
                                             "blessed": blessed, "reason": "test"}
        if deployed and version is not None:
            reg["history"].append({"at": "t", "action": registry.DEPLOYED, "from": reg["champion"], "to": version})
            reg["champion"] = version

    registry.update(store, change)


def test_a_day_is_processed_once_evaluated_and_if_blessed_deployed_or_its_deploy_skipped(store: LocalStore) -> None:
    reg = registry.empty()
    assert not days.is_processed(reg, D1)  # nothing ran
    reg["decisions"][D1.isoformat()] = {"candidate_version": 3, "blessed": False, "reason": "worse"}
    assert days.is_processed(reg, D1)  # rejected: nothing to deploy
    reg["decisions"][D2.isoformat()] = {"candidate_version": None, "blessed": False, "reason": "too thin"}
    assert days.is_processed(reg, D2)
    reg["decisions"][D3.isoformat()] = {"candidate_version": 5, "blessed": True, "reason": "better"}
    assert not days.is_processed(reg, D3)  # blessed, the deploy failed
    reg["history"].append({"at": "t", "action": registry.DEPLOY_SKIPPED, "date": D3.isoformat(), "version": 5})
    assert days.is_processed(reg, D3)  # on-call skipped it
    reg["decisions"][D4.isoformat()] = {"candidate_version": 6, "blessed": True, "reason": "better"}
    reg["history"].append({"at": "t", "action": registry.DEPLOYED, "from": 4, "to": 6})
    reg["champion"] = 2  # rolled back since: still deployed once
    assert days.is_processed(reg, D4)


def test_a_lost_announcement_is_the_next_day_and_holds_the_day_after(store: LocalStore, settings: Settings) -> None:
    close(store, D1, D2, D3)
    decide(store, D1, 1, blessed=True, deployed=True)
    # D2's announcement was lost: nothing ever ran it
    assert days.next_unprocessed(store, settings) == D2
    assert days.earlier_unprocessed(store, settings, D3) == [D2]
    message = days.waiting_message(store, D3, [D2])
    assert message.startswith(f"{D3} waits for {D2}: ") and "no run has validated it yet" in message
    assert days.earlier_unprocessed(store, settings, D2) == []  # D2 itself may run
    decide(store, D2, 2, blessed=False)
    assert days.earlier_unprocessed(store, settings, D3) == []
    assert days.next_unprocessed(store, settings) == D3
    decide(store, D3, None, blessed=False)
    assert days.next_unprocessed(store, settings) is None


def test_a_quarantined_day_holds_later_days_until_accepted_or_a_later_day_is_run_by_hand(
        store: LocalStore, settings: Settings) -> None:
    close(store, D1, D2, D3, D4)
    decide(store, D1, 1, blessed=True, deployed=True)
    store.write_json(layout.validation_summary(D2), {"date": D2.isoformat(), "success": False, "accepted": None,
                                                     "failed": ["expect_column_values_to_be_in_set"]})
    assert days.earlier_unprocessed(store, settings, D4) == [D2, D3]
    message = days.waiting_message(store, D4, [D2, D3])
    assert f"{D4} waits for {D2} (and 1 later closed day(s) after it)" in message
    assert "failed validation (expect_column_values_to_be_in_set) and is quarantined" in message
    assert "Accept invalid partition" in message
    # accepted by on-call: D2's run goes through and records its decision; D3 is next, D4 waits for it only
    decide(store, D2, 2, blessed=False)
    assert days.earlier_unprocessed(store, settings, D4) == [D3]
    # or D2 is left behind: on-call runs D3 by hand; D2 no longer holds anything
    store.write_json(layout.validation_summary(D2), {"success": False, "accepted": None, "failed": ["x"]})
    reg = registry.load(store)
    del reg["decisions"][D2.isoformat()]
    registry.save(store, reg)
    assert days.earlier_unprocessed(store, settings, D4) == [D2, D3]
    decide(store, D3, 3, blessed=True, deployed=True)
    assert days.earlier_unprocessed(store, settings, D4) == []
    assert days.next_unprocessed(store, settings) == D4


def test_a_blessed_day_whose_deploy_failed_holds_the_next_and_says_so(store: LocalStore, settings: Settings) -> None:
    close(store, D1, D2)
    decide(store, D1, 7, blessed=True)  # the deploy failed
    assert days.earlier_unprocessed(store, settings, D2) == [D1]
    assert "candidate v7 was blessed but is not deployed" in days.waiting_message(store, D2, [D1])
    store.write_json(layout.validation_summary(D1), {"success": True})
    assert days.status(store, D1).startswith("its candidate v7 was blessed")


def test_open_days_days_before_the_start_and_a_processed_days_rerun_hold_nothing(
        store: LocalStore, settings: Settings) -> None:
    close(store, date(2026, 10, 31), D3)  # before the schedule's start, and a closed later day
    store.write_bytes(f"{layout.raw_events(D1)}/part-0.parquet", b"x")  # D1 still open: no _SUCCESS
    assert days.earlier_unprocessed(store, settings, D3) == []
    assert days.next_unprocessed(store, settings) == D3
    close(store, D2)
    store.write_json(layout.validation_summary(D2), {"success": True})
    assert days.earlier_unprocessed(store, settings, D3) == [D2]
    assert "passed validation, but its run stopped before its candidate was evaluated" in days.status(store, D2)
    decide(store, D3, 3, blessed=False)  # D3 was run by hand: a rerun of it (a duplicate announcement) is not held
    assert days.earlier_unprocessed(store, settings, D3) == []
    assert days.next_unprocessed(store, settings) is None
