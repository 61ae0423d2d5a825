"""Maintenance commands: `purge`, `backup` and `restore`.

A thin layer over `maintenance.py`, registered into the main `contactsync`
group by `cli.EXTENSIONS`; no logic of its own.
"""

from __future__ import annotations

from typing import Any

import click


def register(cli: click.Group) -> None:
    from contactsync_agent import maintenance
    from contactsync_agent.cli import emit_json, json_option

    @cli.command()
    @click.option("--older-than", "days", type=click.FloatRange(min=0), required=True,
                  metavar="DAYS", help="Purge contacts deleted more than DAYS days ago.")
    @json_option
    @click.pass_obj
    def purge(obj: Any, days: float, as_json: bool) -> None:
        """Erase contacts soft-deleted more than DAYS ago, with their feed payloads.

        The rows are hard-deleted; their change-feed entries stay (so sequence
        numbers never go back) with the payload blanked, and a `purge` entry is
        added for each. Quarantined raw rows older than DAYS are blanked too.
        Works while the agent runs: it waits for the agent's current run.
        """
        with obj.mirror() as m:
            report = maintenance.purge(m.store, days)
        if as_json:
            emit_json(report.to_dict())
            return
        click.echo(
            f"purged {report.contacts} contact(s) deleted before {report.cutoff}; blanked "
            f"{report.changes_blanked} feed payload(s), {report.activities_blanked} "
            f"activit(ies), {report.reviews_blanked} review explanation(s), "
            f"{report.quarantine_blanked} quarantined row(s)"
            + (f"; kept {report.kept_in_use} still in use" if report.kept_in_use else "")
        )

    @cli.command()
    @click.argument("path", type=click.Path())
    @json_option
    @click.pass_obj
    def backup(obj: Any, path: str, as_json: bool) -> None:
        """Write a consistent copy of the mirror to PATH (a new file or a folder).

        A PATH that is a folder, or ends in a separator (bk/), means a
        timestamped file in that folder, which must exist. Uses SQLite's online
        backup API on a read-only connection: safe while the daemon runs. The
        copy is owner-only and checked before it is kept.
        """
        report = maintenance.backup(obj.db, path)
        if as_json:
            emit_json(report.to_dict())
            return
        click.echo(f"backed up {report.contacts:,} contacts (feed up to #{report.last_seq}, "
                   f"schema {report.schema_version}) to {report.path}")

    @cli.command()
    @click.argument("path", type=click.Path(dir_okay=False))
    @json_option
    @click.pass_obj
    def restore(obj: Any, path: str, as_json: bool) -> None:
        """Replace the mirror with the backup at PATH, after checking it.

        Refuses a damaged backup, or one of a newer schema, before touching
        anything. Needs the agent stopped and no program with the mirror open
        (exit 5 says who holds it); the current
        database is kept beside it as `<db>.pre-restore-<time>`.
        """
        report = maintenance.restore(obj.db, path)
        if as_json:
            emit_json(report.to_dict())
            return
        click.echo(f"restored {report.contacts:,} contacts from {report.restored_from}"
                   + (f"; the previous database is kept at {report.previous_kept_at}"
                      if report.previous_kept_at else ""))
