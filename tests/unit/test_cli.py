"""recsys.cli.main: exit codes, stdout JSON and stderr messages."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest

from recsys.cli import main
from recsys.datasets.online_retail import SOURCE_COLUMNS
from recsys.storage.local import LocalStore


@pytest.fixture
def root(tmp_path, monkeypatch):
    path = tmp_path / "store"
    monkeypatch.setenv("RECSYS_STORAGE_ROOT", str(path))
    return path


@pytest.fixture
def source(tmp_path):
    directory = tmp_path / "source"
    directory.mkdir()
    rows = [("536365", "85123A", "WHITE HANGING HEART", "6", "2010-12-06 08:26:00", "2.55", "17850.0", "UK")]
    pd.DataFrame(rows, columns=list(SOURCE_COLUMNS)).to_csv(directory / "2010-12-06.csv", index=False)
    return directory


def test_land_on_a_saturday_exits_2_with_a_message(root, capsys):
    assert main(["land", "--date", "2010-12-04"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "recsys land: Online Retail has no invoice lines on 2010-12-04 (Saturday)" in err
    assert not root.exists() or list(root.rglob("_SUCCESS")) == []


def test_land_from_prints_the_landed_days_as_json(root, source, capsys):
    assert main(["land", "--from", "2010-12-04", "--days", "1", "--source", str(source)]) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out) == [{"date": "2010-12-06", "events": 1, "catalog_items": 1, "already_present": False}]
    assert LocalStore(root).partitions("raw/events") == [date(2010, 12, 6)]


def test_land_with_zero_days_exits_2(root, source, capsys):
    assert main(["land", "--from", "2010-12-04", "--days", "0", "--source", str(source)]) == 2
    assert "--days must be positive, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["2010-13-01", "yesterday", "04/12/2010"])
def test_a_bad_date_is_an_argparse_error(root, capsys, bad):
    with pytest.raises(SystemExit) as info:
        main(["land", "--date", bad])
    assert info.value.code == 2
    assert "is not a date of the form YYYY-MM-DD" in capsys.readouterr().err


def test_land_needs_date_or_from(root, capsys):
    with pytest.raises(SystemExit) as info:
        main(["land"])
    assert info.value.code == 2
    assert "one of the arguments --date --from is required" in capsys.readouterr().err


def test_a_missing_command_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


@pytest.mark.parametrize(
    ("var", "value"),
    [("RECSYS_K", "0"), ("RECSYS_K", "many"), ("RECSYS_HOLDOUT_FRACTION", "2"), ("RECSYS_STORAGE_BACKEND", "s3")],
)
def test_config_errors_exit_2_naming_the_variable(root, monkeypatch, capsys, var, value):
    monkeypatch.setenv(var, value)
    assert main(["registry"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("recsys registry: ")
    assert var in err


def test_webhdfs_without_url_exits_2(root, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_STORAGE_BACKEND", "webhdfs")
    monkeypatch.setenv("RECSYS_STORAGE_ROOT", "/data/recsys")
    assert main(["registry"]) == 2
    assert "set RECSYS_WEBHDFS_URL" in capsys.readouterr().err


def test_registry_of_an_empty_store_prints_the_empty_document(root, capsys):
    assert main(["registry"]) == 0
    assert json.loads(capsys.readouterr().out) == {"champion": None, "versions": {}, "decisions": {}, "history": []}


def test_summary_of_an_empty_store(root, capsys):
    assert main(["summary"]) == 0
    assert capsys.readouterr().out == "Champion: none deployed yet\n"


def test_features_prints_the_stats(root, capsys, publish_events):
    publish_events(LocalStore(root), date(2011, 1, 4), [("e1", "2011-01-04 09:00:00", "u1", "i1", "purchase", 1, 1.0)])
    assert main(["features", "--date", "2011-01-04"]) == 2  # features only from a validated delivery
    assert "was not validated" in capsys.readouterr().err
    assert main(["validate", "--date", "2011-01-04"]) == 0
    capsys.readouterr()
    assert main(["features", "--date", "2011-01-04"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["date"], stats["examples"], stats["new_users"], stats["new_items"]) == ("2011-01-04", 1, 0, 1)
    assert stats["pending_users"] == 1  # one example: below the default minimum count of 2, on the OOV row


def test_domain_errors_of_a_step_exit_2(root, capsys):
    assert main(["validate", "--date", "2011-01-04"]) == 2
    assert "has no _SUCCESS marker" in capsys.readouterr().err
    assert main(["rollback", "--reason", " "]) == 2
    assert "a rollback needs a reason" in capsys.readouterr().err
    assert main(["recommend", "--user", "17850"]) == 2
    assert "no champion is deployed yet" in capsys.readouterr().err


def test_recommend_with_k_out_of_range_exits_2(root, capsys):
    try:
        code = main(["recommend", "--user", "17850", "-k", "0"])
    except SystemExit as exit_:  # a fix in the parser is as good as one in main()
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert "1..1000" in err or "-k" in err


def test_validate_accepts_a_failed_partition_only_with_a_reason(root, capsys, publish_events):
    from recsys import registry

    store = LocalStore(root)
    publish_events(store, date(2011, 1, 4), [("e1", "2011-01-04 09:00:00", "u1", "i1", "click", 1, 1.0)])
    assert main(["validate", "--date", "2011-01-04"]) == 2
    assert "[event types]" in capsys.readouterr().err
    assert main(["validate", "--date", "2011-01-04", "--accept-reason", " "]) == 2
    assert "needs a reason" in capsys.readouterr().err
    assert main(["validate", "--date", "2011-01-04", "--accept-reason", "click tracking test"]) == 0
    assert json.loads(capsys.readouterr().out)["accepted"]["reason"] == "click tracking test"
    assert registry.load(store)["history"][-1]["action"] == "accepted_invalid"


def test_every_command_of_the_parser_has_a_handler():
    import argparse

    from recsys.cli import _COMMANDS, STREAMING_COMMANDS, _parser

    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == set(_COMMANDS) | set(STREAMING_COMMANDS)
    assert not set(_COMMANDS) & set(STREAMING_COMMANDS)


@pytest.mark.parametrize("edge", ["9999-12-31", "0001-01-01"])
def test_dates_at_the_calendar_edges_are_domain_outcomes(root, capsys, publish_events, edge):
    """issue 18 #11: no OverflowError from a window around the date; a clear exit 2 or a result."""
    store = LocalStore(root)
    publish_events(store, date.fromisoformat(edge), [("e1", "2011-01-04 09:00:00", "u1", "i1", "purchase", 1, 1.0)])
    assert main(["run", "--date", edge]) == 2  # events of 2011 are outside the day: a validation failure
    err = capsys.readouterr().err
    assert "[event_time inside the day]" in err and "quarantined" in err
    assert main(["validate", "--date", edge, "--accept-reason", "edge-date drill"]) == 0
    capsys.readouterr()
    assert main(["features", "--date", edge]) == 0
    assert json.loads(capsys.readouterr().out)["date"] == edge
    assert main(["summary"]) == 0
    assert edge in capsys.readouterr().out


def test_run_of_a_thin_day_goes_on_without_a_candidate(root, capsys, publish_events):
    """issue 18 #9: a 2-customer day whose customers are both held out: exit 0, no version, the reason recorded."""
    from recsys import registry

    store = LocalStore(root)
    publish_events(store, date(2011, 1, 5), [("t-0", "2011-01-05 10:00:00", "c6", "i1", "purchase", 1, 1.0),
                                             ("t-1", "2011-01-05 11:00:00", "c8", "i2", "purchase", 2, 1.0)])
    assert main(["run", "--date", "2011-01-05"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["training"]["version"] is None and "were all held out" in out["training"]["reason"]
    assert out["evaluation"]["reason"].startswith("no candidate: ") and out["deploy"] is None
    assert registry.load(store)["decisions"]["2011-01-05"]["candidate_version"] is None
    assert main(["summary", "--date", "2011-01-05"]) == 0
    assert "decision   : REJECT - no candidate: " in capsys.readouterr().out


def test_collect_and_sink_are_recsys_commands_with_their_own_options(capsys):
    """``recsys collect`` / ``recsys sink`` hand their options to the streaming services' own parsers."""
    import pytest

    from recsys.cli import main

    for command, option in (("collect", "--create-topic"), ("sink", "--lateness-seconds")):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: recsys {command}") and option in out


@pytest.mark.parametrize(("setting", "expected"), [(None, True), ("0", False), ("1", True)])
def test_recommend_passes_the_popularity_fallback_setting(root, monkeypatch, capsys, setting, expected):
    """RECSYS_POPULARITY_FALLBACK reaches the ranking `recsys recommend` asks for (unit: the call, not the model)."""
    import recsys.serving.recommend as module

    seen = {}

    def fake(store, user_id, k=10, popularity_fallback=True):
        seen["fallback"] = popularity_fallback
        return {"user_id": user_id, "items": []}

    monkeypatch.setattr(module, "recommend", fake)
    if setting is None:
        monkeypatch.delenv("RECSYS_POPULARITY_FALLBACK", raising=False)
    else:
        monkeypatch.setenv("RECSYS_POPULARITY_FALLBACK", setting)
    assert main(["recommend", "--user", "17850"]) == 0
    assert seen == {"fallback": expected}
