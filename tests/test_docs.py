"""docs/architecture.md points at the code it describes: every line reference lands on the named definition."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[`([A-Za-z_]\w*)` \(([\w.]+):(\d+)\)\]\(\.\./([\w/.]+)#L(\d+)\)")


def test_architecture_line_references_land_on_their_definitions() -> None:
    links = LINK.findall((ROOT / "docs" / "architecture.md").read_text())
    assert len(links) > 20  # the page lists the core and each front end's adapters
    stale = []
    for name, file_name, shown, path, anchor in links:
        assert Path(path).name == file_name and shown == anchor, (name, file_name, shown, path, anchor)
        line = (ROOT / path).read_text().splitlines()[int(anchor) - 1]
        if not re.match(rf"\s*((async\s+)?def|class) {name}\b|{name}\s*[:=]", line):
            stale.append(f"{name} is not defined at {path}:{anchor}")
    assert not stale, "run `python docs/refresh_refs.py`: " + "; ".join(stale)
