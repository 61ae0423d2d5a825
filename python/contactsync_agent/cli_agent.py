"""The agent's commands: `daemon`, `init`, `source list|enable|disable` and `install-service`.

A thin layer over the `daemon` package, `config.py` and `service.py`, registered into the main
`contactsync` group by `cli._load_extensions` (the `EXTENSIONS` list); no logic
of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from contactsync_agent.config import (
    default_config_path,
    load_config,
    write_example_config,
    write_source_enabled,
)


def _config_path(obj: Any) -> Path:
    return Path(obj.config_path).expanduser() if obj.config_path else default_config_path()


def register(cli: click.Group) -> None:
    from contactsync_agent import cli_output as out
    from contactsync_agent.cli import emit_json, json_option

    @cli.command()
    @click.pass_obj
    def daemon(obj: Any) -> None:
        """Run the background agent until SIGTERM/SIGINT (SIGHUP re-reads the config;
        on Windows, Ctrl-C or Ctrl-Break stops it and a restart re-reads the config).

        Watches each enabled source's folder, syncs settled files one at a time,
        records a heartbeat and alerts on health changes. One per database.
        A stop rolls back the run in progress (a sql or http run waiting on its
        server too) and exits within 10 s. -v logs at INFO (-vv DEBUG), -q only
        warnings and errors, whatever [agent] log_level says.
        """
        from contactsync_agent.cli_output import verbosity
        from contactsync_agent.daemon import run_daemon

        path = _config_path(obj)
        cfg = load_config(path, required=True)
        db = Path(obj._db).expanduser() if obj._db else cfg.database
        v = verbosity()
        level = None if v == 0 else "WARNING" if v < 0 else "INFO" if v == 1 else "DEBUG"
        sys.exit(run_daemon(path, db, log_level=level))

    @cli.command()
    @click.option("--force", is_flag=True, help="Overwrite an existing file.")
    @click.option(
        "--database",
        default=None,
        help="Database path to write into the config (default: --db, else the "
        "user data directory).",
    )
    @click.pass_obj
    def init(obj: Any, force: bool, database: str | None) -> None:
        """Write a commented example config (every source disabled)."""
        from contactsync_agent.mirror import default_db_path

        path = _config_path(obj)
        db = database or (obj._db if obj._db else default_db_path())
        written = write_example_config(path, db, force=force)
        click.echo(f"wrote {written}")
        click.echo(
            "edit the [sources.*] tables, then `contactsync source enable NAME` and "
            "start `contactsync daemon`"
        )

    @cli.group()
    def source() -> None:
        """List the configured sources; enable or disable one."""

    @source.command("list")
    @json_option
    @out.format_option
    @click.pass_obj
    def source_list(obj: Any, as_json: bool, out_format: str | None) -> None:
        """The sources of the config file (validates the file)."""
        cfg = load_config(_config_path(obj), required=True)
        rows: list[dict[str, Any]] = [
            {
                "name": s.name,
                "enabled": s.enabled,
                "kind": s.kind,
                "path": s.path,
                "pattern": s.pattern,
                "format": s.format,
                "mode": s.mode,
                "interval_s": s.interval,
                "settle_s": s.settle_seconds,
                "polling": s.polling,
            }
            for s in cfg.sources.values()
        ]
        fmt = out.output_format(out_format, as_json)
        if fmt == "json":
            emit_json(rows)
            return
        listing = out.Listing([
            out.Column("source", "source"), out.Column("enabled", "enabled"),
            out.Column("kind", "kind"), out.Column("path", "path"),
            out.Column("pattern", "pattern", drop=3), out.Column("format", "format", drop=4),
            out.Column("mode", "mode", drop=5), out.Column("interval", "interval", drop=2),
            out.Column("watch", "watch", drop=1)])
        table = fmt == "table"
        for r in rows:
            listing.add(source=r["name"],
                        enabled=("yes" if r["enabled"] else "no") if table
                        else str(r["enabled"]).lower(),
                        kind=r["kind"], path=r["path"] or "", pattern=r["pattern"],
                        format=r["format"], mode=r["mode"],
                        interval=f"{r['interval_s']:.0f}s" if table else r["interval_s"],
                        watch="polling" if r["polling"] else "events")
        out.print_listing(listing, fmt)

    def _toggle(obj: Any, name: str, enabled: bool) -> None:
        path = _config_path(obj)
        write_source_enabled(path, name, enabled)
        at_once = " (or at once on SIGHUP)" if sys.platform != "win32" else ""
        click.echo(
            f"source {name} {'enabled' if enabled else 'disabled'} in {path}; a running "
            f"agent picks this up within a minute{at_once}"
        )

    @source.command("enable")
    @click.argument("name")
    @click.pass_obj
    def source_enable(obj: Any, name: str) -> None:
        """Enable source NAME in the config file (its settings are checked first)."""
        _toggle(obj, name, True)

    @source.command("disable")
    @click.argument("name")
    @click.pass_obj
    def source_disable(obj: Any, name: str) -> None:
        """Disable source NAME in the config file."""
        _toggle(obj, name, False)

    @cli.command("install-service")
    @click.option("--print", "print_only", is_flag=True,
                  help="Print the unit on stdout and write nothing.")
    @click.option("--user", is_flag=True,
                  help="A unit of your own systemd instance (~/.config/systemd/user, "
                  "`systemctl --user`) instead of the system's (/etc/systemd/system, root).")
    @click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
                  default=None, help="Write the unit into this folder instead.")
    @click.option("--force", is_flag=True, help="Replace an existing, different unit file.")
    @json_option
    def install_service_cmd(print_only: bool, user: bool, directory: Path | None,
                            force: bool, as_json: bool) -> None:
        """Install the systemd unit of the agent (Linux), with this install's paths.

        Without --user it writes /etc/systemd/system/contactsync-agent.service and
        needs root; the unit runs `contactsync daemon` as the user `contactsync`
        (create it first: see the operations guide the unit's Documentation= names).
        """
        from contactsync_agent.service import install_service, service_unit

        if print_only:
            text = service_unit(user=user)
            if as_json:
                emit_json({"unit": text})
            else:
                click.echo(text, nl=False)
            return
        done = install_service(user=user, directory=directory, force=force)
        if as_json:
            emit_json({"path": str(done.path), "scope": done.scope,
                       "next": list(done.next_steps)})
            return
        click.echo(f"wrote {done.path} ({done.scope} unit); now run:")
        for step in done.next_steps:
            click.echo(f"  {step}")
