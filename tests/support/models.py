"""Model files for tests: tiny scikit-learn models trained on the spot, stand-in estimators, a config layout.

The stand-ins live here (not in a test module) so that a pickle of one names an importable class,
also in a `stateservice serve` subprocess (whose PYTHONPATH is the repository root).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import threading
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stateservice.models.conf import ModelSpec, load_specs
from stateservice.models.files import deserialize

STATES = ("green", "red", "blue")
WAVELENGTHS = [[460.0, 0.0], [480.0, 50.0], [510.0, 0.0], [540.0, 50.0], [650.0, 0.0], [700.0, 50.0]]
INDEXES = [2, 2, 0, 0, 1, 1]  # blue, blue, green, green, red, red


class Fixed:
    """Predicts `predictions` whatever the rows: a model that answers what a test needs."""

    def __init__(self, predictions: Any, n_features_in_: int | None = None) -> None:
        self.predictions = predictions
        if n_features_in_ is not None:
            self.n_features_in_ = n_features_in_

    def predict(self, rows: Any) -> Any:
        return self.predictions


class Rejects:
    """Refuses every input the way scikit-learn does: with a ValueError."""

    def predict(self, rows: Any) -> Any:
        raise ValueError("Input X contains values this model was not trained for")


class Broken:
    """Fails with something that is not a complaint about the input: a bug in the model."""

    def predict(self, rows: Any) -> Any:
        raise KeyError("a bug in the model")


class Sleepy:
    """Predicts index 0 for each row after `seconds` of blocking work."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def predict(self, rows: Any) -> Any:
        time.sleep(self.seconds)
        return [0] * len(rows)


class Announces:
    """Writes its process's pid to a file in `directory` as it starts to predict, then predicts like Sleepy: a test
    knows which prediction process is predicting, and when."""

    def __init__(self, directory: Path, seconds: float) -> None:
        self.directory = directory
        self.seconds = seconds

    def predict(self, rows: Any) -> Any:
        (self.directory / str(os.getpid())).touch()
        time.sleep(self.seconds)
        return [0] * len(rows)


class Crashes:
    """Kills the interpreter it predicts in, as a crash in native code would (SIGKILL), or exits it with `exit_code`
    without a word (run it in a prediction pool only)."""

    n_features_in_ = 1

    def __init__(self, exit_code: int | None = None) -> None:
        self.exit_code = exit_code

    def predict(self, rows: Any) -> Any:
        if self.exit_code is not None:
            os._exit(self.exit_code)
        os.kill(os.getpid(), signal.SIGKILL)


class WhereAmI:
    """Predicts index 0 (green) in any process but `worker`, 1 (red) in it: where did predict run?"""

    def __init__(self, worker: int) -> None:
        self.worker = worker

    def predict(self, rows: Any) -> Any:
        return [0 if os.getpid() != self.worker else 1] * len(rows)


class CountingLoader:
    """The service's loader, counting its calls and taking `delay` seconds longer (to make a load overlap)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, spec: ModelSpec, data: bytes) -> Any:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        return deserialize(spec, data)


def colors_tree(labels: Sequence[Any] = INDEXES) -> Any:
    """A decision tree of [wavelength, brightness] rows: 500 -> labels[2] (green), 650 -> red, 470 -> blue."""
    import numpy as np
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(random_state=0).fit(np.array(WAVELENGTHS), np.array(list(labels)))


def save(model: Any, path: Path, fmt: str = "joblib", mode: int = 0o644) -> Path:
    """Write `model` to `path` in `fmt` (joblib, pickle, skops) as a deploy would: a new file renamed over the old."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    if fmt == "skops":
        import skops.io

        skops.io.dump(model, temporary, compression=zipfile.ZIP_DEFLATED)
    elif fmt == "pickle":
        temporary.write_bytes(pickle.dumps(model))
    else:
        import joblib

        joblib.dump(model, temporary)
    temporary.chmod(mode)
    os.replace(temporary, path)
    return path


@dataclass
class Layout:
    """A config dir and a models dir, as `serve --config CONF --models MODELS` reads them."""

    conf: Path
    models: Path

    @classmethod
    def make(cls, root: Path) -> Layout:
        layout = cls(root / "conf", root / "models")
        layout.conf.mkdir(parents=True)
        layout.models.mkdir(parents=True)
        layout.models.chmod(0o755)
        return layout

    def add(
        self,
        name: str,
        model: Any,
        *,
        fmt: str = "joblib",
        team: str = "team",
        states: Sequence[str] = STATES,
        mode: int = 0o644,
    ) -> Path:
        """Save `model` as <models>/<team>/<name>.<fmt> and write conf/<name>.json naming it; the model's path."""
        (self.models / team).mkdir(exist_ok=True)
        (self.models / team).chmod(0o755)
        path = save(model, self.models / team / f"{name}.{fmt}", fmt, mode)
        config = {"name": name, "team": team, "model": path.name, "states": list(states)}
        (self.conf / f"{name}.json").write_text(json.dumps(config))
        return path

    def specs(self, *, allow_writable: bool = False) -> list[ModelSpec]:
        return load_specs(self.conf, self.models, allow_writable=allow_writable)
