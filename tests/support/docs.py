"""Reading the manual's example blocks, for the tests that run them (test_docs, test_models_cli)."""

from __future__ import annotations


def console_steps(block: str) -> list[tuple[str, list[str]]]:
    """A ```console block as (command, the lines it must print) pairs: each `$ ` line and the lines after it."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
        else:
            raise AssertionError(f"output before the first `$ ` line: {line!r}")
    return steps
