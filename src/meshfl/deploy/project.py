"""The Flower app project that ``flwr run`` submits, and the Flower CLI's connection file.

Flower 1.42 runs an app from a *Flower App Bundle* (FAB) that ``flwr run <app-dir>`` builds
from a project directory: a ``pyproject.toml`` with ``[tool.flwr.app]`` naming the
``serverapp`` and ``clientapp`` objects (``module:attribute``) and the run config defaults.
meshfl's FAB carries only that file: the apps are imported from the ``meshfl`` package
installed next to Flower on the SuperLink and on every SuperNode (both load the component
with the FAB directory prepended to ``sys.path``, so an installed package resolves). That
is why the project is *written* (:func:`write_app_project`) rather than shipped inside the
package: a wheel would not carry a non-Python ``pyproject.toml``, a nested one would turn
its folder into a separate ruff/pytest root, and the written one can bake in a
deployment's run config.

Where the SuperLink is, is not part of the app: ``flwr`` reads named connections from
``$FLWR_HOME/config.toml`` (default ``~/.flwr``). :func:`write_flower_config` writes one.
(A ``[tool.flwr.federations]`` table in the app's ``pyproject.toml`` is legacy in 1.42:
``flwr run`` migrates it into ``config.toml`` and comments it out *in place*.)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from meshfl.config.errors import ConfigError

__all__ = [
    "APP_NAME",
    "CLIENT_APP_REF",
    "DEFAULT_RUN_CONFIG",
    "SERVER_APP_REF",
    "write_app_project",
    "write_flower_config",
]

APP_NAME = "meshfl-app"
"""``[project].name`` of the app (Flower: letters, digits and hyphens)."""
PUBLISHER = "meshfl"
SERVER_APP_REF = "meshfl.deploy.apps:server_app"
CLIENT_APP_REF = "meshfl.deploy.apps:client_app"

RunConfigValue = str | int | float | bool

DEFAULT_RUN_CONFIG: dict[str, RunConfigValue] = {
    "plans": "",
    "public-key": "",
    "run-name": "",
    "state-dir": "",
}
"""Every run config key the ServerApp reads. ``flwr run --run-config`` may only override
keys declared in the project, so all of them are declared, with these defaults:

``plans``
    The coordinator's agent plans: a JSON list of :class:`~meshfl.federation.AgentPlan`
    objects (one object is fine), or the path of a ``.json`` or ``.toml`` file holding
    them (TOML: ``[[plans]]`` tables). Required.
``public-key``
    Path of ``coordinator.public.ckks`` on the SuperLink host (``meshfl keys init``).
    Required; a context holding the secret key is refused.
``run-name``
    The run's id in the coordinator's model store; a name the store holds resumes after
    its last committed round. Empty: ``flwr-<flwr run id>`` (a fresh run each time).
``state-dir``
    Directory on the SuperLink host of the coordinator's model store (``coordinator.sqlite``,
    ``blobs/``) and of ``runs/<run-id>/`` (``rounds.jsonl``, ``summary.json``, sealed
    models); empty: nothing is written.

The ClientApp reads the same run config (for the agent configs of ``plans``) and its
node config: ``data-dir``, ``secret-key``, ``state-dir`` (see :mod:`meshfl.deploy.apps`).
"""


def _toml_value(key: str, value: object) -> str:
    # JSON strings are valid TOML basic strings (json.dumps escapes non-ASCII as \\uXXXX).
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise ConfigError(
        f"Run config value {key!r} must be a str, int, float or bool. "
        f"Got {type(value).__name__} instead."
    )


def write_app_project(
    directory: str | os.PathLike[str],
    *,
    run_config: Mapping[str, RunConfigValue] | None = None,
    version: str = "0.1.0",
) -> Path:
    """Write the Flower app project of meshfl's apps to ``directory``; returns the directory.

    Parameters
    ----------
    directory : path
        Created if missing. Keep it for the project only: ``flwr run`` bundles every
        ``*.py``, ``*.toml``, ``*.json``, ``*.md`` and ``*.yaml`` file below it.
    run_config : mapping, optional
        Values baked into ``[tool.flwr.app.config]`` on top of
        :data:`DEFAULT_RUN_CONFIG`; ``flwr run --run-config`` still overrides them.
    version : str
        ``[project].version`` of the bundle.
    """
    config = dict(DEFAULT_RUN_CONFIG)
    for key, value in (run_config or {}).items():
        if key not in DEFAULT_RUN_CONFIG:
            raise ConfigError(
                f"Unknown run config key {key!r}: the ServerApp reads "
                f"{', '.join(sorted(DEFAULT_RUN_CONFIG))}."
            )
        config[key] = value
    lines = [
        "# Written by meshfl.deploy.write_app_project: meshfl's apps on Flower's",
        "# deployment runtime. The apps come from the installed meshfl package.",
        "[project]",
        f'name = "{APP_NAME}"',
        f"version = {json.dumps(version)}",
        'description = "meshfl coordinator (ServerApp) and MSP (ClientApp)"',
        'license = "Apache-2.0"',
        # The SuperLink and SuperNodes must already have meshfl installed; runtime
        # dependency installation (`uv sync`) must be off, and flwr itself is skipped.
        'dependencies = ["flwr>=1.42,<1.43"]',
        "",
        "[tool.flwr.app]",
        f'publisher = "{PUBLISHER}"',
        "",
        "[tool.flwr.app.components]",
        f'serverapp = "{SERVER_APP_REF}"',
        f'clientapp = "{CLIENT_APP_REF}"',
        "",
        "[tool.flwr.app.config]",
        *(f'"{key}" = {_toml_value(key, value)}' for key, value in sorted(config.items())),
        "",
    ]
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text("\n".join(lines), encoding="utf-8")
    return root


def write_flower_config(
    flwr_home: str | os.PathLike[str],
    address: str,
    *,
    name: str = "meshfl",
    root_certificates: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``<flwr_home>/config.toml`` with one SuperLink connection, the default.

    ``flwr run``, ``flwr log``, ``flwr ls`` and ``flwr supernode register`` read it when
    ``FLWR_HOME=<flwr_home>``. Without ``root_certificates`` the connection is insecure
    (plain HTTP); with it, TLS verified against that CA certificate.

    Parameters
    ----------
    flwr_home : path
        The Flower home directory (created if missing).
    address : str
        The SuperLink's ``host:port`` (its single HTTP port: Control, Fleet, Runtime).
    name : str
        The connection's name.
    root_certificates : path, optional
        CA certificate (PEM) that signed the SuperLink's server certificate.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ConfigError(
            f"A SuperLink connection name must be letters, digits, '-' or '_'. Got {name!r}."
        )
    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f"default = {json.dumps(name)}", "", f"[superlink.{name}]"]
    lines.append(f"address = {json.dumps(address)}")
    if root_certificates is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {json.dumps(str(Path(root_certificates).resolve()))}")
    path = home / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
