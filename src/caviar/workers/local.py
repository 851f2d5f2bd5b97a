"""N worker processes on this machine, each ``python -m caviar.workers SPEC INDEX`` (a
process of its own, not multiprocessing, which would re-run the user's script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .spec import WorkerSpec


def run_local(spec: WorkerSpec, workers: int) -> list[dict[str, Any]]:
    """Run ``workers`` worker processes on the study of ``spec`` and wait for them; returns
    the summary of each that finished. A worker that dies loses only its running trials
    (the others re-queue them); RuntimeError if none finished."""
    folder = Path(spec.out) / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    procs = []
    for index in range(workers):
        log = open(folder / f"worker-{index}.log", "wb")  # noqa: SIM115 (closed below)
        summary = folder / f"summary-{index}.json"
        summary.unlink(missing_ok=True)
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "caviar.workers", str(spec_file), str(index), str(summary)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log), log, summary))
    summaries, errors = [], []
    for proc, log, summary in procs:
        proc.wait()
        log.close()
        if proc.returncode == 0 and summary.exists():
            summaries.append(json.loads(summary.read_text()))
        else:
            lines = Path(log.name).read_text(errors="replace").strip().splitlines()
            errors.append(lines[-1] if lines else f"exit code {proc.returncode}")
    if not summaries:
        raise RuntimeError(f"every worker failed: {errors[0]}")
    return summaries
