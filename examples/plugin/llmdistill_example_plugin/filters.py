"""A filter for a domain where a rationale must not cite web pages (except allowed domains)."""

from __future__ import annotations

import re

URL = re.compile(r"https?://([^/\s]+)\S*")


def no_urls(rows, options: dict) -> list[str | None]:
    """For each row, why it is dropped (a URL outside ``options["allow"]``), or None to keep it."""
    allow = set(options.get("allow", []))
    reasons: list[str | None] = []
    for row in rows:
        bad = [m.group(0) for m in URL.finditer(row.rationale or "") if m.group(1) not in allow]
        reasons.append(f"rationale cites {bad[0]}" if bad else None)
    return reasons
