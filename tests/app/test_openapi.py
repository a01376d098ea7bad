"""The OpenAPI schema names each model once and documents the body the service really sends on
refusals: a generated client keys its classes by these names, and a name given twice, or a
model written under two names, gives it a wrong or a missing class."""

import importlib
import pkgutil
import types
import typing
from collections.abc import Iterator

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

import app
from tests.harness import Service


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    service = Service(tmp_path_factory.mktemp("openapi") / "data", None)
    try:
        yield service.client.get("/openapi.json").json()
    finally:
        service.close()


def app_models() -> list[type[BaseModel]]:
    for module in pkgutil.walk_packages(app.__path__, "app."):
        if not module.name.endswith("__main__"):  # that one runs the command line
            importlib.import_module(module.name)
    found, todo = [], list(BaseModel.__subclasses__())
    while todo:
        model = todo.pop()
        todo.extend(model.__subclasses__())
        if model.__module__.startswith("app.") and model.__module__ != "app.core.config":
            found.append(model)
    return found


def test_every_model_class_has_a_name_of_its_own(schema):
    by_name: dict[str, list[str]] = {}
    for model in app_models():
        by_name.setdefault(model.__name__, []).append(f"{model.__module__}.{model.__qualname__}")
    assert {name: classes for name, classes in by_name.items() if len(classes) > 1} == {}
    components = set(schema["components"]["schemas"])
    # pydantic names a clash module__path__Model; FastAPI splits a model into Model-Input/-Output
    assert [name for name in components if "__" in name or name.endswith(("-Input", "-Output"))] == []
    enums_and_types = {"CaseStatus", "Country", "LegalBasis", "Metric", "ReviewState", "Role"}
    assert components - enums_and_types <= set(by_name), "a component that is no model class of app/"


def test_refusals_are_documented_with_the_error_body(schema):
    assert {"HTTPValidationError", "ValidationError"}.isdisjoint(schema["components"]["schemas"])
    error = {"$ref": "#/components/schemas/ErrorOut"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            statuses = operation["responses"]
            if operation.get("security"):
                assert {"401", "403", "429"} <= set(statuses), (method, path)
            if "{" in path:
                assert "404" in statuses, (method, path)
            if "requestBody" in operation:
                assert {"413", "422"} <= set(statuses), (method, path)
            for status, response in statuses.items():
                if int(status) >= 400 and path != "/readyz":
                    assert response["content"] == {"application/json": {"schema": error}}, (method, path, status)
    assert schema["paths"]["/readyz"]["get"]["responses"]["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReadinessOut"
    }
    assert "text/plain" in schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_countries_are_the_codes_the_service_accepts(schema):
    from app.core.countries import ALPHA_3

    assert schema["components"]["schemas"]["Country"]["enum"] == list(ALPHA_3)
    assert "SEN" in ALPHA_3 and "AAA" not in ALPHA_3
    gallery = schema["components"]["schemas"]["GalleryIn"]["properties"]["country"]
    assert gallery == {"$ref": "#/components/schemas/Country"}


def test_every_operation_has_a_unique_readable_id(schema):
    """A generated client names its functions after operationId: ``create_gallery``, not
    ``create_v1_galleries_post``."""
    ids = [operation["operationId"] for path in schema["paths"].values() for operation in path.values()]
    assert len(ids) == len(set(ids)), sorted(ids)
    assert {"create_gallery", "enrol_records", "open_case", "identify", "verify", "decide_candidate"} <= set(ids)
    assert not [i for i in ids if i.endswith(("_get", "_post", "_patch", "_delete"))]


WRONG_TYPES = {"boolean": True, "integer": 1, "number": 1.5, "string": "1"}
"""A value of each JSON type a field might be given in its schema's place."""


def json_types(schema: dict, definitions: dict) -> set[str]:
    """The JSON types a (sub)schema allows; "any" for an enum or an unconstrained one."""
    if "$ref" in schema:
        return json_types(definitions[schema["$ref"].split("/")[-1]], definitions)
    if "anyOf" in schema:
        return set().union(*(json_types(arm, definitions) for arm in schema["anyOf"]))
    if "type" not in schema or "enum" in schema or "const" in schema:
        return {"any"}
    allowed = {schema["type"]}
    return allowed | {"integer"} if "number" in allowed else allowed


def is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def is_union(annotation: object) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def values_taken_against_schema(annotation: object, where: str) -> Iterator[str]:
    """Where a request field, or an item of one, takes a value of a JSON type its schema refuses."""
    arguments = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated and (
        typing.get_origin(arguments[0]) is list or is_union(arguments[0]) or is_model(arguments[0])
    ):  # the constraints of a list or a union (its length): its items are tried below
        yield from values_taken_against_schema(arguments[0], where)
        return
    if is_model(annotation):
        for name, field in annotation.model_fields.items():
            yield from values_taken_against_schema(field.rebuild_annotation(), f"{where}.{name}")
        return
    if typing.get_origin(annotation) is list:
        yield from values_taken_against_schema(arguments[0], f"{where}[]")
        return
    if is_union(annotation):
        for arm in arguments:
            if typing.get_origin(arm) is list or is_model(arm):
                yield from values_taken_against_schema(arm, where)
    adapter = TypeAdapter(annotation)
    schema = adapter.json_schema()
    allowed = json_types(schema, schema.get("$defs", {}))
    for kind, value in WRONG_TYPES.items():
        if kind not in allowed and "any" not in allowed:
            try:
                adapter.validate_python(value)
            except ValidationError:
                continue
            yield f"{where} takes {value!r} where its schema allows {sorted(allowed)}"


def test_request_bodies_take_only_the_json_types_their_schema_states(schema):
    """``"wait_ms": true`` read as 1 ms, ``"max_pairs": "5"`` as 5: accepted where the schema
    says integer, which a generated client never sends and the schema fuzzer reports as a
    failure. Every field of every request body, and every item of its lists, is tried."""
    models = {model.__name__: model for model in app_models()}
    bodies = {
        ref["$ref"].split("/")[-1]
        for path in schema["paths"].values()
        for operation in path.values()
        for content in operation.get("requestBody", {}).get("content", {}).values()
        if "$ref" in (ref := content["schema"])
    }
    assert {"IdentificationIn", "CaseIn", "RecordBatchIn", "DeduplicationIn"} <= bodies
    lax = [found for name in sorted(bodies) for found in values_taken_against_schema(models[name], name)]
    assert lax == []
