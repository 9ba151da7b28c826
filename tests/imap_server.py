"""A real IMAP server for the tests: Dovecot (Debian's dovecot-imapd), IMAPS on a private port.

Runs unprivileged where it can: as root it hands mail and logins to ``nobody``; otherwise
everything runs as the current user. Its certificate comes from the tests' CA, so the reader
verifies it as it would a provider's.
"""

from __future__ import annotations

import getpass
import grp
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import trustme
from imapclient import IMAPClient

DOVECOT = shutil.which("dovecot") or (
    "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None
)

_CONFIG = """
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
auth_mechanisms = plain login
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={d}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
"""


class DovecotServer:
    """One mailbox user on a private Dovecot; ``admin()`` opens a session as that user."""

    def __init__(self, ca: trustme.CA, user: str = "bounces@example.com",
                 password: str = "imap-S3cret/pw") -> None:  # fmt: skip
        self.ca, self.user, self.password = ca, user, password
        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="mailworker-imap-", dir="/tmp"))
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, folder: str = "INBOX", **query: str) -> str:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return (f"imaps://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
                f"@localhost:{self.port}/{folder}" + (f"?{q}" if q else ""))  # fmt: skip

    def start(self) -> DovecotServer:
        assert DOVECOT is not None
        d = self.directory
        d.chmod(0o755)  # the mail user (nobody, under root) must reach its home
        cert = self.ca.issue_cert("localhost", "127.0.0.1")
        cert.private_key_pem.write_to_path(str(d / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
        (d / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}\n")
        (d / "home").mkdir()
        root = os.geteuid() == 0
        user = "nobody" if root else getpass.getuser()
        group = grp.getgrgid(65534 if root else os.getegid()).gr_name
        if root:
            shutil.chown(d / "home", user, group)
        (d / "dovecot.conf").write_text(_CONFIG.format(d=d, user=user, group=group, port=self.port))
        self.process = subprocess.Popen([DOVECOT, "-F", "-c", str(d / "dovecot.conf")],
                                        start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.admin().logout()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"dovecot did not start: {(d / 'dovecot.log').read_text()}")

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)

    def admin(self) -> IMAPClient:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        imap = IMAPClient("localhost", port=self.port, ssl=True, ssl_context=context, timeout=10)
        imap.login(self.user, self.password)
        return imap

    def deliver(self, *messages: bytes, folder: str = "INBOX") -> None:
        """Put messages in a folder, as the MTA's local delivery would."""
        imap = self.admin()
        for raw in messages:
            imap.append(folder, raw)
        imap.logout()

    def count(self, folder: str) -> int:
        imap = self.admin()
        try:
            if not imap.folder_exists(folder):
                return 0
            return int(imap.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])
        finally:
            imap.logout()

    def empty(self) -> None:
        imap = self.admin()
        for name in [f[2] for f in imap.list_folders()]:
            imap.select_folder(name)
            imap.delete_messages(imap.search("ALL"))
            imap.expunge()
        imap.logout()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
