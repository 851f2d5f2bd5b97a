"""The kept networks in the study: each candidate network (a finished trial's best-epoch
network, when it ranks among the best its worker trained) is an Optuna artifact of its trial,
one safetensors file holding the one-member ``Population``'s tensors and, in its header, its
meta JSON (no pickle). Whoever builds the final model reads them from the study, so the model
chooses among every worker's networks, not one process's memory."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import optuna
import safetensors.torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta
from optuna.trial import TrialState

from ...data import TablePreprocessor
from ...engine import Population
from ...files import jsonable
from ...io import network_fits
from ..ensemble import KeptNetworks
from . import keys

META = "caviar_network"  # the safetensors header key holding Population.state_meta()


def network_bytes(network: Population) -> bytes:
    """A one-member population as safetensors bytes, its meta JSON in the header."""
    return safetensors.torch.save(network.state_tensors(),
                                  metadata={META: json.dumps(jsonable(network.state_meta()))})


def network_from_bytes(data: bytes) -> Population:
    """The population ``network_bytes`` wrote."""
    (size,) = struct.unpack("<Q", data[:8])
    meta = json.loads(json.loads(data[8:8 + size])["__metadata__"][META])
    return Population.from_state(meta, safetensors.torch.load(data))


def add_study_networks(kept: KeptNetworks, study: optuna.Study,
                       storage: optuna.storages.BaseStorage, artifacts: str | Path,
                       preprocessor: TablePreprocessor) -> int:
    """Offer ``kept`` the study's candidate networks it lacks that read ``preprocessor``'s
    inputs, best first, until it wants no more; returns how many were read. Trials are named
    by their storage numbers."""
    have = {k.trial for k in kept.networks}
    candidates = sorted(
        (t for t in study.get_trials(deepcopy=False,
                                     states=(TrialState.COMPLETE, TrialState.PRUNED))
         if isinstance(t.user_attrs.get(keys.NETWORK), dict) and t.number not in have),
        key=lambda t: t.user_attrs[keys.NETWORK]["value"])
    store = FileSystemArtifactStore(str(artifacts))
    read = 0
    with tempfile.TemporaryDirectory() as tmp:
        for t in candidates:
            info = t.user_attrs[keys.NETWORK]
            if not kept.wants(float(info["value"])):
                break
            metas = get_all_artifact_meta(t, storage=storage)
            if not metas:
                continue  # its worker died before the writer uploaded it
            file = Path(tmp) / f"{t.number}.safetensors"
            try:
                download_artifact(artifact_store=store, file_path=str(file),
                                  artifact_id=metas[0].artifact_id)
            except (OSError, optuna.artifacts.exceptions.ArtifactNotFound):
                continue  # the artifact store was moved or cleaned
            network = network_from_bytes(file.read_bytes())
            if not network_fits(preprocessor, network):
                continue  # trained on other inputs (--drop, --categorical, --numeric changed)
            kept.add(network, t.number, float(info["value"]), info.get("stopped"))
            read += 1
    return read
