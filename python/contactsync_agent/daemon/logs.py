"""The agent's log: a rotating owner-only file plus stderr, with every line
escaped (no raw control characters from input) and masked (no e-mail address
or phone number, whatever an error message echoes).

Sets up handlers and formats lines; it must not decide what is logged, nor
read records or touch the database.
"""

from __future__ import annotations

import contextlib
import io
import logging
import logging.handlers
import os
import re
import sys
import time
from pathlib import Path

from contactsync_agent.config import AgentConfig
from contactsync_agent.safetext import EscapingFormatter

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w.:-])(\+|\(?0)\d[\d ()-]{6,}\d")


class RedactFilter(logging.Filter):
    """A last guard: masks e-mail addresses and phone numbers in any log line.

    The daemon never logs record contents on purpose; this catches what an
    error message from a reader might echo.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = _PHONE.sub("<phone>", _EMAIL.sub("<email>", msg))
        if clean != msg:
            record.msg, record.args = clean, None
        return True


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose every file (the first, and each new one after a
    rotation) is created owner-only, whatever the umask.

    On Windows the mode bits mean nothing (os.fchmod is missing before Python
    3.13): the folder's ACL keeps the log private, and the file is opened in
    binary mode so the C runtime does not turn each line end into CR CR LF.
    """

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0)
        fd = os.open(self.baseFilename, flags, 0o600)
        if sys.platform != "win32":
            os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def default_log_file(db_path: Path) -> Path:
    return db_path.with_name("contactsync-agent.log")


def setup_logging(cfg: AgentConfig, db_path: Path) -> Path:
    """A rotating log file (owner-only) plus stderr, which systemd's journal collects."""
    path = cfg.log_file or default_log_file(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    # Messages are escaped (safetext): a control character from input never reaches the log raw.
    fmt = EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    fmt.converter = time.gmtime
    fmt.default_msec_format = "%s.%03dZ"
    root = logging.getLogger("contactsync_agent")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    file_handler = PrivateRotatingFileHandler(
        path,
        maxBytes=cfg.daemon.log_max_bytes,
        backupCount=cfg.daemon.log_backups,
        encoding="utf-8",
    )
    err_handler = logging.StreamHandler(sys.stderr)
    for h in (file_handler, err_handler):
        h.setFormatter(fmt)
        h.addFilter(RedactFilter())
        root.addHandler(h)
    root.setLevel(cfg.daemon.log_level)
    root.propagate = False
    return path

