"""charts/files.py: which files `--charts DIR` serves, and the problems of a directory and its files."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from stateservice.charts.files import Parses, chart_paths, load_charts
from stateservice.errors import ChartError
from tests.support.charts import wave_text


def test_a_directory_gives_its_yaml_files_sorted_after_the_files_given(tmp_path: Path) -> None:
    charts = tmp_path / "charts"
    (charts / "sub").mkdir(parents=True)
    for name in ("b.yaml", "a.yaml", "c.yml", "notes.txt", ".hidden.yaml", "sub/d.yaml"):
        (charts / name).write_text(wave_text(1, name=Path(name).stem.strip(".")))
    (charts / "dir.yaml").mkdir()  # a directory named like a chart file is no chart file
    single = tmp_path / "one.yaml"

    assert chart_paths([single], charts) == [single, charts / "a.yaml", charts / "b.yaml"]
    assert chart_paths([single], None) == [single]


def test_the_charts_of_a_directory_load_by_file_name(tmp_path: Path) -> None:
    for stem, name in (("2", "second"), ("1", "first"), ("3", "third")):
        (tmp_path / f"{stem}.yaml").write_text(wave_text(1, name=name))

    assert [c.name for c in load_charts([], UTC, tmp_path)] == ["first", "second", "third"]


@pytest.mark.parametrize("make", [False, True], ids=["missing", "empty"])
def test_a_missing_or_empty_directory_is_an_error_naming_it(tmp_path: Path, make: bool) -> None:
    charts = tmp_path / "charts"
    if make:
        charts.mkdir()
        (charts / "README.md").write_text("no charts here\n")

    with pytest.raises(ChartError) as caught:
        load_charts([], UTC, charts)

    [problem] = caught.value.problems
    expected = "no chart files (*.yaml)" if make else "cannot read the chart directory: No such file or directory"
    assert str(problem).startswith(f"{charts}: {expected}"), str(problem)


def test_every_bad_file_of_a_directory_is_reported_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(wave_text(1, name="a"))
    (tmp_path / "b.yaml").write_text("current_state: gate\nstates:\n  - name: gate\n    func: sometimes\n")
    (tmp_path / "c.yaml").write_text("current_state: [\n")

    with pytest.raises(ChartError) as caught:
        load_charts([], UTC, tmp_path)

    lines = [str(p) for p in caught.value.problems]
    assert any(line.startswith(f"{tmp_path / 'b.yaml'}:4: unknown func 'sometimes'") for line in lines), lines
    assert any(line.startswith(f"{tmp_path / 'c.yaml'}:2: invalid YAML") for line in lines), lines
    assert not any("a.yaml" in line for line in lines), lines


def test_two_files_naming_one_chart_is_an_error_naming_both(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(wave_text(1, name="wave"))
    (tmp_path / "b.yaml").write_text(wave_text(2, name="wave"))
    given = tmp_path / "given.yaml"
    given.write_text(wave_text(3, name="wave"))

    with pytest.raises(ChartError) as caught:
        load_charts([given], UTC, tmp_path)

    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'a.yaml'}:1: chart name 'wave' is already used by {given}",
        f"{tmp_path / 'b.yaml'}:1: chart name 'wave' is already used by {given}",
    ]


def test_parses_reuse_the_charts_of_unchanged_files_and_parse_changed_ones(tmp_path: Path) -> None:
    for stem in ("a", "b", "c"):
        (tmp_path / f"{stem}.yaml").write_text(wave_text(1, name=stem))
    parses = Parses()
    first = {c.name: c for c in load_charts([], UTC, tmp_path, parses)}

    (tmp_path / "b.yaml").write_text(wave_text(2, name="b"))  # changed
    (tmp_path / "c.yaml").unlink()  # removed
    (tmp_path / "d.yaml").write_text(wave_text(1, name="d"))  # added
    second = {c.name: c for c in load_charts([], UTC, tmp_path, parses)}

    assert list(second) == ["a", "b", "d"]
    assert second["a"] is first["a"]  # the same text: the last parse, not a new one
    assert second["b"] is not first["b"] and second["b"].digest != first["b"].digest
    (tmp_path / "c.yaml").write_text(wave_text(1, name="c"))  # back with the same text: parsed anew
    assert {c.name: c for c in load_charts([], UTC, tmp_path, parses)}["c"] is not first["c"]


def test_parses_keep_no_clash_nor_error_past_its_fix(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(wave_text(1, name="wave"))
    (tmp_path / "b.yaml").write_text(wave_text(2, name="wave"))
    parses = Parses()
    with pytest.raises(ChartError) as caught:
        load_charts([], UTC, tmp_path, parses)
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'b.yaml'}:1: chart name 'wave' is already used by {tmp_path / 'a.yaml'}"
    ]

    (tmp_path / "a.yaml").unlink()  # b.yaml alone: its own parse was fine, only the clash was wrong
    assert [(c.name, c.path) for c in load_charts([], UTC, tmp_path, parses)] == [("wave", str(tmp_path / "b.yaml"))]

    (tmp_path / "b.yaml").write_text("current_state: [\n")
    with pytest.raises(ChartError):
        load_charts([], UTC, tmp_path, parses)
    with pytest.raises(ChartError):  # the same broken text: the same error, from the kept parse
        load_charts([], UTC, tmp_path, parses)
    (tmp_path / "b.yaml").write_text(wave_text(1, name="b"))
    assert [c.name for c in load_charts([], UTC, tmp_path, parses)] == ["b"]
