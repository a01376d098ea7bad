"""The API's JSON bodies are parsed by pydantic-core's parser (app/api/json_bodies.py): the same
values as before, and every body that is not JSON refused with the documented error."""

import json

import pytest

from tests.harness import records


def post_raw(service, path: str, content: bytes, headers: dict[str, str]):
    return service.client.post(path, content=content, headers={**headers, "Content-Type": "application/json"})


def test_a_batch_is_parsed_without_the_standard_librarys_parser(service, monkeypatch):
    gallery_id = service.gallery("SEN")
    registry = service.principal("registry", "SEN")
    content = json.dumps({"records": records(3)}).encode()

    def refused(*_args, **_kwargs):
        raise AssertionError("json.loads parsed a request body")

    with monkeypatch.context() as patched:
        patched.setattr(json, "loads", refused)
        response = post_raw(service, f"/v1/galleries/{gallery_id}/records:batch", content, registry)
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 3


@pytest.mark.parametrize(
    "content",
    [b'{"records": [', b'{"records": []} trailing', b"\xff\xfe", '{"records": []}'.encode("utf-16"), b'"\\ud800"'],
    ids=["cut short", "trailing text", "not UTF-8", "UTF-16", "lone surrogate"],
)
def test_a_body_that_is_not_json_is_refused_with_the_documented_error(service, content):
    gallery_id = service.gallery("SEN")
    registry = service.principal("registry", "SEN")
    response = post_raw(service, f"/v1/galleries/{gallery_id}/records:batch", content, registry)
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()["error"]) == {"code", "message", "details"}
    assert service.client.get(f"/v1/galleries/{gallery_id}", headers=registry).json()["record_count"] == 0
