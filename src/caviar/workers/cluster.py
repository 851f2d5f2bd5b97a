"""Worker loops on a Dask cluster: one long-running task on each Dask worker."""

from __future__ import annotations

from typing import Any

from .spec import WorkerSpec
from .worker import run_worker


def run_dask(spec: WorkerSpec, address: str) -> list[dict[str, Any]]:
    """Submit ``run_worker`` once to each worker of the Dask scheduler at ``address`` and
    wait for them all; returns their summaries. The storage must be one every worker
    reaches (PostgreSQL), the data and ``spec.artifacts`` paths too."""
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("--dask needs Dask: pip install 'caviar-ml[distributed]'") from None
    with Client(address) as client:
        addresses = sorted(client.scheduler_info()["workers"])
        if not addresses:
            raise ValueError(f"the Dask scheduler at {address} has no workers")
        futures = [client.submit(run_worker, spec.to_dict(), index, pure=False,
                                 workers=[worker], allow_other_workers=False)
                   for index, worker in enumerate(addresses)]
        return client.gather(futures)
