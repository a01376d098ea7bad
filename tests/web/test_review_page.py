"""The consular review page in a real browser: headless Chromium (Debian's package) driven by
Playwright, against the real service on loopback."""

import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.harness import ServerProcess, case_body, identification_body, principal

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI must install Debian's chromium for the review page tests (see .ci/run)")
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)

DOCS = Path(__file__).resolve().parents[2] / "docs"
DIM = 64


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The service with a world in it: two galleries, cases near and far from their deadline,
    candidates for Senegal to review."""
    running = ServerProcess(tmp_path_factory.mktemp("web") / "data")
    base = running.base
    api = httpx.Client(base_url=base, headers=running.admin, timeout=30)
    world = build_world(api)
    yield base, api, world
    api.close()
    running.stop()


def build_world(api):
    rng = np.random.default_rng(5)
    people = rng.standard_normal((40, DIM)).astype(np.float32)
    gallery = api.post(
        "/v1/galleries",
        json={"country": "SEN", "modality": "face", "template_format": {"model": "arcface-r100", "dimension": DIM}},
    ).json()
    registry = principal(api, "registry", "SEN")
    records = [
        {
            "reference_id": f"SEN-{i:04d}",
            "templates": [people[i].tolist()],
            "attributes": {"family_name": f"Diop{i}", "given_names": f"Awa{i}", "date_of_birth": "1994-03-02"},
        }
        for i in range(40)
    ]
    api.post(f"/v1/galleries/{gallery['id']}/records:batch", json={"records": records}, headers=registry)
    api.post(
        "/v1/agreements",
        json={"receiving_country": "FRA", "origin_country": "SEN", "modalities": ["face"], "valid_from": "2020-01-01"},
    )
    police = principal(api, "border_police", "FRA", "FRA-DCPAF")
    cases = {}
    for ref, days_ago, person in (("DCPAF-FAR", 1, 3), ("DCPAF-NEAR", 43, 5), ("DCPAF-MID", 20, 8)):
        case = api.post(
            "/v1/cases",
            headers=police,
            json=case_body(ref, days_ago, legal_basis="readmission_agreement"),
        ).json()
        probe = people[person] + 0.3 * rng.standard_normal(DIM).astype(np.float32)
        result = api.post(
            f"/v1/cases/{case['id']}/identifications",
            headers=police,
            json=identification_body(probe),
        ).json()
        assert result["candidates"][0]["reference_id"] == f"SEN-{person:04d}", result
        cases[ref] = case["id"]
    return {
        "consul": principal(api, "consular", "SEN"),
        "registry": registry,
        "gallery_id": gallery["id"],
        "other_consul": principal(api, "consular", "MLI"),
        "police": police,
        "cases": cases,
        "people": people,
    }


def key_of(headers):
    return headers["Authorization"].split(" ", 1)[1]


@pytest.fixture
def page():
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(viewport={"width": 1366, "height": 900})
        yield context.new_page()
        browser.close()


def sign_in(page, base, key):
    page.goto(f"{base}/review")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_consul_reviews_in_deadline_order_confirms_and_the_case_is_identified(server, page, tmp_path):
    base, api, world = server
    sign_in(page, base, key_of(world["consul"]))
    rows = page.locator("tbody tr")
    assert rows.count() == 3
    references = [rows.nth(i).locator("td").nth(3).inner_text() for i in range(3)]
    assert references == ["SEN-0005", "SEN-0008", "SEN-0003"], "nearest detention deadline first"
    assert "urgent" in rows.nth(0).inner_text().lower() and "urgent" not in rows.nth(2).inner_text().lower()
    page.screenshot(path=str(tmp_path / "queue.png"), full_page=True)

    page.get_by_role("link", name="SEN-0005").click()
    assert "Diop5" in page.content() and "strong evidence" in page.content()
    page.screenshot(path=str(tmp_path / "candidate.png"), full_page=True)
    if os.environ.get("READMIT_UPDATE_DOCS") or not (DOCS / "review-candidate.png").exists():
        DOCS.mkdir(exist_ok=True)
        shutil.copy(tmp_path / "queue.png", DOCS / "review-queue.png")
        shutil.copy(tmp_path / "candidate.png", DOCS / "review-candidate.png")

    page.get_by_role("button", name="Confirm identity").click()  # the note is required: nothing is sent
    assert "/review/candidates/" in page.url
    page.get_by_label("Note (required)").fill("Civil register entry and photograph agree.")
    page.get_by_role("button", name="Confirm identity").click()
    assert page.get_by_role("heading", name="Candidate SEN-0008").is_visible(), "lands on the next pending candidate"

    case = api.get(f"/v1/cases/{world['cases']['DCPAF-NEAR']}", headers=world["police"]).json()
    assert case["status"] == "identified"
    page.get_by_role("button", name="Sign out").click()
    assert page.url.endswith("/review/sign-in")
    page.goto(f"{base}/review")
    assert page.url.endswith("/review/sign-in"), "the session is gone after sign-out"

    auditor = principal(api, "auditor")
    events = api.get("/v1/audit/events?limit=1000", headers=auditor).json()["events"]
    actions = [e["action"] for e in events]
    for action in (
        "session.sign_in",
        "candidate.list",
        "candidate.read",
        "candidate.confirm",
        "session.sign_out",
    ):
        assert action in actions
    assert any(e["action"] == "case.transition" and e["details"]["to"] == "identified" for e in events)
    assert api.get("/v1/audit/verify", headers=auditor).json()["ok"] is True


def test_a_border_police_key_cannot_sign_in(server, page):
    base, _, world = server
    sign_in(page, base, key_of(world["police"]))
    assert "cannot sign in here" in page.content()
    assert page.url.endswith("/review/sign-in")


def test_another_countrys_consul_sees_an_empty_queue(server, page):
    base, _, world = server
    sign_in(page, base, key_of(world["other_consul"]))
    assert page.get_by_text("No pending candidates").is_visible()


def test_a_form_post_without_csrf_token_is_refused(server, page):
    base, api, world = server
    sign_in(page, base, key_of(world["consul"]))
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    pending = api.get("/v1/review/candidates", headers=world["consul"]).json()
    response = httpx.post(
        f"{base}/review/candidates/{pending[0]['id']}/decision",
        data={"decision": "rejected", "note": "forged"},
        cookies=cookies,
    )
    assert response.status_code == 403
    still = api.get("/v1/review/candidates", headers=world["consul"]).json()
    assert still[0]["id"] == pending[0]["id"] and still[0]["review_state"] == "pending"


def test_review_pages_send_security_headers_and_cookie_flags(server, page):
    base, _, world = server
    response = httpx.get(f"{base}/review/sign-in")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY" and response.headers["cache-control"] == "no-store"
    assert "access-control-allow-origin" not in response.headers
    sign_in(page, base, key_of(world["consul"]))
    cookie = next(c for c in page.context.cookies() if c["name"] == "readmit_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def candidate_of_new_case(api, world, ref, person):
    """A new case whose identification puts ``person`` first; that candidate's id."""
    police = world["police"]
    case = api.post("/v1/cases", headers=police, json=case_body(ref, 10, legal_basis="readmission_agreement")).json()
    probe = world["people"][person] + 0.05
    result = api.post(f"/v1/cases/{case['id']}/identifications", headers=police, json=identification_body(probe))
    top = result.json()["candidates"][0]
    assert top["reference_id"] == f"SEN-{person:04d}", result.text
    return case["id"], top["id"]


def named_consul(api, name):
    created = api.post("/v1/principals", json={"name": name, "role": "consular", "country": "SEN"}).json()
    return created["api_key"]


def seen_by_police(api, world, case_id, candidate_id):
    case = api.get(f"/v1/cases/{case_id}", headers=world["police"]).json()
    candidate = next(c for s in case["searches"] for c in s["candidates"] if c["id"] == candidate_id)
    return case["status"], candidate["review_state"], candidate["note"]


def test_inconclusive_needs_a_note_and_leaves_the_case_open(server, page):
    base, api, world = server
    case_id, candidate_id = candidate_of_new_case(api, world, "DCPAF-INCONCLUSIVE", 12)
    sign_in(page, base, named_consul(api, "Awa Ndiaye, consulate in Paris"))
    page.goto(f"{base}/review/candidates/{candidate_id}")
    page.get_by_role("button", name="Inconclusive").click()  # the note is required: nothing is sent
    assert page.url.endswith(f"/review/candidates/{candidate_id}")
    assert seen_by_police(api, world, case_id, candidate_id) == ("open", "pending", None)

    page.get_by_label("Note (required)").fill("The register holds no photograph younger than 15 years.")
    page.get_by_role("button", name="Inconclusive").click()
    assert seen_by_police(api, world, case_id, candidate_id) == (
        "open",
        "inconclusive",
        "The register holds no photograph younger than 15 years.",
    )
    page.goto(f"{base}/review/candidates/{candidate_id}")
    decision = page.locator("section", has=page.get_by_role("heading", name="Decision")).inner_text()
    assert "Inconclusive by Awa Ndiaye, consulate in Paris" in decision and "The case is open" in decision
    assert page.get_by_role("button", name="Confirm identity").count() == 0, "a settled candidate offers no form"


def test_four_eyes_the_second_consul_sees_the_first_review_and_confirms(server, page, tmp_path):
    base, api, world = server
    api.put("/v1/review-policies/SEN", json={"second_reviewer_required": True}).raise_for_status()
    try:
        case_id, candidate_id = candidate_of_new_case(api, world, "DCPAF-FOUR-EYES", 17)
        first = named_consul(api, "Moussa Fall, consulate in Lyon")
        second = named_consul(api, "Fatou Sarr, consulate in Marseille")

        sign_in(page, base, first)
        page.goto(f"{base}/review/candidates/{candidate_id}")
        page.get_by_label("Note (required)").fill("Matches the passport copy on file.")
        page.get_by_role("button", name="Confirm identity").click()
        assert seen_by_police(api, world, case_id, candidate_id)[:2] == ("open", "pending_second_review")
        page.goto(f"{base}/review/candidates/{candidate_id}")
        assert page.get_by_role("heading", name="Second review").is_visible()
        assert "you cannot give both" in page.content()
        assert page.get_by_role("button", name="Confirm identity").count() == 0, "no second confirmation by the first"
        page.get_by_role("button", name="Sign out").click()

        sign_in(page, base, second)
        page.goto(f"{base}/review?state=pending_second_review")
        row = page.locator("tbody tr", has_text="SEN-0017")
        assert "confirmed first by Moussa Fall, consulate in Lyon" in row.inner_text()
        row.get_by_role("link", name="SEN-0017").click()
        first_review = page.locator("section", has=page.get_by_role("heading", name="First review")).inner_text()
        assert "Confirmed by Moussa Fall, consulate in Lyon" in first_review
        assert "Matches the passport copy on file." in first_review
        page.screenshot(path=str(tmp_path / "second-review.png"), full_page=True)
        if os.environ.get("READMIT_UPDATE_DOCS") or not (DOCS / "review-second-review.png").exists():
            shutil.copy(tmp_path / "second-review.png", DOCS / "review-second-review.png")
        page.get_by_label("Note (required)").fill("Fingerprint card agrees as well.")
        page.get_by_role("button", name="Confirm identity").click()
        assert seen_by_police(api, world, case_id, candidate_id) == (
            "identified",
            "confirmed",
            "Fingerprint card agrees as well.",
        )
        page.goto(f"{base}/review/candidates/{candidate_id}")
        settled = page.locator("section", has=page.get_by_role("heading", name="Decision")).inner_text()
        assert "Confirmed by Fatou Sarr, consulate in Marseille" in settled and "The case is identified" in settled
        first_review = page.locator("section", has=page.get_by_role("heading", name="First review")).inner_text()
        assert "Confirmed by Moussa Fall, consulate in Lyon" in first_review, "the first review stays on the page"
    finally:
        api.put("/v1/review-policies/SEN", json={"second_reviewer_required": False}).raise_for_status()

    auditor = principal(api, "auditor")
    events = api.get("/v1/audit/events?limit=1000", headers=auditor).json()["events"]
    confirmations = [
        e for e in events if e["action"] == "candidate.confirm" and e["resource"] == f"candidate/{candidate_id}"
    ]
    assert [e["details"]["review_state"] for e in confirmations] == ["pending_second_review", "confirmed"]
    assert api.get("/v1/audit/verify", headers=auditor).json()["ok"] is True


def test_the_consul_sees_that_the_record_changed_since_the_match(server, page):
    base, api, world = server
    _, candidate_id = candidate_of_new_case(api, world, "DCPAF-RECORD-CHANGED", 23)
    sign_in(page, base, key_of(world["consul"]))
    page.goto(f"{base}/review/candidates/{candidate_id}")
    assert described(page, "Record version matched") == "1"
    assert page.get_by_role("note").count() == 0

    updated = {
        "reference_id": "SEN-0023",
        "templates": [world["people"][23].tolist()],
        "attributes": {"family_name": "Diop23", "given_names": "Awa23", "date_of_birth": "1994-03-20"},
    }
    response = api.post(
        f"/v1/galleries/{world['gallery_id']}/records:batch", json={"records": [updated]}, headers=world["registry"]
    )
    assert response.json()["updated"] == 1, response.text

    page.goto(f"{base}/review")
    row = page.locator("tbody tr", has_text="SEN-0023")
    assert "record changed since" in row.inner_text().lower()
    row.get_by_role("link", name="SEN-0023").click()
    assert described(page, "Record version matched").lower() == "1 changed since"
    note = page.get_by_role("note").inner_text()
    assert "matched version 1" in note and "now at version 2" in note
    assert described(page, "date of birth") == "1994-03-20", "the current version's attributes"
    assert described(page, "Current version").startswith("2, written ")


def described(page, term):
    """The text of the definition of ``term`` in the page's description lists."""
    return page.locator("dt", has_text=term).locator("xpath=following-sibling::dd[1]").inner_text().strip()
