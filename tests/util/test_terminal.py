"""Terminal output: control characters from files and stores are shown, not sent;
tables stay readable at COLUMNS=20; a closed stdout pipe does not stop training."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from cnnlab.util.terminal import shown
from helpers import CLI_ENV, TINY_FLAGS, TINY_NET_YAML, cli_command, run_cli

HOSTILE = "evil\x1b]0;pwned\x07\x1b[2J\r\x9b"


def test_shown_makes_control_characters_visible() -> None:
    assert shown(HOSTILE) == "evil\\x1b]0;pwned\\x07\\x1b[2J\\r\\x9b"
    assert shown("tabs\tand\nnewlines stay, ünïcode too") == (
        "tabs\tand\nnewlines stay, ünïcode too"
    )


def test_summary_never_sends_a_file_s_control_characters(
    tmp_path: Path, cli: Any
) -> None:
    (tmp_path / "net.yaml").write_text(
        f"name: {json.dumps(HOSTILE)}\nlayers: [Flatten]\n"
    )
    named = cli("summary", "net.yaml")  # refused, the name shown
    missing = cli("summary", f"{HOSTILE}.yaml")  # in the path
    for result in (named, missing):
        assert result.code == 2, result.err
        assert "\x1b" not in result.err and "\x07" not in result.err
        assert "\\x1b]0;pwned\\x07" in result.err


def test_runs_shows_a_store_label_escaped_and_readable_at_20_columns(
    tmp_path: Path, cli: Any
) -> None:
    study = {"name": "s", "train": {"epochs": 1, "train_limit": 300,
             "val_size": 100, "test_limit": 100},
             "architectures": [{"label": "net", "spec": {"layers": [
                 "Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]}}]}  # fmt: skip
    (tmp_path / "s.yaml").write_text(json.dumps(study))
    assert cli("study", "s.yaml", "--out", "ST").code == 0
    db = sqlite3.connect(tmp_path / "ST" / "cnnlab.sqlite")
    db.execute("UPDATE trials SET label=?", (HOSTILE,))  # a store edited by hand
    db.commit()
    db.close()
    result = run_cli("runs", "--out", "ST", cwd=tmp_path, env={"COLUMNS": "20"})
    assert result.code == 0, result.err
    assert "\x1b" not in result.out and "\x07" not in result.out
    lines = result.out.splitlines()
    assert "study: s" in lines and "status: completed" in lines
    assert "architecture: evil\\x1b]0;pwned\\x07\\x1b[2J\\r\\x9b" in result.out.replace(
        "\n", ""
    )


def test_a_closed_stdout_pipe_does_not_stop_training(tmp_path: Path) -> None:
    """`cnnlab train ... 2>&1 | head -1`: the run goes on to the end."""
    (tmp_path / "net.yaml").write_text(TINY_NET_YAML)
    args = ["train", "net.yaml", "--out", "R", *TINY_FLAGS, "--epochs", "3"]
    proc = subprocess.Popen(cli_command(*args), cwd=tmp_path, text=True,
                            env=os.environ | CLI_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("Run folder: R")
    proc.stdout.close()  # as `head -1` exits
    assert proc.wait(timeout=300) == 0
    meta = json.loads((tmp_path / "R" / "run.json").read_text())
    assert meta["status"] == "completed" and meta["epochs_done"] == 3


def test_a_newline_in_a_file_name_cannot_forge_a_line(tmp_path: Path, cli: Any) -> None:
    """`predict` prints one line per image and an error is one line, whatever the
    file names hold: a newline in a name is shown as '\\n', never sent."""
    from helpers import draw_digit

    (tmp_path / "net.yaml").write_text(TINY_NET_YAML)
    assert cli("train", "net.yaml", *TINY_FLAGS, "--out", "run").code == 0
    forged = "a\nb.png: 7 (99.9%)"
    draw_digit(tmp_path / f"{forged}.png", "1")
    (tmp_path / f"{forged}-blank.png").write_bytes(
        (tmp_path / f"{forged}.png").read_bytes()[:20]
    )
    good = cli("predict", "run", f"{forged}.png")
    assert good.code == 0, good.err
    assert len(good.out.splitlines()) == 1
    assert good.out.startswith("a\\nb.png: 7 (99.9%).png: ")
    bad = cli("predict", "run", f"{forged}-blank.png")
    assert bad.code == 2
    assert len(bad.err.splitlines()) == 1 and bad.err.startswith("error: ")
    assert "a\\nb.png" in bad.err
    assert shown("a\nb\tc", one_line=True) == "a\\nb\tc"
