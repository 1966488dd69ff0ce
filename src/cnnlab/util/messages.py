"""The sentences of cnnlab's bad-input errors that many modules say alike.

    executor must be one of local, ray. Received: executor='dask'.
    unknown key 'seed'. Did you mean 'seeds'? Allowed: name, seeds, train.

Each caller adds where (the file, the field, the flag) in front, as before; the
golden messages of tests/cli/test_bad_input.py hold every sentence to its letter.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cnnlab.util.text import did_you_mean, show_value


def must_be_one_of(
    name: str, choices: Iterable[str], received: str, hint: str = "", also: str = ""
) -> str:
    """'NAME must be one of A, B[ ALSO]. Received: RECEIVED.[HINT]'; without a
    NAME (the caller says where), 'must be one of ...'. `also`: another way to
    be right (' or left out')."""
    head = f"{name} must be one of" if name else "must be one of"
    return f"{head} {', '.join(choices)}{also}. Received: {received}.{hint}"


def received(name: str, value: Any) -> str:
    """'name=<the value, shown short>': what a message says was received."""
    return f"{name}={show_value(value)}"


def unknown_key(key: Any, allowed: Iterable[str]) -> str:
    """ "unknown key 'x'. Did you mean 'y'? Allowed: a, b." (the hint if one is
    close)."""
    allowed = tuple(allowed)
    hint = did_you_mean(key, allowed)
    return f"unknown key {show_value(key)}.{hint} Allowed: {', '.join(allowed)}."
