"""An answer checker for answers that are lists whose order does not matter ("3, 1 and 2")."""

from __future__ import annotations

import re


def _items(text: str) -> list[str]:
    parts = re.split(r"\s*(?:,|;|\band\b)\s*", text.strip().rstrip(".").lower())
    return sorted(p.strip() for p in parts if p.strip())


def same_items(pred: str, gold: str) -> tuple[str, str]:
    """``correct`` when the stated answer lists the gold items in any order, else ``wrong``;
    ``unparseable`` when it lists nothing."""
    got, want = _items(pred), _items(gold)
    if not got:
        return "unparseable", f"answer {pred[:60]!r} lists no items"
    if got == want:
        return "correct", f"{got} == {want}"
    return "wrong", f"{got} != {want}"
