"""Seeded text templates: the small engine behind the synthetic text generators.

A template is a ``str.format`` string whose placeholders name *fields*; each field is a
function of the random generator. A placeholder is drawn once per text (so ``{vendor}`` is
the same vendor everywhere in one text), a trailing digit draws an independent value of the
same field (``{vendor2}``), and a drawn value may itself hold placeholders, filled from the
same text's values (cue phrases that mention the text's vendor).

It also holds what several generators share: :data:`MONTHS`, and :func:`replace_some`
(label noise of the security-event and market-text generators).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

__all__ = [
    "MONTHS",
    "Field",
    "TemplateFields",
    "fill",
    "one_of",
    "pick",
    "replace_some",
]

Field = Callable[[np.random.Generator], str]
"""Draws one value of a placeholder."""

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    """One of ``options``, uniformly."""
    return options[int(rng.integers(len(options)))]


def one_of(*options: str) -> Field:
    """A field that draws uniformly from ``options``."""
    return lambda rng: pick(rng, options)


class TemplateFields(dict[str, str]):
    """Placeholder values of one text, each drawn on first use from ``fields``."""

    def __init__(
        self,
        rng: np.random.Generator,
        fields: Mapping[str, Field],
        fixed: Mapping[str, str] | None = None,
    ):
        super().__init__(fixed or {})
        self._rng = rng
        self._fields = fields

    def __missing__(self, key: str) -> str:
        base = key if key in self._fields else key.rstrip("0123456789")
        value = self._fields[base](self._rng)
        if "{" in value:
            value = value.format_map(self)
        self[key] = value
        return value


def fill(
    template: str,
    rng: np.random.Generator,
    fields: Mapping[str, Field],
    fixed: Mapping[str, str] | None = None,
) -> str:
    """``template`` with its placeholders drawn from ``fields`` (``fixed`` ones given)."""
    return template.format_map(TemplateFields(rng, fields, fixed))


def replace_some(
    rng: np.random.Generator, labels: np.ndarray, k: int, fraction: float
) -> np.ndarray:
    """Replace ``round(fraction * n)`` labels, chosen at random, by a different label."""
    labels = labels.copy()
    count = round(fraction * len(labels))
    if count == 0 or k < 2:
        return labels
    rows = rng.choice(len(labels), size=count, replace=False)
    labels[rows] = (labels[rows] + rng.integers(1, k, size=count)) % k
    return labels
