"""Model configs on disk -> checked `ModelSpec`s, and the trust check of model files.

Every `*.json` in the config dir names one model: `{"name", "team", "model", "states"}` and an
optional `"format"` (`joblib`, `pickle` or `skops`; by default `skops` for a `.skops` file,
`joblib` for `.joblib`, else `pickle`). Its file is `<models>/<team>/<model>`. `check_configs`
reads them all and reports every problem as `FILE: message`; `load_specs` raises one
ModelConfigError listing them. `trust_problem` is the check run at start-up and before every
(re)load: the file must stay inside the models dir, and neither it nor a directory from it up
to the models dir may be writable by anyone but its owner, since unpickling runs code from the
file. Nothing here loads a model (that is `models/files.py`).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from stateservice.core.chart import CHART_NAME, STATE_NAME
from stateservice.errors import ModelConfigError

FIELDS = ("name", "team", "model", "states", "format")
OVERRIDE = "--allow-writable-models"


class ModelFormat(Enum):
    JOBLIB = "joblib"
    PICKLE = "pickle"
    SKOPS = "skops"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One served model: what its config says, where its file is, and which config file said so."""

    name: str
    team: str
    model: str
    states: tuple[str, ...]
    format: ModelFormat
    models_dir: Path
    source: Path

    @property
    def path(self) -> Path:
        return self.models_dir / self.team / self.model


@dataclass(slots=True)
class Checked:
    """What `check_configs` found: the good specs and every problem as `FILE: message`."""

    specs: list[ModelSpec] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def load_specs(config_dir: Path, models_dir: Path, *, allow_writable: bool = False) -> list[ModelSpec]:
    """The models configured in `config_dir`. Raises ModelConfigError listing every problem."""
    checked = check_configs(config_dir, models_dir, allow_writable=allow_writable)
    if checked.problems:
        raise ModelConfigError(checked.problems)
    return checked.specs


def check_configs(config_dir: Path, models_dir: Path, *, allow_writable: bool = False) -> Checked:
    """Read and check every `*.json` in `config_dir` against `models_dir`; never raises for a bad file."""
    checked = Checked()
    if not config_dir.is_dir():
        checked.problems.append(f"{config_dir}: the model config dir does not exist or is not a directory")
        return checked
    if not models_dir.is_dir():
        checked.problems.append(
            f"{models_dir}: the models dir does not exist or is not a directory"
            " (for the example models, run `python examples/models/train.py --out DIR` first)"
        )
        return checked
    files = sorted(p for p in config_dir.glob("*.json") if p.is_file())
    if not files:
        checked.problems.append(f"{config_dir}: no model config (*.json) in this directory")
    seen: dict[str, Path] = {}
    for path in files:
        spec, problems = _check_file(path, models_dir, allow_writable)
        checked.problems += [f"{path}: {problem}" for problem in problems]
        if spec is None:
            continue
        if spec.name in seen:
            checked.problems.append(f"{path}: model name {spec.name!r} is already defined in {seen[spec.name]}")
            continue
        seen[spec.name] = path
        checked.specs.append(spec)
    return checked


def trust_problem(
    spec: ModelSpec, file_stat: os.stat_result | None = None, *, allow_writable: bool = False
) -> str | None:
    """Why `spec`'s file must not be loaded (outside the models dir; writable by others), or None."""
    try:
        root = Path(os.path.realpath(spec.models_dir))
        real = Path(os.path.realpath(spec.path))
        if not real.is_relative_to(root) or real == root:
            return f"model file {spec.path} resolves to {real}, outside the models dir {root}"
        file_stat = file_stat or os.stat(real)
        if not stat.S_ISREG(file_stat.st_mode):
            return f"model file {spec.path} is not a regular file"
        if allow_writable:
            return None
        checks = [("model file", real, file_stat)]
        checks += [("directory", d, os.stat(d)) for d in real.parents if d.is_relative_to(root)]
    except OSError as exc:
        return f"cannot check model file {spec.path}: {exc.strerror or exc}"
    for what, path, found in checks:
        writers = [who for who, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if found.st_mode & bit]
        if writers:
            return (
                f"{what} {path} is writable by {' and '.join(writers)} (mode {stat.S_IMODE(found.st_mode):04o}); "
                "loading a model runs code from its file, so only its owner may be able to change it "
                f"(chmod go-w {path}, or start with {OVERRIDE})"
            )
    return None


def _check_file(path: Path, models_dir: Path, allow_writable: bool) -> tuple[ModelSpec | None, list[str]]:
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        return None, [f"cannot read the file: {exc.strerror or exc}"]
    except json.JSONDecodeError as exc:
        return None, [f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"]
    except (UnicodeDecodeError, RecursionError) as exc:
        return None, [f"not valid JSON: {exc}"]
    if not isinstance(data, dict):
        return None, ['must be a JSON object {"name", "team", "model", "states"}']
    problems = [f"missing field {name!r}" for name in FIELDS[:4] if name not in data]
    problems += [f"unknown field {name!r} (known: {', '.join(FIELDS)})" for name in data if name not in FIELDS]
    name = _name(data.get("name"), CHART_NAME, "name", problems)
    team = _component(data.get("team"), "team", problems)
    model = _component(data.get("model"), "model", problems)
    states = _states(data.get("states"), problems)
    fmt = _format(data.get("format"), model, problems)
    if problems or name is None or team is None or model is None or states is None or fmt is None:
        return None, problems
    spec = ModelSpec(name, team, model, states, fmt, models_dir, path)
    if not spec.path.exists():
        return None, [f"model file {spec.path} does not exist"]
    why = trust_problem(spec, allow_writable=allow_writable)
    if why is not None:
        return None, [why]
    return spec, []


def _name(value: Any, pattern: Any, what: str, problems: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        problems.append(
            f"{what} {value!r} is not a name (letters, digits, '.', '_', '-'; starting with a letter or digit)"
        )
        return None
    return value


def _component(value: Any, what: str, problems: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value in ("", ".", "..") or "/" in value or "\0" in value:
        problems.append(
            f"{what} {value!r} must be a single file or directory name inside the models dir (no '/', '.' or '..')"
        )
        return None
    return value


def _states(value: Any, problems: list[str]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        problems.append('states must be a non-empty list of state names, e.g. ["green", "red", "blue"]')
        return None
    names: list[str] = []
    for index, item in enumerate(value):
        if _name(item, STATE_NAME, f"states[{index}]", problems) is not None:
            if item in names:
                problems.append(f"states[{index}] {item!r} is listed twice")
            names.append(item)
    return tuple(names) if len(names) == len(value) else None


def _format(value: Any, model: str | None, problems: list[str]) -> ModelFormat | None:
    if value is None:
        if model is None:
            return None
        if model.endswith(".skops"):
            return ModelFormat.SKOPS
        return ModelFormat.JOBLIB if model.endswith(".joblib") else ModelFormat.PICKLE
    try:
        return ModelFormat(value)
    except ValueError:
        problems.append(f"format {value!r} is not one of {', '.join(f.value for f in ModelFormat)}")
        return None


def describe(spec: ModelSpec) -> str:
    """One line for `validate`: the model, its file and format, its states."""
    return (
        f"model {spec.name!r} ({spec.team}/{spec.model}, {spec.format.value}), "
        f"{len(spec.states)} states: {', '.join(spec.states)}"
    )
