"""Model files -> estimators: trust check, read, digest, deserialize. Blocking: call it in the executor only.

joblib and pickle files are read with `joblib.load` (which reads plain pickles too); both run code
from the file, which is why `read_model` refuses a file that `modelconf.trust_problem` rejects.
skops files load without running code from the file: the types skops does not trust by default
are accepted only when they are scikit-learn or numpy classes (never functions, never another
library's types), and a file naming anything else is refused with those names.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stateservice.errors import ModelUnavailable
from stateservice.models.conf import ModelFormat, ModelSpec, trust_problem

# a file version: a replaced file (new inode), a rewrite (size, mtime) or a chmod (ctime) each change it
Signature = tuple[int, int, int, int, int]
Loader = Callable[[ModelSpec, bytes], Any]
TRUSTED_LIBRARIES = ("sklearn", "numpy")


@dataclass(frozen=True, slots=True)
class ModelFile:
    data: bytes
    digest: str  # SHA-256 of the file, hex
    signature: Signature


def signature(found: os.stat_result) -> Signature:
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


def current_signature(path: Path) -> Signature | None:
    """The file's signature now, or None when it cannot be stat'ed (gone, unreadable dir)."""
    try:
        return signature(os.stat(path))
    except OSError:
        return None


def read_model(spec: ModelSpec, *, allow_writable: bool = False) -> ModelFile:
    """The model file's bytes, digest and signature, after the trust check. Raises ModelUnavailable."""
    try:
        with open(spec.path, "rb") as handle:
            found = os.fstat(handle.fileno())  # the checked file is the one read, even if replaced meanwhile
            why = trust_problem(spec, found, allow_writable=allow_writable)
            if why is not None:
                raise ModelUnavailable(spec.name, why)
            data = handle.read()
    except OSError as exc:
        raise ModelUnavailable(spec.name, f"cannot read {spec.path}: {exc.strerror or exc}") from None
    return ModelFile(data, hashlib.sha256(data).hexdigest(), signature(found))


def load_now(spec: ModelSpec, *, allow_writable: bool = False) -> str | None:
    """Read and deserialize the model as a worker would; why that fails, or None (for `validate`)."""
    try:
        deserialize(spec, read_model(spec, allow_writable=allow_writable).data)
    except ModelUnavailable as exc:
        return exc.reason
    except Exception as exc:
        return f"cannot load model file {spec.path}: {type(exc).__name__}: {str(exc)[:300]}"
    return None


def deserialize(spec: ModelSpec, data: bytes) -> Any:
    """The estimator in `data`, in `spec.format`. Raises whatever the format's loader raises, or ValueError."""
    # imported on first load, not at import: scikit-learn takes a second to import and chart-only services never need it
    if spec.format is ModelFormat.SKOPS:
        import skops.io

        untrusted = skops.io.get_untrusted_types(data=data)
        refused = [name for name in untrusted if not library_class(name)]
        if refused:
            raise ValueError(
                "the skops file uses types that are neither trusted by skops nor scikit-learn or numpy classes: "
                + ", ".join(refused)
            )
        estimator = skops.io.loads(data, trusted=untrusted)
    else:
        import joblib

        estimator = joblib.load(io.BytesIO(data))
    if not callable(getattr(estimator, "predict", None)):
        raise ValueError(f"the file holds a {type(estimator).__name__}, which has no predict method")
    return estimator


def library_class(name: str) -> bool:
    """Whether the dotted `name` is a class (not a function) defined in scikit-learn or numpy."""
    parts = name.split(".")
    if parts[0] not in TRUSTED_LIBRARIES or not all(p.isidentifier() for p in parts):
        return False
    for split in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                found = getattr(found, attribute)
        except AttributeError:
            return False
        return isinstance(found, type) and found.__module__.split(".")[0] in TRUSTED_LIBRARIES
    return False
