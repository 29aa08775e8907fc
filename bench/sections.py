"""Several benchmarks writing into one Markdown file, each its own section.

``make bench`` runs more than one benchmark into docs/benchmarks.md; each replaces only the
section it wrote last time (between HTML comments naming it), so the others' numbers stay.
"""

from __future__ import annotations

import re
from pathlib import Path


def write_section(path: Path, owner: str, text: str) -> None:
    """Put ``text`` into ``path`` as the section of ``owner`` (a script's name), replacing the
    one it wrote before, or after the others when it has none yet."""
    begin, end = f"<!-- begin {owner} -->", f"<!-- end {owner} -->"
    section = f"{begin}\n{text.strip()}\n{end}\n"
    existing = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(existing):
        updated = pattern.sub(lambda _: section, existing)
    else:
        updated = (existing.rstrip() + "\n\n" if existing.strip() else "") + section
    path.write_text(updated)
