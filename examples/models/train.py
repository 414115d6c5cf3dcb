"""Train and save the README's `colors` model: a light's [wavelength in nm, brightness in %] -> its colour.

The model predicts 0, 1 or 2, an index into the config's `states` (["green", "red", "blue"]), as
the original StateService's models did; `[[500, 0]]` (500 nm) is green. It is a scikit-learn
gradient-boosted tree ensemble (50 rounds of 3 depth-2 trees), a small stand-in for a real one.
`--heavy` trains a 500-tree random forest on the same data instead, under the same file names: a
model whose load and `predict` cost tens of times more (what `bench/models_restated.py` measures
next to the light one).

Writes two files of the same model to DIR/state_service/ (default: models/ next to this script):
`colors_v1.skops` (what conf/colors.json serves; loads without running code from the file) and
`colors_v1.joblib` (joblib, i.e. pickle: loading it runs code from the file). The directories are
made 0755 and the files 0644, since the service refuses model files others than the owner can write.

    python examples/models/train.py [--out DIR] [--heavy]
"""

from __future__ import annotations

import argparse
import os
import zipfile
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import skops.io
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

HERE = Path(__file__).resolve().parent
TEAM = "state_service"
# visible light by wavelength (nm): the model's labels are indexes into conf/colors.json's states
BANDS = {0: (495.0, 570.0), 1: (620.0, 750.0), 2: (450.0, 495.0)}  # green, red, blue


HEAVY_TREES = 500


def train(samples: int = 300, seed: int = 0, rounds: int = 50, heavy: bool = False) -> Any:
    """A fitted classifier of [wavelength, brightness] rows into 0 (green), 1 (red) or 2 (blue).

    `heavy`: a random forest of HEAVY_TREES full-depth trees instead of the boosted ensemble.
    """
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for label, (low, high) in BANDS.items():
        wavelength = rng.uniform(low, high, samples)
        brightness = rng.uniform(0.0, 100.0, samples)  # says nothing about the colour: the model learns to ignore it
        rows.append(np.column_stack([wavelength, brightness]))
        labels.append(np.full(samples, label))
    if heavy:
        model: Any = RandomForestClassifier(n_estimators=HEAVY_TREES, random_state=seed)
    else:
        model = GradientBoostingClassifier(n_estimators=rounds, max_depth=2, random_state=seed)
    return model.fit(np.concatenate(rows), np.concatenate(labels))


def save(model: Any, out: Path) -> list[Path]:
    """Write `model` as DIR/state_service/colors_v1.skops and .joblib, owner-writable only."""
    team = out / TEAM
    team.mkdir(parents=True, exist_ok=True)
    for directory in (out, team):
        directory.chmod(0o755)
    paths = [team / "colors_v1.skops", team / "colors_v1.joblib"]
    skops.io.dump(model, paths[0], compression=zipfile.ZIP_DEFLATED)
    joblib.dump(model, paths[1])
    for path in paths:
        os.chmod(path, 0o644)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the README's colors model and save it.")
    parser.add_argument("--out", type=Path, default=HERE / "models", help="the models dir (default: %(default)s)")
    parser.add_argument(
        "--heavy", action="store_true", help=f"a {HEAVY_TREES}-tree random forest instead of the small boosted ensemble"
    )
    args = parser.parse_args()
    model = train(heavy=args.heavy)
    assert model.predict(np.array([[500.0, 0.0]])).tolist() == [0], "500 nm should be green"
    for path in save(model, args.out):
        print(f"wrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
