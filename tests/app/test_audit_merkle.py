"""RFC 9162 hashing and proofs, and C2SP signed notes, against independent references: the RFC's
recursive definitions written out naively, and the signed-note spec's own example."""

import hashlib
from datetime import UTC, datetime

import pytest

from app.audit import merkle
from app.audit.notes import Checkpoint, NoteError, Signer, Verifier


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, literally."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1, PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """RFC 9162 §2.1.4.1, SUBPROOF(m, D[n], b)."""
    if m == len(leaves):
        return [] if whole else [mth(leaves)]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m <= k:
        return [*subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


LEAVES = [f"event {i}".encode() for i in range(40)]


def hashes_of(ranges, leaves):
    return [mth(leaves[start:end]) for start, end in ranges]


@pytest.mark.parametrize("size", range(1, 41))
def test_proof_shapes_and_roots_match_the_rfc_definitions(size):
    leaves = LEAVES[:size]
    root = mth(leaves)
    subtrees = [mth(leaves[i << level : (i + 1) << level]) for level, i in merkle.perfect_subtrees(0, size)]
    assert merkle.fold(subtrees) == root
    for m in range(size):
        proof = hashes_of(merkle.inclusion_ranges(m, size), leaves)
        assert proof == path(m, leaves)
        merkle.verify_inclusion(m, size, merkle.leaf_hash(leaves[m]), proof, root)
    for old in range(1, size + 1):
        proof = hashes_of(merkle.consistency_ranges(old, size), leaves)
        assert proof == (subproof(old, leaves, True) if old < size else [])
        merkle.verify_consistency(old, size, mth(leaves[:old]), root, proof)


def test_a_compact_range_grown_leaf_by_leaf_has_every_tree_s_root_in_log_n_hashes():
    grown = merkle.CompactRange()
    assert grown.root() == mth([])
    for size, leaf in enumerate(LEAVES, start=1):
        grown.append(merkle.leaf_hash(leaf))
        assert grown.size == size and grown.root() == mth(LEAVES[:size])
        assert len(grown.hashes) == size.bit_count()  # the right edge: at most log2(n) hashes


def test_a_changed_leaf_or_root_fails_both_proofs():
    leaves = LEAVES[:13]
    forged = [*leaves[:4], b"forged", *leaves[5:]]
    root = mth(leaves)
    proof = path(4, leaves)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(4, 13, merkle.leaf_hash(b"forged"), proof, root)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(4, 13, merkle.leaf_hash(leaves[4]), proof[:-1], root)
    old_root = mth(leaves[:7])
    with pytest.raises(merkle.ProofError):  # the new tree rewrote leaf 4: not an extension of the old one
        merkle.verify_consistency(7, 13, old_root, mth(forged), subproof(7, forged, True))


def test_the_signed_note_specs_example_verifies():
    verifier = Verifier.parse("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
    note = (
        "This is an example message.\n\n\u2014 example.com/foo "
        "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
    )
    assert verifier.open(note) == "This is an example message.\n"
    with pytest.raises(NoteError, match="does not verify"):
        verifier.open(note.replace("example message", "exemplary message"))


def test_a_checkpoint_round_trips_and_only_its_own_key_opens_it(tmp_path):
    signer = Signer.generate("readmit.test/audit")
    signer.save(tmp_path / "key")
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600
    assert Signer.load(tmp_path / "key").verifier == signer.verifier
    assert Verifier.parse(str(signer.verifier)) == signer.verifier
    checkpoint = Checkpoint("readmit.test/audit", 5, mth(LEAVES[:5]), datetime(2026, 11, 26, 6, 0, tzinfo=UTC))
    note = signer.sign(checkpoint.text())
    assert Checkpoint.parse(signer.verifier.open(note)) == checkpoint
    with pytest.raises(NoteError, match="no signature"):
        Signer.generate("readmit.test/audit").verifier.open(note)
    with pytest.raises(FileExistsError):
        signer.save(tmp_path / "key")


@pytest.mark.parametrize("size", [1_000_003, 2**40 - 1, 2**40 + 12_345])
def test_a_proof_reads_a_logarithmic_number_of_stored_subtrees(size):
    """What makes proofs cheap on a log of millions: the ranges of any proof split into at most
    about 2·log2(n) perfect subtrees, the rows app/audit/tree.py reads."""
    bound = 2 * size.bit_length()
    for index in (0, 1, size // 3, size - 2, size - 1):
        ranges = merkle.inclusion_ranges(index, size)
        assert sum(len(merkle.perfect_subtrees(a, b)) for a, b in ranges) <= bound
    for old in (1, 7, size // 2 + 1, size - 1):
        ranges = merkle.consistency_ranges(old, size)
        assert sum(len(merkle.perfect_subtrees(a, b)) for a, b in ranges) <= bound
