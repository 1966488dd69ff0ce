"""Shared test options and fixtures (the machinery behind them: tests/helpers.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import CLI_ENV, Result, main_in_process, write_tiny_net


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden/*.txt and the table of docs/bad-input.md from the "
        "current output",
    )


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> Callable[..., Result]:
    """`cnnlab.cli.main(ARGS)` in process, in tmp_path; argparse exits included."""
    monkeypatch.chdir(tmp_path)
    for name, value in CLI_ENV.items():
        monkeypatch.setenv(name, value)
    return lambda *args: main_in_process(*args, capsys=capsys)


@pytest.fixture
def tiny_net(tmp_path: Path) -> Path:
    """The tiny network (helpers.TINY_NET_YAML) as tmp_path/net.yaml."""
    return write_tiny_net(tmp_path / "net.yaml")


# Hypothesis profiles for tests/nn/test_fuzz_parsers.py: `ci` (the default) keeps the suite
# fast; `fuzz` is the dedicated run: --hypothesis-profile=fuzz.
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis comes with the test extra: pip install -e '.[test]'
    pass
else:
    settings.register_profile("ci", max_examples=60, deadline=None)
    settings.register_profile(
        "fuzz",
        max_examples=10_000,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    settings.load_profile("ci")


def pytest_configure(config: pytest.Config) -> None:
    """Measured convolution paths (nn.convpath) go to this session's own cache,
    not the user's; every process the tests start inherits it."""
    os.environ["CNNLAB_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnnlab-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.get("CNNLAB_CACHE_DIR", ""), ignore_errors=True)
