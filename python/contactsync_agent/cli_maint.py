"""Maintenance commands: `purge`, `backup` and `restore`.

A thin layer over `maintenance.py`, registered into the main `contactsync`
group by `cli.EXTENSIONS`; no logic of its own.
"""

from __future__ import annotations

import sys
from typing import Any

import click

#: `purge`'s exit status when the erasure could not complete (values still in the WAL).
ERASURE_PENDING_EXIT = 8


def register(cli: click.Group) -> None:
    from contactsync_agent import cli_output as out
    from contactsync_agent import maintenance
    from contactsync_agent.cli import emit_json, json_option
    from contactsync_agent.cli_output import wrap

    @cli.command()
    @click.option("--older-than", "days", type=click.FloatRange(min=0), default=None,
                  metavar="DAYS", help="Purge contacts deleted more than DAYS days ago "
                  "(default: [agent] retention, 90 days).")
    @click.option("--reader-wait", "wait", type=click.FloatRange(min=0),
                  default=maintenance.PURGE_WAIT,
                  show_default=True, metavar="SECONDS",
                  help="How long to wait for readers to let go of the WAL.")
    @json_option
    @click.pass_obj
    def purge(obj: Any, days: float | None, wait: float, as_json: bool) -> None:
        """Erase contacts soft-deleted more than DAYS ago, with their feed payloads.

        The rows are hard-deleted; their change-feed entries stay (so sequence
        numbers never go back) with the payload blanked, and a `purge` entry is
        added for each. Quarantined raw rows and run error texts older than
        DAYS (or holding a purged contact's values) are blanked too, and files
        in the folder sources' processed/ and failed/ older than DAYS removed.
        Works while the agent runs: it waits for the agent's current run.

        The erased values leave the WAL only when no reader holds a transaction
        on it: purge waits up to --reader-wait seconds for that. If it cannot, it says
        so and exits 8; `status` shows the erasure as pending until the agent's
        idle checkpoint (or another purge) completes it.
        """
        cfg = obj.config
        retention = cfg.daemon.retention if days is None else days * 86400.0
        with obj.mirror() as m:
            report = m.purge(retention / 86400.0, wait=wait)
        if not report.complete:  # closing checkpoints once more: did that complete it?
            report = maintenance.recheck_erasure(obj.db, report)
        pruned = maintenance.prune_files(maintenance.retention_folders(cfg),
                                         [obj.db.expanduser().absolute().parent], retention)
        if as_json:
            emit_json({**report.to_dict(), "files": pruned.to_dict()})
        else:
            click.echo(wrap(
                f"purged {out.counted(report.contacts, 'contact')} deleted before "
                f"{report.cutoff}; blanked "
                f"{out.counted(report.changes_blanked, 'feed payload')}, "
                f"{out.counted(report.activities_blanked, 'activity', 'activities')}, "
                f"{out.counted(report.reviews_blanked, 'review explanation')}, "
                f"{out.counted(report.quarantine_blanked, 'quarantined row')}, "
                f"{out.counted(report.run_errors_blanked, 'run error')}; removed "
                f"{out.counted(len(pruned.removed), 'old file')}"
                + (f"; kept {report.kept_in_use} still in use" if report.kept_in_use else "")
            ))
            for path in pruned.failed:
                click.echo(f"contactsync: warning: could not remove {path}", err=True)
        if not report.complete:
            click.echo(
                f"contactsync: error: erasure not complete: a reader is holding a transaction "
                f"on {obj.db}, so the erased values are still in its WAL "
                f"({report.wal_bytes:,} bytes) after waiting {wait:.0f}s. `status` shows it as "
                "pending until a checkpoint completes (the agent's idle checkpoint, or "
                "`purge` again once readers let go).", err=True)
            sys.exit(ERASURE_PENDING_EXIT)

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
