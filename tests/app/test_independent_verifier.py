"""A country of origin's own verifier, written from the README's formats with nothing of
readmit's code: hashlib, cryptography (Ed25519) and httpx. It checks a real running service:
checkpoint signatures, a consistency proof between two checkpoints, and the inclusion of every
event it may see."""

import base64
import hashlib
import json

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.harness import ServerProcess, records


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def open_checkpoint(vkey: str, note: str) -> tuple[int, bytes]:
    """c2sp.org/signed-note and c2sp.org/tlog-checkpoint: (tree size, root hash)."""
    name, key_id, material = vkey.split("+", 2)
    material_bytes = base64.b64decode(material)
    assert material_bytes[0] == 1 and len(material_bytes) == 33
    public_key = material_bytes[1:]
    assert sha256(name.encode() + b"\n\x01" + public_key)[:4].hex() == key_id
    text, signatures = note.split("\n\n", 1)
    text += "\n"
    for line in signatures.splitlines():
        signer, blob = line.removeprefix("\u2014 ").split(" ")
        signature = base64.b64decode(blob)
        if signer == name and signature[:4].hex() == key_id:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature[4:], text.encode())  # raises if forged
            origin, size, root = text.splitlines()[:3]
            assert origin == name
            return int(size), base64.b64decode(root)
    raise AssertionError("no signature by the log's key")


def canonical(event: dict) -> bytes:
    fields = ("seq", "at", "principal_id", "role", "action", "resource", "outcome", "details", "prev_hash")
    return json.dumps({f: event[f] for f in fields}, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def leaf_of(event: dict) -> bytes:
    """The event's Merkle leaf hash, once its chain hash is checked."""
    assert hashlib.sha256(canonical(event)).hexdigest() == event["hash"]
    return sha256(b"\x00" + canonical(event))


def node(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def included(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = node(p, r)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn // 2, sn // 2
        else:
            r = node(r, p)
        fn, sn = fn // 2, sn // 2
    return sn == 0 and r == root


def consistent(first: int, second: int, first_root: bytes, second_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 §2.1.4.2 (first < second)."""
    if first & (first - 1) == 0:
        proof = [first_root, *proof]
    fn, sn = first - 1, second - 1
    while fn % 2 == 1:
        fn, sn = fn // 2, sn // 2
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn // 2, sn // 2
        else:
            sr = node(sr, c)
        fn, sn = fn // 2, sn // 2
    return sn == 0 and fr == first_root and sr == second_root


def decode(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v) for v in values]


def test_a_verifier_written_from_the_readme_alone_checks_the_running_service(tmp_path):
    server = ServerProcess(tmp_path / "data")
    try:
        admin = httpx.Client(base_url=server.base, headers=server.admin, timeout=30)
        gallery = admin.post(
            "/v1/galleries",
            json={"country": "SEN", "modality": "face", "template_format": {"model": "m", "dimension": 8}},
        ).json()["id"]
        registry = server.principal("registry", "SEN")
        admin.post(f"/v1/galleries/{gallery}/records:batch", json={"records": records(5, 8)}, headers=registry)
        api = httpx.Client(base_url=server.base, headers=server.principal("auditor", "SEN"), timeout=30)
        vkey = api.get("/v1/audit/public-key").json()["verifier_key"]
        assert vkey == server.verifier_key  # the key the operator published out of band
        first_size, first_root = open_checkpoint(vkey, api.post("/v1/audit/checkpoint").json()["checkpoint"])

        admin.delete(f"/v1/galleries/{gallery}/records/REF-00002", headers=registry)
        size, root = open_checkpoint(vkey, api.post("/v1/audit/checkpoint").json()["checkpoint"])
        proof = api.get("/v1/audit/proof/consistency", params={"from": first_size, "to": size}).json()
        assert consistent(first_size, size, first_root, root, decode(proof["hashes"]))
        assert not consistent(first_size, size, sha256(b"forged"), root, decode(proof["hashes"]))

        seen = [e for e in api.get("/v1/audit/events", params={"limit": 1000}).json()["events"] if e["seq"] <= size]
        assert {"gallery.create", "record.enrol", "record.delete"} <= {e["action"] for e in seen}
        for event in seen:
            assert "SEN" in event["details"]["countries"]
            inclusion = api.get("/v1/audit/proof/inclusion", params={"seq": event["seq"], "tree_size": size}).json()
            assert included(event["seq"] - 1, size, leaf_of(event), decode(inclusion["hashes"]), root)
        forged = {**seen[0], "outcome": "denied"}
        inclusion = api.get("/v1/audit/proof/inclusion", params={"seq": forged["seq"], "tree_size": size}).json()
        assert not included(
            forged["seq"] - 1, size, sha256(b"\x00" + canonical(forged)), decode(inclusion["hashes"]), root
        )
    finally:
        server.stop()
