"""The systemd unit and the operations guide that ship inside the package, and
installing the unit where systemd reads it (`contactsync install-service`).

The unit is the package's own file with its paths made true for this install:
`ExecStart=` runs the `contactsync` executable installed beside this package and
`Documentation=` points at the shipped operations guide. The user variant
(`--user`, a unit of the user's own systemd instance) leaves out what only a
system service can have (its own account, capabilities, a file-system sandbox
whose writable folders must be named).

It writes one unit file and nothing else: it never runs systemctl, never starts
or stops the agent, and never opens the mirror or the config.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from contactsync_agent.errors import ConfigError, ContactSyncError

UNIT_NAME = "contactsync-agent.service"
OPERATIONS_DOC = "operations.md"
#: Where systemd reads the units an administrator installs.
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")

#: Settings a unit of a user's own systemd instance cannot have or should not:
#: another account, capabilities, the system unit's file-system sandbox
#: (read-only everywhere but /var/lib/contactsync and /srv/exports, no home) and
#: the rest of the namespace sandbox, which a user's systemd can set up only with
#: unprivileged user namespaces. The seccomp-based restrictions stay.
_SYSTEM_ONLY = frozenset({
    "User", "Group", "SupplementaryGroups", "DynamicUser", "AmbientCapabilities",
    "CapabilityBoundingSet", "ProtectSystem", "ProtectHome", "ReadWritePaths",
    "ReadOnlyPaths", "InaccessiblePaths", "StateDirectory", "StateDirectoryMode",
    "PrivateTmp", "PrivateDevices", "PrivateUsers", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
    "ProtectHostname", "ProtectProc",
})
_USER_HEADER = (
    "# systemd user unit of the contactsync agent (`contactsync install-service --user`).\n"
    "#   systemctl --user daemon-reload && systemctl --user enable --now contactsync-agent\n"
    "#   loginctl enable-linger   # to keep it running while you are logged out\n"
    "# It reads your own config and database (`contactsync init`); the system unit\n"
    "# (`contactsync install-service`, as root) runs it hardened under its own account.\n"
)
_SETTING = re.compile(r"^\s*([A-Za-z]+)\s*=")


@dataclass(frozen=True)
class InstalledUnit:
    """`install_service`'s result: the file written and the commands that start it."""

    path: Path
    scope: str  # "system" or "user"
    next_steps: tuple[str, ...]


def shipped_file(name: str) -> Path:
    """A data file shipped in the package (`data/NAME`), as a path on disk."""
    path = Path(str(resources.files("contactsync_agent").joinpath("data", name)))
    if not path.is_file():
        raise ContactSyncError(f"{path}: missing from the installed package; reinstall it")
    return path


def operations_doc_path() -> Path:
    """The operations guide (install, day to day, monitoring) shipped in the package."""
    return shipped_file(OPERATIONS_DOC)


def contactsync_executable() -> Path:
    """The `contactsync` executable of this install: the scripts folder of the running
    interpreter's scheme (a virtualenv's bin/), else the command being run, else PATH's."""
    name = "contactsync.exe" if os.name == "nt" else "contactsync"
    scripts = Path(sysconfig.get_path("scripts")) / name
    if scripts.is_file():
        return scripts
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == name and argv0.is_file():
        return argv0.absolute()
    found = shutil.which(name)
    if found:
        return Path(found).absolute()
    raise ContactSyncError(
        f"cannot find the {name} executable of this install (looked in {scripts.parent} "
        "and PATH): reinstall the package with pip"
    )


def user_unit_dir() -> Path:
    """Where a user's own systemd instance reads units: $XDG_CONFIG_HOME/systemd/user."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def _quoted(path: Path) -> str:
    text = str(path)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def service_unit(*, user: bool = False, executable: Path | None = None) -> str:
    """The shipped unit with this install's paths: `ExecStart=` runs `executable`
    (default: this install's `contactsync`), `Documentation=` is the shipped guide.
    `user`: the variant for a user's own systemd instance (`systemctl --user`)."""
    exe = executable if executable is not None else contactsync_executable()
    doc = operations_doc_path()
    lines: list[str] = []
    shipped = shipped_file(UNIT_NAME).read_text(encoding="utf-8").splitlines()
    if user:  # its own header instead of the system unit's install notes
        while shipped and (shipped[0].startswith("#") or not shipped[0].strip()):
            shipped.pop(0)
        lines = [*_USER_HEADER.splitlines(), ""]
    for line in shipped:
        m = _SETTING.match(line)
        key = m.group(1) if m else None
        if user and key in _SYSTEM_ONLY:
            continue
        if user and key == "Environment" and "/etc/contactsync" in line:
            continue  # a user's agent reads its config from the user's config directory
        if key == "ExecStart":
            line = re.sub(r"^(\s*ExecStart\s*=\s*[-@:+!]*)(\"[^\"]*\"|\S+)",
                          lambda g: g.group(1) + _quoted(exe), line)
        elif key == "Documentation":
            line = re.sub(r"file://\S*operations\.md", lambda _: doc.as_uri(), line)
        elif user and key == "WantedBy":
            line = "WantedBy=default.target"
        lines.append(line)
    return "\n".join(lines).rstrip("\n") + "\n"


def install_service(*, user: bool = False, directory: Path | None = None,
                    executable: Path | None = None, force: bool = False) -> InstalledUnit:
    """Writes the unit (`service_unit`) as contactsync-agent.service where systemd reads
    it: /etc/systemd/system (needs root) or, with `user`, the user's own units folder
    (`user_unit_dir`); `directory` overrides the folder. An existing different file is
    kept unless `force`. The file is owner-only (0600), written whole then renamed."""
    scope = "user" if user else "system"
    folder = directory if directory is not None else (
        user_unit_dir() if user else SYSTEM_UNIT_DIR)
    if not user and directory is None and hasattr(os, "geteuid") and os.geteuid() != 0:
        raise ContactSyncError(
            f"writing the system unit into {folder} needs root: run it with sudo, or "
            "`contactsync install-service --user` for a unit of your own, or "
            "`--print` to see it"
        )
    text = service_unit(user=user, executable=executable)
    path = folder / UNIT_NAME
    if path.exists() and not force and path.read_text(encoding="utf-8") != text:
        raise ConfigError(f"{path} exists and differs: --force replaces it")
    try:
        folder.mkdir(mode=0o700 if user else 0o755, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{UNIT_NAME}.", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except PermissionError:
        raise ContactSyncError(
            f"{folder}: permission denied writing {UNIT_NAME}: run it as the folder's "
            "owner (sudo for the system unit), or --print and install it yourself"
        ) from None
    except OSError as e:
        raise ContactSyncError(f"{folder}: cannot write {UNIT_NAME}: {e.strerror}") from None
    ctl = "systemctl --user" if user else "systemctl"
    reads = user_unit_dir() if user else SYSTEM_UNIT_DIR
    steps: tuple[str, ...] = ()
    if folder.resolve() != reads.resolve():  # --dir elsewhere: systemd does not read it there
        steps += (f"cp {shlex.quote(str(path))} {shlex.quote(str(reads))}/"
                  "  # systemd reads units from there",)
    steps += (f"{ctl} daemon-reload", f"{ctl} enable --now {UNIT_NAME.removesuffix('.service')}")
    if user:
        steps += ("loginctl enable-linger  # keep it running while you are logged out",)
    return InstalledUnit(path, scope, steps)
