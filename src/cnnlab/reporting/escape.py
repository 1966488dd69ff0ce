"""User strings (labels, names, descriptions), made safe for the format they land in.

A study file, and a store, are someone's input: a label may hold `<script>`, a
Markdown link to `javascript:`, a `# Heading`, a code fence, or a spreadsheet
formula. Each writer passes every such string through the function of its format.
HTML uses the standard library's `html.escape`.
"""

from __future__ import annotations

import re

from cnnlab.util.terminal import shown

# What can act in Markdown inline text or a table cell, escaped with a backslash
# (CommonMark allows it before any ASCII punctuation): code, emphasis, links and
# images ([ ]), raw HTML (< before a tag name), entities (&), table cells (|),
# strikethrough (~). `_` only at a word boundary: inside a word it cannot emphasise.
_MD_SPECIAL = re.compile(
    r"([\\`*\[\]|~&]|<(?=[A-Za-z/!?])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))"
)
# At the start of a line: a heading, quote, list item, rule or numbered item.
_MD_LINE_START = re.compile(r"^(\s*)([-+=#>]|\d+(?=[.)]))")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def md_text(text: str, line_start: bool = False) -> str:
    """One line of Markdown showing `text` literally: no markup, link, HTML or
    table cell boundary survives. `line_start`: the text begins a line, where a
    `#`, `-` or `1.` would also act."""
    one_line = " ".join(shown(str(text)).splitlines())
    escaped = _MD_SPECIAL.sub(lambda m: "\\" + m.group(), one_line)
    match = _MD_LINE_START.match(escaped) if line_start else None
    if match is None:
        return escaped
    indent, mark = match.groups()
    rest = escaped[match.end() :]
    if mark[0].isdigit():  # "12." stays a number: "12\."
        return f"{indent}{mark}\\{rest}"
    return f"{indent}\\{mark}{rest}"


def md_fence(text: str, info: str = "") -> str:
    """`text` as a fenced code block whose fence no line of `text` can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def csv_cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: a value starting like a formula
    (=, +, -, @, tab, CR) gets a leading apostrophe, unless it is a number."""
    if text.startswith(_FORMULA_START) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True
