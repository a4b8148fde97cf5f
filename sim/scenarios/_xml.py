"""Deterministic plain-XML writing for the scenario generators (same input, same bytes)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from xml.sax.saxutils import quoteattr

HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n'


def fmt(value: object) -> str:
    """Numbers without float noise: 12.0 -> '12', 13.8889 -> '13.89'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = f"{value:.2f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    return str(value)


def tag(name: str, attrs: Mapping[str, object], children: Iterable[str] = (), indent: int = 1) -> str:
    """One element as text; attributes whose value is None are left out, order is kept."""
    pad = "    " * indent
    body = " ".join(f"{k}={quoteattr(fmt(v))}" for k, v in attrs.items() if v is not None)
    kids = list(children)
    if not kids:
        return f"{pad}<{name} {body}/>"
    inner = "\n".join(kids)
    return f"{pad}<{name} {body}>\n{inner}\n{pad}</{name}>"


def write(path: Path, root: str, lines: Iterable[str], comment: str | None = None) -> None:
    """Write ``<root>`` with the given child lines; the file ends with a newline."""
    head = HEADER + (f"<!-- {comment} -->\n" if comment else "")
    text = head + f"<{root}>\n" + "\n".join(lines) + f"\n</{root}>\n"
    path.write_text(text, encoding="utf-8")
