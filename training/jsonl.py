"""JSON Lines, the format of every dataset here (one JSON object a line, UTF-8): read and written
in one place. It imports nothing of Django, so the recipe run on its own, the benches and the
tests use it as the jobs do."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def jsonl_read(path: str | Path) -> list[dict]:
    """Every object in the file, in order; blank lines are skipped."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def jsonl_write(path: str | Path, rows: Iterable[dict]) -> None:
    Path(path).write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
