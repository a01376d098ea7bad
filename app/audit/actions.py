"""Every action the audit trail records, ``noun.verb``: the vocabulary auditors of both
countries read. A new action is one line here and one call in a use case; the README's audit
section lists them."""

from __future__ import annotations

import enum


class Action(enum.StrEnum):
    PRINCIPAL_CREATE = "principal.create"
    PRINCIPAL_REVOKE = "principal.revoke"
    AGREEMENT_CREATE = "agreement.create"
    GALLERY_CREATE = "gallery.create"
    RECORD_ENROL = "record.enrol"
    RECORD_READ = "record.read"
    RECORD_READ_HISTORY = "record.read_history"
    RECORD_DELETE = "record.delete"
    RECORD_VERIFY = "record.verify"
    CASE_OPEN = "case.open"
    CASE_READ = "case.read"
    CASE_TRANSITION = "case.transition"
    PROBE_ERASE = "probe.erase"
    SEARCH_SUBMIT = "search.submit"
    SEARCH_READ = "search.read"
    SEARCH_COMPLETE = "search.complete"
    SEARCH_FAIL = "search.fail"
    SEARCH_EXPIRE = "search.expire"
    CANDIDATE_LIST = "candidate.list"
    CANDIDATE_READ = "candidate.read"
    CANDIDATE_CONFIRM = "candidate.confirm"
    CANDIDATE_REJECT = "candidate.reject"
    CANDIDATE_MARK_INCONCLUSIVE = "candidate.mark_inconclusive"
    REVIEW_POLICY_SET = "review_policy.set"
    SESSION_SIGN_IN = "session.sign_in"
    SESSION_SIGN_OUT = "session.sign_out"
    PEER_ADD = "peer.add"
    PEER_REMOVE = "peer.remove"
    FEDERATION_REQUEST_SEND = "federation.request_send"
    FEDERATION_REQUEST_RECEIVE = "federation.request_receive"
    FEDERATION_STATE_SEND = "federation.state_send"
    FEDERATION_STATE_RECEIVE = "federation.state_receive"
    AUDIT_READ = "audit.read"
    AUDIT_VERIFY = "audit.verify"
