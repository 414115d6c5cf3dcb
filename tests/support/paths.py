"""Where the repository is, for tests that read its files (examples, deploy/): not relative to a test's own file."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
