"""The OpenAPI schema names each model once and documents the body the service really sends on
refusals: a generated client keys its classes by these names, and a name given twice, or a
model written under two names, gives it a wrong or a missing class."""

import importlib
import pkgutil

import pytest
from pydantic import BaseModel

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
