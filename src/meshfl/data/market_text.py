"""Seeded synthetic market text for MSPs: vendor pricing, services, lifecycle, deals, outages.

What an MSP's market-intelligence feed collects: channel-press headlines, distributor
bulletins, vendor partner notices, analyst notes and community posts about the vendors an
MSP resells (RMM/PSA, EDR, backup, Microsoft 365, firewalls, distributors). Each text carries
a *signal* (what happened) and a *sentiment* (how it lands for an MSP: a price rise is
usually bad news, a cheaper bundle good news). The task is learnable but not trivial:
licensing changes read like price rises, acquisitions often come with price or lifecycle
news, a third of texts have no explicit tone and the sentiment then follows the signal only
loosely, and labels carry noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from meshfl.config.validation import Count, Seed, Unit, checked
from meshfl.data.schema import Column, Schema
from meshfl.data.templates import (
    MONTHS,
    Field,
    fill,
    one_of,
    pick,
    replace_some,
)

__all__ = ["MARKET_SIGNALS", "MARKET_TEXT_SCHEMA", "SENTIMENTS", "market_text"]

MARKET_SIGNALS: tuple[str, ...] = (
    "price_increase",
    "price_decrease",
    "new_service",
    "end_of_life",
    "acquisition",
    "outage",
    "licensing_change",
)
"""The market signals of :func:`market_text`."""

SENTIMENTS: tuple[str, ...] = ("negative", "neutral", "positive")
"""Sentiment of a text for an MSP, from bad to good news."""

_SIGNAL_SHARES = np.array([0.20, 0.10, 0.22, 0.10, 0.12, 0.12, 0.14])

# P(sentiment | signal) for an MSP reader: correlated, never determined.
_SENTIMENT_GIVEN_SIGNAL = np.array(
    [
        [0.70, 0.25, 0.05],  # price_increase
        [0.05, 0.30, 0.65],  # price_decrease
        [0.10, 0.40, 0.50],  # new_service
        [0.50, 0.45, 0.05],  # end_of_life
        [0.35, 0.45, 0.20],  # acquisition
        [0.80, 0.18, 0.02],  # outage
        [0.45, 0.45, 0.10],  # licensing_change
    ]
)


_FIELDS: dict[str, Field] = {
    "vendor": one_of(
        "Microsoft",
        "Kaseya",
        "ConnectWise",
        "N-able",
        "Datto",
        "SentinelOne",
        "CrowdStrike",
        "Huntress",
        "Veeam",
        "Acronis",
        "Sophos",
        "Fortinet",
        "Cisco Meraki",
        "Proofpoint",
        "Mimecast",
        "Barracuda",
        "Bitdefender",
        "Broadcom",
        "Google Workspace",
        "Dropsuite",
        "Auvik",
        "IT Glue",
        "Liongard",
        "Ubiquiti",
        "WatchGuard",
        "SonicWall",
        "3CX",
    ),
    "distributor": one_of("Pax8", "Ingram Micro", "TD SYNNEX", "Sherweb", "Giacom", "Arrow"),
    "product": one_of(
        "RMM",
        "PSA",
        "EDR",
        "MDR service",
        "backup appliance",
        "cloud backup",
        "email security gateway",
        "firewall line",
        "SIEM",
        "M365 Business Premium",
        "Defender for Business",
        "vSphere bundle",
        "documentation platform",
        "network monitoring",
        "SASE offering",
        "password manager",
        "SOC-as-a-service",
    ),
    "unit": one_of(
        "per user per month", "per endpoint", "per seat", "per device per month", "per tenant"
    ),
    "pct": lambda r: str(int(r.integers(3, 41))),
    "price": lambda r: f"${r.uniform(1.5, 45):.2f}",
    "date": lambda r: f"{pick(r, MONTHS)} {r.integers(1, 29)}, {r.integers(2025, 2027)}",
    "quarter": lambda r: f"Q{r.integers(1, 5)} {r.integers(2025, 2027)}",
    "hours": lambda r: str(int(r.integers(2, 30))),
    "region": one_of("US-East", "EU-West", "UK South", "APAC", "North America", "Australia"),
    "seats": lambda r: str(int(r.integers(5, 300))),
    "money": lambda r: f"${r.integers(40, 4000)}M",
    "source": one_of("ChannelE2E", "CRN", "MSP Success", "Channel Futures", "The Register"),
    "forum": one_of("r/msp", "MSPGeek", "the MSP Discord", "a partner Slack"),
}

# Body templates per signal. Some phrasings are shared in spirit between signals (a
# licensing change that "raises the minimum", an acquisition followed by a price review).
_BODIES: dict[str, tuple[str, ...]] = {
    "price_increase": (
        "{vendor} raises {product} prices by {pct}% {unit} starting {date}",
        "{vendor} will increase list pricing for its {product} by {pct}% at renewal",
        "Price hike: {vendor} {product} goes up to {price} {unit} from {quarter}",
        "{distributor} notifies partners of a {pct}% uplift on {vendor} {product} SKUs",
        "{vendor} removes the partner discount on {product}; effective cost rises about {pct}%",
        "Heads up: our {vendor} renewal came in {pct}% higher for the same {product}",
    ),
    "price_decrease": (
        "{vendor} cuts {product} pricing by {pct}% for MSP partners",
        "{vendor} drops {product} to {price} {unit} in new partner tiers",
        "{distributor} launches a promotion: {pct}% off {vendor} {product} through {quarter}",
        "{vendor} lowers the monthly minimum on {product} to {seats} seats",
        "Our {vendor} {product} renewal came in {pct}% cheaper after the new program",
    ),
    "new_service": (
        "{vendor} launches a new {product} built for MSPs",
        "{vendor} announces general availability of its {product} in {region}",
        "{distributor} adds {vendor} {product} to its marketplace for partners",
        "{vendor} unveils a managed {product} with multi-tenant console and PSA integration",
        "New from {vendor}: {product} with per-client billing, available {quarter}",
        "{vendor} introduces an AI assistant inside its {product}",
    ),
    "end_of_life": (
        "{vendor} will end support for its legacy {product} on {date}",
        "{vendor} announces end of sale for the {product}; migrate before {quarter}",
        "End of life notice: {vendor} {product} reaches EOL {date}, no further updates",
        "{vendor} is retiring the on-prem {product}; partners must move to the cloud edition",
        "{vendor} sunsets its {product} and stops security patches after {date}",
    ),
    "acquisition": (
        "{vendor} to acquire {vendor2} for {money}",
        "{vendor} completes acquisition of {vendor2}'s {product} business",
        "Private equity firm buys {vendor} in a {money} deal",
        "{vendor2} agrees to be acquired by {vendor}; the {product} roadmap is under review",
        "Merger: {vendor} and {vendor2} combine their MSP platforms",
        "{vendor} buys {vendor2}; pricing for existing partners to be reviewed after close",
    ),
    "outage": (
        "{vendor} {product} outage hits partners in {region} for {hours} hours",
        "{vendor} status page: degraded performance of {product} in {region}",
        "Service disruption: {vendor} {product} agents offline across {region}",
        "{vendor} confirms an incident that took {product} down for {hours} hours",
        "Anyone else seeing {vendor} {product} down in {region}? Tickets piling up",
    ),
    "licensing_change": (
        "{vendor} moves {product} from perpetual licences to subscription only",
        "{vendor} changes {product} licensing from {unit} to a {seats}-seat minimum",
        "{vendor} bundles {product} into new editions; standalone SKUs go away {date}",
        "{vendor} requires annual commitments for {product} under the new partner program",
        "New {vendor} partner agreement changes how {product} licences are counted",
        "{vendor} switches {product} to core-based licensing from {quarter}",
    ),
}

# How the text reached the MSP's feed; the body goes in {body}.
_FORMATS = (
    "{body}.",
    "{source}: {body}.",
    "Partner notice from {vendor}: {body}.",
    "{distributor} bulletin - {body}.",
    "Posted on {forum}: {body}.",
    "Analyst note ({quarter}): {body}.",
)

_CUES: dict[str, tuple[str, ...]] = {
    "negative": (
        "Partners on {forum} are not happy.",
        "Another squeeze on MSP margins.",
        "Expect pushback from clients at renewal.",
        "Several partners say they will evaluate alternatives.",
        "Frustrating for smaller MSPs.",
        "This will hurt our bottom line.",
        "Clients are already complaining.",
    ),
    "neutral": (
        "Details are in the partner portal.",
        "More information is expected next quarter.",
        "Partners should review the FAQ.",
        "The announcement was made on the partner call.",
    ),
    "positive": (
        "Good news for partners.",
        "This should help margins.",
        "Partners welcomed the move.",
        "A win for smaller MSPs.",
        "Great opportunity to upsell existing clients.",
        "Finally, something that makes bundling easier.",
    ),
}
_CUE_RATE = 0.7


@checked
def market_text(n: Count, *, seed: Seed = 0, label_noise: Unit = 0.03) -> pd.DataFrame:
    """Synthetic market and pricing text of an MSP's feed, labelled with signal and sentiment.

    Parameters
    ----------
    n : int
        Number of texts (rows), at least 1.
    seed : int, default 0
        Seed of the random generator; the same arguments give the same frame.
    label_noise : float, default 0.03
        Fraction of rows whose ``signal`` is replaced by another signal drawn at random; the
        same fraction, drawn independently, for ``sentiment``.

    Returns
    -------
    pandas.DataFrame
        Columns ``published`` (datetime64, sorted), ``vendor``, ``text``, ``signal`` (one
        of :data:`MARKET_SIGNALS`) and ``sentiment`` (one of :data:`SENTIMENTS`). Matches
        :data:`MARKET_TEXT_SCHEMA`.

    Examples
    --------
    >>> frame = market_text(4, seed=1)
    >>> list(frame.columns)
    ['published', 'vendor', 'text', 'signal', 'sentiment']
    >>> frame.equals(market_text(4, seed=1))
    True
    """
    rng = np.random.default_rng(seed)
    signals = rng.choice(len(MARKET_SIGNALS), size=n, p=_SIGNAL_SHARES)
    cumulative = np.cumsum(_SENTIMENT_GIVEN_SIGNAL, axis=1)[signals]
    sentiments = np.minimum((rng.random((n, 1)) > cumulative).sum(axis=1), len(SENTIMENTS) - 1)
    offsets = np.sort(rng.integers(0, 180 * 24 * 3600, size=n))
    published = pd.Timestamp("2025-01-01") + pd.to_timedelta(offsets, unit="s")

    vendors, texts = [], []
    for signal, sentiment in zip(signals, sentiments, strict=True):
        vendor = _FIELDS["vendor"](rng)
        body = pick(rng, _BODIES[MARKET_SIGNALS[signal]])
        template = pick(rng, _FORMATS).replace("{body}", body)
        if rng.random() < _CUE_RATE:
            template += " " + pick(rng, _CUES[SENTIMENTS[sentiment]])
        vendors.append(vendor)
        texts.append(fill(template, rng, _FIELDS, {"vendor": vendor}))

    signals = replace_some(rng, signals, len(MARKET_SIGNALS), label_noise)
    sentiments = replace_some(rng, sentiments, len(SENTIMENTS), label_noise)
    return pd.DataFrame(
        {
            "published": published,
            "vendor": vendors,
            "text": texts,
            "signal": np.asarray(MARKET_SIGNALS, dtype=object)[signals],
            "sentiment": np.asarray(SENTIMENTS, dtype=object)[sentiments],
        }
    )


MARKET_TEXT_SCHEMA = Schema(
    "market_intel data",
    (
        Column("text", "text", description="A headline, bulletin, note or post about the market."),
        Column("signal", "category", description="What happened, e.g. 'price_increase'."),
        Column("sentiment", "category", description="negative, neutral or positive for an MSP."),
        Column("published", "datetime", required=False, description="When it was published."),
        Column("vendor", "text", required=False, description="The vendor it is mainly about."),
    ),
)
"""Schema of the market_intel agent's data; :func:`market_text` produces it."""
