"""Agent ``resource_allocation``: technician dispatch by a federated policy-gradient policy.

Each MSP replays its own dispatch history in a simulated environment
(:mod:`meshfl.models.dispatch_env`): its days of tickets, its roster with skills, shifts and
sites. A small policy network (:mod:`meshfl.models.policy`) scores (ticket, technician) pairs
and is trained locally by REINFORCE; MSPs average the policy's weights (FedAvg; McMahan et
al., AISTATS 2017). Under sample-level DP the policy loss is trained with DP-SGD (Abadi et
al., CCS 2016) whose *record is one episode* (one day of one MSP's tickets and roster): each
step Poisson-samples days, rolls them out with the current policy, clips each day's gradient
and adds Gaussian noise: :func:`meshfl.privacy.dpsgd.train_planned`, with a ``batch_fn`` that
rolls out the sampled days.

The headline metric is the SLA hit rate on held-out (later) days, reported with the paid
technician hours per ticket, beside the same numbers for the least-loaded-skilled greedy
rule and a random dispatcher on the same days.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator

from meshfl.agents.base import Agent, GlobalModel, PartitionRequest
from meshfl.agents.registry import register
from meshfl.agents.torch_module import TorchModuleMixin
from meshfl.agents.update import Update
from meshfl.config.base import MeshflConfig
from meshfl.config.errors import DataSchemaError
from meshfl.data.dispatch_data import (
    DISPATCH_SCHEMA,
    DISPATCH_SKILLS,
    dispatch_history,
    dispatch_partitions,
    parse_roster,
)
from meshfl.models.dispatch_env import (
    EnvParams,
    Episode,
    EpisodeBatch,
    Outcome,
    earliest_completion_choice,
    greedy_choice,
    random_choice,
    run,
)
from meshfl.models.flat import get_flat, set_flat
from meshfl.models.policy import (
    DispatchPolicy,
    episode_records,
    greedy_policy_choice,
    reinforce_loss,
    sampling_choice,
)
from meshfl.privacy.budget import DPStep
from meshfl.privacy.dpsgd import train_planned
from meshfl.privacy.events import PrivacyEvent

__all__ = ["DispatchData", "ResourceAllocation", "ResourceAllocationConfig", "DispatchModel"]


class ResourceAllocationConfig(MeshflConfig):
    """Configuration of the ``resource_allocation`` agent."""

    skills: tuple[str, ...] = Field(DISPATCH_SKILLS, min_length=1, description="Known skills.")
    hidden: int = Field(32, ge=1, le=1024, description="Hidden width of the policy network.")
    rollouts: int = Field(4, ge=2, le=64, description="Rollouts per episode (LOO baseline).")
    local_epochs: int = Field(2, ge=1, le=1000, description="Local passes over the episodes.")
    batch_episodes: int = Field(4, ge=1, description="Episodes per policy-gradient step.")
    learning_rate: float = Field(0.03, gt=0, le=10, description="Adam learning rate.")
    dp_batch_episodes: int = Field(
        8, ge=1, description="Expected Poisson batch of episodes under DP-SGD."
    )
    dp_optimizer: Literal["sgd", "adam"] = Field(
        "sgd", description="Optimizer under DP-SGD (Adam rescales pure-noise coordinates up)."
    )
    dp_learning_rate: float = Field(0.02, gt=0, le=100, description="Learning rate under DP.")
    dp_loss_scale: float = Field(
        5.0,
        gt=0,
        le=1000,
        description="Factor on the policy loss under DP: one episode's REINFORCE gradient has "
        "norm ~0.1-0.3, so scaling it towards the clipping norm raises signal over noise.",
    )
    discount: float = Field(0.9, ge=0, le=1, description="Discount per ticket of the return.")
    hours_cost: float = Field(
        0.05, ge=0, description="Reward lost per paid technician hour (1 per SLA hit)."
    )
    travel_hours: float = Field(0.75, ge=0, description="Hours to travel between sites.")
    unskilled_factor: float = Field(
        2.5, ge=1, description="How much longer a technician without the skill takes."
    )
    overtime_rate: float = Field(1.5, ge=1, description="Pay factor of hours past a shift.")

    @field_validator("skills")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("hold distinct skills")
        return value


@dataclass(frozen=True)
class DispatchData:
    """Prepared local data: one :class:`Episode` per day, and the number of tickets."""

    episodes: tuple[Episode, ...]
    tickets: int

    def __len__(self) -> int:
        return len(self.episodes)


def _rate(totals: dict[str, float]) -> tuple[float, float, float]:
    n = max(totals["tickets"], 1.0)
    return totals["hits"] / n, totals["hours"] / n, totals["overtime"] / n


@register
class ResourceAllocation(TorchModuleMixin, Agent[DispatchData]):
    """Assign tickets to technicians with a policy learned across MSPs' dispatch histories."""

    name = "resource_allocation"
    summary = "technician and ticket assignment"
    config_class = ResourceAllocationConfig
    fast_config = {"hidden": 8, "rollouts": 2, "local_epochs": 1}  # noqa: RUF012
    schema = DISPATCH_SCHEMA
    metric = "sla_hit_rate"
    label_column = "skill"
    config: ResourceAllocationConfig

    @property
    def params(self) -> EnvParams:
        """The environment's physics from the config."""
        c = self.config
        return EnvParams(c.travel_hours, c.unskilled_factor, c.overtime_rate)

    def policy(self) -> DispatchPolicy:
        """A freshly built policy of this config's shape (parameters not yet loaded)."""
        return DispatchPolicy(self.config.hidden)

    def fresh_module(self) -> DispatchPolicy:
        return self.policy()

    # -- data ------------------------------------------------------------------------
    def synthetic_data(self, n: int, *, seed: int) -> pd.DataFrame:
        return dispatch_history(n, seed=seed)

    def _partition_synthetic(self, request: PartitionRequest) -> list[pd.DataFrame]:
        """Each MSP its own environment: roster, sites, ticket mix and load (see dispatch_data)."""
        return dispatch_partitions(request.num_msps, **request.keywords())

    def split(
        self, frame: pd.DataFrame, *, test_fraction: float, seed: int
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Hold out the *last* days (episodes in order of first appearance), never split a day."""
        keys = list(dict.fromkeys(zip(frame["episode"], frame["roster"], strict=True)))
        if len(keys) < 2:
            raise DataSchemaError(
                "resource_allocation holds out whole days (episodes); this MSP's data has "
                f"{len(keys)} distinct 'episode'. Give it at least two days of tickets."
            )
        n_test = min(len(keys) - 1, max(1, round(test_fraction * len(keys))))
        test_keys = set(keys[-n_test:])
        is_test = np.array(
            [k in test_keys for k in zip(frame["episode"], frame["roster"], strict=True)]
        )
        return (
            frame[~is_test].reset_index(drop=True),
            frame[is_test].reset_index(drop=True),
        )

    def prepare(self, frame: pd.DataFrame) -> DispatchData:
        frame = self.load_data(frame)
        index = {s: i for i, s in enumerate(self.config.skills)}
        skill = frame["skill"].map(index)
        if skill.isna().any():
            row = int(np.flatnonzero(skill.isna().to_numpy())[0])
            raise DataSchemaError(
                "Column 'skill' of the resource_allocation data must hold one of "
                f"{', '.join(self.config.skills)} (the config's 'skills'); row {row} holds "
                f"{frame['skill'].iloc[row]!r}."
            )
        bad = ~frame["priority"].between(1, 4)
        for column, ok in (
            ("priority", ~bad),
            ("sla_hours", frame["sla_hours"] > 0),
            ("effort_hours", frame["effort_hours"] >= 0),
            ("site", frame["site"] >= 0),
        ):
            if not ok.all():
                row = int(np.flatnonzero(~ok.to_numpy())[0])
                rule = {
                    "priority": "an integer from 1 (most urgent) to 4",
                    "sla_hours": "a number of hours > 0",
                    "effort_hours": "a number of hours >= 0",
                    "site": "a site number >= 0",
                }[column]
                raise DataSchemaError(
                    f"Column {column!r} of the resource_allocation data must hold {rule}; "
                    f"row {row} holds {frame[column].iloc[row]!r}."
                )
        frame = frame.assign(_skill=skill.astype(np.int64))
        episodes = []
        for (_, roster), day in frame.groupby(["episode", "roster"], sort=False):
            episodes.append(self._episode(day, str(roster)))
        return DispatchData(tuple(episodes), len(frame))

    def _episode(self, day: pd.DataFrame, roster: str) -> Episode:
        techs = parse_roster(roster)
        unknown = sorted({s for t in techs for s in t.skills} - set(self.config.skills))
        if unknown:
            raise DataSchemaError(
                f"Column 'roster' names skills {', '.join(map(repr, unknown))} that are not "
                f"among the config's 'skills' ({', '.join(self.config.skills)}). Add them to "
                "'skills' or correct the roster."
            )
        skills = np.array([[s in t.skills for s in self.config.skills] for t in techs], dtype=bool)
        return Episode(
            arrival=day["arrival_hour"].to_numpy(np.float64),
            skill=day["_skill"].to_numpy(np.int64),
            priority=day["priority"].to_numpy(np.int64),
            sla=day["sla_hours"].to_numpy(np.float64),
            effort=day["effort_hours"].to_numpy(np.float64),
            site=day["site"].to_numpy(np.int64),
            tech_skills=skills,
            shift_start=np.array([t.shift_start for t in techs]),
            shift_end=np.array([t.shift_end for t in techs]),
            tech_site=np.array([t.site for t in techs], dtype=np.int64),
        )

    # -- federated learning ----------------------------------------------------------
    @property
    def dp_batch(self) -> int:
        # DP-SGD over episodes, Poisson rate q = batch / episodes, round(1 / q) steps per epoch.
        return self.config.dp_batch_episodes

    def _records(
        self, policy: DispatchPolicy, episodes: Sequence[Episode], rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, Outcome]:
        k = self.config.rollouts
        batch = EpisodeBatch.stack(episodes, repeats=k)
        outcome = run(batch, sampling_choice(policy, rng), self.params, record=True)
        x, y = episode_records(
            outcome, rollouts=k, discount=self.config.discount, hours_cost=self.config.hours_cost
        )
        return torch.from_numpy(x), torch.from_numpy(y), outcome

    def local_update(
        self,
        vector: np.ndarray,
        local: DispatchData,
        *,
        server_round: int,
        seed: int,
        dp: DPStep | None = None,
    ) -> Update:
        if len(local) == 0:
            raise DataSchemaError("resource_allocation needs at least one day of tickets.")
        policy = self.policy()
        set_flat(policy, vector)
        rng = np.random.default_rng([seed, server_round])
        hits = tickets = 0.0
        event = PrivacyEvent.none()
        if dp is None:
            opt = torch.optim.Adam(policy.parameters(), lr=self.config.learning_rate)
            n, b = len(local), min(self.config.batch_episodes, len(local))
            for _ in range(self.config.local_epochs):
                order = rng.permutation(n)
                for lo in range(0, n, b):
                    chosen = [local.episodes[i] for i in order[lo : lo + b]]
                    x, y, outcome = self._records(policy, chosen, rng)
                    opt.zero_grad()
                    reinforce_loss(policy(x), y).backward()
                    opt.step()
                    totals = outcome.totals()
                    hits, tickets = hits + totals["hits"], tickets + totals["tickets"]
        else:
            event = self._train_private(policy, local, dp, seed=seed, rng=rng)
        metrics = {"examples": float(local.tickets), "episodes": float(len(local))}
        if dp is None and tickets:  # computed on raw data: not private, so only without DP
            metrics["train_sla_hit_rate"] = hits / tickets
        return Update(
            vector=get_flat(policy),
            weight=float(local.tickets),
            metrics=metrics,
            privacy_event=event,
        )

    def _train_private(
        self,
        policy: DispatchPolicy,
        local: DispatchData,
        dp: DPStep,
        *,
        seed: int,
        rng: np.random.Generator,
    ) -> PrivacyEvent:
        """DP-SGD on the policy loss, one day (episode) per record; returns the plan's event.

        :func:`meshfl.privacy.dpsgd.train_planned` samples the days, clips each day's
        gradient and adds the noise, from OS entropy (:mod:`meshfl.privacy.noise`), never
        from the seed, and checks that it ran the planned steps at the planned rate. Here we
        only roll the sampled days out: ``rng`` (seeded) drives the rollouts' actions, and
        every day's gradient is clipped whatever its rollouts, so they are no part of the
        mechanism and knowing them says nothing about the noise.
        """
        scale = self.config.dp_loss_scale

        def scaled_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return scale * reinforce_loss(scores, targets)

        def days(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x, y, _ = self._records(policy, [local.episodes[i] for i in idx.tolist()], rng)
            return x, y

        _, event = train_planned(
            policy,
            local.episodes,
            None,
            dp,
            loss_fn=scaled_loss,
            epochs=self.config.local_epochs,
            batch_size=self.dp_batch,
            lr=self.config.dp_learning_rate,
            seed=seed,
            optimizer=self.config.dp_optimizer,
            batch_fn=days,
        )
        return event

    def evaluate(self, vector: np.ndarray, local: DispatchData) -> dict[str, float]:
        policy = self.policy()
        set_flat(policy, vector)
        batch = EpisodeBatch.stack(local.episodes)
        results = {
            "": run(batch, greedy_policy_choice(policy), self.params).totals(),
            "greedy_": run(batch, greedy_choice, self.params).totals(),
            "ect_": run(batch, earliest_completion_choice, self.params).totals(),
            "random_": run(batch, random_choice(np.random.default_rng(0)), self.params).totals(),
        }
        metrics: dict[str, float] = {}
        for prefix, totals in results.items():
            hit, hours, overtime = _rate(totals)
            metrics[f"{prefix}sla_hit_rate"] = hit
            metrics[f"{prefix}tech_hours_per_ticket"] = hours
            metrics[f"{prefix}overtime_per_ticket"] = overtime
        # the trivial baseline: the greedy dispatcher on the same held-out days
        metrics["baseline_sla_hit_rate"] = metrics["greedy_sla_hit_rate"]
        metrics["examples"] = float(local.tickets)
        return metrics

    def model(self, vector: np.ndarray) -> DispatchModel:
        return DispatchModel(self, vector)


class DispatchModel(GlobalModel):
    """The global ``resource_allocation`` policy: who should take each ticket of a day."""

    agent: ResourceAllocation

    def predict(self, data: pd.DataFrame) -> np.ndarray:
        """Index (in the day's roster string) of the technician assigned to each ticket.

        ``data`` holds rows of the agent's schema; tickets are dispatched day by day in
        arrival order, each day's earlier assignments shaping the later ones. The result is
        aligned with ``data``'s rows.
        """
        frame = self.agent.load_data(data)
        policy = self.agent.policy()
        set_flat(policy, self.vector)
        out = np.zeros(len(frame), dtype=np.int64)
        local = self.agent.prepare(frame)
        groups = list(frame.groupby(["episode", "roster"], sort=False).indices.values())
        for episode, rows in zip(local.episodes, groups, strict=True):
            outcome = run(
                EpisodeBatch.stack([episode]), greedy_policy_choice(policy), self.agent.params
            )
            order = np.argsort(frame["arrival_hour"].to_numpy()[rows], kind="stable")
            out[rows[order]] = outcome.actions[0, : len(rows)]
        return out
