"""What fills the placeholders of synthetic security log lines: vocabularies, hosts, fields.

Tables behind :func:`meshfl.data.security_events_data.security_events`: the users, client
domains, processes, malware names, ... that a log-line template's placeholders draw from
(:data:`FIELDS`), and the hosts that emit each log source (:data:`HOST_POOLS`,
:data:`SOURCE_HOSTS`). The templates themselves are in
:mod:`meshfl.data.security_event_templates`.
"""

from __future__ import annotations

import string
from collections.abc import Callable

import numpy as np

from meshfl.data.templates import MONTHS, pick

__all__ = ["FIELDS", "HOST_POOLS", "SOURCE_HOSTS"]

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
    "README-RESTORE.txt", "HOW_TO_DECRYPT.html",
    "Restore-My-Files.txt", "!!!READ_ME!!!.txt", "akira_readme.txt",
)  # fmt: skip
_SHARES = ("finance", "hr", "projects", "scans", "public", "accounting", "legal")
_DOC_FILES = (
    "Q3_report.xlsx", "invoice_88213.pdf", "payroll_2024.csv",
    "customers.xlsx", "contract_final.docx", "budget_FY25.xlsx", "board_minutes.docx",
)  # fmt: skip
_SENSITIVE_FILES = (
    "customer_export.csv", "payroll_2024.xlsx", "ssn_list.xlsx",
    "patients_full.csv", "crm_dump.zip", "source_backup.7z",
)  # fmt: skip
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

# Hosts that emit each log source.
HOST_POOLS: dict[str, Callable[[np.random.Generator], str]] = {
    "linux": lambda r: (
        f"{pick(r, ('web', 'app', 'db', 'bastion', 'jump', 'k8s-node'))}-{r.integers(1, 13):02d}"
    ),
    "firewall": lambda r: pick(r, ("fw-01", "fw-02", "edge-fw01", "pfsense-01", "asa-core")),
    "ids": lambda r: pick(r, ("ids-01", "ids-02", "suricata-dmz")),
    "workstation": lambda r: f"ws-{r.integers(1, 400):04d}",
    "windows": lambda r: (
        pick(r, ("DC01", "DC02", "FS01", "EXCH01", "SQL01", "RDS01"))
        if r.random() < 0.5
        else f"WS-{r.integers(1, 400):04d}"
    ),
    "mail": lambda r: pick(r, ("mx-01", "mx-02", "mailgw-01")),
    "proxy": lambda r: pick(r, ("proxy-01", "proxy-02")),
    "dns": lambda r: pick(r, ("ns-01", "ns-02", "dc01")),
    "web": lambda r: f"web-{r.integers(1, 9):02d}",
    "cloud": lambda r: pick(r, ("azure-ad", "m365-audit", "aws-cloudtrail")),
    "dlp": lambda r: pick(r, ("dlp-01", "purview-dlp")),
    "netflow": lambda r: pick(r, ("edge-rtr01", "edge-rtr02", "ddos-mitigator")),
}

# Which host pool each log source comes from.
SOURCE_HOSTS = {
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
FIELDS: dict[str, Callable[[np.random.Generator], str]] = {
    "pid": lambda r: str(r.integers(300, 65000)),
    "user": lambda r: pick(r, _USERS),
    "baduser": lambda r: pick(r, _BAD_USERS),
    "ext_ip": _public_ip,
    "int_ip": _private_ip,
    "any_ip": lambda r: _public_ip(r) if r.random() < 0.5 else _private_ip(r),
    "hiport": lambda r: str(r.integers(1024, 65536)),
    "svc_port": lambda r: pick(r, ("22", "80", "443", "445", "3389", "8443", "1433", "25")),
    "c2_port": lambda r: pick(r, ("443", "8080", "4444", "8443", "1337", "53", "2222")),
    "odd_port": lambda r: pick(r, ("21", "22", "2222", "8081", "9001", "6000", "4443")),
    "client_domain": lambda r: pick(r, _CLIENT_DOMAINS),
    "NETBIOS": lambda r: pick(r, _NETBIOS),
    "saas": lambda r: pick(r, _SAAS),
    "cloud_storage": lambda r: pick(r, _CLOUD_STORAGE),
    "phish_domain": lambda r: (
        f"{pick(r, _BRANDS)}-{pick(r, _PHISH_WORDS)}"
        f"{'-' + str(r.integers(10, 99)) if r.random() < 0.4 else ''}.{pick(r, _SHADY_TLDS)}"
    ),
    "dga_domain": lambda r: f"{_word(r, int(r.integers(9, 17)))}.{pick(r, _SHADY_TLDS)}",
    "tunnel_domain": lambda r: f"{_word(r, int(r.integers(4, 8)))}.{pick(r, _SHADY_TLDS)}",
    "sender_domain": lambda r: pick(r, _SENDER_DOMAINS),
    "sender": lambda r: pick(
        r, ("billing", "noreply", "support", "accounts", "it-desk", "hr", "notifications", "sales")
    ),
    "phish_subject": lambda r: pick(r, _PHISH_SUBJECTS).format(
        digits=r.integers(10000, 99999), month=pick(r, MONTHS)
    ),
    "subject": lambda r: pick(r, _SUBJECTS).format(
        digits=r.integers(10000, 99999), month=pick(r, MONTHS)
    ),
    "digits": lambda r: str(r.integers(10000, 99999)),
    "sha256": lambda r: _hex(r, 64),
    "hex8": lambda r: _hex(r, 8),
    "hex16": lambda r: _hex(r, 16),
    "queue_id": lambda r: _hex(r, 10).upper(),
    "rand": lambda r: _word(r, int(r.integers(5, 10))),
    "b64": lambda r: _b64(r, int(r.integers(24, 60))),
    "b32": lambda r: _word(r, int(r.integers(20, 40))),
    "benign_proc": lambda r: pick(r, _BENIGN_PROCS),
    "app": _app,
    "office_proc": lambda r: pick(r, _OFFICE_PROCS),
    "susp_proc": lambda r: pick(r, _SUSP_PROCS),
    "malware": lambda r: pick(r, _MALWARE),
    "generic_detection": lambda r: pick(r, _GENERIC_DETECTIONS),
    "ransom_family": lambda r: pick(r, _RANSOM_FAMILIES),
    "ransom_ext": lambda r: pick(r, _RANSOM_EXTS),
    "ransom_note": lambda r: pick(r, _RANSOM_NOTES),
    "share": lambda r: pick(r, _SHARES),
    "doc": lambda r: pick(r, _DOC_FILES),
    "sensitive_file": lambda r: pick(r, _SENSITIVE_FILES),
    "dlp_policy": lambda r: pick(r, _DLP_POLICIES),
    "group": lambda r: pick(r, _GROUPS),
    "admin_cmd": lambda r: pick(r, _ADMIN_CMDS).replace("{user}", pick(r, _USERS)),
    "svc_stop": lambda r: pick(r, _SVC_STOPS),
    "web_path": lambda r: pick(r, _WEB_PATHS),
    "ua": lambda r: pick(r, _UAS),
    "bot_ua": lambda r: pick(r, _BOT_UAS),
    "country": lambda r: pick(r, _COUNTRIES),
    "exfil_tool": lambda r: pick(r, _EXFIL_TOOLS),
    "win_temp": lambda r: pick(
        r,
        (
            "C:\\Users\\{u}\\AppData\\Local\\Temp\\{w}.exe",
            "C:\\ProgramData\\{w}\\{w}.dll",
            "C:\\Users\\{u}\\Downloads\\{w}.js",
            "C:\\Windows\\Temp\\{w}.exe",
            "C:\\Users\\{u}\\AppData\\Roaming\\{w}\\{w}.exe",
        ),
    ).format(u=pick(r, _USERS), w=_word(r, int(r.integers(5, 10)))),
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
    "logon_type": lambda r: pick(r, ("2", "3", "3", "10")),
    "rate": lambda r: str(r.integers(450, 90000)),
    "gbps": lambda r: f"{r.uniform(1.5, 80):.1f}",
    "amp": lambda r: "{}/{}".format(*_AMP[int(r.integers(len(_AMP)))]),
    "float": lambda r: f"{r.uniform(1, 60):.3f}",
    "job": lambda r: pick(
        r, ("Nightly-Servers", "FS01-Daily", "SQL-Full", "M365-Backup", "Offsite-Copy")
    ),
    "bucket": lambda r: f"{pick(r, _NETBIOS).lower()}-{pick(r, ('backups', 'exports', 'data'))}",
}
