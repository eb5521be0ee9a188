"""The log-line templates of synthetic security events: each threat class's own, and shared.

A template is ``(log source, format string)``, in the syslog, Windows-event, EDR,
mail-gateway, proxy, ... formats an MSP's SIEM collects. :data:`CLASS_TEMPLATES` are the
lines of one class; :data:`SHARED_TEMPLATES` are lines that several classes emit (a user
mistyping a password looks like one attempt of a brute-force run), which keep a text
classifier honest. :mod:`meshfl.data.security_event_fields` fills the placeholders;
:func:`meshfl.data.security_events_data.security_events` chooses the templates.
"""

from __future__ import annotations

__all__ = ["CLASS_TEMPLATES", "SHARED_TEMPLATES"]

# (source, template). Placeholders {syslog_ts}, {iso_ts}, {epoch}, {clf_ts}, {host} and
# {HOST} come from the row; the rest from security_event_fields.FIELDS.
_Template = tuple[str, str]

_SYS = "{syslog_ts} {host} "
_WIN = "{iso_ts} {HOST} Microsoft-Windows-Security-Auditing: "
_EDR = "{iso_ts} {host} edr: "

CLASS_TEMPLATES: dict[str, tuple[_Template, ...]] = {
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
SHARED_TEMPLATES: dict[str, tuple[_Template, ...]] = {
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
