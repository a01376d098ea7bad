"""``readmit dedup``'s ledger: pairs as JSON Lines in the output file, progress in a state file
beside it (``<out>.state``).

After each block the new pairs are appended and flushed to disk, then the state (the block
count and the output's length at that point) replaced atomically. A run interrupted anywhere
resumes by cutting the output back to the length the state names and going on from its block,
so the file ends up as a run never interrupted would have written it. Once the run is done, a
last line holds the summary (threshold, expected false pairs, clusters) and the state file goes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from app.deduplication.workflow import Calibrated, PairRow, Resumed, clusters_of


class FileLedger:
    """:class:`app.deduplication.workflow.Ledger` over ``out`` and ``<out>.state``; a saved
    state is taken up only by a run of the same gallery, change, FMR and block size."""

    def __init__(self, out: Path, run: dict[str, Any]) -> None:
        self.out, self.state = out, out.with_name(out.name + ".state")
        self.run = run
        self._calibrated: Calibrated | None = None

    def resume(self, change_seq: int) -> Resumed | None:
        self.run = {**self.run, "change_seq": change_seq}
        saved = self._saved()
        if saved is None or saved["run"] != self.run or not self.out.exists():
            self.out.write_bytes(b"")
            return None
        with open(self.out, "r+b") as handle:
            handle.truncate(saved["out_bytes"])
        self._calibrated = Calibrated(**saved["calibrated"])
        return Resumed(self._calibrated, saved["blocks_done"])

    def begin(self, calibrated: Calibrated) -> None:
        self._calibrated = calibrated
        self._save(0)

    def commit(self, blocks_done: int, pairs: list[PairRow]) -> None:
        with open(self.out, "a", encoding="utf-8") as handle:
            for pair in pairs:
                handle.write(json.dumps(pair.__dict__) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._save(blocks_done)

    def finish(self) -> dict[str, Any]:
        """Append the summary line, remove the state file, and return the summary."""
        calibrated = self._calibrated
        assert calibrated is not None, "finish follows begin or resume"
        pairs = [json.loads(line) for line in self.out.read_text(encoding="utf-8").splitlines()]
        summary = {
            "gallery_id": self.run["gallery_id"],
            "target_fmr": calibrated.target_fmr,
            "threshold": calibrated.match_threshold,
            "possible_threshold": calibrated.possible_threshold,
            "expected_false_pairs": calibrated.expected_false_pairs,
            "method": calibrated.method,
            "pairs": len(pairs),
            "matches": sum(pair["band"] == "match" for pair in pairs),
            "clusters": clusters_of([(pair["reference_id_a"], pair["reference_id_b"]) for pair in pairs]),
            "tail": calibrated.tail,
        }
        with open(self.out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"summary": summary}) + "\n")
        self.state.unlink(missing_ok=True)
        return summary

    def _saved(self) -> dict[str, Any] | None:
        try:
            saved: dict[str, Any] = json.loads(self.state.read_text(encoding="utf-8"))
            return saved
        except (FileNotFoundError, ValueError):
            return None

    def _save(self, blocks_done: int) -> None:
        assert self._calibrated is not None, "saved from begin on"
        state = {
            "run": self.run,
            "calibrated": self._calibrated.__dict__,
            "blocks_done": blocks_done,
            "out_bytes": self.out.stat().st_size,
        }
        written = self.state.with_name(self.state.name + ".tmp")
        written.write_text(json.dumps(state), encoding="utf-8")
        os.replace(written, self.state)
