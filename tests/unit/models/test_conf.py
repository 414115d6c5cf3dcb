"""Model configs: each bad config -> its `FILE: message`, every problem of every file at once; the trust check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from stateservice.errors import ModelConfigError
from stateservice.models.conf import ModelFormat, check_configs, load_specs, trust_problem

GOOD = {"name": "colors", "team": "state_service", "model": "colors_v1.pkl", "states": ["green", "red", "blue"]}


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(config dir, models dir) holding the good config and its model file, modes as an operator would set them."""
    conf, models = tmp_path / "conf", tmp_path / "models"
    conf.mkdir()
    (models / "state_service").mkdir(parents=True)
    for directory in (models, models / "state_service"):
        directory.chmod(0o755)
    model_file(models, "state_service", "colors_v1.pkl")
    write(conf / "colors.json", GOOD)
    return conf, models


def model_file(models: Path, team: str, name: str) -> Path:
    path = models / team / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not read by the config check")
    path.chmod(0o644)
    return path


def write(path: Path, config: Any) -> Path:
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    return path


def problems(conf: Path, models: Path, **options: Any) -> list[str]:
    return check_configs(conf, models, **options).problems


def test_a_good_config_is_a_spec(dirs: tuple[Path, Path]) -> None:
    conf, models = dirs

    [spec] = load_specs(conf, models)

    assert (spec.name, spec.team, spec.model) == ("colors", "state_service", "colors_v1.pkl")
    assert spec.states == ("green", "red", "blue")
    assert spec.path == models / "state_service" / "colors_v1.pkl"
    assert spec.source == conf / "colors.json"
    assert spec.format is ModelFormat.PICKLE


@pytest.mark.parametrize(
    ("model", "given", "expected"),
    [
        ("m.skops", None, ModelFormat.SKOPS),
        ("m.joblib", None, ModelFormat.JOBLIB),
        ("m.pkl", None, ModelFormat.PICKLE),
        ("m.bin", "skops", ModelFormat.SKOPS),
    ],
)
def test_the_format_follows_the_suffix_unless_given(
    dirs: tuple[Path, Path], model: str, given: str | None, expected: ModelFormat
) -> None:
    conf, models = dirs
    model_file(models, "state_service", model)
    write(conf / "colors.json", {**GOOD, "model": model} | ({"format": given} if given else {}))

    assert load_specs(conf, models)[0].format is expected


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{", "not valid JSON: Expecting property name enclosed in double quotes (line 1, column 2)"),
        ('{"name": "colors", // the model\n}', "not valid JSON: Expecting property name enclosed in double quotes"),
        ("[]", 'must be a JSON object {"name", "team", "model", "states"}'),
        ({k: v for k, v in GOOD.items() if k != "team"}, "missing field 'team'"),
        ({**GOOD, "sates": []}, "unknown field 'sates' (known: name, team, model, states, format)"),
        ({**GOOD, "name": "my model"}, "name 'my model' is not a name (letters, digits"),
        ({**GOOD, "name": 7}, "name 7 is not a name"),
        ({**GOOD, "states": []}, "states must be a non-empty list of state names"),
        ({**GOOD, "states": "green"}, "states must be a non-empty list of state names"),
        ({**GOOD, "states": ["green", "green"]}, "states[1] 'green' is listed twice"),
        ({**GOOD, "states": ["green", 1]}, "states[1] 1 is not a name"),
        ({**GOOD, "format": "onnx"}, "format 'onnx' is not one of joblib, pickle, skops"),
        ({**GOOD, "team": "../.."}, "team '../..' must be a single file or directory name inside the models dir"),
        ({**GOOD, "team": "/etc"}, "team '/etc' must be a single file or directory name"),
        ({**GOOD, "model": "../../x.pkl"}, "model '../../x.pkl' must be a single file or directory name"),
        ({**GOOD, "model": ".."}, "model '..' must be a single file or directory name"),
        ({**GOOD, "model": "colors_v2.pkl"}, "model file {models}/state_service/colors_v2.pkl does not exist"),
        ({**GOOD, "team": "nobody"}, "model file {models}/nobody/colors_v1.pkl does not exist"),
    ],
)
def test_each_bad_config_is_reported_as_file_colon_message(dirs: tuple[Path, Path], config: Any, message: str) -> None:
    conf, models = dirs
    path = write(conf / "colors.json", config)

    found = problems(conf, models)

    assert len(found) == 1, found
    assert found[0].startswith(f"{path}: " + message.replace("{models}", str(models))), found


def test_every_problem_of_every_file_is_reported(dirs: tuple[Path, Path]) -> None:
    conf, models = dirs
    write(conf / "a.json", {"name": "a", "states": ["x"], "extra": 1})
    write(conf / "b.json", "not json")

    with pytest.raises(ModelConfigError) as raised:
        load_specs(conf, models)

    lines = str(raised.value).splitlines()
    assert f"{conf / 'a.json'}: missing field 'team'" in lines
    assert f"{conf / 'a.json'}: missing field 'model'" in lines
    assert f"{conf / 'a.json'}: unknown field 'extra' (known: name, team, model, states, format)" in lines
    assert any(line.startswith(f"{conf / 'b.json'}: not valid JSON") for line in lines)
    assert len(lines) == 4


def test_a_duplicate_name_names_the_first_file(dirs: tuple[Path, Path]) -> None:
    conf, models = dirs
    write(conf / "z_again.json", GOOD)

    assert problems(conf, models) == [
        f"{conf / 'z_again.json'}: model name 'colors' is already defined in {conf / 'colors.json'}"
    ]


def test_missing_directories_and_an_empty_config_dir(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    conf, models = dirs
    empty = tmp_path / "empty"
    empty.mkdir()

    assert problems(tmp_path / "nope", models) == [
        f"{tmp_path / 'nope'}: the model config dir does not exist or is not a directory"
    ]
    assert problems(conf, tmp_path / "nope") == [
        f"{tmp_path / 'nope'}: the models dir does not exist or is not a directory"
        " (for the example models, run `python examples/models/train.py --out DIR` first)"
    ]
    assert problems(empty, models) == [f"{empty}: no model config (*.json) in this directory"]


def test_a_team_dir_linking_out_of_the_models_dir_is_refused(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    conf, models = dirs
    outside = tmp_path / "outside"
    model_file(outside, "t", "colors_v1.pkl")
    (models / "linked").symlink_to(outside / "t")
    write(conf / "colors.json", {**GOOD, "team": "linked"})

    [found] = problems(conf, models)

    assert found.startswith(f"{conf / 'colors.json'}: model file {models}/linked/colors_v1.pkl resolves to ")
    assert f"outside the models dir {models}" in found


@pytest.mark.parametrize(
    ("where", "mode", "who"),
    [
        ("state_service/colors_v1.pkl", 0o646, "others"),
        ("state_service/colors_v1.pkl", 0o664, "group"),
        ("state_service", 0o777, "group and others"),
        ("", 0o757, "others"),
    ],
    ids=["file-o+w", "file-g+w", "team-dir", "models-dir"],
)
def test_a_model_others_can_change_is_refused_unless_allowed(
    dirs: tuple[Path, Path], where: str, mode: int, who: str
) -> None:
    conf, models = dirs
    target = models / where if where else models
    target.chmod(mode)

    [found] = problems(conf, models)

    kind = "model file" if target.is_file() else "directory"
    assert found == (
        f"{conf / 'colors.json'}: {kind} {target} is writable by {who} (mode {mode:04o}); loading a model runs "
        "code from its file, so only its owner may be able to change it "
        f"(chmod go-w {target}, or start with --allow-writable-models)"
    )
    assert problems(conf, models, allow_writable=True) == []


def test_directories_above_the_models_dir_are_not_checked(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    conf, models = dirs
    tmp_path.chmod(0o777)
    try:
        assert problems(conf, models) == []
    finally:
        tmp_path.chmod(0o700)


def test_trust_problem_reads_the_mode_it_is_given(dirs: tuple[Path, Path]) -> None:
    conf, models = dirs
    [spec] = load_specs(conf, models)
    found = os.stat(spec.path)

    assert trust_problem(spec, found) is None
    spec.path.chmod(0o666)
    assert trust_problem(spec, found) is None  # the stat of the file as it was opened, not as it is now
    assert "writable by group and others" in (trust_problem(spec) or "")
