"""From a model's predictions to states: what runs in a worker's thread or in a prediction process.

Pure of I/O: given a loaded estimator and rows, `predict_rows` calls its `predict` and turns
each prediction into one of the model's states, raising the error the caller answers with
(422 `values_rejected`, 500 `prediction_failed` or `bad_prediction`). Both the per-worker
cache (`models/cache.py`) and the prediction processes (`models/pool.py`) use it.
"""

from __future__ import annotations

from typing import Any

from stateservice.errors import BadPrediction, PredictionFailed, ValuesRejected
from stateservice.models.conf import ModelSpec

Rows = list[list[float]]


def predict_rows(spec: ModelSpec, estimator: Any, n_features: int | None, rows: Rows) -> list[str]:
    """In a thread or a pool process: the model's states for `rows`. Raises ValuesRejected, PredictionFailed,
    BadPrediction."""
    width = len(rows[0])
    if n_features is not None and width != n_features:
        raise ValuesRejected(
            spec.name,
            f"model {spec.name!r} expects rows of {n_features} numbers (its n_features_in_); these rows have {width}",
            expected=n_features,
            given=width,
        )
    try:
        predictions = estimator.predict(rows)
    except ValueError as exc:
        raise ValuesRejected(spec.name, f"model {spec.name!r} rejected the values: {str(exc)[:300]}") from None
    except Exception as exc:
        raise PredictionFailed(
            spec.name, f"model {spec.name!r} failed to predict: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    return to_states(spec, predictions, len(rows))


def to_states(spec: ModelSpec, predictions: Any, rows: int) -> list[str]:
    """Each prediction as a state: an integer index into `spec.states` (0-based) or a label equal to one."""
    values = predictions.tolist() if hasattr(predictions, "tolist") else predictions
    try:
        values = list(values)
    except TypeError:
        raise BadPrediction(
            spec.name, f"model {spec.name!r} returned {_show(values)}, not one prediction per row"
        ) from None
    if len(values) != rows:
        raise BadPrediction(spec.name, f"model {spec.name!r} returned {len(values)} predictions for {rows} rows")
    states = []
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(spec.states):
            states.append(spec.states[value])
        elif isinstance(value, str) and value in spec.states:
            states.append(value)
        else:
            raise BadPrediction(
                spec.name,
                f"model {spec.name!r} predicted {_show(value)}, which is neither an index from 0 to "
                f"{len(spec.states) - 1} nor one of its states ({', '.join(spec.states)})",
            )
    return states


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
