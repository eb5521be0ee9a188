"""What every agent built on a frozen sentence encoder shares: loading it, and its cache."""

from __future__ import annotations

import os
from typing import Any

from meshfl.models.text_encoder import TextEncoder, load_text_encoder

__all__ = ["FrozenEncoderMixin"]


class FrozenEncoderMixin:
    """An agent whose features are a frozen encoder's embeddings (mix in before ``Agent``).

    The config names the encoder (``encoder``, ``allow_download``) and its token limit
    (:attr:`encoder_max_length`, by default the config's ``max_length``).
    """

    config: Any

    @property
    def encoder_max_length(self) -> int:
        """Tokens kept per text."""
        return int(self.config.max_length)

    @property
    def encoder(self) -> TextEncoder:
        """The frozen encoder (loaded once per process and spec)."""
        return load_text_encoder(
            self.config.encoder,
            max_length=self.encoder_max_length,
            allow_download=self.config.allow_download,
        )

    def use_cache_dir(self, directory: str | os.PathLike[str]) -> None:
        """Keep the embeddings under ``directory`` (a deployed MSP's state)."""
        self.encoder.persist_to(directory)
