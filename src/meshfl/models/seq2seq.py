"""Seq2seq answer generators (T5) with a small trainable subset: LoRA adapters, last layers.

The ``nlp_query`` agent fine-tunes a T5 encoder-decoder (Raffel et al., JMLR 2020) on
"question: ... context: ..." → answer, federated. Only a small subset of the weights is
trained and sent; the rest is a frozen base that every MSP must hold identically:

* ``"tiny"`` (offline default): a small T5 built from a ``T5Config`` and initialised from a
  **public** seed (``base_seed``), so every MSP derives the very same frozen base without a
  download. Its vocabulary is the WordPiece vocabulary bundled with MiniLM (T5's
  sentencepiece model is not available offline, and a word list of our own would leave every
  client or host name out of vocabulary, while answers are copied from the insights).
* any other spec (e.g. ``"google/flan-t5-small"`` or a local directory): the pretrained model
  and its own tokenizer through ``transformers``, from the local cache unless downloading is
  allowed.

Trainable subset: LoRA adapters (Hu et al., "LoRA: Low-Rank Adaptation of Large Language
Models", ICLR 2022) of rank ``r`` on the query and value projections of every attention
(self and cross) of the blocks that are not trained in full, written here as two bias-free
``nn.Linear`` layers per projection with ``B`` initialised to zero, plus every linear weight
of the last ``n`` blocks of the encoder and of the decoder. A random-init base is not a
feature extractor, so the tiny model needs trained blocks to learn anything; a pretrained
one learns with LoRA alone.
All trainable parameters are ``nn.Linear`` weights, which lets meshfl's fast DP-SGD
per-sample gradients (:mod:`meshfl.privacy.dpsgd`) train the model without a fallback.

Answers are extractive: :class:`Seq2SeqLM` scores only each record's own tokens (see there).
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meshfl.config.errors import ConfigError
from meshfl.models.threads import threads_for

__all__ = [
    "BUNDLED_GENERATORS",
    "IGNORE_INDEX",
    "LoRALinear",
    "Seq2Seq",
    "Seq2SeqLM",
    "TinyT5Shape",
    "add_lora",
    "build_seq2seq",
    "encode_pairs",
    "generate",
    "load_seq2seq",
    "sequence_loss",
    "set_trainable",
]

BUNDLED_GENERATORS = ("tiny",)

IGNORE_INDEX = -100
"""Label of padding positions in the decoder targets (ignored by the loss)."""


@dataclass(frozen=True)
class TinyT5Shape:
    """Shape of the offline tiny T5 (random init from a public seed)."""

    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 128


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) · B(A(x))`` with ``base`` frozen and ``B`` starting at zero.

    Parameters
    ----------
    base : nn.Linear
        The frozen projection being adapted.
    rank : int
        Rank ``r`` of the update ``B A``.
    alpha : float
        Scale numerator: the update is multiplied by ``alpha / rank``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.lora_a = nn.Linear(base.in_features, rank, bias=False)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_a.weight, a=5**0.5)
        nn.init.zeros_(self.lora_b.weight)
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x) + self.lora_b(self.lora_a(x)) * self.scale
        return out


def add_lora(
    model: nn.Module,
    *,
    rank: int,
    alpha: float,
    skip_last_layers: int = 0,
    targets: Sequence[str] = ("q", "v"),
) -> int:
    """Wrap the ``targets`` projections of the T5's attentions in :class:`LoRALinear`.

    The last ``skip_last_layers`` blocks of the encoder and of the decoder are left alone
    (they are trained in full, where an adapter would only add parameters). Returns the
    number of projections wrapped (0 when ``rank`` is 0).
    """
    if rank == 0:
        return 0
    from transformers.models.t5.modeling_t5 import T5Attention

    t5: Any = model
    wrapped = 0
    for stack in (t5.encoder, t5.decoder):
        blocks = list(stack.block)
        for block in blocks[: len(blocks) - skip_last_layers] if skip_last_layers else blocks:
            for module in block.modules():
                if isinstance(module, T5Attention):
                    for name in targets:
                        layer = getattr(module, name)
                        if isinstance(layer, nn.Linear):
                            setattr(module, name, LoRALinear(layer, rank, alpha))
                            wrapped += 1
    return wrapped


def set_trainable(model: nn.Module, *, last_layers: int) -> None:
    """Freeze ``model`` except LoRA adapters and the linear weights of the last blocks.

    ``last_layers`` counts blocks from the top of the encoder and of the decoder each;
    layer norms, embeddings and the relative position bias stay frozen.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, LoRALinear):
            module.lora_a.weight.requires_grad_(True)
            module.lora_b.weight.requires_grad_(True)
    t5: Any = model
    if last_layers > 0:
        for stack in (t5.encoder, t5.decoder):
            for block in list(stack.block)[-last_layers:]:
                for sub in block.modules():
                    if type(sub) is nn.Linear:
                        sub.weight.requires_grad_(True)


class Seq2SeqLM(nn.Module):
    """A T5 as one function of packed token ids, scoring each record's candidate tokens.

    ``packed`` is ``(B, S + T + C)`` floats: source ids (``S`` columns), decoder input ids
    (``T``) and the record's candidate output tokens (``C``, ``-1`` for none). The result
    is ``(B, T, C)`` logits: the T5 LM head restricted to the candidates. meshfl's DP-SGD
    hands a model one float feature matrix per batch; ids travel in it exactly (< 2**24).

    Restricting the output to the record's own tokens (its question and insights, plus the
    end token) makes answers extractive, as the task's are, and skips the full-vocabulary
    softmax, which dominates the cost of a small model (a 30,522-word vocabulary against a
    64-wide decoder). Each record's candidates depend on that record alone, so the loss of
    one record never involves another (as DP-SGD's per-sample clipping requires).
    """

    def __init__(self, t5: nn.Module, *, source_length: int, target_length: int, pad_id: int):
        super().__init__()
        self.t5 = t5
        self.source_length = source_length
        self.target_length = target_length
        self.pad_id = pad_id
        config: Any = t5.config
        self.output_scale = (
            float(config.d_model) ** -0.5
            if getattr(config, "scale_decoder_outputs", config.tie_word_embeddings)
            else 1.0
        )

    def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states and attention mask of source ids ``(B, S)``."""
        t5: Any = self.t5
        mask = (source != self.pad_id).long()
        states: torch.Tensor = t5.encoder(input_ids=source, attention_mask=mask).last_hidden_state
        return states, mask

    def decode(
        self,
        states: torch.Tensor,
        mask: torch.Tensor,
        target_in: torch.Tensor,
        candidates: torch.Tensor,
    ) -> torch.Tensor:
        """Candidate logits ``(B, T, C)`` of decoder inputs ``(B, T)`` given encoder states."""
        t5: Any = self.t5
        hidden = t5.decoder(
            input_ids=target_in,
            encoder_hidden_states=states,
            encoder_attention_mask=mask,
            use_cache=False,
        ).last_hidden_state
        weight = t5.lm_head.weight[candidates.clamp(min=0)]  # (B, C, d)
        logits = torch.bmm(hidden * self.output_scale, weight.transpose(1, 2))
        return logits.masked_fill(candidates[:, None, :] < 0, float("-inf"))

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        ids = packed.long()
        s, t = self.source_length, self.target_length
        states, mask = self.encode(ids[:, :s])
        return self.decode(states, mask, ids[:, s : s + t], ids[:, s + t :])


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of each record's mean token cross-entropy (no term mixes records).

    ``labels`` index the candidates (``(B, T)``; :data:`IGNORE_INDEX` for padding).
    """
    token = nn.functional.cross_entropy(
        logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    mask = (labels != IGNORE_INDEX).to(token.dtype)
    per_record = (token * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return per_record.mean()


@dataclass(frozen=True)
class Seq2Seq:
    """A loaded generator: the T5 (frozen base, adapters added) and its tokenizer."""

    model: nn.Module
    tokenizer: Any
    pad_id: int
    eos_id: int
    start_id: int


def encode_pairs(
    seq: Seq2Seq,
    sources: Sequence[str],
    targets: Sequence[str] | None,
    *,
    source_length: int,
    target_length: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Token ids of (source, target) pairs as the packed features of :class:`Seq2SeqLM`.

    The candidates of a record are the end token, then its distinct source tokens and (for
    training) its target tokens; a target token that the source lacks (its insight was not
    retrieved) can be learnt but never generated.

    Returns
    -------
    features : np.ndarray
        ``(n, S + T + C)`` float32, ``C = S + T``: source ids, decoder input ids (the target
        shifted right behind the start token; only the start token without ``targets``),
        candidate ids (``-1`` padded).
    labels : np.ndarray or None
        ``(n, T)`` int64 candidate index of each target token, ending with the end token,
        :data:`IGNORE_INDEX` after.
    """
    tok = seq.tokenizer
    s, t = source_length, target_length
    src = tok(list(sources), add_special_tokens=False, truncation=True, max_length=s - 1)
    tgt_ids: list[list[int]] | None = None
    if targets is not None:
        tgt_ids = tok(list(targets), add_special_tokens=False, truncation=True, max_length=t - 1)[
            "input_ids"
        ]
    features = np.full((len(sources), s + t + s + t), seq.pad_id, dtype=np.float32)
    features[:, s + t :] = -1
    features[:, s] = seq.start_id
    labels = None if tgt_ids is None else np.full((len(sources), t), IGNORE_INDEX, np.int64)
    for i, ids in enumerate(src["input_ids"]):
        row = [*ids, seq.eos_id]
        features[i, : len(row)] = row
        answer = [] if tgt_ids is None else [*tgt_ids[i], seq.eos_id]
        candidates = list(dict.fromkeys([seq.eos_id, *ids, *answer]))
        features[i, s + t : s + t + len(candidates)] = candidates
        if labels is not None:
            index = {c: j for j, c in enumerate(candidates)}
            labels[i, : len(answer)] = [index[c] for c in answer]
            features[i, s + 1 : s + len(answer)] = answer[:-1]
    return features, labels


@torch.no_grad()
def generate(
    model: Seq2SeqLM,
    features: np.ndarray,
    *,
    max_new_tokens: int,
    start_id: int,
    eos_id: int,
    batch_size: int = 64,
) -> list[list[int]]:
    """Greedy decoding over each record's candidates: the answer token ids of each row.

    Pass features from :func:`encode_pairs` without targets, so that only the source's
    tokens (and the end token) can be generated.
    """
    s, t = model.source_length, model.target_length
    was_training = model.training
    model.eval()
    out: list[list[int]] = []
    try:
        for first in range(0, len(features), batch_size):
            ids = torch.as_tensor(features[first : first + batch_size]).long()
            candidates = ids[:, s + t :]
            with threads_for(len(ids)):
                decoded = _greedy(model, ids, candidates, max_new_tokens, start_id, eos_id)
            for row in decoded[:, 1:].tolist():
                answer = []
                for token in row:
                    if token == eos_id:
                        break
                    answer.append(token)
                out.append(answer)
    finally:
        model.train(was_training)
    return out


def _greedy(
    model: Seq2SeqLM,
    ids: torch.Tensor,
    candidates: torch.Tensor,
    max_new_tokens: int,
    start_id: int,
    eos_id: int,
) -> torch.Tensor:
    """Greedy decoding of one batch: the start token, then the chosen candidates."""
    states, mask = model.encode(ids[:, : model.source_length])
    decoded = torch.full((len(ids), 1), start_id, dtype=torch.long)
    done = torch.zeros(len(ids), dtype=torch.bool)
    for _ in range(max_new_tokens):
        logits = model.decode(states, mask, decoded, candidates)[:, -1]
        nxt = candidates.gather(1, logits.argmax(-1, keepdim=True)).squeeze(1)
        nxt[done] = eos_id
        decoded = torch.cat([decoded, nxt[:, None]], dim=1)
        done |= nxt == eos_id
        if bool(done.all()):
            break
    return decoded


# --------------------------------------------------------------------------- loading


def build_seq2seq(
    spec: str,
    *,
    base_seed: int,
    shape: TinyT5Shape,
    lora_rank: int,
    lora_alpha: float,
    last_layers: int,
    seed: int = 0,
    allow_download: bool = False,
) -> Seq2Seq:
    """A fresh copy of the generator ``spec`` with adapters added and the subset trainable.

    The frozen base is loaded once per process (:func:`load_seq2seq`) and deep-copied, so
    training one copy never touches another.
    """
    base = load_seq2seq(spec, base_seed=base_seed, shape=shape, allow_download=allow_download)
    model = copy.deepcopy(base.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the adapters' initial A matrices
        add_lora(model, rank=lora_rank, alpha=lora_alpha, skip_last_layers=last_layers)
    set_trainable(model, last_layers=last_layers)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(
            "The 'lora_rank' and 'train_last_layers' parameters of nlp_query leave nothing to "
            "train: set lora_rank >= 1 or train_last_layers >= 1."
        )
    return Seq2Seq(model, base.tokenizer, base.pad_id, base.eos_id, base.start_id)


@functools.lru_cache(maxsize=4)
def load_seq2seq(
    spec: str, *, base_seed: int, shape: TinyT5Shape, allow_download: bool = False
) -> Seq2Seq:
    """Load (once per process) the frozen base named by ``spec``; do not modify it.

    Parameters
    ----------
    spec : str
        ``"tiny"`` (a ``T5Config`` model on MiniLM's bundled WordPiece vocabulary, random
        init from ``base_seed``), a local directory, or a Hugging Face name such as
        ``"google/flan-t5-small"``.
    base_seed : int
        Public seed of the tiny base's weights (the same at every MSP).
    shape : TinyT5Shape
        Sizes of the tiny base (ignored for pretrained models).
    allow_download : bool
        Let ``transformers`` fetch a named model from the hub.
    """
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration
    from transformers.utils import logging as hf_logging

    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"The 'generator' parameter must be a non-empty string. Got {spec!r}.")
    if spec == "tiny":
        from meshfl.models.text_encoder import _minilm_path

        tokenizer = AutoTokenizer.from_pretrained(_minilm_path())
        pad = int(tokenizer.pad_token_id)
        eos = int(tokenizer.sep_token_id)
        settings: dict[str, Any] = dict(
            vocab_size=len(tokenizer),
            d_model=shape.d_model,
            d_kv=shape.d_model // shape.num_heads,
            d_ff=shape.d_ff,
            num_layers=shape.num_layers,
            num_decoder_layers=shape.num_layers,
            num_heads=shape.num_heads,
            dropout_rate=0.0,
            pad_token_id=pad,
            eos_token_id=eos,
            decoder_start_token_id=pad,
            tie_word_embeddings=True,
        )
        config = T5Config(**settings)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(base_seed)
            model = T5ForConditionalGeneration(config)
        start = pad
    else:
        local = Path(os.path.expanduser(spec))
        offline = not allow_download and not local.is_dir()
        was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(spec, local_files_only=offline)
            model = T5ForConditionalGeneration.from_pretrained(spec, local_files_only=offline)
        except (OSError, ValueError) as err:
            from meshfl.models.text_encoder import _load_error

            raise _load_error(
                "seq2seq generator",
                spec,
                err,
                allow_download=allow_download,
                instead="'tiny' (offline)",
            ) from err
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()
        loaded: Any = model.config
        pad = int(loaded.pad_token_id)
        eos = int(loaded.eos_token_id)
        start = int(loaded.decoder_start_token_id)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Seq2Seq(model, tokenizer, pad, eos, start)
