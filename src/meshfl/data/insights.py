"""Seeded synthetic "insights" of the mesh and questions about them, for ``nlp_query``.

The other agents of the mesh emit short sentences about what they found: the top threat at
an MSP this week, a client's churn risk, a revenue forecast, an anomalous host, a compliance
gap, a partner match, a market signal, a ticket assignment. The ``nlp_query`` agent answers
questions over such an insight store. This generator writes rows of

* ``question``: a templated question, with several paraphrases per kind of question;
* ``insights``: the insights available to answer it, one per line: the one that answers the
  question among distractors, half of them of the same topic about other entities (so that
  retrieval has to match the entity, not just the topic);
* ``answer``: a span copied from the answering insight (a name, a level, an amount, a count);
* ``topic``: which agent's insight answers it (the label the partitioner skews across MSPs:
  an MSP that mostly asks about churn sees few revenue questions).

Every value comes from one :class:`numpy.random.Generator` seeded with ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from meshfl.config.validation import Count, Seed, checked
from meshfl.data.schema import Column, Schema

__all__ = ["INSIGHTS_SCHEMA", "INSIGHT_SEPARATOR", "INSIGHT_TOPICS", "mesh_questions"]

INSIGHT_TOPICS: tuple[str, ...] = (
    "threats",
    "churn",
    "revenue",
    "anomalies",
    "compliance",
    "partners",
    "market",
    "dispatch",
)
"""Topics of the insights (which agent wrote them), the label column of the data."""

INSIGHT_SEPARATOR = "\n"
"""How the ``insights`` column separates one insight from the next."""

_MSPS = (
    "Acme MSP",
    "Northwind IT",
    "Contoso Managed",
    "Fabrikam Cloud",
    "Tailspin Tech",
    "Adatum Networks",
    "Wingtip Systems",
    "Litware Services",
    "Proseware IT",
    "Bluefin Support",
    "Redwood Ops",
    "Summit Secure",
)
_CLIENTS = (
    "Foo Corp",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Wonka",
    "Cyberdyne",
    "Tyrell",
    "Pied Piper",
    "Dunder Mifflin",
    "Stark Labs",
    "Wayne Freight",
    "Oceanic Air",
    "Gringotts Bank",
    "Monarch Dental",
    "Bluth Homes",
)
_THREATS = (
    "phishing",
    "ransomware",
    "brute force",
    "malware",
    "data exfiltration",
    "privilege escalation",
    "ddos",
)
_LEVELS = ("low", "medium", "high", "critical")
_QUARTERS = ("Q1", "Q2", "Q3", "Q4")
_HOST_KINDS = ("web", "db", "file", "mail", "vdi", "backup")
_METRICS = ("cpu", "memory", "latency", "disk io", "error rate")
_FRAMEWORKS = ("SOC 2", "ISO 27001", "HIPAA", "GDPR")
_CONTROLS = (
    "access reviews",
    "encryption at rest",
    "incident response",
    "vendor management",
    "backup testing",
    "security training",
    "log retention",
)
_STATUSES = ("met", "partial", "missing")
_PROJECTS = ("cloud migration", "SOC buildout", "Microsoft 365 rollout", "network refresh")
_PRODUCTS = ("EDR", "backup", "SIEM", "managed firewall", "helpdesk", "Microsoft 365")
_SENTIMENTS = ("positive", "neutral", "negative")
_TECHS = ("Alice", "Bob", "Carmen", "Deepak", "Erin", "Farid", "Grace", "Hiro", "Ines", "Jonas")

# One fact: (insight sentence, [(question paraphrases, answer), ...]).
_Fact = tuple[str, list[tuple[tuple[str, ...], str]]]


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _threat_fact(rng: np.random.Generator) -> _Fact:
    msp, threat = _pick(rng, _MSPS), _pick(rng, _THREATS)
    count = str(int(rng.integers(3, 400)))
    return f"Top threat at {msp} this week: {threat} ({count} events)", [
        (
            (
                f"What was the top threat at {msp} this week?",
                f"Which threat hit {msp} most this week?",
                f"What is {msp} seeing most this week?",
                f"Most common threat for {msp} this week?",
            ),
            threat,
        ),
        (
            (
                f"How many {threat} events did {msp} see this week?",
                f"Number of {threat} events at {msp} this week?",
                f"How many events of the top threat at {msp}?",
            ),
            count,
        ),
    ]


def _churn_fact(rng: np.random.Generator) -> _Fact:
    client, level = _pick(rng, _CLIENTS), _pick(rng, _LEVELS)
    msp = _pick(rng, _MSPS)
    return f"Churn risk for client {client} of {msp}: {level}", [
        (
            (
                f"What is the churn risk for {client}?",
                f"How likely is {client} to churn?",
                f"Is {client} at risk of leaving?",
                f"Churn risk of client {client}?",
            ),
            level,
        ),
        (
            (f"Which MSP serves {client}?", f"Who is the MSP of client {client}?"),
            msp,
        ),
    ]


def _revenue_fact(rng: np.random.Generator) -> _Fact:
    msp, quarter = _pick(rng, _MSPS), _pick(rng, _QUARTERS)
    amount = f"${rng.integers(1, 10)}.{rng.integers(0, 10)}M"
    return f"Revenue forecast for {quarter} at {msp}: {amount}", [
        (
            (
                f"What is the {quarter} revenue forecast for {msp}?",
                f"How much revenue will {msp} make in {quarter}?",
                f"Expected {quarter} revenue at {msp}?",
                f"What revenue is forecast for {msp} in {quarter}?",
            ),
            amount,
        ),
    ]


def _anomaly_fact(rng: np.random.Generator) -> _Fact:
    host = f"{_pick(rng, _HOST_KINDS)}-{int(rng.integers(1, 30)):02d}"
    metric, client = _pick(rng, _METRICS), _pick(rng, _CLIENTS)
    value = f"{int(rng.integers(80, 100))}%"
    return f"Anomaly on host {host} at {client}: {metric} at {value}", [
        (
            (
                f"Which metric was anomalous on {host}?",
                f"What went wrong on host {host}?",
                f"What anomaly was flagged on {host}?",
            ),
            metric,
        ),
        (
            (
                f"Which client owns host {host}?",
                f"Whose host is {host}?",
            ),
            client,
        ),
    ]


def _compliance_fact(rng: np.random.Generator) -> _Fact:
    client, framework = _pick(rng, _CLIENTS), _pick(rng, _FRAMEWORKS)
    control, status = _pick(rng, _CONTROLS), _pick(rng, _STATUSES)
    return f"{framework} review of {client}: {control} is {status}", [
        (
            (
                f"What is the status of {control} for {client}?",
                f"Is {control} in place at {client}?",
                f"How does {client} stand on {control}?",
            ),
            status,
        ),
        (
            (
                f"Which framework was {client} reviewed against?",
                f"What compliance framework applies to {client}?",
            ),
            framework,
        ),
    ]


def _partner_fact(rng: np.random.Generator) -> _Fact:
    msp, project = _pick(rng, _MSPS), _pick(rng, _PROJECTS)
    partner = _pick(rng, tuple(m for m in _MSPS if m != msp))
    return f"Best partner for {msp} on {project}: {partner}", [
        (
            (
                f"Who should {msp} partner with on {project}?",
                f"Best partner for {msp} for a {project}?",
                f"Which MSP fits {msp} on the {project}?",
            ),
            partner,
        ),
    ]


def _market_fact(rng: np.random.Generator) -> _Fact:
    product, sentiment = _pick(rng, _PRODUCTS), _pick(rng, _SENTIMENTS)
    price = f"${int(rng.integers(2, 60))}"
    return f"Market sentiment for {product}: {sentiment}, average price {price} per seat", [
        (
            (
                f"What is the market sentiment for {product}?",
                f"How does the market feel about {product}?",
                f"Sentiment on {product} this month?",
            ),
            sentiment,
        ),
        (
            (
                f"What is the average price of {product}?",
                f"How much does {product} cost per seat?",
                f"Average {product} price per seat?",
            ),
            price,
        ),
    ]


def _dispatch_fact(rng: np.random.Generator) -> _Fact:
    ticket = str(int(rng.integers(1000, 9999)))
    tech, client = _pick(rng, _TECHS), _pick(rng, _CLIENTS)
    hours = str(int(rng.integers(1, 48)))
    return f"Ticket {ticket} for {client} assigned to {tech}, ETA {hours} hours", [
        (
            (
                f"Who is handling ticket {ticket}?",
                f"Which technician has ticket {ticket}?",
                f"Who was ticket {ticket} assigned to?",
            ),
            tech,
        ),
        (
            (
                f"When will ticket {ticket} be resolved?",
                f"What is the ETA in hours for ticket {ticket}?",
            ),
            hours,
        ),
    ]


_GENERATORS: dict[str, Callable[[np.random.Generator], _Fact]] = {
    "threats": _threat_fact,
    "churn": _churn_fact,
    "revenue": _revenue_fact,
    "anomalies": _anomaly_fact,
    "compliance": _compliance_fact,
    "partners": _partner_fact,
    "market": _market_fact,
    "dispatch": _dispatch_fact,
}


@checked
def mesh_questions(n: Count, *, seed: Seed = 0, insights_per_row: Count = 5) -> pd.DataFrame:
    """Synthetic questions about the mesh's insights, with the insights and the answer.

    Parameters
    ----------
    n : int
        Number of rows (questions), at least 1.
    seed : int, default 0
        Seed of the random generator; the same arguments give the same frame.
    insights_per_row : int, default 5
        Insights offered with each question: the one that answers it and
        ``insights_per_row - 1`` distractors (half of the same topic), in random order.

    Returns
    -------
    pandas.DataFrame
        Columns ``question``, ``insights`` (one insight per line), ``answer`` (a span of
        the answering insight) and ``topic`` (one of :data:`INSIGHT_TOPICS`). Matches
        :data:`INSIGHTS_SCHEMA`.

    Examples
    --------
    >>> frame = mesh_questions(3, seed=1)
    >>> list(frame.columns)
    ['question', 'insights', 'answer', 'topic']
    >>> all(a in ins for a, ins in zip(frame["answer"], frame["insights"]))
    True
    """
    k = insights_per_row
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        topic = _pick(rng, INSIGHT_TOPICS)
        insight, qas = _GENERATORS[topic](rng)
        paraphrases, answer = qas[int(rng.integers(len(qas)))]
        question = _pick(rng, paraphrases)
        store = [insight]
        while len(store) < k:
            other = topic if rng.random() < 0.5 else _pick(rng, INSIGHT_TOPICS)
            distractor, others = _GENERATORS[other](rng)
            # a distractor must not answer the question too (same entity, same slot)
            if distractor not in store and not any(question in p for p, _ in others):
                store.append(distractor)
        order = rng.permutation(k)
        rows.append(
            {
                "question": question,
                "insights": INSIGHT_SEPARATOR.join(store[i] for i in order),
                "answer": answer,
                "topic": topic,
            }
        )
    return pd.DataFrame(rows, columns=["question", "insights", "answer", "topic"])


INSIGHTS_SCHEMA = Schema(
    "nlp_query data",
    (
        Column("question", "text", description="A question about the mesh's insights."),
        Column(
            "insights",
            "text",
            description="The insights to answer from, one per line (the MSP's insight store).",
        ),
        Column("answer", "text", description="The reference answer (for training and scoring)."),
        Column(
            "topic",
            "category",
            required=False,
            description="Which agent's insight answers the question, e.g. 'churn'.",
        ),
    ),
)
"""Schema of the nlp_query agent's data; :func:`mesh_questions` produces it."""
