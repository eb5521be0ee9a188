"""``mesh.toml``: the coordinator operator's configuration, validated.

.. code-block:: toml

    [coordinator]
    state_dir = "state"
    public_key = "keys/coordinator.public.ckks"
    address = "127.0.0.1:9092"             # the SuperLink's one port (Fleet, Control, Runtime)
    metrics_address = "127.0.0.1:9400"
    run_name = "mesh"                      # the run's id in the store; same name = resume

    [coordinator.tls]                      # omit only for a loopback test: it warns loudly
    ca_cert = "certs/ca.crt"
    cert = "certs/server.pem"
    key = "certs/server.key"

    [agents.anomaly]
    rounds = 5
    min_msps = 3
    fraction_train = 1.0
    round_timeout = 120
    secure_aggregation = "ckks"
    privacy = { epsilon = 1.0, delta = 1e-5 }
    config = { trees_per_round = 10 }

Every table is a strict pydantic model: an unknown key or a wrong value names its full path
("agents.anomaly.rounds") in the error.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from meshfl.agents import registry
from meshfl.config.base import MeshflConfig
from meshfl.config.errors import ConfigError, MeshflError
from meshfl.federation.server_app import AgentPlan
from meshfl.privacy.config import DPConfig

__all__ = [
    "preflight",
    "AgentSection",
    "CoordinatorSection",
    "MeshConfig",
    "TLSSection",
    "load_mesh_config",
]


class TLSSection(MeshflConfig):
    """Certificates of the SuperLink's TLS (Flower's own options)."""

    ca_cert: Path
    cert: Path
    key: Path


class CoordinatorSection(MeshflConfig):
    """Where the coordinator keeps its state and listens."""

    state_dir: Path = Field(Path("state"), description="Model store and metadata.")
    public_key: Path = Field(description="coordinator.public.ckks from `meshfl keys init`.")
    address: str = Field(
        "127.0.0.1:9092",
        description="The SuperLink's host:port. Flower 1.42 serves the Fleet API (MSPs), the "
        "Control API (flwr CLI) and the Runtime API on this one port.",
    )
    run_name: str = Field(
        "mesh",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="The run's id in the model store; a name the store holds resumes.",
    )
    metrics_address: str | None = Field("127.0.0.1:9400", description="Prometheus /metrics.")
    node_poll_seconds: float = Field(
        15.0,
        ge=1,
        le=3600,
        description="How often /metrics' connected-MSPs gauges ask the SuperLink (each ask "
        "runs `flwr supernode list`: about 1 s of CPU).",
    )
    tls: TLSSection | None = Field(None, description="TLS certificates; None is insecure.")
    node_auth: bool = Field(True, description="Only registered SuperNode keys may connect.")

    @field_validator("address", "metrics_address")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("be 'host:port' with a port in 1..65535")
        return value


class AgentSection(MeshflConfig):
    """How the coordinator trains one agent (becomes an :class:`AgentPlan`)."""

    rounds: int = Field(3, ge=1)
    min_msps: int = Field(1, ge=1)
    min_available_msps: int = Field(1, ge=1)
    fraction_train: float = Field(1.0, gt=0, le=1)
    fraction_evaluate: float = Field(1.0, gt=0, le=1)
    round_timeout: float = Field(300.0, gt=0, description="Seconds; MSPs later are dropouts.")
    connect_timeout: float = Field(
        300.0, gt=0, description="Seconds to wait for min_available_msps MSPs to connect."
    )
    seed: int = Field(0, ge=0)
    secure_aggregation: Literal["ckks", "plaintext"] = "ckks"
    masking: bool = Field(
        True, description="Masks inside the ciphertexts (rounds of 3 or more MSPs, CKKS)."
    )
    masking_dropout: float = Field(
        1 / 3,
        ge=0,
        lt=0.5,
        description="Share of an MSP's neighbours that may drop before unmasking.",
    )
    privacy: DPConfig | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="The agent's own config.")


class MeshConfig(MeshflConfig):
    """The whole ``mesh.toml``."""

    coordinator: CoordinatorSection
    agents: dict[str, AgentSection] = Field(min_length=1)

    @field_validator("agents")
    @classmethod
    def _known_agents(cls, agents: dict[str, AgentSection]) -> dict[str, AgentSection]:
        for name in agents:
            try:
                registry.get(name)
            except MeshflError as err:  # unknown or not built: the message lists what is
                raise ValueError(f"name built agents only ([agents.{name}]: {err})") from None
        return agents

    def plans(self) -> list[AgentPlan]:
        """One :class:`AgentPlan` per configured agent, in file order."""
        return [
            AgentPlan(
                agent=name,
                agent_config=section.config,
                rounds=section.rounds,
                fraction_train=section.fraction_train,
                min_msps=section.min_msps,
                fraction_evaluate=section.fraction_evaluate,
                round_timeout=section.round_timeout,
                min_available_msps=section.min_available_msps,
                connect_timeout=section.connect_timeout,
                seed=section.seed,
                privacy=section.privacy,
                masking=section.masking,
                masking_dropout=section.masking_dropout,
            )
            for name, section in self.agents.items()
        ]

    def warn_about_weak_settings(self) -> None:
        """Say loudly which protections this configuration turns off."""
        if self.coordinator.tls is None:
            warnings.warn(
                "mesh.toml has no [coordinator.tls]: MSPs talk to the coordinator over an "
                "unencrypted channel. Use this only on loopback for tests; see "
                "docs/deployment.md for certificates.",
                UserWarning,
                stacklevel=2,
            )
        if not self.coordinator.node_auth:
            warnings.warn(
                "node_auth = false: any SuperNode that can reach the coordinator may join.",
                UserWarning,
                stacklevel=2,
            )
        for name, section in self.agents.items():
            if section.secure_aggregation == "plaintext":
                warnings.warn(
                    f"agents.{name}.secure_aggregation = 'plaintext': the coordinator can read "
                    "every update of this agent.",
                    UserWarning,
                    stacklevel=2,
                )
            elif not section.masking:
                warnings.warn(
                    f"agents.{name}.masking = false: an MSP colluding with the coordinator "
                    "can read every other MSP's update of this agent (they all hold the CKKS "
                    "secret key).",
                    UserWarning,
                    stacklevel=2,
                )


def preflight(config: MeshConfig) -> None:
    """What ``meshfl-server run`` checks before it starts anything; raises :class:`ConfigError`
    naming the setting: every agent's config, the key and certificate files, the port."""
    for name, plan in zip(config.agents, config.plans(), strict=True):
        try:
            plan.build_agent()
        except MeshflError as err:
            raise ConfigError(f"[agents.{name}] config: {err}") from None
    coordinator = config.coordinator
    from meshfl.secure.ckks import CKKSAggregator

    try:
        CKKSAggregator.from_file(coordinator.public_key)
    except MeshflError as err:
        raise ConfigError(f"[coordinator] public_key = {coordinator.public_key}: {err}") from None
    if coordinator.tls is not None:
        for key in ("ca_cert", "cert", "key"):
            path = Path(getattr(coordinator.tls, key))
            if not path.is_file():
                raise ConfigError(f"[coordinator.tls] {key} = {path}: no such file.")
    _check_port_free(coordinator.address)


def _check_port_free(address: str) -> None:
    """Refuse an address another process listens on: the flwr CLI would reach *that* one."""
    import socket

    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError as err:
            raise ConfigError(
                f"[coordinator] address = {address!r}: the port is in use ({err.strerror}). "
                "Another coordinator may run there; stop it, or choose another port."
            ) from None


def load_mesh_config(path: str | os.PathLike[str]) -> MeshConfig:
    """Read and validate ``mesh.toml``; relative paths are taken from the file's folder."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"No mesh configuration at {path}.") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}.") from None
    try:
        config = MeshConfig.model_validate(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    base = path.resolve().parent
    coordinator = config.coordinator
    resolved: dict[str, Any] = {
        "state_dir": base / coordinator.state_dir,
        "public_key": base / coordinator.public_key,
    }
    if coordinator.tls is not None:
        resolved["tls"] = TLSSection(
            ca_cert=base / coordinator.tls.ca_cert,
            cert=base / coordinator.tls.cert,
            key=base / coordinator.tls.key,
        )
    return config.model_copy(update={"coordinator": coordinator.model_copy(update=resolved)})
