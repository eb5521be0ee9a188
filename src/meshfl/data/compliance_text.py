"""Seeded synthetic compliance evidence: control descriptions and audit notes, mapped to
SOC 2, ISO/IEC 27001:2022, HIPAA Security Rule and GDPR requirements, with a met/gap status.

An MSP running audits for its clients collects control descriptions, screenshots' captions,
ticket notes and auditor comments. A GRC tool maps each piece of evidence to the
requirements it covers across frameworks (one MFA control answers SOC 2 CC6.1, ISO 27001
A.8.5, HIPAA 164.312(d) and GDPR Art.32 at once: "test once, comply many"), and says whether
it shows the requirement met or a gap. The catalogue below is a small, realistic crosswalk
of 17 control topics onto 51 requirements. MSPs differ in the *engagement framework* of
their clients (a healthcare MSP audits HIPAA, an EU one GDPR), which shifts both the topics
they collect evidence for and the wording ("ePHI", "personal data"). Some texts cover two
topics, gap wording is sometimes subtle ("last performed 14 months ago"), and labels carry
noise, so the task is learnable but not trivial.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from meshfl.config.validation import Count, Seed, Unit, checked
from meshfl.data.schema import Column, Schema
from meshfl.data.templates import MONTHS, Field, fill, one_of, pick

__all__ = [
    "COMPLIANCE_EVIDENCE_SCHEMA",
    "COMPLIANCE_STATUSES",
    "CONTROL_TOPICS",
    "FRAMEWORKS",
    "REQUIREMENTS",
    "REQUIREMENT_SEPARATOR",
    "compliance_evidence",
    "framework_of",
]

FRAMEWORKS: tuple[str, ...] = ("SOC2", "ISO27001", "HIPAA", "GDPR")
"""The frameworks of the catalogue, as requirement ids start."""

_CATALOGUE: dict[str, dict[str, str]] = {
    "SOC2": {
        "CC1.4": "Commitment to competence",
        "CC3.2": "Risk identification and analysis",
        "CC6.1": "Logical access security and authentication",
        "CC6.3": "Role-based access and least privilege",
        "CC6.4": "Physical access restrictions",
        "CC6.7": "Protection of data in transmission",
        "CC6.8": "Prevention and detection of malicious software",
        "CC7.1": "Vulnerability and configuration monitoring",
        "CC7.2": "Security event monitoring",
        "CC7.4": "Incident response",
        "CC8.1": "Change management",
        "CC9.2": "Vendor and business partner risk",
        "A1.2": "Backup and recovery infrastructure",
        "C1.2": "Disposal of confidential information",
    },
    "ISO27001": {
        "6.1.2": "Information security risk assessment",
        "A.5.9": "Inventory of information and other associated assets",
        "A.5.18": "Access rights",
        "A.5.19": "Information security in supplier relationships",
        "A.5.24": "Incident management planning and preparation",
        "A.6.3": "Information security awareness, education and training",
        "A.7.2": "Physical entry",
        "A.8.5": "Secure authentication",
        "A.8.7": "Protection against malware",
        "A.8.8": "Management of technical vulnerabilities",
        "A.8.10": "Information deletion",
        "A.8.13": "Information backup",
        "A.8.15": "Logging",
        "A.8.24": "Use of cryptography",
        "A.8.32": "Change management",
    },
    "HIPAA": {
        "164.308(a)(1)(ii)(A)": "Risk analysis",
        "164.308(a)(1)(ii)(B)": "Risk management",
        "164.308(a)(5)(i)": "Security awareness and training",
        "164.308(a)(5)(ii)(B)": "Protection from malicious software",
        "164.308(a)(6)": "Security incident procedures",
        "164.308(a)(7)": "Contingency plan",
        "164.308(b)(1)": "Business associate contracts",
        "164.310(a)(1)": "Facility access controls",
        "164.310(d)(2)(i)": "Disposal",
        "164.312(a)(1)": "Access control",
        "164.312(b)": "Audit controls",
        "164.312(d)": "Person or entity authentication",
        "164.312(e)(1)": "Transmission security",
        "164.524": "Access of individuals to protected health information",
    },
    "GDPR": {
        "Art.15": "Right of access by the data subject",
        "Art.17": "Right to erasure",
        "Art.25": "Data protection by design and by default",
        "Art.28": "Processor",
        "Art.30": "Records of processing activities",
        "Art.32": "Security of processing",
        "Art.33": "Notification of a personal data breach",
        "Art.35": "Data protection impact assessment",
    },
}

REQUIREMENTS: dict[str, str] = {
    f"{framework} {rid}": title
    for framework, items in _CATALOGUE.items()
    for rid, title in items.items()
}
"""Requirement id (``"<framework> <id>"``, e.g. ``"HIPAA 164.312(d)"``) to its title."""

COMPLIANCE_STATUSES: tuple[str, ...] = ("met", "gap")
"""Whether a piece of evidence shows its requirements met, or a gap."""

REQUIREMENT_SEPARATOR = ";"
"""Separates requirement ids in the ``requirements`` column."""


def framework_of(requirement: str) -> str:
    """The framework of a requirement id (its first word)."""
    return requirement.split(" ", 1)[0]


# topic -> (requirements it covers, met templates, gap templates).
_TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "mfa": (
        ("SOC2 CC6.1", "ISO27001 A.8.5", "HIPAA 164.312(d)", "GDPR Art.32"),
        (
            "MFA is enforced through {idp} conditional access for all users accessing {data}",
            "Phishing-resistant MFA (FIDO2 keys) required for every admin account in {idp}",
            "Sign-in report shows 100% of {n} accounts registered for multi-factor authentication",
        ),
        (
            "{n} accounts in {idp} have no MFA method registered, including a global admin",
            "MFA is not enforced for the legacy VPN; users log in with password only",
            "Conditional access policy for MFA is in report-only mode since {month}",
        ),
    ),
    "access_review": (
        ("SOC2 CC6.3", "ISO27001 A.5.18", "HIPAA 164.312(a)(1)", "GDPR Art.25"),
        (
            "Quarterly user access review of {app} completed and signed off by the {role}",
            "Role-based access groups limit {data} to the clinical and billing teams",
            "Leaver accounts are disabled within 24 hours via the HR-driven workflow in {idp}",
        ),
        (
            "Access review for {app} was last performed {months} months ago",
            "{n} terminated users still had active accounts in {app} at audit date",
            "Shared local admin account used by all technicians; no individual access rights",
        ),
    ),
    "encryption": (
        ("SOC2 CC6.7", "ISO27001 A.8.24", "HIPAA 164.312(e)(1)", "GDPR Art.32"),
        (
            "BitLocker full-disk encryption is enabled on all {n} laptops holding {data}",
            "TLS 1.2+ enforced for all external connections; certificate inventory maintained",
            "Backups and databases with {data} are encrypted at rest with AES-256 keys in {kms}",
        ),
        (
            "{n} laptops reported BitLocker as suspended or not enabled",
            "{data} is sent to the lab partner over unencrypted FTP",
            "TLS 1.0 still accepted on the client portal; no cryptography policy exists",
        ),
    ),
    "logging": (
        ("SOC2 CC7.2", "ISO27001 A.8.15", "HIPAA 164.312(b)"),
        (
            "Audit logs from servers and {idp} forward to {siem}, retained for {days} days",
            "{siem} alerts are triaged by the SOC within 15 minutes, 24x7",
            "Access to {data} is logged and audit logs are reviewed weekly by the {role}",
        ),
        (
            "Firewall and server logs are kept locally only and overwritten after "
            "{short_days} days",
            "{siem} ingestion stopped in {month}; no alerting during that period",
            "No log review is performed for systems holding {data}",
        ),
    ),
    "backup": (
        ("SOC2 A1.2", "ISO27001 A.8.13", "HIPAA 164.308(a)(7)", "GDPR Art.32"),
        (
            "Nightly {backup} jobs with immutable offsite copies; restore test passed in {month}",
            "Disaster recovery plan tested {month}: RTO 4h and RPO 24h met for {data}",
            "Backup success reports reviewed daily; failed jobs ticketed and rerun",
        ),
        (
            "No restore test has been performed in the last {months} months",
            "{backup} jobs for the file server failed {n} times last month without follow-up",
            "Backups are stored on the same NAS as production; no offsite or immutable copy",
        ),
    ),
    "incident_response": (
        ("SOC2 CC7.4", "ISO27001 A.5.24", "HIPAA 164.308(a)(6)", "GDPR Art.33"),
        (
            "Incident response plan approved by the {role}; tabletop exercise held in {month}",
            "Breach notification procedure defines the 72-hour regulator notice and contacts",
            "Security incidents are logged in the PSA with root cause and lessons learned",
        ),
        (
            "Incident response plan is a draft and has never been tested",
            "Phishing incident in {month} was not documented and no notification was assessed",
            "No defined roles or contact list for security incidents involving {data}",
        ),
    ),
    "vulnerability": (
        ("SOC2 CC7.1", "ISO27001 A.8.8", "HIPAA 164.308(a)(1)(ii)(B)"),
        (
            "Monthly authenticated vulnerability scans with {scanner}; criticals fixed in 14 days",
            "Patch compliance at {high_pct}% across {n} endpoints per RMM report",
            "Annual external penetration test completed; all high findings remediated",
        ),
        (
            "{n} critical vulnerabilities older than 90 days on internet-facing servers",
            "Patch compliance at {low_pct}%; {n} servers missing updates since {month}",
            "No vulnerability scanning is performed for {app}",
        ),
    ),
    "change_management": (
        ("SOC2 CC8.1", "ISO27001 A.8.32"),
        (
            "Changes to production go through CAB approval tickets in the PSA with rollback plans",
            "Firewall rule changes require a peer-reviewed change ticket before deployment",
            "Emergency changes are documented and retroactively approved within 48 hours",
        ),
        (
            "{n} firewall changes in {month} had no change ticket or approval",
            "Developers deploy to production directly; no segregation or approval recorded",
            "Change management policy exists but tickets lack approvals and test evidence",
        ),
    ),
    "training": (
        ("SOC2 CC1.4", "ISO27001 A.6.3", "HIPAA 164.308(a)(5)(i)"),
        (
            "Annual security awareness training completed by {high_pct}% of staff in {lms}",
            "Monthly phishing simulations with click rate down to {small_pct}%",
            "New hires complete security and privacy training before receiving access to {data}",
        ),
        (
            "Only {low_pct}% of staff completed security awareness training this year",
            "No phishing simulations or training records could be produced",
            "Training on handling {data} has not been assigned to new hires since {month}",
        ),
    ),
    "vendor": (
        ("SOC2 CC9.2", "ISO27001 A.5.19", "HIPAA 164.308(b)(1)", "GDPR Art.28"),
        (
            "Signed business associate agreements and DPAs are on file for all {n} vendors",
            "Vendor risk assessments reviewed annually; SOC 2 reports of critical vendors on file",
            "Data processing agreement with {vendor} covers sub-processors and audit rights",
        ),
        (
            "No data processing agreement with {vendor}, which hosts {data}",
            "{n} vendors with access to {data} have never been risk assessed",
            "The business associate agreement with {vendor} expired in {month}",
        ),
    ),
    "risk_assessment": (
        ("SOC2 CC3.2", "ISO27001 6.1.2", "HIPAA 164.308(a)(1)(ii)(A)"),
        (
            "Annual risk assessment performed by the {role}; risk register with owners and dates",
            "Risk register updated in {month} with likelihood, impact and treatment plans",
            "Enterprise risk assessment covers threats to {data} and is approved by management",
        ),
        (
            "Last risk assessment dates from {year}; risk register not maintained",
            "Risk analysis does not cover systems storing {data}",
            "No documented risk assessment methodology or treatment plan",
        ),
    ),
    "dpia": (
        ("GDPR Art.35",),
        (
            "DPIA completed for the new patient portal before go-live, approved by the DPO",
            "Data protection impact assessments are triggered by the project intake checklist",
            "High-risk processing of {data} assessed in a DPIA with mitigations tracked",
        ),
        (
            "No DPIA was carried out for the CCTV and location tracking rollout",
            "DPIA template exists but none has been completed for high-risk processing",
        ),
    ),
    "disposal": (
        ("SOC2 C1.2", "ISO27001 A.8.10", "HIPAA 164.310(d)(2)(i)", "GDPR Art.17"),
        (
            "Retired drives are shredded by a certified vendor; certificates of destruction kept",
            "Erasure requests are completed within 30 days and deletion is logged",
            "Retention schedule deletes {data} automatically after {years} years",
        ),
        (
            "{n} decommissioned laptops were resold without documented data wiping",
            "No process to delete {data} when retention expires or on request",
            "Old backup tapes with {data} stored indefinitely with no disposal records",
        ),
    ),
    "physical": (
        ("SOC2 CC6.4", "ISO27001 A.7.2", "HIPAA 164.310(a)(1)"),
        (
            "Server room protected by badge access; access list reviewed quarterly",
            "Visitor log and escort policy enforced at the office reception",
            "Data center access restricted to {n} named staff with CCTV recording",
        ),
        (
            "Server closet is unlocked and shared with the cleaning supplies",
            "Badge access list includes {n} former employees",
        ),
    ),
    "asset_inventory": (
        ("ISO27001 A.5.9", "GDPR Art.30"),
        (
            "Asset inventory in {app} lists all devices, owners and the {data} they process",
            "Record of processing activities maintained and reviewed in {month}",
            "CMDB synchronised with the RMM; every asset has an owner and classification",
        ),
        (
            "Asset inventory is incomplete: {n} devices found on the network are not listed",
            "No record of processing activities exists for {data}",
        ),
    ),
    "malware": (
        ("SOC2 CC6.8", "ISO27001 A.8.7", "HIPAA 164.308(a)(5)(ii)(B)"),
        (
            "{edr} deployed on all {n} endpoints and servers with tamper protection on",
            "Email attachments are sandboxed and macros from the internet are blocked",
            "EDR alerts are monitored 24x7 by the MDR provider with automatic isolation",
        ),
        (
            "{n} endpoints have no {edr} agent or an agent that has not checked in for 30 days",
            "Antivirus definitions on the file server are {months} months old",
        ),
    ),
    "subject_access": (
        ("HIPAA 164.524", "GDPR Art.15"),
        (
            "Requests for a copy of records are answered within 30 days and tracked in a register",
            "Patients and customers can download their {data} from the self-service portal",
        ),
        (
            "{n} access requests in {month} were answered late or not at all",
            "No procedure exists for individuals requesting a copy of their {data}",
        ),
    ),
}

CONTROL_TOPICS: tuple[str, ...] = tuple(_TOPICS)
"""The control topics of the synthetic evidence (each maps to requirements across frameworks)."""

# Topics each engagement framework collects most evidence for (weight 4 against 1), and the
# ones it hardly touches (weight 0.1).
_FOCUS = {
    "SOC2": ("access_review", "change_management", "logging", "vendor", "vulnerability", "mfa"),
    "ISO27001": (
        "asset_inventory",
        "risk_assessment",
        "training",
        "change_management",
        "physical",
        "vendor",
    ),
    "HIPAA": (
        "encryption",
        "access_review",
        "logging",
        "risk_assessment",
        "backup",
        "subject_access",
        "disposal",
    ),
    "GDPR": (
        "dpia",
        "subject_access",
        "asset_inventory",
        "disposal",
        "incident_response",
        "vendor",
    ),
}
_RARE = {
    "SOC2": ("dpia", "subject_access"),
    "ISO27001": ("dpia", "subject_access"),
    "HIPAA": ("dpia",),
    "GDPR": ("physical",),
}
_DATA = {
    "SOC2": ("customer data", "in-scope systems", "production data", "confidential data"),
    "ISO27001": ("information assets", "client data", "business information"),
    "HIPAA": ("ePHI", "patient records", "protected health information", "the EHR data"),
    "GDPR": ("personal data", "customer PII", "employee personal data", "special category data"),
}

_FIELDS: dict[str, Field] = {
    "idp": one_of("Entra ID", "Okta", "JumpCloud", "Google Workspace", "Duo"),
    "app": one_of("the EHR", "NetSuite", "the file server", "Salesforce", "the PSA", "AWS"),
    "role": one_of("CISO", "IT manager", "practice manager", "vCISO", "DPO", "office manager"),
    "kms": one_of("Azure Key Vault", "AWS KMS", "the HSM"),
    "siem": one_of("Sentinel", "the SIEM", "Blumira", "Splunk", "Perch"),
    "backup": one_of("Veeam", "Datto", "Acronis", "Azure Backup"),
    "scanner": one_of("Nessus", "Qualys", "Rapid7", "OpenVAS"),
    "edr": one_of("SentinelOne", "Defender for Endpoint", "CrowdStrike", "Huntress"),
    "lms": one_of("KnowBe4", "the LMS", "Curricula", "BSN"),
    "vendor": one_of("the billing provider", "the cloud EHR host", "the payroll processor"),
    "n": lambda r: str(int(r.integers(2, 60))),
    "days": lambda r: pick(r, ("90", "180", "365", "400")),
    "short_days": lambda r: str(int(r.integers(3, 15))),
    "months": lambda r: str(int(r.integers(13, 30))),
    "years": lambda r: str(int(r.integers(3, 8))),
    "year": lambda r: str(int(r.integers(2018, 2023))),
    "high_pct": lambda r: str(int(r.integers(95, 100))),
    "low_pct": lambda r: str(int(r.integers(35, 75))),
    "small_pct": lambda r: str(int(r.integers(2, 6))),
    "month": lambda r: pick(r, MONTHS),
    "ctrl": lambda r: (
        f"{pick(r, ('AC', 'OP', 'IR', 'BC', 'HR', 'VM', 'CM'))}-{r.integers(1, 40):02d}"
    ),
    "ticket": lambda r: str(int(r.integers(10000, 99999))),
    "client": one_of("Dental group", "Law firm", "Clinic", "Retail chain", "SaaS client"),
}

# How the evidence was written down; the body goes in {body}.
_FORMATS = (
    "{body}.",
    "Control {ctrl}: {body}.",
    "Evidence for {client} audit - {body}.",
    "Auditor note: {body}.",
    "Ticket #{ticket}: {body}.",
    "Screenshot caption: {body}.",
)
_TWO_TOPIC_RATE = 0.15
_GAP_RATE = 0.35


def _topic_p(framework: str) -> np.ndarray:
    """How likely each control topic is in ``framework``'s evidence: its focus 4x, rare 0.1x."""
    weights = np.array(
        [
            4.0 if t in _FOCUS[framework] else 0.1 if t in _RARE[framework] else 1.0
            for t in CONTROL_TOPICS
        ]
    )
    return weights / weights.sum()


@checked
def compliance_evidence(n: Count, *, seed: Seed = 0, label_noise: Unit = 0.03) -> pd.DataFrame:
    """Synthetic audit evidence of an MSP's clients, mapped to requirements with a status.

    Parameters
    ----------
    n : int
        Number of evidence items (rows), at least 1.
    seed : int, default 0
        Seed of the random generator; the same arguments give the same frame.
    label_noise : float, default 0.03
        Fraction of rows where one requirement is dropped from, or a random one added to,
        the mapping (a reviewer's inconsistency); the same fraction, drawn independently,
        has its ``status`` flipped.

    Returns
    -------
    pandas.DataFrame
        Columns ``framework`` (the client engagement's framework, one of
        :data:`FRAMEWORKS`), ``text`` (the control description or evidence),
        ``requirements`` (requirement ids of :data:`REQUIREMENTS` joined by ``"; "``,
        across all frameworks) and ``status`` (``"met"`` or ``"gap"``). Matches
        :data:`COMPLIANCE_EVIDENCE_SCHEMA`.

    Examples
    --------
    >>> frame = compliance_evidence(3, seed=1)
    >>> list(frame.columns)
    ['framework', 'text', 'requirements', 'status']
    >>> frame.equals(compliance_evidence(3, seed=1))
    True
    """
    rng = np.random.default_rng(seed)
    requirement_ids = tuple(REQUIREMENTS)
    frameworks = rng.integers(len(FRAMEWORKS), size=n)
    noisy_map = rng.random(n) < label_noise
    noisy_status = rng.random(n) < label_noise
    # Drawn up front, so that the texts do not depend on the noise level.
    drop, which = rng.random(n) < 0.5, rng.random(n)

    texts, mappings, statuses = [], [], []
    for i, f in enumerate(frameworks):
        framework = FRAMEWORKS[f]
        count = 2 if rng.random() < _TWO_TOPIC_RATE else 1
        topics = rng.choice(len(CONTROL_TOPICS), size=count, replace=False, p=_topic_p(framework))
        gaps = rng.random(count) < _GAP_RATE
        covered: set[str] = set()
        bodies = []
        for topic, gap in zip(topics, gaps, strict=True):
            requirements, met, missing = _TOPICS[CONTROL_TOPICS[topic]]
            covered.update(requirements)
            bodies.append(pick(rng, missing if gap else met))
        body = "; additionally, ".join(bodies)
        data = pick(rng, _DATA[framework])
        texts.append(
            fill(pick(rng, _FORMATS).replace("{body}", body), rng, _FIELDS, {"data": data})
        )
        if noisy_map[i]:
            if len(covered) > 1 and drop[i]:
                covered.discard(sorted(covered)[int(which[i] * len(covered))])
            else:
                covered.add(requirement_ids[int(which[i] * len(requirement_ids))])
        mappings.append("; ".join(r for r in requirement_ids if r in covered))
        statuses.append("gap" if bool(gaps.any()) != bool(noisy_status[i]) else "met")

    return pd.DataFrame(
        {
            "framework": np.asarray(FRAMEWORKS, dtype=object)[frameworks],
            "text": texts,
            "requirements": mappings,
            "status": statuses,
        }
    )


COMPLIANCE_EVIDENCE_SCHEMA = Schema(
    "compliance data",
    (
        Column("text", "text", description="A control description or a piece of audit evidence."),
        Column(
            "requirements",
            "text",
            description="Requirement ids it covers, ';'-separated: 'SOC2 CC6.1; GDPR Art.32'.",
        ),
        Column("status", "category", description="'met', or 'gap' where it shows a shortfall."),
        Column("framework", "category", required=False, description="The engagement's framework."),
    ),
)
"""Schema of the compliance agent's data; :func:`compliance_evidence` produces it."""
