"""POST /state and GET /models through a real aiohttp server: every status, reloads, one load, trust, formats.

Each test runs twice: predicting in the worker's threads, and in a prediction pool process (one pool shared
by the module, so that a pool process starts, and imports scikit-learn, once). The tests that count the
calls of a loader in this process run with threads only; test_predict_pool.py counts the pool's loads.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from stateservice.config import Config
from stateservice.models.cache import ModelCache
from stateservice.models.pool import PredictPool
from stateservice.web.app import Loaded, create_app
from tests.support.app import Client, MakeClient
from tests.support.models import Broken, CountingLoader, Fixed, Layout, Rejects, Sleepy, colors_tree, save

ROWS = [[500, 0], [650, 10], [470, 99.5]]
ORIGINAL_EXAMPLE = b"""{
    "name": "colors", // References the configuration file and finds the target model
    "values": [[500, 0]] // Suitable values for the target model's `predict` method
}"""


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    """A config dir and a models dir serving `colors`, a decision tree predicting indexes into its states."""
    made = Layout.make(tmp_path)
    made.add("colors", colors_tree())
    return made


@pytest.fixture(scope="module")
def shared_pool() -> Iterator[PredictPool]:
    pool = PredictPool(1)
    pool.start()
    yield pool
    asyncio.run(pool.close())


@pytest.fixture(params=["threads", "pool"])
def predict_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_client(aiohttp_client: Any, redis_url: str, predict_mode: str, request: pytest.FixtureRequest) -> MakeClient:
    """`await make_client(layout, **cache options)`: a real server answering for the layout's models, predicting
    in threads or in the shared pool (`predict_mode`)."""

    async def make(layout: Layout | None, *, max_body: int = Config().max_body, **options: Any) -> Client:
        options.setdefault("warm", False)
        if predict_mode == "pool":
            options["pool"] = request.getfixturevalue("shared_pool")
        allow = options.get("allow_writable", False)
        cache = ModelCache(layout.specs(allow_writable=allow), **options) if layout is not None else None
        app = create_app(Config(redis_url=redis_url, max_body=max_body), Loaded(models=cache), scheduler=False)
        client: Client = await aiohttp_client(app)
        return client

    return make


async def post(client: Client, body: Any, **headers: str) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post("/state", data=data, headers=headers)


async def ok(client: Client, body: Any, **headers: str) -> Any:
    resp = await post(client, body, **headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert (body["error"], body["status"]) == (code, status), body
    assert isinstance(body["message"], str) and body["message"]
    return body


async def models(client: Client) -> dict[str, dict[str, Any]]:
    resp = await client.get("/models")
    assert resp.status == 200, await resp.text()
    return {m["name"]: m for m in (await resp.json())["models"]}


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


# -- 200 ------------------------------------------------------------------------------------------


async def test_each_row_gets_its_state_as_json(make_client: MakeClient, layout: Layout) -> None:
    client = await make_client(layout)

    assert await ok(client, {"name": "colors", "values": ROWS}) == {"state": ["green", "red", "blue"]}


async def test_the_body_is_json_whatever_its_content_type(make_client: MakeClient, layout: Layout) -> None:
    client = await make_client(layout)

    resp = await post(
        client, b'{"name": "colors", "values": [[500, 0]]}', **{"Content-Type": "application/x-www-form-urlencoded"}
    )

    assert resp.status == 200
    assert await resp.json() == {"state": ["green"]}


@pytest.mark.parametrize(
    ("accept", "text"),
    [
        ("text/plain", True),
        ("text/*", True),
        ("application/json;q=0.5, text/plain", True),
        ("text/plain;q=0.9, */*;q=0.1", True),
        ("*/*", False),
        ("", False),
        ("application/json", False),
        ("text/plain, application/json", False),  # a tie: JSON
        ("text/plain;q=0.2, application/json;q=0.8", False),
        ("image/png", False),
    ],
)
async def test_text_plain_when_the_client_prefers_it(
    make_client: MakeClient, layout: Layout, accept: str, text: bool
) -> None:
    client = await make_client(layout)

    resp = await post(client, {"name": "colors", "values": ROWS}, Accept=accept)

    assert resp.status == 200
    if text:
        assert resp.content_type == "text/plain"
        assert await resp.text() == "green\nred\nblue\n"
    else:
        assert resp.content_type == "application/json"
        assert await resp.json() == {"state": ["green", "red", "blue"]}


async def test_labels_equal_to_states_are_states(make_client: MakeClient, tmp_path: Path) -> None:
    layout = Layout.make(tmp_path)
    layout.add("colors", colors_tree(["blue", "blue", "green", "green", "red", "red"]))
    client = await make_client(layout)

    assert await ok(client, {"name": "colors", "values": ROWS}) == {"state": ["green", "red", "blue"]}


async def test_a_plain_pickle_and_a_skops_file_serve_the_same(make_client: MakeClient, tmp_path: Path) -> None:
    layout = Layout.make(tmp_path)
    layout.add("pickled", colors_tree(), fmt="pickle")
    layout.add("skopsed", colors_tree(), fmt="skops")
    client = await make_client(layout)

    for name in ("pickled", "skopsed"):
        assert await ok(client, {"name": name, "values": ROWS}) == {"state": ["green", "red", "blue"]}
    listed = await models(client)
    assert (listed["pickled"]["format"], listed["skopsed"]["format"]) == ("pickle", "skops")


def custom_step(rows: Any) -> Any:
    return rows


async def test_a_skops_file_naming_other_code_is_refused(make_client: MakeClient, tmp_path: Path) -> None:
    layout = Layout.make(tmp_path)
    tree = colors_tree()
    pipeline = make_pipeline(FunctionTransformer(custom_step), tree)
    pipeline.fit([[470.0, 0.0], [650.0, 0.0]], [2, 1])
    layout.add("custom", pipeline, fmt="skops")
    client = await make_client(layout)

    body = await error(await post(client, {"name": "custom", "values": [[500, 0]]}), 500, "model_unavailable")

    assert "neither trusted by skops nor scikit-learn or numpy classes" in body["message"]
    assert f"{__name__}.custom_step" in body["message"]


# -- 400 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"", "invalid_json", "the body is empty"),
        (b"name=colors", "invalid_json", "the body is not JSON: Expecting value at line 1, column 1"),
        (ORIGINAL_EXAMPLE, "invalid_json", "at line 2, column 23; `//` comments (as in the original README's"),
        (b'{"name": "colors", "values": [[NaN, 0]]}', "invalid_json", "NaN is not a JSON number"),
        (b'{"name": "colors", "values": [[1e999, 0]]}', "invalid_field", "values[0][0] is too large"),
        (b"\xff\xfe\xff", "invalid_json", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json", "the body is not usable JSON"),
        (b'{"name": "colors", "values": [[1' + b"0" * 5000 + b"]]}", "invalid_json", "the body is not usable JSON"),
        ([[500, 0]], "bad_request", "the body must be a JSON object such as"),
        ({"values": [[500, 0]]}, "missing_field", "the body has no 'name'"),
        ({"name": "colors"}, "missing_field", "the body has no 'values'"),
        ({"name": 5, "values": [[500, 0]]}, "invalid_field", "name must be a model name (a non-empty string)"),
        ({"name": "colors", "values": []}, "invalid_field", "values is empty"),
        ({"name": "colors", "values": "500, 0"}, "invalid_field", "values must be a list of rows of numbers"),
        ({"name": "colors", "values": [500, 0]}, "invalid_field", "values[0] is the number 500, not a row"),
        ({"name": "colors", "values": [[]]}, "invalid_field", "values[0] is an empty row"),
        ({"name": "colors", "values": [[500, 0], [1]]}, "invalid_field", "values[1] has 1 numbers but values[0] has 2"),
        ({"name": "colors", "values": [[500, True]]}, "invalid_field", "values[0][1] is a boolean (true), not a"),
        ({"name": "colors", "values": [[500, "0"]]}, "invalid_field", "values[0][1] is a string ('0'), not a number"),
        ({"name": "colors", "values": [[None, 0]]}, "invalid_field", "values[0][0] is null, not a number"),
        ({"name": "colors", "values": [[[1], 0]]}, "invalid_field", "values[0][0] is a list, not a number"),
    ],
)
async def test_a_malformed_body_is_400_saying_what_is_wrong(
    make_client: MakeClient, layout: Layout, body: Any, code: str, message: str
) -> None:
    client = await make_client(layout)

    answer = await error(await post(client, body), 400, code)

    assert message in answer["message"]


async def test_a_large_malformed_body_is_checked_off_the_loop_with_the_same_answer(
    make_client: MakeClient, layout: Layout
) -> None:
    client = await make_client(layout)
    rows = [[500, 0]] * 5000 + [[500, "x"]]

    answer = await error(await post(client, {"name": "colors", "values": rows}), 400, "invalid_field")

    assert answer["message"] == "values[5000][1] is a string ('x'), not a number"
    assert await ok(client, {"name": "colors", "values": [[500, 0]] * 5000}) == {"state": ["green"] * 5000}


# -- 404 ------------------------------------------------------------------------------------------


async def test_an_unknown_model_is_404_listing_the_served_ones(make_client: MakeClient, layout: Layout) -> None:
    client = await make_client(layout)

    body = await error(await post(client, {"name": "../../colors", "values": [[500, 0]]}), 404, "unknown_model")

    assert body["message"] == "no model named '../../colors'; served models: colors"
    assert body["models"] == ["colors"]


async def test_with_no_models_served_post_state_is_404(make_client: MakeClient) -> None:
    client = await make_client(None)

    body = await error(await post(client, {"name": "colors", "values": [[500, 0]]}), 404, "unknown_model")

    assert "--config DIR --models DIR" in body["message"]
    assert await models(client) == {}


# -- 413 ------------------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413_naming_the_limit(make_client: MakeClient, layout: Layout) -> None:
    client = await make_client(layout, max_body=4096)

    body = await error(await post(client, {"name": "colors", "values": [[500, 0]] * 1000}), 413, "body_too_large")

    assert body["message"] == "the body is larger than the limit of 4096 bytes (--max-body)"
    assert body["limit"] == 4096
    assert await ok(client, {"name": "colors", "values": [[500, 0]] * 100}) == {"state": ["green"] * 100}


# -- 422 ------------------------------------------------------------------------------------------


async def test_rows_of_the_wrong_width_are_422(make_client: MakeClient, layout: Layout) -> None:
    client = await make_client(layout)

    body = await error(await post(client, {"name": "colors", "values": [[500, 0, 1]]}), 422, "values_rejected")

    assert body["message"] == "model 'colors' expects rows of 2 numbers (its n_features_in_); these rows have 3"
    assert (body["model"], body["expected"], body["given"]) == ("colors", 2, 3)


async def test_values_the_model_rejects_are_422(make_client: MakeClient, tmp_path: Path) -> None:
    layout = Layout.make(tmp_path)
    layout.add("picky", Rejects())
    client = await make_client(layout)

    body = await error(await post(client, {"name": "picky", "values": [[1]]}), 422, "values_rejected")

    assert body["message"] == (
        "model 'picky' rejected the values: Input X contains values this model was not trained for"
    )


# -- 500 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predictions", "shown"),
    [
        ([-1], "predicted -1, which is neither an index from 0 to 2 nor one of its states (green, red, blue)"),
        ([3], "predicted 3, which is neither"),
        (["purple"], "predicted 'purple', which is neither"),
        ([1.0], "predicted 1.0, which is neither"),
        ([True], "predicted True, which is neither"),
        ([[0, 1]], "predicted [0, 1], which is neither"),
        ([0, 0], "returned 2 predictions for 1 rows"),
        (0, "returned 0, not one prediction per row"),
    ],
)
async def test_a_prediction_that_names_no_state_is_500_and_logged(
    make_client: MakeClient, tmp_path: Path, predictions: Any, shown: str
) -> None:
    layout = Layout.make(tmp_path)
    layout.add("odd", Fixed(predictions))
    client = await make_client(layout)

    with structlog.testing.capture_logs() as logs:
        body = await error(await post(client, {"name": "odd", "values": [[1]]}), 500, "bad_prediction")

    assert body["message"].startswith(f"model 'odd' {shown}")
    assert body["model"] == "odd"
    [logged] = events(logs, "model_prediction_failed")
    assert (logged["log_level"], logged["model"], logged["error"]) == ("error", "odd", body["message"])


async def test_a_model_that_crashes_is_500_naming_it(make_client: MakeClient, tmp_path: Path) -> None:
    layout = Layout.make(tmp_path)
    layout.add("broken", Broken())
    client = await make_client(layout)

    with structlog.testing.capture_logs() as logs:
        body = await error(await post(client, {"name": "broken", "values": [[1]]}), 500, "prediction_failed")

    assert body["message"] == "model 'broken' failed to predict: KeyError: 'a bug in the model'"
    assert events(logs, "model_prediction_failed")


async def test_a_model_that_never_loaded_is_500_and_is_not_retried_until_its_file_changes(
    make_client: MakeClient, layout: Layout
) -> None:
    path = layout.models / "team" / "colors.joblib"
    path.write_bytes(b"not a pickle")
    client = await make_client(layout)

    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            body = await error(await post(client, {"name": "colors", "values": [[500, 0]]}), 500, "model_unavailable")

    assert body["message"].startswith("model 'colors' cannot be loaded: ")
    assert len(events(logs, "model_load_failed")) == 1
    save(colors_tree(), path)
    assert await ok(client, {"name": "colors", "values": [[500, 0]]}) == {"state": ["green"]}


# -- the cache ------------------------------------------------------------------------------------


@pytest.mark.parametrize("predict_mode", ["threads"], indirect=True)  # counts loads in this process
async def test_concurrent_first_requests_load_the_model_once(make_client: MakeClient, layout: Layout) -> None:
    loader = CountingLoader(delay=0.3)
    client = await make_client(layout, loader=loader)

    answers = await asyncio.gather(*(post(client, {"name": "colors", "values": [[500, 0]]}) for _ in range(20)))

    assert [a.status for a in answers] == [200] * 20
    assert loader.calls == 1
    await ok(client, {"name": "colors", "values": [[500, 0]]})
    assert loader.calls == 1


@pytest.mark.parametrize("predict_mode", ["threads"], indirect=True)  # counts loads in this process
async def test_warming_loads_every_model_at_start_and_requests_share_that_load(
    make_client: MakeClient, layout: Layout
) -> None:
    loader = CountingLoader(delay=0.2)
    client = await make_client(layout, loader=loader, warm=True)

    assert await ok(client, {"name": "colors", "values": [[500, 0]]}) == {"state": ["green"]}
    assert loader.calls == 1


async def test_a_changed_file_is_used_by_the_next_request(make_client: MakeClient, layout: Layout) -> None:
    path = layout.models / "team" / "colors.joblib"
    client = await make_client(layout)
    assert await ok(client, {"name": "colors", "values": [[500, 0]]}) == {"state": ["green"]}
    before = (await models(client))["colors"]

    with structlog.testing.capture_logs() as logs:
        save(Fixed([1]), path)
        assert await ok(client, {"name": "colors", "values": [[500, 0]]}) == {"state": ["red"]}

    after = (await models(client))["colors"]
    assert after["digest"] == hashlib.sha256(path.read_bytes()).hexdigest() != before["digest"]
    assert after["loaded_at"] > before["loaded_at"]
    [loaded] = events(logs, "model_loaded")
    assert (loaded["replaced"], loaded["digest"]) == (before["digest"], after["digest"])


@pytest.mark.parametrize("predict_mode", ["threads"], indirect=True)  # counts loads in this process
async def test_the_same_bytes_again_are_not_loaded_again(make_client: MakeClient, layout: Layout) -> None:
    path = layout.models / "team" / "colors.joblib"
    loader = CountingLoader()
    client = await make_client(layout, loader=loader)
    await ok(client, {"name": "colors", "values": [[500, 0]]})

    copy = path.with_name("copy")
    copy.write_bytes(path.read_bytes())
    copy.chmod(0o644)
    copy.replace(path)  # a new inode, the same bytes
    await ok(client, {"name": "colors", "values": [[500, 0]]})

    assert loader.calls == 1


async def test_a_corrupt_replacement_keeps_the_old_model_serving_and_is_logged(
    make_client: MakeClient, layout: Layout
) -> None:
    path = layout.models / "team" / "colors.joblib"
    client = await make_client(layout)
    await ok(client, {"name": "colors", "values": [[500, 0]]})
    old = (await models(client))["colors"]["digest"]

    with structlog.testing.capture_logs() as logs:
        path.write_bytes(b"half a model")  # a rewrite in place, as a careless copy would do it
        for _ in range(3):
            assert await ok(client, {"name": "colors", "values": [[500, 0]]}) == {"state": ["green"]}

    [failed] = events(logs, "model_load_failed")
    assert (failed["log_level"], failed["model"], failed["serving"]) == ("error", "colors", old)
    listed = (await models(client))["colors"]
    assert listed["digest"] == old
    assert listed["error"] == failed["error"]

    save(Fixed([2]), path)
    assert await ok(client, {"name": "colors", "values": [[500, 0]]}) == {"state": ["blue"]}
    assert (await models(client))["colors"]["error"] is None


async def test_a_replacement_others_can_write_is_refused_at_reload_and_kept_out(
    make_client: MakeClient, layout: Layout
) -> None:
    path = layout.models / "team" / "colors.joblib"
    client = await make_client(layout)
    await ok(client, {"name": "colors", "values": [[500, 0]]})

    with structlog.testing.capture_logs() as logs:
        save(Fixed([1]), path, mode=0o646)
        assert await ok(client, {"name": "colors", "values": [[500, 0]]}) == {"state": ["green"]}

    [failed] = events(logs, "model_load_failed")
    assert failed["error"].startswith(f"model file {path} is writable by others (mode 0646)")
    path.chmod(0o644)
    assert await ok(client, {"name": "colors", "values": [[500, 0]]}) == {"state": ["red"]}


async def test_a_team_dir_others_can_write_is_refused_at_the_first_load(
    make_client: MakeClient, layout: Layout
) -> None:
    client = await make_client(layout)
    (layout.models / "team").chmod(0o757)

    body = await error(await post(client, {"name": "colors", "values": [[500, 0]]}), 500, "model_unavailable")

    assert f"directory {layout.models / 'team'} is writable by others" in body["message"]
    assert "--allow-writable-models" in body["message"]


async def test_allow_writable_loads_what_others_can_write(make_client: MakeClient, layout: Layout) -> None:
    (layout.models / "team").chmod(0o777)
    save(Fixed([1]), layout.models / "team" / "colors.joblib", mode=0o666)
    client = await make_client(layout, allow_writable=True)

    assert await ok(client, {"name": "colors", "values": [[500, 0]]}) == {"state": ["red"]}


async def test_a_slow_prediction_does_not_hold_up_other_requests(make_client: MakeClient, tmp_path: Path) -> None:
    layout = Layout.make(tmp_path)
    layout.add("slow", Sleepy(0.5))
    client = await make_client(layout)
    await models(client)  # loaded

    slow = asyncio.ensure_future(post(client, {"name": "slow", "values": [[1]]}))
    await asyncio.sleep(0.05)
    health = await client.get("/healthz")

    assert health.status == 200
    assert not slow.done()  # the health check was answered while the prediction ran
    assert (await slow).status == 200


# -- GET /models ----------------------------------------------------------------------------------


async def test_get_models_lists_each_model_with_its_states_digest_and_load_time(
    make_client: MakeClient, layout: Layout
) -> None:
    path = layout.models / "team" / "colors.joblib"
    client = await make_client(layout)

    resp = await client.get("/models")

    assert resp.status == 200
    [listed] = (await resp.json())["models"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", listed.pop("loaded_at"))
    assert listed == {
        "name": "colors",
        "team": "team",
        "model": "colors.joblib",
        "format": "joblib",
        "states": ["green", "red", "blue"],
        "digest": hashlib.sha256(path.read_bytes()).hexdigest(),
        "n_features": 2,
        "error": None,
    }


async def test_post_is_one_of_the_methods_of_state(make_client: MakeClient, layout: Layout) -> None:
    client = await make_client(layout)

    resp = await client.delete("/state")

    assert resp.status == 405
    assert "POST" in resp.headers["Allow"]
