"""A `Document` as Markdown, as one self-contained HTML page, and as CSV.

The renderers add no words of their own: every heading and sentence comes from the
document. Every string is escaped here, for the format it lands in
(`cnnlab.reporting.escape`, `html.escape`); the document holds plain text.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from urllib.parse import quote

from cnnlab.reporting.document import (
    Audience,
    Block,
    Code,
    ColumnKind,
    Document,
    Figure,
    Paragraph,
    Style,
    Table,
)
from cnnlab.reporting.escape import csv_cell, md_fence, md_text

FIGURES = "figures"  # the figures' folder, beside the report files


def _in_files(block: Block) -> bool:
    return block.audience is not Audience.TERMINAL


# ------------------------------------------------------------------ Markdown


def to_markdown(doc: Document) -> str:
    out = [f"# {md_text(doc.title)}", ""]
    out += _md_blocks(doc.intro)
    for section in doc.sections:
        if section.audience is Audience.TERMINAL:
            continue
        out += [f"## {md_text(section.heading)}", ""]
        out += _md_blocks(section.blocks)
    return "\n".join(out)


def _md_blocks(blocks: Sequence[Block]) -> list[str]:
    out: list[str] = []
    shown = [b for b in blocks if _in_files(b)]
    for i, block in enumerate(shown):
        out.append(_md_block(block))
        following = shown[i + 1] if i + 1 < len(shown) else None
        in_list = _is_item(block) and following is not None and _is_item(following)
        if not in_list:
            out.append("")
    return out


def _is_item(block: Block) -> bool:
    return isinstance(block, Paragraph) and block.style is Style.ITEM


def _md_block(block: Block) -> str:
    if isinstance(block, Table):
        return markdown_table(block.headers, block.rows)
    if isinstance(block, Figure):
        return f"![{md_text(block.name)}]({FIGURES}/{quote(block.path.name)})"
    if isinstance(block, Code):
        return md_fence(block.text, block.language)
    lead = f"**{md_text(block.lead)}** " if block.lead else ""
    text = md_text(block.text, line_start=not lead)
    if block.style is Style.WARNING:
        return f"> **{text}**"
    if block.style is Style.ITEM:
        return f"- {lead}{md_text(block.text)}"
    if block.style is Style.NOTE:
        return f"*{text}*"
    return lead + text


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; every cell shows its text literally (md_text)."""
    lines = ["| " + " | ".join(map(md_text, headers)) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(map(md_text, row)) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------ HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right;
         white-space: nowrap; }
.scroll { overflow-x: auto; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
.verdict { margin: 0.2em 0; }
.warning { background: #fff3cd; border: 1px solid #e0b000; padding: 0.6em 1em;
           font-weight: bold; }
td.wrap { white-space: normal; text-align: left; min-width: 20em; }
td.name { text-align: left; }
"""


def to_html(doc: Document) -> str:
    """One self-contained page: every string escaped, every image embedded."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(doc.page_title or doc.title)}</title><style>{_CSS}</style>"
        "</head><body>",
        f"<h1>{e(doc.title)}</h1>",
        *html_body(doc),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def html_body(doc: Document, heading: str = "h2") -> list[str]:
    """The intro and sections as HTML elements (a notebook cell shows these)."""
    parts = [_html_block(b) for b in doc.intro if _in_files(b)]
    for section in doc.sections:
        if section.audience is Audience.TERMINAL:
            continue
        parts.append(f"<{heading}>{html.escape(section.heading)}</{heading}>")
        parts += [_html_block(b) for b in section.blocks if _in_files(b)]
    return parts


def _html_block(block: Block) -> str:
    e = html.escape
    if isinstance(block, Table):
        return html_table(block)
    if isinstance(block, Figure):
        data = base64.b64encode(block.path.read_bytes()).decode("ascii")
        return f'<img alt="{e(block.name)}" src="data:image/png;base64,{data}">'
    if isinstance(block, Code):
        return f"<pre>{e(block.text)}</pre>"
    lead = f"<b>{e(block.lead)}</b> " if block.lead else ""
    text = e(block.text)
    if block.style is Style.WARNING:
        return f'<p class="warning">{text}</p>'
    if block.style is Style.ITEM:
        return f'<p class="verdict">{lead}{text}</p>'
    if block.style is Style.NOTE:
        return f"<p>{lead}<i>{text}</i></p>"
    return f"<p>{lead}{text}</p>"


_TD_CLASS = {ColumnKind.TEXT: ' class="wrap"', ColumnKind.NAME: ' class="name"'}


def html_table(t: Table) -> str:
    """A table of escaped cells; sentence columns wrap, the rest stay on a line."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in t.headers)
    kinds = [_TD_CLASS.get(c.kind, "") for c in t.columns]
    body = "".join(
        "<tr>"
        + "".join(f"<td{k}>{e(c)}</td>" for k, c in zip(kinds, row, strict=True))
        + "</tr>"
        for row in t.rows
    )
    return (
        f'<div class="scroll"><table class="{e(t.name)}"><thead><tr>{head}</tr>'
        f"</thead><tbody>{body}</tbody></table></div>"
    )


# ------------------------------------------------------------------ CSV


def to_csv(t: Table) -> str:
    """One table as CSV; a cell a spreadsheet would run as a formula is text."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_cell(h) for h in t.headers])
    writer.writerows([[csv_cell(c) for c in row] for row in t.rows])
    return buf.getvalue()


def document_csv(doc: Document) -> str:
    """Every table of the document in one CSV file, in long form: one line per
    cell with its table, row, column and value, so each table reads back by name."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["table", "row", "column", "value"])
    for t in doc.tables():
        for i, row in enumerate(t.rows, start=1):
            for header, cell in zip(t.headers, row, strict=True):
                writer.writerow([csv_cell(t.name), i, csv_cell(header), csv_cell(cell)])
    return buf.getvalue()
