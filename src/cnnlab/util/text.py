"""Small text helpers for messages and file names: type checks, bounded reprs,
"did you mean" hints and file-name-safe labels."""

from __future__ import annotations

import difflib
import re
import reprlib
import unicodedata
from collections.abc import Iterable
from typing import Any

# Integers wider than this are shown by their size: str() of a huge int is slow
# (quadratic) and Python refuses it past 4,300 digits.
_INT_BITS = 128
_LOG10_2 = 0.30103


class _BoundedRepr(reprlib.Repr):
    """repr() with bounds on depth, width and integer size.

    A YAML "billion laughs" document shares 10**9 leaves through its aliases, so a
    full repr of a value from a hostile file could take minutes and gigabytes.
    """

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > _INT_BITS:
            return f"<an integer of about {int(x.bit_length() * _LOG10_2) + 1} digits>"
        return super().repr_int(x, level)


_REPR = _BoundedRepr()
_REPR.maxlevel = 2
_REPR.maxstring = _REPR.maxother = 50
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
_REPR.maxfrozenset = _REPR.maxdeque = _REPR.maxarray = 4

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_SLUG = 100  # folder names stay far below the 255-byte limit of filesystems


def is_int(value: Any) -> bool:
    """True for an int that is not a bool (YAML's `true` is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for an int or a float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def show_value(value: Any, limit: int = 60) -> str:
    """A user's value as one short line for a message: its bounded repr, cut at
    `limit` characters, however large or deeply nested the value is."""
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: object, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """ " Did you mean 'X'?" for the choice closest to `word`, or "" if none is."""
    text = word if isinstance(word, str) else show_value(word)
    close = difflib.get_close_matches(text, list(choices), n=1, cutoff=cutoff)
    return f" Did you mean '{close[0]}'?" if close else ""


def normalised(text: str) -> str:
    """`text` in Unicode NFKC form: 'ﬁ' is 'fi', fullwidth 'ｃｏｎｖ' is 'conv'.

    Two user strings that normalise equal look the same on screen, so cnnlab
    treats them as the same name.
    """
    return unicodedata.normalize("NFKC", text)


def slug(text: str, limit: int | None = MAX_SLUG) -> str:
    """The one rule by which a user string becomes a file or folder name:
    'conv3 <x>/y' -> 'conv3-x-y'.

    The text is NFKC-normalised, then each run of characters other than ASCII
    letters, digits and '._-' becomes one '-' (so no separator, control character
    or NUL survives), no '-' or '.' is left at either end (no hidden files, no
    flags, no '..'), and the result is cut to `limit` characters (None: uncut);
    case is kept. The result is "" when nothing safe is left.
    """
    name = _UNSAFE.sub("-", normalised(text)).strip("-.")
    return name if limit is None else name[:limit].strip("-.")
