"""Readable MSP names: what the operator called each SuperNode when registering it.

Flower identifies a SuperNode by a random 64-bit node id, which says nothing to an operator
reading a log line or a Prometheus label. ``meshfl-server register-node --name acme KEY.pub``
keeps the name beside the node id Flower answered with, in ``<state_dir>/msp-names.json``
(replaced atomically), and the coordinator labels that MSP by its name in ``/metrics`` and
its output. An MSP registered without ``--name`` is named by its public key's comment
(``meshfl node-keys init --name acme-it``), else by the key file's name (``msp-0.pub`` →
``msp-0``); one registered outside meshfl keeps its node id.

The names are the operator's own labels for parties the coordinator already knows; nothing
here comes from an MSP or leaves the coordinator.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from meshfl.config.errors import ConfigError, MeshflError

__all__ = ["NAMES_FILE", "check_name", "default_name", "label", "read_names", "remember_name"]

NAMES_FILE = "msp-names.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str) -> str:
    """``name`` if it can label an MSP (a Prometheus label value and a log word).

    Raises
    ------
    ConfigError
        Not 1-64 letters, digits, ``.``, ``_`` or ``-`` starting with a letter or digit.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            "An MSP's --name must be 1-64 letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit (e.g. 'acme-it'). Got {name!r}."
        )
    return name


def default_name(public_key: str | os.PathLike[str]) -> str:
    """The name of an MSP registered without ``--name``: its OpenSSH public key's comment
    if that is a valid name, else the key file's name without ``.pub``."""
    path = Path(public_key)
    try:
        fields = path.read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        fields = []
    if len(fields) >= 3 and _NAME.fullmatch(fields[2]):
        return fields[2]
    return path.name.removesuffix(".pub")


def read_names(state_dir: str | os.PathLike[str]) -> dict[int, str]:
    """Node id → name of every MSP registered with a name ({} when none was)."""
    path = Path(state_dir) / NAMES_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {int(node_id): str(name) for node_id, name in dict(raw).items()}
    except (ValueError, TypeError) as err:
        raise MeshflError(
            f"{path} is not a map of node ids to MSP names ({err}). Fix or delete it: "
            "without it, MSPs are labelled by their node ids."
        ) from err


def remember_name(state_dir: str | os.PathLike[str], node_id: int, name: str) -> None:
    """Keep ``name`` for ``node_id`` (re-registering a node renames it).

    Raises
    ------
    ConfigError
        ``name`` is invalid, or already names another node.
    """
    check_name(name)
    names = read_names(state_dir)
    for other, taken in names.items():
        if taken == name and other != int(node_id):
            raise ConfigError(
                f"The MSP name {name!r} already labels node {other}. Pick another --name, "
                "so that /metrics and the logs tell the two MSPs apart."
            )
    names[int(node_id)] = name
    path = Path(state_dir) / NAMES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({str(k): v for k, v in sorted(names.items())}, indent=1) + "\n")
    os.replace(tmp, path)


def label(node_id: int | str, names: Mapping[int, str]) -> str:
    """The MSP's name if it has one, else its node id."""
    try:
        return names.get(int(node_id), str(node_id))
    except ValueError:  # not a node id (e.g. a simulated MSP's index already as text)
        return str(node_id)
