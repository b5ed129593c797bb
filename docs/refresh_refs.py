"""Point docs/architecture.md's line references at where each name is defined now.

A reference reads [`name` (file.py:N)](../path/file.py#LN). Run after moving code:
``python docs/refresh_refs.py``; tests/test_docs.py fails while a reference is stale.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[`([A-Za-z_]\w*)` \(([\w.]+):(\d+)\)\]\(\.\./([\w/.]+)#L(\d+)\)")


def definition_line(path: str, name: str) -> int:
    """The first line of ``path`` that defines ``name`` (def, class, then a module-level assignment)."""
    lines = (ROOT / path).read_text().splitlines()
    for pattern in (rf"\s*(async\s+)?def {name}\b", rf"\s*class {name}\b", rf"{name}\s*[:=]"):
        for number, line in enumerate(lines, 1):
            if re.match(pattern, line):
                return number
    raise SystemExit(f"{name} is not defined in {path}")


def main() -> None:
    doc = ROOT / "docs" / "architecture.md"
    text = doc.read_text()

    def refreshed(match: re.Match[str]) -> str:
        name, file_name, _, path, _ = match.groups()
        number = definition_line(path, name)
        return f"[`{name}` ({file_name}:{number})](../{path}#L{number})"

    new = LINK.sub(refreshed, text)
    doc.write_text(new)
    print("refreshed" if new != text else "up to date", file=sys.stderr)


if __name__ == "__main__":
    main()
