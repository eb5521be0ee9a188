"""What every agent whose global model is one torch module's parameters shares.

The global vector is the module's flat parameters (:mod:`meshfl.models.flat`); a round
trains the module locally for ``config.local_epochs`` epochs, with a plain optimizer or,
under sample-level DP, with DP-SGD (Abadi et al., CCS 2016;
:func:`meshfl.privacy.dpsgd.train_planned`), whose round shape follows from the expected
Poisson batch :attr:`TorchModuleMixin.dp_batch`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sized
from typing import Any

import numpy as np
import torch
from torch import nn

from meshfl.agents.update import Update
from meshfl.models.flat import get_flat
from meshfl.privacy.budget import DPStep
from meshfl.privacy.dpsgd import LossFn, poisson_schedule, train_planned
from meshfl.privacy.events import Mechanism, PrivacyEvent

__all__ = ["TorchModuleMixin"]


class TorchModuleMixin:
    """An agent whose global vector is one torch module's parameters (mix in before ``Agent``).

    The agent builds the module in :meth:`fresh_module`; the config has ``local_epochs``
    and, for :meth:`train_update`, ``learning_rate``, ``batch_size``, ``dp_learning_rate``,
    ``dp_batch_size`` and ``dp_optimizer``.
    """

    config: Any

    @abstractmethod
    def fresh_module(self) -> nn.Module:
        """A freshly built module of this config's shape (parameters not yet loaded)."""

    @property
    def dp_batch(self) -> int:
        """Expected Poisson batch of DP-SGD, in records (by default ``config.dp_batch_size``)."""
        return int(self.config.dp_batch_size)

    def init_vector(self, *, seed: int) -> np.ndarray:
        """The parameters of a fresh module initialised from ``seed`` (torch's global RNG is
        left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return get_flat(self.fresh_module())

    def privacy_shape(self, local: Sized) -> tuple[Mechanism, float, int]:
        """DP-SGD over the records of ``local`` at Poisson rate ``dp_batch / len(local)``."""
        rate, steps_per_epoch = poisson_schedule(len(local), self.dp_batch)
        return "dp-sgd", rate, self.config.local_epochs * steps_per_epoch

    def train_update(
        self,
        module: nn.Module,
        features: np.ndarray,
        targets: np.ndarray,
        *,
        examples: int,
        seed: int,
        dp: DPStep | None,
        loss_fn: LossFn,
        train: Callable[..., float],
        **train_options: Any,
    ) -> Update:
        """Train ``module`` (holding the global vector) on one MSP's records; its update.

        Without ``dp``: ``train(module, features, targets, epochs=, lr=, batch_size=,
        seed=, **train_options)`` with the config's ``local_epochs``, ``learning_rate`` and
        ``batch_size``, which returns the last epoch's loss (reported as ``train_loss``).
        With ``dp``: DP-SGD on ``loss_fn`` with the config's ``dp_*`` fields. The update's
        weight is ``examples`` (the MSP's records), also reported as a metric.
        """
        c = self.config
        event = PrivacyEvent.none()
        if dp is None:
            loss = train(
                module,
                features,
                targets,
                epochs=c.local_epochs,
                lr=c.learning_rate,
                batch_size=c.batch_size,
                seed=seed,
                **train_options,
            )
        else:
            loss, event = train_planned(
                module,
                features,
                targets,
                dp,
                loss_fn=loss_fn,
                epochs=c.local_epochs,
                batch_size=self.dp_batch,
                lr=c.dp_learning_rate,
                seed=seed,
                optimizer=c.dp_optimizer,
            )
        metrics = {"examples": float(examples)}
        if dp is None:  # the training loss is computed on raw data: not private
            metrics["train_loss"] = loss
        return Update(
            vector=get_flat(module),
            weight=float(examples),
            metrics=metrics,
            privacy_event=event,
        )
