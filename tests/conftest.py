"""Shared test options."""

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden/*.txt from the current output",
    )


# Hypothesis profiles for tests/test_fuzz.py: `ci` (the default) keeps the suite
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
