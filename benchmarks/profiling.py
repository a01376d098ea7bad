"""Sampling profiles of running service processes with py-spy, summed by function: what a
benchmark's load costs inside the service, beside what it measures from outside.

``record`` starts one ``py-spy record`` per process for the length of a phase (raw collapsed
stacks, one file per process); ``inclusive`` reads one back and counts, per function of readmit,
the samples not waiting whose stack holds it (its own time and everything it called), so that a
slow path shows at the level of the function that takes it, not only at the leaf that burns
the time."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def record(processes: dict[str, int], out_dir: Path, seconds: float, rate: int = 200) -> Iterator[None]:
    """Profile each of ``processes`` (name → pid) for ``seconds`` while the block runs; py-spy is
    looked for next to this Python (the venv's) and then on the PATH."""
    out_dir.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy", path=str(Path(__file__).resolve().parent.parent / ".venv" / "bin")) or "py-spy"
    sampling = ["-r", str(rate), "-d", str(int(seconds)), "--nonblocking"]
    samplers = [
        subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--format", "raw", "-o", str(out_dir / f"{name}.txt"), *sampling],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in processes.items()
    ]
    try:
        yield
    finally:
        for sampler in samplers:
            sampler.wait(timeout=seconds + 60)


WAITING = {
    "Condition.wait",
    "Event.wait",
    "Queue.get",
    "Runner.run",
    "WorkerThread.run",
    "SyncStream.read",
    "is_socket_readable",
    "RequestResponseCycle.receive",
    "_configure_sqlite.<locals>.on_begin",
}
"""Leaves where a thread waits (a lock, a queue, the event loop's poll, a socket, SQLite's write
lock): py-spy's nonblocking mode cannot tell them idle, so they are told apart here."""


def inclusive(raw: Path, top: int = 40) -> tuple[int, int, list[tuple[str, int]]]:
    """All samples of a raw py-spy file, those not waiting, and the ``top`` functions of readmit
    (app/, matcher/) by inclusive samples not waiting."""
    total, busy, per_function = 0, 0, Counter[str]()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        if frames[-1].split(" (")[0] in WAITING:
            continue
        busy += int(count)
        for function in {_name_of(frame) for frame in frames if "(app/" in frame or "(matcher/" in frame}:
            per_function[function] += int(count)
    return total, busy, per_function.most_common(top)


def _name_of(frame: str) -> str:
    """``name (app/x/file.py:line)`` → ``name file.py``: a function counted once whatever line."""
    name, _, inside = frame.partition(" (")
    return f"{name} {Path(inside.rpartition(':')[0]).name}"


def print_summary(out_dir: Path, top: int = 40) -> None:
    for raw in sorted(out_dir.glob("*.txt")):
        total, busy, functions = inclusive(raw, top)
        print(f"\n== {raw.stem}: {total} samples, {busy} not waiting; readmit's functions by inclusive samples")
        for function, samples in functions:
            print(f"  {samples / max(busy, 1):6.1%}  {samples:7d}  {function}")
