"""recsys.progress: a bar on a real terminal (a pseudo-terminal), nothing in a log file."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import select
import struct
import termios

import pytest

from recsys.progress import bar, is_terminal, progress


def _terminal() -> tuple[int, int]:
    """A pseudo-terminal (master, slave) of 120 x 24 characters, as a terminal window would be."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    return master, slave


def _read_all(fd: int) -> bytes:
    out = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


def test_a_terminal_shows_items_done_rate_and_time_left():
    master, slave = _terminal()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            assert is_terminal(tty)
            seen = list(progress(range(4), "landing", unit="day", stream=tty))
            tty.flush()
        output = _read_all(master).decode()
    finally:
        os.close(slave)
        os.close(master)
    assert seen == [0, 1, 2, 3]
    assert "landing" in output
    assert "4/4" in output  # items done of the total
    assert "day/s" in output  # the rate
    assert "<00:00" in output  # the time left


def test_a_log_file_gets_nothing_and_every_item_is_still_yielded(tmp_path):
    log = io.StringIO()
    assert not is_terminal(log)
    assert list(progress(iter(["a", "b"]), "days", stream=log)) == ["a", "b"]
    with bar(10, "events", unit="event", stream=log) as shown:
        shown.update(10)
    assert log.getvalue() == ""
    with open(tmp_path / "task.log", "w") as file:
        assert list(progress([1, 2, 3], "days", stream=file)) == [1, 2, 3]
    assert (tmp_path / "task.log").read_text() == ""


def test_a_log_record_during_a_bar_is_printed_once_on_the_terminal(monkeypatch):
    master, slave = _terminal()
    root = logging.getLogger()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            monkeypatch.setattr("sys.stderr", tty)
            # only the handler the CLI installs (an earlier test's Airflow import leaves a stdout one on the root)
            monkeypatch.setattr(root, "handlers", [])
            handler = logging.StreamHandler(tty)  # what logging.basicConfig(stream=sys.stderr) installs
            root.addHandler(handler)
            monkeypatch.setattr(root, "level", logging.INFO)
            try:
                for day in progress(["2011-01-04", "2011-01-05"], "landing", unit="day"):
                    logging.getLogger("recsys.datasets").info("landed %s", day)
            finally:
                root.removeHandler(handler)
            tty.flush()
        output = _read_all(master).decode()
    finally:
        os.close(slave)
        os.close(master)
    assert output.count("landed 2011-01-04") == 1
    assert output.count("landed 2011-01-05") == 1
    assert "2/2" in output


def _recsys(args: list[str], root, stderr_tty: bool) -> tuple[str, str]:
    """Run the ``recsys`` command on store ``root``; (stdout, stderr) with stderr a terminal or a log file."""
    import subprocess
    import sys
    from pathlib import Path

    env = os.environ | {"RECSYS_STORAGE_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
    command = [str(Path(sys.executable).parent / "recsys"), *args]
    root.parent.mkdir(parents=True, exist_ok=True)
    if not stderr_tty:
        with open(root.parent / "stderr.log", "w+b") as log:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, env=env, check=True, timeout=300)
            log.seek(0)
            return done.stdout.decode(), log.read().decode()
    master, slave = _terminal()
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave, env=env)
        os.close(slave)
        err = b""
        while True:  # drain the terminal while the command runs (a full pty would block it)
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the command closed its end
                    break
                if not chunk:
                    break
                err += chunk
            elif proc.poll() is not None:
                break
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, err.decode()
        return out.decode(), err.decode()
    finally:
        os.close(master)


def test_recsys_land_shows_progress_on_a_terminal_and_none_in_a_log(tmp_path):
    _, terminal = _recsys(["land", "--from", "2010-12-01", "--days", "2"], tmp_path / "a" / "store", True)
    assert "landing" in terminal and "2/2" in terminal and "day/s" in terminal
    out, log = _recsys(["land", "--from", "2010-12-01", "--days", "2"], tmp_path / "b" / "store", False)
    assert "landed 2010-12-01" in log and "landed 2010-12-02" in log  # the log lines are there
    assert "2/2" not in log and "day/s" not in log and "\r" not in log
    assert [d["date"] for d in json.loads(out)] == ["2010-12-01", "2010-12-02"]


def test_recsys_generate_synthetic_shows_progress_on_a_terminal(tmp_path):
    args = ["generate-synthetic", "--from", "2011-01-01", "--days", "3", "--events", "500"]
    _, terminal = _recsys(args, tmp_path / "a" / "store", True)
    assert "generating" in terminal and "3/3" in terminal
    _, log = _recsys(args, tmp_path / "b" / "store", False)
    assert "3/3" not in log and "\r" not in log


def test_a_note_is_one_whole_line_above_the_bar(monkeypatch):
    from recsys.progress import note

    master, slave = _terminal()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            monkeypatch.setattr("sys.stderr", tty)
            for day in progress(["2011-01-04", "2011-01-05"], "days", unit="day"):
                note(f"[fine_tune] {day} recall@100=0.4400", stream=tty)
            tty.flush()
        output = _read_all(master).decode()
    finally:
        os.close(slave)
        os.close(master)
    lines = [line.split("\r")[-1] for line in output.replace("\r\n", "\n").split("\n")]
    assert "[fine_tune] 2011-01-04 recall@100=0.4400" in lines and "[fine_tune] 2011-01-05 recall@100=0.4400" in lines
    log = io.StringIO()
    note("plain", stream=log)
    assert log.getvalue() == "plain\n"


@pytest.mark.slow
def test_training_shows_batches_done_and_time_left_on_a_terminal(monkeypatch):
    import numpy as np
    import tensorflow as tf

    from recsys.training import fit_with_progress

    inputs = np.arange(16, dtype="float32").reshape(8, 2)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, inputs[:, :1])).batch(2)  # 4 batches
    model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    master, slave = _terminal()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            monkeypatch.setattr("sys.stderr", tty)
            history = fit_with_progress(model, dataset, 2, "training fine_tune on 2011-01-04")
            tty.flush()
        output = _read_all(master).decode()
    finally:
        os.close(slave)
        os.close(master)
    assert len(history.history["loss"]) == 2
    assert "training fine_tune on 2011-01-04" in output and "8/8" in output and "batch/s" in output
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    fit_with_progress(model, dataset, 1, "training")
    assert log.getvalue() == ""
