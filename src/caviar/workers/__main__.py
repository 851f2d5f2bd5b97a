"""A local worker process: python -m caviar.workers SPEC.json INDEX SUMMARY.json"""

import json
import sys
from pathlib import Path

from caviar.workers.spec import WorkerSpec
from caviar.workers.worker import run_worker

if __name__ == "__main__":
    spec = WorkerSpec.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    summary = run_worker(spec, int(sys.argv[2]))
    Path(sys.argv[3]).write_text(json.dumps(summary))
