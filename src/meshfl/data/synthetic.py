"""Seeded synthetic MSP data: security log lines and operational metrics.

Real MSP data cannot leave the MSP, so tests, examples and benchmarks run on generators
that look like it in shape: log lines in the syslog, Windows-event, EDR, mail-gateway and
proxy formats an MSP's SIEM collects, and host metrics that follow per-workload regimes.
The data is meant to be *learnable but not trivial*: some security templates are shared
by two classes (a user mistyping a password looks like one attempt of a brute-force run;
a backup upload looks like exfiltration), labels carry noise, and injected metric
anomalies range from blatant spikes to values that are only odd in combination.

Every generator draws from one :class:`numpy.random.Generator` seeded with ``seed``, so the
same arguments give the same frame on every platform.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from meshfl.config.checks import check_float, check_int
from meshfl.data.schema import Column, Schema

__all__ = [
    "MONTHS",
    "OPS_METRICS_SCHEMA",
    "OPS_METRIC_BOUNDS",
    "OPS_METRIC_FEATURES",
    "SECURITY_EVENTS_SCHEMA",
    "SEVERITIES",
    "THREAT_CLASSES",
    "WORKLOAD_PROFILES",
    "operational_metrics",
    "replace_some",
    "security_events",
]

# ---------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# Security events
# ---------------------------------------------------------------------------------------

THREAT_CLASSES: tuple[str, ...] = (
    "benign",
    "brute_force",
    "malware",
    "phishing",
    "data_exfiltration",
    "privilege_escalation",
    "ddos",
    "ransomware",
)
"""The threat classes of :func:`security_events`, ``"benign"`` first."""

SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
"""Event severities, from least to most urgent."""

# Share of each class among events, roughly what an MSP's SIEM sees after the noisiest
# informational events are filtered out: mostly benign, ransomware rare.
_CLASS_SHARES = np.array([0.45, 0.14, 0.09, 0.12, 0.05, 0.05, 0.06, 0.04])

# P(severity | class): correlated with the class, never determined by it.
_SEVERITY_GIVEN_CLASS = np.array(
    [
        [0.82, 0.14, 0.04, 0.00],  # benign
        [0.20, 0.50, 0.25, 0.05],  # brute_force
        [0.05, 0.25, 0.50, 0.20],  # malware
        [0.15, 0.50, 0.30, 0.05],  # phishing
        [0.02, 0.18, 0.45, 0.35],  # data_exfiltration
        [0.02, 0.20, 0.48, 0.30],  # privilege_escalation
        [0.10, 0.35, 0.40, 0.15],  # ddos
        [0.00, 0.05, 0.25, 0.70],  # ransomware
    ]
)

# Vocabulary the templates draw from.
_USERS = (
    "jdoe", "asmith", "mgarcia", "rkhan", "lchen", "tnguyen", "bwilliams", "kpatel",
    "ojohnson", "sbrown", "dmiller", "emartin", "hlee", "fwilson", "cmoore", "avargas",
    "pwright", "nsato", "svc_backup", "svc_sql", "svc_veeam", "it.admin", "helpdesk",
)  # fmt: skip
_BAD_USERS = (
    "admin", "root", "test", "oracle", "ubuntu", "guest", "postgres", "support", "ftpuser",
    "pi", "user", "administrator", "git", "deploy", "test1", "minecraft", "hadoop",
)  # fmt: skip
_CLIENT_DOMAINS = (
    "contoso.com", "fabrikam.com", "northwindtraders.com", "adatum.com", "tailspintoys.com",
    "wingtiptoys.com", "litwareinc.com", "proseware.com",
)  # fmt: skip
_NETBIOS = ("CONTOSO", "FABRIKAM", "NORTHWIND", "ADATUM", "TAILSPIN", "WINGTIP")
_SAAS = (
    "login.microsoftonline.com", "outlook.office365.com", "teams.microsoft.com",
    "update.microsoft.com", "github.com", "slack.com", "zoom.us", "salesforce.com",
    "cdn.jsdelivr.net", "www.google.com", "api.hubspot.com", "connectwise.com",
)  # fmt: skip
_CLOUD_STORAGE = (
    "s3.amazonaws.com", "drive.google.com", "content.dropboxapi.com", "mega.nz",
    "wetransfer.com", "onedrive.live.com", "upload.box.com", "transfer.sh",
)  # fmt: skip
_BRANDS = ("micros0ft", "office365", "paypa1", "docusign", "dhl", "we11sfargo", "okta", "adobe")
_PHISH_WORDS = ("secure", "login", "verify", "account", "support", "update", "billing", "auth")
_SHADY_TLDS = ("com", "net", "top", "xyz", "info", "co", "live", "click")
_PHISH_SUBJECTS = (
    "Action required: verify your mailbox", "Invoice #{digits} overdue",
    "Your password expires today", "DocuSign: please review and sign",
    "Shared file: Q4 bonus structure", "DHL: parcel held at customs",
    "Unusual sign-in activity", "Payroll update for {month}",
)  # fmt: skip
_SUBJECTS = (
    "Weekly status report", "Re: ticket #{digits}", "Meeting notes {month}",
    "Invoice #{digits}", "Re: onboarding checklist", "Updated SOW attached",
    "Fw: quote for new firewalls", "Your Microsoft 365 receipt",
)  # fmt: skip
_SENDER_DOMAINS = (
    "gmail.com", "outlook.com", "vendor-mail.com", "quickbooks.intuit.com",
    "notifications.microsoft.com", "mail.zendesk.com", "hpe.com", "dell.com",
)  # fmt: skip
_BENIGN_PROCS = (
    "chrome.exe", "outlook.exe", "ms-teams.exe", "excel.exe", "winword.exe", "msedge.exe",
    "OneDrive.exe", "Code.exe", "AcroRd32.exe", "zoom.exe", "explorer.exe", "svchost.exe",
)  # fmt: skip
# (install path, signer) of everyday signed applications.
_APPS = (
    ("Google\\Chrome\\Application\\chrome.exe", "Google LLC"),
    ("Microsoft Office\\root\\Office16\\OUTLOOK.EXE", "Microsoft Corporation"),
    ("Microsoft Office\\root\\Office16\\EXCEL.EXE", "Microsoft Corporation"),
    ("Microsoft VS Code\\Code.exe", "Microsoft Corporation"),
    ("Zoom\\bin\\Zoom.exe", "Zoom Video Communications, Inc."),
    ("Adobe\\Acrobat DC\\Acrobat\\Acrobat.exe", "Adobe Inc."),
    ("Mozilla Firefox\\firefox.exe", "Mozilla Corporation"),
)
_OFFICE_PROCS = ("winword.exe", "excel.exe", "outlook.exe", "powerpnt.exe")
_SUSP_PROCS = (
    "powershell.exe", "rundll32.exe", "regsvr32.exe", "mshta.exe", "wscript.exe",
    "certutil.exe", "cmd.exe", "bitsadmin.exe", "cscript.exe",
)  # fmt: skip
_MALWARE = (
    "Trojan:Win32/Emotet.RPX!MTB", "Backdoor:Win64/CobaltStrike.NP!dha",
    "TrojanDownloader:O97M/Qakbot.RVA!MTB", "Trojan:MSIL/AgentTesla.KA!MTB",
    "Trojan:Win32/IcedID.PC!MTB", "Trojan:Win32/Lokibot.RF!MTB",
    "TrojanSpy:MSIL/Formbook.AB!MTB", "Backdoor:Win32/Bladabindi!ml",
)  # fmt: skip
_GENERIC_DETECTIONS = (
    "Trojan:Win32/Wacatac.B!ml", "Trojan:Win32/Sabsik.FL.B!ml", "Trojan:Script/Wacatac.H!ml",
    "Behavior:Win32/Suspicious.A", "Trojan:Win32/Casdet!rfn",
)  # fmt: skip
_RANSOM_FAMILIES = ("LockBit", "BlackCat", "Akira", "Royal", "Conti", "Play", "BlackBasta")
_RANSOM_EXTS = (".lockbit", ".akira", ".royal", ".encrypted", ".locked", ".crypt", ".basta")
_RANSOM_NOTES = (
    "README-RESTORE.txt",
    "HOW_TO_DECRYPT.html",
    "Restore-My-Files.txt",
    "!!!READ_ME!!!.txt",
    "akira_readme.txt",
)
_SHARES = ("finance", "hr", "projects", "scans", "public", "accounting", "legal")
_DOC_FILES = (
    "Q3_report.xlsx",
    "invoice_88213.pdf",
    "payroll_2024.csv",
    "customers.xlsx",
    "contract_final.docx",
    "budget_FY25.xlsx",
    "board_minutes.docx",
)
_SENSITIVE_FILES = (
    "customer_export.csv",
    "payroll_2024.xlsx",
    "ssn_list.xlsx",
    "patients_full.csv",
    "crm_dump.zip",
    "source_backup.7z",
)
_DLP_POLICIES = ("PCI card numbers", "US SSN", "HIPAA PHI", "GDPR personal data", "Source code")
_GROUPS = (
    "Domain Admins",
    "Enterprise Admins",
    "Administrators",
    "Backup Operators",
    "Schema Admins",
    "Account Operators",
)
_ADMIN_CMDS = (
    "/bin/systemctl restart nginx",
    "/usr/bin/apt-get upgrade -y",
    "/bin/bash",
    "/usr/bin/vim /etc/hosts",
    "/usr/bin/docker ps",
    "/bin/journalctl -u sshd",
    "/usr/sbin/usermod -aG docker {user}",
)
_SVC_STOPS = (
    "VeeamBackupSvc",
    "MSSQLSERVER",
    "SQLWriter",
    "vss",
    "BackupExecJobEngine",
    "SophosHealth",
    "WinDefend",
)
_WEB_PATHS = (
    "",
    "index.html",
    "api/v1/orders",
    "assets/app.js",
    "login",
    "products?page=2",
    "static/logo.png",
    "cart",
    "api/v1/health",
)
_UAS = (
    '"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0"',
    '"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) Safari/605.1.15"',
    '"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148"',
)
_BOT_UAS = (
    '"python-requests/2.31.0"',
    '"Go-http-client/1.1"',
    '"curl/8.4.0"',
    '"Mozilla/5.0 zgrab/0.x"',
    '"WPScan v3.8.25"',
)
_COUNTRIES = ("RU", "NG", "CN", "KP", "IR", "BR", "VN", "RO")
_EXFIL_TOOLS = ("rclone.exe", "WinSCP.exe", "MEGAsync.exe", "7z.exe", "curl.exe", "restic")
_AMP = (("DNS", 53), ("NTP", 123), ("memcached", 11211), ("SSDP", 1900), ("CLDAP", 389))
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

# Hosts that emit each log source.
_HOST_POOLS: dict[str, Callable[[np.random.Generator], str]] = {
    "linux": lambda r: (
        f"{_pick(r, ('web', 'app', 'db', 'bastion', 'jump', 'k8s-node'))}-{r.integers(1, 13):02d}"
    ),
    "firewall": lambda r: _pick(r, ("fw-01", "fw-02", "edge-fw01", "pfsense-01", "asa-core")),
    "ids": lambda r: _pick(r, ("ids-01", "ids-02", "suricata-dmz")),
    "workstation": lambda r: f"ws-{r.integers(1, 400):04d}",
    "windows": lambda r: (
        _pick(r, ("DC01", "DC02", "FS01", "EXCH01", "SQL01", "RDS01"))
        if r.random() < 0.5
        else f"WS-{r.integers(1, 400):04d}"
    ),
    "mail": lambda r: _pick(r, ("mx-01", "mx-02", "mailgw-01")),
    "proxy": lambda r: _pick(r, ("proxy-01", "proxy-02")),
    "dns": lambda r: _pick(r, ("ns-01", "ns-02", "dc01")),
    "web": lambda r: f"web-{r.integers(1, 9):02d}",
    "cloud": lambda r: _pick(r, ("azure-ad", "m365-audit", "aws-cloudtrail")),
    "dlp": lambda r: _pick(r, ("dlp-01", "purview-dlp")),
    "netflow": lambda r: _pick(r, ("edge-rtr01", "edge-rtr02", "ddos-mitigator")),
}

# Which host pool each log source comes from.
_SOURCE_HOSTS = {
    "sshd": "linux",
    "sudo": "linux",
    "auditd": "linux",
    "polkit": "linux",
    "firewall": "firewall",
    "ids": "ids",
    "edr": "workstation",
    "windows-security": "windows",
    "windows-defender": "workstation",
    "mail-gateway": "mail",
    "proxy": "proxy",
    "dns": "dns",
    "web-server": "web",
    "cloud-audit": "cloud",
    "dlp": "dlp",
    "netflow": "netflow",
    "backup": "windows",
    "file-audit": "windows",
}


def _pick(r: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(r.integers(len(options)))]


def _public_ip(r: np.random.Generator) -> str:
    while True:
        a = int(r.integers(1, 224))
        if a not in (10, 100, 127, 169, 172, 192):
            break
    return f"{a}.{r.integers(0, 256)}.{r.integers(0, 256)}.{r.integers(1, 255)}"


def _private_ip(r: np.random.Generator) -> str:
    kind = r.integers(3)
    if kind == 0:
        return f"10.{r.integers(0, 40)}.{r.integers(0, 256)}.{r.integers(2, 255)}"
    if kind == 1:
        return f"192.168.{r.integers(0, 20)}.{r.integers(2, 255)}"
    return f"172.{r.integers(16, 32)}.{r.integers(0, 256)}.{r.integers(2, 255)}"


def _hex(r: np.random.Generator, n: int) -> str:
    return "".join("0123456789abcdef"[i] for i in r.integers(0, 16, n))


def _word(r: np.random.Generator, n: int) -> str:
    return "".join(string.ascii_lowercase[i] for i in r.integers(0, 26, n))


def _b64(r: np.random.Generator, n: int) -> str:
    alphabet = string.ascii_letters + string.digits + "+/"
    return "".join(alphabet[i] for i in r.integers(0, 64, n))


def _bytes_between(r: np.random.Generator, low: float, high: float) -> str:
    return str(int(np.exp(r.uniform(np.log(low), np.log(high)))))


def _app(r: np.random.Generator) -> str:
    path, signer = _APPS[int(r.integers(len(_APPS)))]
    return f'image="C:\\Program Files\\{path}" signer="{signer}"'


# Placeholder name -> generator. A trailing digit (``{user2}``) draws a second,
# independent value of the same kind.
_FIELDS: dict[str, Callable[[np.random.Generator], str]] = {
    "pid": lambda r: str(r.integers(300, 65000)),
    "user": lambda r: _pick(r, _USERS),
    "baduser": lambda r: _pick(r, _BAD_USERS),
    "ext_ip": _public_ip,
    "int_ip": _private_ip,
    "any_ip": lambda r: _public_ip(r) if r.random() < 0.5 else _private_ip(r),
    "hiport": lambda r: str(r.integers(1024, 65536)),
    "svc_port": lambda r: _pick(r, ("22", "80", "443", "445", "3389", "8443", "1433", "25")),
    "c2_port": lambda r: _pick(r, ("443", "8080", "4444", "8443", "1337", "53", "2222")),
    "odd_port": lambda r: _pick(r, ("21", "22", "2222", "8081", "9001", "6000", "4443")),
    "client_domain": lambda r: _pick(r, _CLIENT_DOMAINS),
    "NETBIOS": lambda r: _pick(r, _NETBIOS),
    "saas": lambda r: _pick(r, _SAAS),
    "cloud_storage": lambda r: _pick(r, _CLOUD_STORAGE),
    "phish_domain": lambda r: (
        f"{_pick(r, _BRANDS)}-{_pick(r, _PHISH_WORDS)}"
        f"{'-' + str(r.integers(10, 99)) if r.random() < 0.4 else ''}.{_pick(r, _SHADY_TLDS)}"
    ),
    "dga_domain": lambda r: f"{_word(r, int(r.integers(9, 17)))}.{_pick(r, _SHADY_TLDS)}",
    "tunnel_domain": lambda r: f"{_word(r, int(r.integers(4, 8)))}.{_pick(r, _SHADY_TLDS)}",
    "sender_domain": lambda r: _pick(r, _SENDER_DOMAINS),
    "sender": lambda r: _pick(
        r, ("billing", "noreply", "support", "accounts", "it-desk", "hr", "notifications", "sales")
    ),
    "phish_subject": lambda r: _pick(r, _PHISH_SUBJECTS).format(
        digits=r.integers(10000, 99999), month=_pick(r, MONTHS)
    ),
    "subject": lambda r: _pick(r, _SUBJECTS).format(
        digits=r.integers(10000, 99999), month=_pick(r, MONTHS)
    ),
    "digits": lambda r: str(r.integers(10000, 99999)),
    "sha256": lambda r: _hex(r, 64),
    "hex8": lambda r: _hex(r, 8),
    "hex16": lambda r: _hex(r, 16),
    "queue_id": lambda r: _hex(r, 10).upper(),
    "rand": lambda r: _word(r, int(r.integers(5, 10))),
    "b64": lambda r: _b64(r, int(r.integers(24, 60))),
    "b32": lambda r: _word(r, int(r.integers(20, 40))),
    "benign_proc": lambda r: _pick(r, _BENIGN_PROCS),
    "app": _app,
    "office_proc": lambda r: _pick(r, _OFFICE_PROCS),
    "susp_proc": lambda r: _pick(r, _SUSP_PROCS),
    "malware": lambda r: _pick(r, _MALWARE),
    "generic_detection": lambda r: _pick(r, _GENERIC_DETECTIONS),
    "ransom_family": lambda r: _pick(r, _RANSOM_FAMILIES),
    "ransom_ext": lambda r: _pick(r, _RANSOM_EXTS),
    "ransom_note": lambda r: _pick(r, _RANSOM_NOTES),
    "share": lambda r: _pick(r, _SHARES),
    "doc": lambda r: _pick(r, _DOC_FILES),
    "sensitive_file": lambda r: _pick(r, _SENSITIVE_FILES),
    "dlp_policy": lambda r: _pick(r, _DLP_POLICIES),
    "group": lambda r: _pick(r, _GROUPS),
    "admin_cmd": lambda r: _pick(r, _ADMIN_CMDS).replace("{user}", _pick(r, _USERS)),
    "svc_stop": lambda r: _pick(r, _SVC_STOPS),
    "web_path": lambda r: _pick(r, _WEB_PATHS),
    "ua": lambda r: _pick(r, _UAS),
    "bot_ua": lambda r: _pick(r, _BOT_UAS),
    "country": lambda r: _pick(r, _COUNTRIES),
    "exfil_tool": lambda r: _pick(r, _EXFIL_TOOLS),
    "win_temp": lambda r: _pick(
        r,
        (
            "C:\\Users\\{u}\\AppData\\Local\\Temp\\{w}.exe",
            "C:\\ProgramData\\{w}\\{w}.dll",
            "C:\\Users\\{u}\\Downloads\\{w}.js",
            "C:\\Windows\\Temp\\{w}.exe",
            "C:\\Users\\{u}\\AppData\\Roaming\\{w}\\{w}.exe",
        ),
    ).format(u=_pick(r, _USERS), w=_word(r, int(r.integers(5, 10)))),
    "bytes_small": lambda r: _bytes_between(r, 300, 80_000),
    "bytes_large": lambda r: _bytes_between(r, 5e7, 4e9),
    "bytes_huge": lambda r: _bytes_between(r, 5e8, 6e10),
    "mb": lambda r: str(r.integers(5, 900)),
    "gb": lambda r: f"{r.uniform(1, 900):.1f}",
    "count": lambda r: str(int(np.exp(r.uniform(np.log(20), np.log(20000))))),
    "small_count": lambda r: str(r.integers(2, 9)),
    "minutes": lambda r: str(r.integers(1, 60)),
    "duration": lambda r: f"{r.integers(0, 5)}:{r.integers(0, 60):02d}:{r.integers(0, 60):02d}",
    "elapsed": lambda r: str(r.integers(20, 30000)),
    "conn_id": lambda r: str(r.integers(10_000_000, 999_999_999)),
    "tty": lambda r: str(r.integers(0, 8)),
    "logon_type": lambda r: _pick(r, ("2", "3", "3", "10")),
    "rate": lambda r: str(r.integers(450, 90000)),
    "gbps": lambda r: f"{r.uniform(1.5, 80):.1f}",
    "amp": lambda r: "{}/{}".format(*_AMP[int(r.integers(len(_AMP)))]),
    "float": lambda r: f"{r.uniform(1, 60):.3f}",
    "job": lambda r: _pick(
        r, ("Nightly-Servers", "FS01-Daily", "SQL-Full", "M365-Backup", "Offsite-Copy")
    ),
    "bucket": lambda r: f"{_pick(r, _NETBIOS).lower()}-{_pick(r, ('backups', 'exports', 'data'))}",
}


# (source, template). Placeholders {syslog_ts}, {iso_ts}, {epoch}, {clf_ts}, {host} and
# {HOST} come from the row; the rest from _FIELDS.
_Template = tuple[str, str]

_SYS = "{syslog_ts} {host} "
_WIN = "{iso_ts} {HOST} Microsoft-Windows-Security-Auditing: "
_EDR = "{iso_ts} {host} edr: "

_CLASS_TEMPLATES: dict[str, tuple[_Template, ...]] = {
    "benign": (
        (
            "sshd",
            _SYS + "sshd[{pid}]: Accepted publickey for {user} from {int_ip} port "
            "{hiport} ssh2: RSA SHA256:{b64}",
        ),
        (
            "windows-security",
            _WIN + "4624 An account was successfully logged on. Account Name: "
            "{user} Account Domain: {NETBIOS} Logon Type: {logon_type} Source Network Address: "
            "{int_ip}",
        ),
        (
            "windows-security",
            _WIN + "4634 An account was logged off. Account Name: {user} "
            "Account Domain: {NETBIOS} Logon Type: {logon_type}",
        ),
        (
            "proxy",
            "{epoch} {elapsed} {int_ip} TCP_TUNNEL/200 {bytes_small} CONNECT "
            "{saas}:443 {user} HIER_DIRECT/{ext_ip} -",
        ),
        (
            "firewall",
            _SYS + "%ASA-6-302013: Built outbound TCP connection {conn_id} for "
            "outside:{ext_ip}/443 ({ext_ip}/443) to inside:{int_ip}/{hiport} ({int_ip}/{hiport})",
        ),
        (
            "edr",
            _EDR + "process_start {app} parent=explorer.exe user={NETBIOS}\\{user} verdict=clean",
        ),
        (
            "mail-gateway",
            _SYS + "postfix/smtp[{pid}]: {queue_id}: to=<{user}@{client_domain}>, "
            "relay=mail.{sender_domain}[{ext_ip}]:25, delay=0.{digits}, status=sent "
            "(250 2.0.0 OK)",
        ),
        (
            "dns",
            _SYS + "named[{pid}]: client @0x{hex8} {int_ip}#{hiport} ({saas}): query: "
            "{saas} IN A + ({int_ip2})",
        ),
        (
            "backup",
            "{iso_ts} {HOST} Veeam.Backup.Service: Backup job '{job}' finished with "
            "Success. Processed {gb} GB, {small_count} warnings.",
        ),
        (
            "web-server",
            '{ext_ip} - - [{clf_ts}] "GET /{web_path} HTTP/1.1" 200 {bytes_small} "-" {ua}',
        ),
        (
            "windows-defender",
            "{iso_ts} {host} Microsoft-Windows-Windows Defender[1001]: Scan "
            "completed. Scan Type: Quick Scan. Threats found: 0. User: NT AUTHORITY\\SYSTEM",
        ),
    ),
    "brute_force": (
        (
            "sshd",
            _SYS + "sshd[{pid}]: Failed password for invalid user {baduser} from {ext_ip} "
            "port {hiport} ssh2",
        ),
        (
            "sshd",
            _SYS + "sshd[{pid}]: error: maximum authentication attempts exceeded for "
            "invalid user {baduser} from {ext_ip} port {hiport} ssh2 [preauth]",
        ),
        (
            "sshd",
            _SYS + "sshd[{pid}]: Disconnecting invalid user {baduser} {ext_ip} port "
            "{hiport}: Too many authentication failures [preauth]",
        ),
        (
            "windows-security",
            _WIN + "4625 An account failed to log on. Account Name: {baduser} "
            "Failure Reason: Unknown user name or bad password. Status: 0xC000006D Sub Status: "
            "0xC0000064 Logon Type: 10 Source Network Address: {ext_ip} ({count} events in "
            "{minutes} min)",
        ),
        (
            "ids",
            _SYS + "suricata[{pid}]: [1:2001219:20] ET SCAN Potential SSH Scan "
            "[Classification: Attempted Information Leak] [Priority: 2] {{TCP}} "
            "{ext_ip}:{hiport} -> {int_ip}:22",
        ),
        (
            "web-server",
            '{ext_ip} - - [{clf_ts}] "POST /wp-login.php HTTP/1.1" 200 {bytes_small} "-" {bot_ua}',
        ),
        (
            "cloud-audit",
            "{iso_ts} {host} signin: user={user}@{client_domain} result=failure "
            'errorCode=50126 ip={ext_ip} country={country} app="Azure AD PowerShell" '
            "attempts={count} pattern=password_spray",
        ),
        (
            "firewall",
            _SYS + "%ASA-4-733100: [ Scanning] drop rate-1 exceeded. Source {ext_ip} "
            "hit {count} login attempts on port {svc_port} in {minutes} min",
        ),
    ),
    "malware": (
        (
            "edr",
            _EDR + 'alert=malware_detected file="{win_temp}" sha256={sha256} '
            'family="{malware}" action=quarantined',
        ),
        (
            "windows-defender",
            "{iso_ts} {host} Microsoft-Windows-Windows Defender[1116]: "
            "Malware detected. Name: {malware} Path: file:_{win_temp} Process: {susp_proc} "
            "User: {NETBIOS}\\{user}",
        ),
        (
            "edr",
            _EDR + "process_start image={susp_proc} parent={office_proc} "
            'cmdline="{susp_proc} -nop -w hidden -enc {b64}" user={NETBIOS}\\{user}',
        ),
        (
            "ids",
            _SYS + "suricata[{pid}]: [1:2035595:3] ET MALWARE {malware} CnC Beacon "
            "[Classification: A Network Trojan was detected] [Priority: 1] {{TCP}} "
            "{int_ip}:{hiport} -> {ext_ip}:{c2_port}",
        ),
        (
            "proxy",
            "{epoch} {elapsed} {int_ip} TCP_MISS/200 {bytes_small} GET "
            "http://{dga_domain}/{rand}.php?id={hex8} - HIER_DIRECT/{ext_ip} "
            "application/octet-stream",
        ),
        (
            "dns",
            _SYS + "named[{pid}]: client @0x{hex8} {int_ip}#{hiport}: query: {dga_domain} "
            "IN A + (NXDOMAIN x{count})",
        ),
        (
            "edr",
            _EDR + "persistence registry_set key=HKCU\\Software\\Microsoft\\Windows\\"
            'CurrentVersion\\Run\\{rand} value="{win_temp}" process={susp_proc}',
        ),
        (
            "edr",
            _EDR + 'scheduled_task_created name="\\Microsoft\\Windows\\{rand}" '
            'action="{susp_proc} /c {win_temp}" user={NETBIOS}\\{user}',
        ),
    ),
    "phishing": (
        (
            "mail-gateway",
            _SYS + "mailgw[{pid}]: msgid=<{hex16}@{phish_domain}> "
            "from=<{sender}@{phish_domain}> to=<{user}@{client_domain}> "
            'subject="{phish_subject}" spf=fail dkim=none verdict=phish action=quarantine',
        ),
        (
            "mail-gateway",
            _SYS + "mailgw[{pid}]: url_click user={user}@{client_domain} "
            "url=https://{phish_domain}/{rand}/login.php verdict=malicious "
            "category=credential_phishing action=blocked",
        ),
        (
            "mail-gateway",
            _SYS + "mailgw[{pid}]: attachment blocked from=<{sender}@"
            "{phish_domain}> to=<{user}@{client_domain}> file={rand}.html reason=html_smuggling",
        ),
        (
            "proxy",
            "{epoch} {elapsed} {int_ip} TCP_MISS/200 {bytes_small} GET "
            "https://{phish_domain}/common/oauth2/{rand} {user} HIER_DIRECT/{ext_ip} text/html",
        ),
        (
            "cloud-audit",
            "{iso_ts} {host} signin: user={user}@{client_domain} result=success "
            "ip={ext_ip} country={country} app=OfficeHome risk=high "
            "detection=anomalousToken session_from={phish_domain}",
        ),
        (
            "mail-gateway",
            _SYS + "mailgw[{pid}]: user_report reporter={user}@{client_domain} "
            'subject="{phish_subject}" from=<{sender}@{phish_domain}> similar_messages={count}',
        ),
        (
            "mail-gateway",
            _SYS + "mailgw[{pid}]: dmarc=fail (p=reject) header.from="
            "{phish_domain} smtp.mailfrom={sender}@{phish_domain} to=<{user}@{client_domain}> "
            'subject="{phish_subject}"',
        ),
    ),
    "data_exfiltration": (
        (
            "dlp",
            '{iso_ts} {host} DLP: policy="{dlp_policy}" user={user}@{client_domain} '
            "channel=web_upload dest={cloud_storage} file={sensitive_file} matches={count} "
            "action=block",
        ),
        (
            "dns",
            _SYS + "named[{pid}]: client @0x{hex8} {int_ip}#{hiport}: query: "
            "{b32}.{b32_2}.{tunnel_domain} IN TXT + (dns_tunnel_score=0.9{small_count})",
        ),
        (
            "edr",
            _EDR + 'process_start image={exfil_tool} cmdline="{exfil_tool} copy '
            '\\\\FS01\\{share} remote:{rand} --transfers 16" user={NETBIOS}\\{user}',
        ),
        (
            "firewall",
            _SYS + "%ASA-6-302014: Teardown TCP connection {conn_id} for "
            "outside:{ext_ip}/{odd_port} to inside:{int_ip}/{hiport} duration {duration} bytes "
            "{bytes_huge} TCP FINs (volume anomaly)",
        ),
        (
            "cloud-audit",
            "{iso_ts} {host} s3:GetObject x{count} principal={user} "
            "sourceIp={ext_ip} bucket={bucket} userAgent=aws-cli/2.15 anomaly=mass_download",
        ),
        (
            "mail-gateway",
            _SYS + "mailgw[{pid}]: outbound from=<{user}@{client_domain}> "
            "to=<{rand}@gmail.com> attachments={small_count} size={mb}MB "
            "file={sensitive_file} dlp=match",
        ),
        (
            "edr",
            _EDR + 'removable_media_write device="USB Mass Storage {hex8}" '
            "user={NETBIOS}\\{user} files={count} bytes={bytes_huge}",
        ),
    ),
    "privilege_escalation": (
        (
            "windows-security",
            _WIN + "4728 A member was added to a security-enabled global "
            "group. Member: CN={user2} Group: {group} Subject: {user} (outside change window)",
        ),
        (
            "sudo",
            _SYS + "sudo[{pid}]:     {user} : user NOT in sudoers ; TTY=pts/{tty} ; "
            "PWD=/tmp ; USER=root ; COMMAND=/bin/bash",
        ),
        (
            "edr",
            _EDR + "credential_access target=lsass.exe source={susp_proc} access=0x1010 "
            "user={NETBIOS}\\{user} technique=T1003.001",
        ),
        (
            "polkit",
            _SYS + "pkexec[{pid}]: {user}: Executing command [USER=root] [TTY=unknown] "
            "[CWD=/tmp] [COMMAND=/tmp/.{rand}] (GCONV_PATH set)",
        ),
        (
            "windows-security",
            _WIN + "4697 A service was installed in the system. Service "
            "Name: {rand} Service File Name: %COMSPEC% /c {win_temp} Account: LocalSystem",
        ),
        (
            "edr",
            _EDR + "token_manipulation process={susp_proc} technique=T1134 "
            "user={NETBIOS}\\{user} integrity=system parent={benign_proc}",
        ),
        (
            "auditd",
            _SYS + 'audit[{pid}]: type=EXECVE argc=3 a0="chmod" a1="u+s" '
            'a2="/tmp/{rand}" auid={pid2} uid=0 exe="/usr/bin/chmod"',
        ),
        (
            "windows-security",
            _WIN + "4673 A privileged service was called. Account Name: "
            "{user} Privileges: SeDebugPrivilege SeTcbPrivilege Process: {win_temp}",
        ),
    ),
    "ddos": (
        (
            "firewall",
            _SYS + "%ASA-4-733100: [ SYN Attack] drop rate-1 exceeded. Current burst "
            "rate is {rate} per second, max configured rate is 400; Current average rate is "
            "{rate2} per second",
        ),
        (
            "ids",
            _SYS + "suricata[{pid}]: [1:2019010:3] ET DOS Possible NTP DDoS Inbound "
            "Frequent Un-Authed MON_LIST Requests [Priority: 2] {{UDP}} {ext_ip}:123 -> "
            "{int_ip}:{hiport}",
        ),
        (
            "netflow",
            "{iso_ts} {host} netflow: inbound {gbps} Gbps {amp} from {count} sources "
            "to {ext_ip} (reflection attack)",
        ),
        (
            "cloud-audit",
            "{iso_ts} {host} DDoSProtection: mitigation started for public IP "
            "{ext_ip} vector=SYN_flood peak_pps={count}000",
        ),
        (
            "firewall",
            _SYS + "%ASA-3-201013: Per-client connection limit exceeded {rate}/2000 "
            "for input packet from {ext_ip}/{hiport} to {int_ip}/443 on interface outside",
        ),
        (
            "web-server",
            _SYS + "nginx[{pid}]: worker_connections are not enough, {rate} "
            "requests/s from {count} clients; upstream timed out (110: Connection timed out)",
        ),
        (
            "netflow",
            "{iso_ts} {host} netflow: UDP flood to {ext_ip}:{svc_port} {rate}k pps, "
            "top sources {ext_ip2} {ext_ip3} {ext_ip4}",
        ),
    ),
    "ransomware": (
        (
            "edr",
            _EDR + "ransomware_behavior process={rand}.exe files_renamed={count} "
            "extension={ransom_ext} path=\\\\FS01\\{share} action=isolate_host",
        ),
        (
            "edr",
            _EDR + 'process_start image=vssadmin.exe cmdline="vssadmin delete shadows '
            '/all /quiet" parent={susp_proc} user={NETBIOS}\\{user}',
        ),
        (
            "edr",
            _EDR + 'process_start image=bcdedit.exe cmdline="bcdedit /set {{default}} '
            'recoveryenabled No" parent=cmd.exe user={NETBIOS}\\{user}',
        ),
        (
            "file-audit",
            "{iso_ts} {HOST} smb-audit: {user} renamed {count} files in "
            "\\\\FS01\\{share} to *{ransom_ext} within {minutes} min",
        ),
        (
            "edr",
            _EDR + 'file_create path="\\\\FS01\\{share}\\{ransom_note}" '
            "process={rand}.exe copies={count} (ransom note)",
        ),
        (
            "windows-defender",
            "{iso_ts} {host} Microsoft-Windows-Windows Defender[1116]: "
            "Malware detected. Name: Ransom:Win32/{ransom_family}.A!MTB Path: file:_{win_temp}",
        ),
        (
            "edr",
            _EDR + "service_stop process={rand}.exe stopped={svc_stop},{svc_stop2},"
            "{svc_stop3} technique=T1489",
        ),
        (
            "edr",
            _EDR + 'process_start image=wbadmin.exe cmdline="wbadmin delete catalog '
            '-quiet" parent={susp_proc}',
        ),
    ),
}

# Templates shared by several classes: the same line can be harmless or an attack. These
# keep a text classifier honest (accuracy well under 100%).
_SHARED_TEMPLATES: dict[str, tuple[_Template, ...]] = {
    "auth_fail": (
        ("sshd", _SYS + "sshd[{pid}]: Failed password for {user} from {any_ip} port {hiport} ssh2"),
        (
            "windows-security",
            _WIN + "4625 An account failed to log on. Account Name: {user} "
            "Failure Reason: Unknown user name or bad password. Logon Type: {logon_type} Source "
            "Network Address: {any_ip}",
        ),
        (
            "windows-security",
            _WIN + "4740 A user account was locked out. Account Name: {user} "
            "Caller Computer Name: WS-{digits}",
        ),
        (
            "cloud-audit",
            "{iso_ts} {host} signin: user={user}@{client_domain} result=failure "
            'errorCode=50126 ip={any_ip} app="Microsoft Office" attempts={small_count}',
        ),
    ),
    "big_transfer": (
        (
            "proxy",
            "{epoch} {elapsed} {int_ip} TCP_MISS/200 {bytes_large} POST "
            "https://{cloud_storage}/upload {user} HIER_DIRECT/{ext_ip} application/json",
        ),
        (
            "firewall",
            _SYS + "%ASA-6-302014: Teardown TCP connection {conn_id} for "
            "outside:{ext_ip}/443 to inside:{int_ip}/{hiport} duration {duration} bytes "
            "{bytes_large} TCP FINs",
        ),
        (
            "edr",
            _EDR + "network_summary process={benign_proc} user={NETBIOS}\\{user} "
            "dest={cloud_storage} bytes_out={bytes_large}",
        ),
    ),
    "traffic_burst": (
        (
            "web-server",
            _SYS + "nginx[{pid}]: limiting requests, excess: {float} by zone "
            '"perip", client: {ext_ip}, server: www.{client_domain}, request: "GET / HTTP/1.1"',
        ),
        (
            "web-server",
            _SYS + "haproxy[{pid}]: backend app_servers has no server available! "
            "{rate} sessions queued",
        ),
        (
            "firewall",
            _SYS + "%ASA-4-419002: Received {rate} connections per second to "
            "inside:{int_ip}/443 from outside, above the threshold",
        ),
    ),
    "mail": (
        (
            "mail-gateway",
            _SYS + "postfix/smtpd[{pid}]: {queue_id}: client=mail.{sender_domain}"
            "[{ext_ip}] from=<{sender}@{sender_domain}> to=<{user}@{client_domain}> "
            'subject="{subject}"',
        ),
        (
            "mail-gateway",
            _SYS + "mailgw[{pid}]: attachment scanned file={doc} from=<{sender}@"
            "{sender_domain}> to=<{user}@{client_domain}> sandbox=pending",
        ),
        (
            "mail-gateway",
            _SYS + "mailgw[{pid}]: url_rewrite user={user}@{client_domain} "
            "url=https://{rand}.{sender_domain}/{rand2} clicks={small_count}",
        ),
    ),
    "priv": (
        (
            "sudo",
            _SYS + "sudo[{pid}]:     {user} : TTY=pts/{tty} ; PWD=/home/{user} ; "
            "USER=root ; COMMAND={admin_cmd}",
        ),
        (
            "windows-security",
            _WIN + "4672 Special privileges assigned to new logon. Account "
            "Name: {user} Privileges: SeBackupPrivilege SeRestorePrivilege SeDebugPrivilege",
        ),
        (
            "windows-security",
            _WIN + "4732 A member was added to a security-enabled local group. "
            "Member: {NETBIOS}\\{user} Group: Administrators Subject: it.admin",
        ),
    ),
    "exec": (
        (
            "edr",
            _EDR + 'process_start image=powershell.exe cmdline="powershell.exe '
            '-ExecutionPolicy Bypass -File C:\\Windows\\Temp\\{rand}.ps1" '
            "user={NETBIOS}\\{user}",
        ),
        (
            "windows-security",
            _WIN + "4688 A new process has been created. New Process Name: "
            "{win_temp} Creator Process Name: {susp_proc} Token Elevation Type: %%1937",
        ),
    ),
    "file_activity": (
        (
            "windows-defender",
            "{iso_ts} {host} Microsoft-Windows-Windows Defender[1116]: "
            "Malware detected. Name: {generic_detection} Path: file:_{win_temp}",
        ),
        (
            "edr",
            _EDR + "alert=suspicious_file_writes process={rand}.exe files_modified={count} "
            "path=C:\\Users\\{user}\\Documents",
        ),
        (
            "edr",
            _EDR + "process_start image={susp_proc} parent={office_proc} "
            'cmdline="{susp_proc} /c start {win_temp}"',
        ),
    ),
}

# Which shared pools each class draws from, and how often a class's event comes from one.
_CLASS_POOLS: dict[str, tuple[str, ...]] = {
    "benign": ("auth_fail", "big_transfer", "traffic_burst", "mail", "priv"),
    "brute_force": ("auth_fail",),
    "malware": ("file_activity", "exec"),
    "phishing": ("mail",),
    "data_exfiltration": ("big_transfer",),
    "privilege_escalation": ("priv", "exec"),
    "ddos": ("traffic_burst",),
    "ransomware": ("file_activity",),
}
_SHARED_RATE = {"benign": 0.15}
_SHARED_RATE_ATTACK = 0.2

_START = pd.Timestamp("2024-11-01 00:00:00")


class _Fields(dict[str, str]):
    """Lazy placeholder values for one log line: each drawn once, on first use."""

    def __init__(self, rng: np.random.Generator, row: Mapping[str, str]):
        super().__init__(row)
        self._rng = rng

    def __missing__(self, key: str) -> str:
        base = key if key in _FIELDS else key.rstrip("0123456789").rstrip("_")
        value = _FIELDS[base](self._rng)
        self[key] = value
        return value


def security_events(n: int, *, seed: int = 0, label_noise: float = 0.03) -> pd.DataFrame:
    """Synthetic security events of an MSP's SIEM, labelled with threat class and severity.

    Parameters
    ----------
    n : int
        Number of events (rows), at least 1.
    seed : int, default 0
        Seed of the random generator; the same arguments give the same frame.
    label_noise : float, default 0.03
        Fraction of rows (rounded to a whole number) whose ``threat_class`` is replaced by
        another class drawn at random; the same fraction, drawn independently, for
        ``severity``. Real labels come from tired analysts.

    Returns
    -------
    pandas.DataFrame
        Columns ``timestamp`` (datetime64, sorted), ``host``, ``source`` (the log source:
        ``sshd``, ``firewall``, ``edr``, ``mail-gateway``, ``windows-security``, ``proxy``,
        ...), ``message`` (the raw log line), ``threat_class`` (one of
        :data:`THREAT_CLASSES`; about 45% benign) and ``severity`` (one of
        :data:`SEVERITIES`). Matches :data:`SECURITY_EVENTS_SCHEMA`.

    Examples
    --------
    >>> frame = security_events(5, seed=1)
    >>> list(frame.columns)
    ['timestamp', 'host', 'source', 'message', 'threat_class', 'severity']
    >>> frame.equals(security_events(5, seed=1))
    True
    """
    n = check_int(n, "n", where="security_events", minimum=1)
    seed = check_int(seed, "seed", where="security_events", minimum=0)
    label_noise = check_float(
        label_noise,
        "label_noise",
        where="security_events",
        rule="in [0, 1]",
        ok=lambda v: 0 <= v <= 1,
    )
    rng = np.random.default_rng(seed)

    classes = rng.choice(len(THREAT_CLASSES), size=n, p=_CLASS_SHARES)
    cumulative = np.cumsum(_SEVERITY_GIVEN_CLASS, axis=1)[classes]
    severities = np.minimum((rng.random((n, 1)) > cumulative).sum(axis=1), len(SEVERITIES) - 1)
    offsets = np.sort(rng.integers(0, 30 * 24 * 3600, size=n))
    times = _START + pd.to_timedelta(offsets, unit="s")

    hosts, sources, messages = [], [], []
    for c, ts in zip(classes, times, strict=True):
        label = THREAT_CLASSES[c]
        rate = _SHARED_RATE.get(label, _SHARED_RATE_ATTACK)
        if rng.random() < rate:
            pool = _CLASS_POOLS[label][int(rng.integers(len(_CLASS_POOLS[label])))]
            templates = _SHARED_TEMPLATES[pool]
        else:
            templates = _CLASS_TEMPLATES[label]
        source, template = templates[int(rng.integers(len(templates)))]
        host = _HOST_POOLS[_SOURCE_HOSTS[source]](rng)
        row = {
            "syslog_ts": f"{ts:%b} {ts.day:2d} {ts:%H:%M:%S}",
            "iso_ts": f"{ts:%Y-%m-%dT%H:%M:%S}.{rng.integers(0, 1000):03d}Z",
            "epoch": f"{ts.timestamp():.0f}.{rng.integers(0, 1000):03d}",
            "clf_ts": f"{ts:%d/%b/%Y:%H:%M:%S} +0000",
            "host": host,
            "HOST": host.upper(),
        }
        hosts.append(host)
        sources.append(source)
        messages.append(template.format_map(_Fields(rng, row)))

    classes = replace_some(rng, classes, len(THREAT_CLASSES), label_noise)
    severities = replace_some(rng, severities, len(SEVERITIES), label_noise)
    return pd.DataFrame(
        {
            "timestamp": times,
            "host": hosts,
            "source": sources,
            "message": messages,
            "threat_class": np.asarray(THREAT_CLASSES, dtype=object)[classes],
            "severity": np.asarray(SEVERITIES, dtype=object)[severities],
        }
    )


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


SECURITY_EVENTS_SCHEMA = Schema(
    "threat_intel data",
    (
        Column("message", "text", description="The raw log line or event text."),
        Column("threat_class", "category", description="Threat class, e.g. 'brute_force'."),
        Column("severity", "category", description="Severity: low, medium, high or critical."),
        Column("timestamp", "datetime", required=False, description="When the event happened."),
        Column("host", "text", required=False, description="The host that logged the event."),
        Column("source", "text", required=False, description="Log source, e.g. 'sshd'."),
    ),
)
"""Schema of the threat_intel agent's data; :func:`security_events` produces it."""


# ---------------------------------------------------------------------------------------
# Operational metrics
# ---------------------------------------------------------------------------------------

OPS_METRIC_FEATURES: tuple[str, ...] = (
    "cpu_pct",
    "mem_pct",
    "disk_io_mbps",
    "net_in_mbps",
    "net_out_mbps",
    "latency_ms",
    "error_rate_pct",
    "open_connections",
)
"""The numeric features of :func:`operational_metrics`, in column order."""

OPS_METRIC_BOUNDS: dict[str, tuple[float, float]] = {
    "cpu_pct": (0.0, 100.0),
    "mem_pct": (0.0, 100.0),
    "disk_io_mbps": (0.0, 1000.0),  # NVMe-backed server disks
    "net_in_mbps": (0.0, 1000.0),  # 1 GbE links
    "net_out_mbps": (0.0, 1000.0),
    "latency_ms": (0.0, 2000.0),  # clients time out at 2 s
    "error_rate_pct": (0.0, 100.0),
    "open_connections": (0.0, 10000.0),
}
"""Public physical bounds of each metric; every generated value lies inside them.

A federated isolation forest draws its split points from these bounds rather than from any
MSP's data, so they are public knowledge, and kept tight enough that random splits land
where the data is.
"""

WORKLOAD_PROFILES: tuple[str, ...] = ("web", "database", "batch", "file_server", "vdi")
"""Workload profiles of the hosts in :func:`operational_metrics`."""

_PROFILE_SHARES = np.array([0.30, 0.20, 0.15, 0.15, 0.20])

# Per profile and feature: (center, spread, scale). "linear" features are
# center + spread * z; "log" features are center * exp(spread * z), i.e. log-normal with
# median ``center``: throughput, latency and counts are skewed to the right.
_SCALES = ("linear", "linear", "log", "log", "log", "log", "log", "log")
_REGIMES: dict[str, tuple[tuple[float, float], ...]] = {
    #              cpu         mem          disk        net_in      net_out     latency
    #              errors       conns
    "web": ((40, 12), (45, 8), (15, 0.5), (90, 0.45), (220, 0.45), (70, 0.35),
            (0.6, 0.5), (1200, 0.4)),
    "database": ((50, 12), (82, 5), (220, 0.4), (50, 0.4), (80, 0.4), (12, 0.4),
                 (0.15, 0.5), (250, 0.35)),
    "batch": ((82, 8), (60, 12), (140, 0.45), (15, 0.6), (10, 0.6), (150, 0.4),
              (0.4, 0.6), (25, 0.5)),
    "file_server": ((15, 5), (38, 7), (170, 0.45), (140, 0.5), (190, 0.5), (20, 0.35),
                    (0.25, 0.5), (180, 0.4)),
    "vdi": ((35, 10), (68, 8), (35, 0.45), (25, 0.45), (55, 0.45), (35, 0.35),
            (0.3, 0.5), (70, 0.4)),
}  # fmt: skip

# Two latent factors per profile (loadings on each feature) give each regime its own
# correlations: web traffic drives network and connections; database load drives memory,
# disk and latency; batch jobs drive cpu, memory and disk; and so on.
_LOADINGS: dict[str, np.ndarray] = {
    "web": np.array(
        [[0.7, 0.2, 0.1, 0.85, 0.85, 0.4, 0.3, 0.85], [0.0, 0.5, 0.3, 0.0, 0.0, 0.5, 0.4, 0.1]]
    ),
    "database": np.array(
        [[0.75, 0.5, 0.8, 0.5, 0.6, 0.6, 0.2, 0.7], [0.0, 0.3, 0.3, 0.0, 0.0, 0.4, 0.5, 0.0]]
    ),
    "batch": np.array(
        [[0.8, 0.6, 0.7, 0.2, 0.2, 0.3, 0.1, 0.2], [0.0, 0.3, 0.0, 0.6, 0.6, 0.2, 0.3, 0.3]]
    ),
    "file_server": np.array(
        [[0.3, 0.2, 0.85, 0.75, 0.75, 0.3, 0.1, 0.6], [0.0, 0.4, 0.0, 0.0, 0.0, 0.5, 0.3, 0.0]]
    ),
    "vdi": np.array(
        [[0.7, 0.7, 0.4, 0.5, 0.7, 0.3, 0.1, 0.8], [0.0, 0.0, 0.4, 0.0, 0.0, 0.6, 0.4, 0.0]]
    ),
}
# Interactive workloads follow the working day; batch and databases much less so.
_DIURNAL = {"web": 0.9, "database": 0.4, "batch": -0.5, "file_server": 0.6, "vdi": 1.2}

_ANOMALY_KINDS = ("spike", "correlation_break", "profile_mix", "saturation", "outage")


def _regime(rng: np.random.Generator, profile: str, hours: np.ndarray) -> np.ndarray:
    """Normal metrics of ``len(hours)`` rows of one profile (before clipping)."""
    m = len(hours)
    loadings = _LOADINGS[profile]
    unique = np.sqrt(np.clip(1.0 - (loadings**2).sum(axis=0), 0.05, None))
    factors = rng.standard_normal((m, 2))
    # Working hours (8-18 h) raise the first factor; the cosine peaks at 13 h.
    factors[:, 0] += _DIURNAL[profile] * np.cos(2 * np.pi * (hours - 13.0) / 24.0)
    z = factors @ loadings + rng.standard_normal((m, len(OPS_METRIC_FEATURES))) * unique
    return _from_z(profile, z)


def _from_z(profile: str, z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    for j, ((center, spread), scale) in enumerate(zip(_REGIMES[profile], _SCALES, strict=True)):
        out[:, j] = (
            center + spread * z[:, j] if scale == "linear" else center * np.exp(spread * z[:, j])
        )
    return out


def _inject(
    rng: np.random.Generator, x: np.ndarray, profile: str, hour: float, kind: str
) -> np.ndarray:
    """One anomalous version of the metrics row ``x`` of a host of ``profile``."""
    lo = np.array([OPS_METRIC_BOUNDS[f][0] for f in OPS_METRIC_FEATURES])
    hi = np.array([OPS_METRIC_BOUNDS[f][1] for f in OPS_METRIC_FEATURES])
    x = x.copy()
    d = len(x)
    if kind == "spike":  # one or two metrics jump far above their regime
        for j in rng.choice(d, size=int(rng.integers(1, 3)), replace=False):
            x[j] = max(x[j], lo[j] + (hi[j] - lo[j]) * rng.uniform(0.35, 1.0))
    elif kind == "correlation_break":  # features that move together move apart
        loadings = _LOADINGS[profile][0]
        z = rng.standard_normal(d) * 0.5
        linked = np.flatnonzero(loadings >= 0.5)
        signs = rng.permutation(np.resize([1.0, -1.0], len(linked)))
        z[linked] = signs * rng.uniform(3.0, 4.5, size=len(linked))
        x = _from_z(profile, z[None, :])[0]
    elif kind == "profile_mix":  # half the metrics look like another workload, stressed
        other = _pick(rng, tuple(p for p in WORKLOAD_PROFILES if p != profile))
        y = _regime(rng, other, np.array([hour]))[0]
        y = _from_z(other, np.full((1, d), 2.5))[0] * 0.5 + y * 0.5
        cols = rng.choice(d, size=d // 2, replace=False)
        x[cols] = y[cols]
    elif kind == "saturation":  # the host is out of a resource and everything queues
        x[0] = rng.uniform(96.0, 100.0)
        x[1] = rng.uniform(93.0, 100.0)
        x[5] = rng.uniform(500.0, 2000.0)
        x[6] = rng.uniform(5.0, 40.0)
    else:  # outage: the service is down, clients time out
        x[0] = rng.uniform(0.0, 3.0)
        x[2:5] = rng.uniform(0.0, 0.5, size=3)
        x[5] = rng.uniform(1500.0, 2000.0)
        x[6] = rng.uniform(50.0, 100.0)
        x[7] = rng.uniform(0.0, 5.0)
    return x


def operational_metrics(n: int, *, seed: int = 0, anomaly_fraction: float = 0.05) -> pd.DataFrame:
    """Synthetic host metrics of an MSP's monitoring, with labelled injected anomalies.

    Each host runs one workload profile (``web``, ``database``, ``batch``, ``file_server``,
    ``vdi``) whose metrics follow their own multivariate regime: its own means, spreads and
    correlations (a database's memory and disk I/O rise together, a web server's traffic
    and connections), with a daily cycle for interactive workloads.

    Parameters
    ----------
    n : int
        Number of rows (one host at one 5-minute sample), at least 1.
    seed : int, default 0
        Seed of the random generator; the same arguments give the same frame.
    anomaly_fraction : float, default 0.05
        Fraction of rows (rounded to a whole number, at most 0.5) replaced by anomalies of
        five kinds: a spike in one or two metrics, a break of the profile's correlations,
        a mix of metrics typical of another profile, saturation, and an outage.

    Returns
    -------
    pandas.DataFrame
        Columns ``timestamp`` (sorted), ``host``, ``profile``, the
        :data:`OPS_METRIC_FEATURES` (float64, inside :data:`OPS_METRIC_BOUNDS`;
        ``open_connections`` holds whole numbers) and ``is_anomaly`` (bool). Matches
        :data:`OPS_METRICS_SCHEMA`.

    Examples
    --------
    >>> frame = operational_metrics(200, seed=3, anomaly_fraction=0.1)
    >>> int(frame["is_anomaly"].sum())
    20
    >>> bool((frame["cpu_pct"] <= 100).all())
    True
    """
    n = check_int(n, "n", where="operational_metrics", minimum=1)
    seed = check_int(seed, "seed", where="operational_metrics", minimum=0)
    anomaly_fraction = check_float(
        anomaly_fraction,
        "anomaly_fraction",
        where="operational_metrics",
        rule="in [0, 0.5]",
        ok=lambda v: 0 <= v <= 0.5,
    )
    rng = np.random.default_rng(seed)

    # Hosts: a fixed fleet per profile, sized so a host has a few dozen samples.
    fleet = max(5, n // 40)
    host_profile = rng.choice(len(WORKLOAD_PROFILES), size=fleet, p=_PROFILE_SHARES)
    host_profile[: len(WORKLOAD_PROFILES)] = np.arange(len(WORKLOAD_PROFILES))
    numbers = np.zeros(len(WORKLOAD_PROFILES), dtype=int)
    host_names = []
    for p in host_profile:
        numbers[p] += 1
        prefix = ("web", "db", "batch", "fs", "vdi")[p]
        host_names.append(f"{prefix}-{numbers[p]:02d}")
    row_host = rng.integers(0, fleet, size=n)
    profiles = host_profile[row_host]

    slots = np.sort(rng.integers(0, 14 * 24 * 12, size=n))  # 5-minute slots over 2 weeks
    times = _START + pd.to_timedelta(slots * 5, unit="min")
    hours = (slots * 5 / 60.0) % 24.0

    x = np.empty((n, len(OPS_METRIC_FEATURES)))
    for p, name in enumerate(WORKLOAD_PROFILES):
        rows = np.flatnonzero(profiles == p)
        if rows.size:
            x[rows] = _regime(rng, name, hours[rows])

    is_anomaly = np.zeros(n, dtype=bool)
    count = round(anomaly_fraction * n)
    if count:
        rows = np.sort(rng.choice(n, size=count, replace=False))
        is_anomaly[rows] = True
        for i in rows:
            kind = _pick(rng, _ANOMALY_KINDS)
            x[i] = _inject(rng, x[i], WORKLOAD_PROFILES[profiles[i]], hours[i], kind)

    lo = np.array([OPS_METRIC_BOUNDS[f][0] for f in OPS_METRIC_FEATURES])
    hi = np.array([OPS_METRIC_BOUNDS[f][1] for f in OPS_METRIC_FEATURES])
    x = np.clip(np.round(x, 2), lo, hi)
    x[:, -1] = np.round(x[:, -1])

    frame = pd.DataFrame(
        {
            "timestamp": times,
            "host": np.asarray(host_names, dtype=object)[row_host],
            "profile": np.asarray(WORKLOAD_PROFILES, dtype=object)[profiles],
        }
    )
    for j, feature in enumerate(OPS_METRIC_FEATURES):
        frame[feature] = x[:, j]
    frame["is_anomaly"] = is_anomaly
    return frame


_FEATURE_DESCRIPTIONS = {
    "cpu_pct": "CPU utilisation, percent.",
    "mem_pct": "Memory in use, percent.",
    "disk_io_mbps": "Disk read + write throughput, MB/s.",
    "net_in_mbps": "Inbound network throughput, Mbit/s.",
    "net_out_mbps": "Outbound network throughput, Mbit/s.",
    "latency_ms": "Service response latency, milliseconds.",
    "error_rate_pct": "Share of requests that failed, percent.",
    "open_connections": "Open network connections.",
}

OPS_METRICS_SCHEMA = Schema(
    "anomaly data",
    (
        *(Column(f, "number", description=_FEATURE_DESCRIPTIONS[f]) for f in OPS_METRIC_FEATURES),
        Column("profile", "category", required=False, description="Workload profile."),
        Column(
            "is_anomaly",
            "bool",
            required=False,
            description="Ground truth, where known; unlabelled data is valid for training.",
        ),
        Column("timestamp", "datetime", required=False, description="Sample time."),
        Column("host", "text", required=False, description="The host measured."),
    ),
)
"""Schema of the anomaly agent's data; :func:`operational_metrics` produces it."""
