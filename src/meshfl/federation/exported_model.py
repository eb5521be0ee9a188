"""Opening an exported model: ``meshfl-server export`` writes sealed round sums; a holder of
the MSPs' secret key turns them into a usable :class:`~meshfl.agents.base.GlobalModel`.

The export (:func:`meshfl.store.model_store.read_export`) names its agent, run and round,
but not the agent's config or the run's seed, which the initial vector depends on: they are
the ``[agents.<name>]`` table of the mesh's ``mesh.toml`` (``config`` and ``seed``).
Every sum is verified as an MSP verifies what the coordinator sends
(:class:`~meshfl.federation.sealed_model.Verification`): bound to the export's run and agent,
rounds in order, each the sum of at least ``min_contributors`` distinct MSPs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from meshfl.agents import registry
from meshfl.agents.base import GlobalModel
from meshfl.config.errors import ConfigError
from meshfl.federation.sealed_model import Verification, open_global
from meshfl.secure.backend import PlaintextSealer, Sealer
from meshfl.secure.ckks import CKKSSealer
from meshfl.store.model_store import read_export

__all__ = ["open_export"]


def open_export(
    path: str | os.PathLike[str],
    *,
    secret_key: str | os.PathLike[str] | None,
    agent_config: Mapping[str, Any] | None = None,
    seed: int = 0,
    min_contributors: int = 1,
) -> GlobalModel:
    """The model an export holds, opened with the MSPs' secret key.

    Parameters
    ----------
    path : path
        A file ``meshfl-server export`` wrote (``.mfl``).
    secret_key : path or None
        The MSPs' ``msp.secret.ckks`` (``meshfl keys init``). ``None`` only for an export of
        a mesh that ran without encryption (``secure_aggregation = "plaintext"``).
    agent_config, seed
        The agent's ``config`` and ``seed`` from the mesh's ``[agents.<name>]`` table.
    min_contributors : int
        Fewest distinct MSPs each round's sum must prove it adds.

    Raises
    ------
    ConfigError
        The export is encrypted and no secret key was given (or the reverse), or the key is
        of another key set.
    meshfl.secure.binding.UnverifiedAggregateError
        A sum is not a true aggregate of this run, agent and round order.
    """
    header, history = read_export(os.fspath(path))
    backends = {sealed.backend for sealed in history}
    sealer: Sealer
    if backends == {"plaintext"}:
        if secret_key is not None:
            raise ConfigError(f"{os.fspath(path)} is not encrypted: open it without a key.")
        sealer = PlaintextSealer()
    elif secret_key is None:
        raise ConfigError(
            f"{os.fspath(path)} is sealed with CKKS: give the MSPs' secret key "
            "(msp.secret.ckks, from `meshfl keys init`)."
        )
    else:
        sealer = CKKSSealer.from_file(secret_key)
        sealed_under = {sealed.key_id for sealed in history}
        if sealed_under != {sealer.key_id}:
            raise ConfigError(
                f"{os.fspath(path)} is sealed under key set {', '.join(sorted(sealed_under))}; "
                f"{os.fspath(secret_key)} is key set {sealer.key_id}: use that mesh's "
                "msp.secret.ckks."
            )
    agent = registry.get(header["agent"])(dict(agent_config or {}))
    verify = Verification(
        run_id=header["run_id"],
        before_round=int(header["round"]) + 1,
        min_contributors=min_contributors,
    )
    return agent.model(open_global(agent, history, sealer, seed=seed, verify=verify))
