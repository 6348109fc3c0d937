from __future__ import annotations

import json
from typing import Annotated, Any

import flask
import msgspec
import pytest

from tests.apps.schemas import Item, NewOrder
from tests.support.wsgi import EchoApp, call, make_environ
from wsgishield import ConfigurationError, Shield, context
from wsgishield.schemas import (
    MAX_DETAIL_CHARS,
    MAX_DETAILED_BODY,
    MAX_FIELD_ERRORS,
    BodySchema,
    SchemaError,
    body_schema,
    registered_schemas,
    request_body,
    resolve_schema,
)

JSON = {"Content-Type": "application/json"}
POLICY = {
    "routes": [
        {
            "id": "orders",
            "path": "/orders",
            "request": {"schema": "tests.apps.schemas:NewOrder"},
        },
        {"id": "odd", "path": "/odd", "request": {"schema": "tests.apps.schemas:Odd"}},
    ]
}
VALID = {"customerId": 7, "items": [{"sku": "A-1", "qty": 2}]}


def post(
    path: str, body: bytes, headers: dict[str, str] | None = None, app: Any = None
) -> Any:
    app = app or EchoApp()
    response = call(
        Shield(app, policy=POLICY),
        make_environ("POST", path, body=body, headers=headers or JSON),
    )
    return app, response


def test_valid_body_decoded_into_environ() -> None:
    app, response = post("/orders", json.dumps(VALID).encode())

    assert response.status_code == 200
    decoded = app.environ[context.BODY]
    assert decoded == NewOrder(customer_id=7, items=[Item(sku="A-1", qty=2)])
    assert request_body(app.environ) is decoded


def test_app_can_still_read_raw_body() -> None:
    body = json.dumps(VALID).encode()

    app, response = post("/orders", body)

    assert response.status_code == 200
    assert app.seen == [body]


def test_flask_view_reads_decoded_body() -> None:
    flask_app = flask.Flask(__name__)

    @flask_app.post("/orders")
    def create() -> dict[str, Any]:
        order: NewOrder = request_body(flask.request.environ)
        return {"customer": order.customer_id, "items": len(order.items)}

    _, response = post("/orders", json.dumps(VALID).encode(), app=flask_app.wsgi_app)

    assert response.status_code == 200
    assert json.loads(response.body) == {"customer": 7, "items": 1}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param(b"{bad", "malformed", id="malformed"),
        pytest.param(b'{"customerId": 1,', "truncated", id="truncated"),
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"[", "truncated", id="truncated-array"),
        pytest.param(b'[1, "x"', "truncated", id="truncated-mismatch"),
    ],
)
def test_malformed_json_is_400(body: bytes, detail: str) -> None:
    app, response = post("/orders", body)

    assert response.status_code == 400
    problem = json.loads(response.body)
    assert problem["type"].endswith("invalid-json")
    assert detail in problem["detail"]
    assert app.seen == []


def test_non_json_body_on_schema_route_is_415() -> None:
    app, response = post(
        "/orders",
        b"customerId=7",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 415
    assert app.seen == []


def test_get_on_schema_route_skips_validation() -> None:
    app = EchoApp()

    response = call(Shield(app, policy=POLICY), make_environ("GET", "/orders"))

    assert response.status_code == 200
    assert context.BODY not in app.environ


def errors_of(response: Any) -> dict[str, str]:
    problem = json.loads(response.body)
    assert problem["status"] == 422
    assert response.header("Content-Type") == "application/problem+json"
    return {error["pointer"]: error["detail"] for error in problem["errors"]}


def test_mismatch_lists_each_field_by_pointer() -> None:
    body = {
        "customerId": "seven",
        "items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 0}],
        "priority": "urgent",
        "extra": True,
    }

    _, response = post("/orders", json.dumps(body).encode())

    assert response.status_code == 422
    errors = errors_of(response)
    assert errors["/customerId"] == "Expected `int`, got `str`"
    assert errors["/items/1/qty"] == "Expected `int` >= 1"
    assert "/priority" in errors
    assert errors["/extra"] == "unknown field"


def test_missing_required_fields_listed() -> None:
    _, response = post("/orders", b"{}")

    assert errors_of(response) == {
        "/customerId": "missing required field",
        "/items": "missing required field",
    }


def test_nested_unknown_field_pointer() -> None:
    body = {"customerId": 1, "items": [{"sku": "A", "qty": 1, "colour": "red"}]}

    _, response = post("/orders", json.dumps(body).encode())

    assert errors_of(response) == {"/items/0/colour": "unknown field"}


def test_top_level_array_reports_root() -> None:
    _, response = post("/orders", b"[1, 2]")

    assert errors_of(response) == {"": "Expected `object`, got `array`"}


def test_pointer_escapes_slash_and_tilde() -> None:
    _, response = post("/odd", b'{"a/b": "x", "c~d": "y"}')

    assert errors_of(response) == {
        "/a~1b": "Expected `int`, got `str`",
        "/c~0d": "Expected `int`, got `str`",
    }


def test_errors_never_echo_large_input() -> None:
    huge = "Z" * 100_000
    body = {
        "customerId": 1,
        "items": [{"sku": "A", "qty": 1}],
        "priority": huge,
        huge: 1,
    }

    _, response = post("/orders", json.dumps(body).encode())

    assert response.status_code == 422
    assert len(response.body) < 1000
    for pointer, detail in errors_of(response).items():
        assert len(detail) <= MAX_DETAIL_CHARS + 3
        assert len(pointer) < 100


def test_error_list_is_capped() -> None:
    body = {"customerId": 1, "items": [{"sku": "A", "qty": 1}]}
    body.update({f"unknown{index}": index for index in range(100)})

    _, response = post("/orders", json.dumps(body).encode())

    assert len(errors_of(response)) == MAX_FIELD_ERRORS


def test_decorator_registers_schema_for_route() -> None:
    @body_schema("registered-route")
    class Ping(msgspec.Struct):
        message: str

    policy = {"routes": [{"id": "registered-route", "path": "/ping"}]}
    app = EchoApp()
    wrapped = Shield(app, policy=policy)

    good = call(
        wrapped, make_environ("POST", "/ping", body=b'{"message": "hi"}', headers=JSON)
    )
    bad = call(
        wrapped, make_environ("POST", "/ping", body=b'{"message": 1}', headers=JSON)
    )

    assert good.status_code == 200
    assert app.environ[context.BODY] == Ping(message="hi")
    assert bad.status_code == 422
    assert registered_schemas()["registered-route"] is Ping


def test_decorator_and_policy_schema_conflict() -> None:
    body_schema("orders")(Item)
    try:
        with pytest.raises(ConfigurationError):
            Shield(EchoApp(), policy=POLICY)
    finally:
        from wsgishield import schemas

        schemas._registry.pop("orders", None)


@pytest.mark.parametrize(
    "reference",
    [
        "tests.apps.schemas:Missing",
        "tests.apps.nowhere:Thing",
        "tests.apps.schemas:NOT_A_STRUCT",
    ],
)
def test_resolve_schema_rejects(reference: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        resolve_schema(reference, "routes.x.request.schema")

    assert raised.value.key == "routes.x.request.schema"
    assert raised.value.value == reference


def test_decorator_rejects_non_struct() -> None:
    with pytest.raises(ConfigurationError):
        body_schema("x")(dict)  # type: ignore[type-var]


def test_body_schema_raises_schema_error() -> None:
    schema = BodySchema(NewOrder)

    with pytest.raises(SchemaError) as raised:
        schema.decode(b'{"customerId": 1, "items": []}')

    assert raised.value.status == 422
    assert raised.value.errors[0].pointer == "/items"
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b'{"customerId": 1, "items": []}', 422, id="mismatch"),
        pytest.param(b'{"customerId": 1,', 400, id="truncated"),
        pytest.param(b"[", 400, id="truncated-wrong-type"),
    ],
)
def test_decoder_error_matches_decode(body: bytes, status: int) -> None:
    schema = BodySchema(NewOrder)
    with pytest.raises(msgspec.DecodeError) as failed:
        schema.decoder.decode(body)
    with pytest.raises(SchemaError) as raised:
        schema.decode(body)

    error = schema.error(body, failed.value)

    assert error.status == status
    assert error.status == raised.value.status
    assert error.detail == raised.value.detail
    assert error.errors == raised.value.errors


def test_schema_rejects_bomb_before_decoding() -> None:
    bomb = b'{"customerId": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    _, response = post("/orders", bomb)

    assert response.status_code == 400
    assert "nesting" in json.loads(response.body)["detail"]


def test_post_init_error_points_at_root() -> None:
    from tests.apps.schemas import Range

    with pytest.raises(SchemaError) as raised:
        BodySchema(Range).decode(b'{"low": 5, "high": 1}')

    assert [(error.pointer, error.detail) for error in raised.value.errors] == [
        ("", "low must not exceed high")
    ]


def test_dict_keys_convert_as_json() -> None:
    class Counts(msgspec.Struct):
        by_id: dict[int, int]
        total: int

    with pytest.raises(SchemaError) as raised:
        BodySchema(Counts).decode(b'{"by_id": {"1": 2}, "total": "x"}')

    assert [error.pointer for error in raised.value.errors] == ["/total"]


def test_each_failing_list_item_listed() -> None:
    body = {
        "customerId": 1,
        "items": [
            {"sku": "", "qty": 1},
            {"sku": "B", "qty": 1},
            {"sku": "C", "qty": 0},
        ],
    }

    _, response = post("/orders", json.dumps(body).encode())

    errors = errors_of(response)
    assert set(errors) == {"/items/0/sku", "/items/2/qty"}


def test_list_constraint_reported_whole() -> None:
    _, response = post("/orders", b'{"customerId": 1, "items": []}')

    assert set(errors_of(response)) == {"/items"}


def test_many_failing_items_capped() -> None:
    body = {"customerId": 1, "items": [{"sku": "A", "qty": 0}] * 100}

    _, response = post("/orders", json.dumps(body).encode())

    assert len(errors_of(response)) == MAX_FIELD_ERRORS


def test_failing_items_and_values_listed() -> None:
    class Survey(msgspec.Struct):
        scores: list[Annotated[int, msgspec.Meta(ge=0)]]
        labels: dict[str, str]
        tags: tuple[str, ...] = ()

    body = b'{"scores": [1, -1, "x"], "labels": {"a": "b", "c/d": 3}, "tags": ["t", 4]}'
    with pytest.raises(SchemaError) as raised:
        BodySchema(Survey).decode(body)

    assert [error.pointer for error in raised.value.errors] == [
        "/scores/1",
        "/scores/2",
        "/labels/c~1d",
        "/tags/1",
    ]


def test_bad_dict_key_reported_whole() -> None:
    class Counts(msgspec.Struct):
        by_id: dict[int, int]

    with pytest.raises(SchemaError) as raised:
        BodySchema(Counts).decode(b'{"by_id": {"1": 2, "x": 3}}')

    assert [(error.pointer, error.detail) for error in raised.value.errors] == [
        ("/by_id", "object key: Expected `int`, got `str`")
    ]


def test_first_error_in_dict_value_not_duplicated() -> None:
    # msgspec names a failing dict value "$.tags[...]", with no key, so its
    # own error must not add a pointer to a key named "...".
    class Tagged(msgspec.Struct):
        tags: dict[str, int]

    with pytest.raises(SchemaError) as raised:
        BodySchema(Tagged).decode(b'{"tags": {"a": 1, "b/~c": "x", "d": "y"}}')

    assert [error.pointer for error in raised.value.errors] == [
        "/tags/b~1~0c",
        "/tags/d",
    ]


def test_dict_value_error_stops_at_dict() -> None:
    # A failing value that the descent cannot list on its own (here under
    # a union) is reported at the dict that contains it.
    class Tagged(msgspec.Struct):
        tags: dict[str, int] | None

    with pytest.raises(SchemaError) as raised:
        BodySchema(Tagged).decode(b'{"tags": {"a": "x"}}')

    assert [(error.pointer, error.detail) for error in raised.value.errors] == [
        ("/tags", "in a value: Expected `int`, got `str`")
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"scores": [1] * 5000 + ["x"], "labels": {}},
        {
            "scores": [],
            "labels": {f"k{index}": "v" for index in range(4000)} | {"z": 1},
        },
    ],
    ids=["array", "dict"],
)
def test_failing_item_found_without_per_item_calls(
    body: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Converting each valid item on its own cost a Python call per item,
    # which made a large body of valid items slow to reject. msgspec's
    # error names the failing index instead.
    class Survey(msgspec.Struct):
        scores: list[int]
        labels: dict[str, str]

    conversions: list[Any] = []
    convert = msgspec.convert

    def counting_convert(value: Any, *args: Any, **options: Any) -> Any:
        conversions.append(value)
        return convert(value, *args, **options)

    monkeypatch.setattr(msgspec, "convert", counting_convert)
    with pytest.raises(SchemaError) as raised:
        BodySchema(Survey).decode(json.dumps(body).encode())

    assert [error.pointer for error in raised.value.errors] in (
        ["/scores/5000"],
        ["/labels/z"],
    )
    assert len(conversions) <= 6


class Node(msgspec.Struct):
    value: int
    kids: list[Node] = []


def test_large_body_gets_first_error_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each level of a recursive schema converts its subtree again, so a
    # large deep body would cost its size times its depth. Past the bound,
    # only msgspec's own error is listed.
    leaves = [{"value": index} for index in range(MAX_DETAILED_BODY // 10)]
    tree: dict[str, Any] = {"value": 0, "kids": [*leaves, {"value": "x"}]}
    for _ in range(20):
        tree = {"value": 0, "kids": [tree]}
    body = json.dumps(tree).encode()
    assert len(body) > MAX_DETAILED_BODY

    conversions: list[Any] = []
    monkeypatch.setattr(
        msgspec, "convert", lambda *args, **options: conversions.append(1)
    )
    with pytest.raises(SchemaError) as raised:
        BodySchema(Node).decode(body)

    assert raised.value.status == 422
    assert conversions == []
    (error,) = raised.value.errors
    assert error.pointer == "/kids/0" * 20 + f"/kids/{len(leaves)}/value"


def test_small_recursive_body_detailed() -> None:
    tree = {
        "value": 0,
        "kids": [{"value": "x"}, {"value": 1, "kids": [{"value": "y"}]}],
    }

    with pytest.raises(SchemaError) as raised:
        BodySchema(Node).decode(json.dumps(tree).encode())

    assert [error.pointer for error in raised.value.errors] == [
        "/kids/0/value",
        "/kids/1/kids/0/value",
    ]
