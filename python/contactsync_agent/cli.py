"""The `contactsync` command: a thin shell over `Mirror` and friends.

Parses options, calls the library, prints a table or JSON. Errors become one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from contactsync_agent import status as status_mod
from contactsync_agent.config import AgentConfig, load_config
from contactsync_agent.errors import ContactSyncError
from contactsync_agent.mirror import Mirror, default_db_path
from contactsync_agent.store import Store
from contactsync_agent.textsafe import escape_name

F = TypeVar("F", bound=Callable[..., Any])


class Ctx:
    def __init__(self, db: str | None, config: str | None) -> None:
        self.config_path = config
        self._config: AgentConfig | None = None
        self._db = db

    @property
    def config(self) -> AgentConfig:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @property
    def db(self) -> Path:
        if self._db:
            return Path(self._db).expanduser()
        if self.config.database:
            return self.config.database
        return default_db_path()

    def mirror(self, readonly: bool = False) -> Mirror:
        cfg = self.config
        return Mirror.open(self.db, readonly=readonly, region=cfg.default_region,
                           review_threshold=cfg.review_threshold,
                           auto_link_threshold=cfg.auto_link_threshold)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


class CliGroup(click.Group):
    """Turns the package's errors into one line and their exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ContactSyncError as e:
            click.echo(f"contactsync: error: {e}", err=True)
            sys.exit(e.exit_code)
        except sqlite3.Error as e:
            click.echo(f"contactsync: database error: {e}", err=True)
            sys.exit(1)
        except OSError as e:
            click.echo(f"contactsync: error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("contactsync: interrupted; the run was rolled back", err=True)
            sys.exit(130)


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="CONTACTSYNC_DB", type=click.Path(dir_okay=False),
              help="Mirror database (default: [agent] database, else the user data directory).")
@click.option("--config", "config", envvar="CONTACTSYNC_CONFIG",
              type=click.Path(dir_okay=False), help="Config file (TOML).")
@click.version_option(package_name="contactsync-agent")
@click.pass_context
def cli(ctx: click.Context, db: str | None, config: str | None) -> None:
    """Mirror a practice-management system's contacts into a local SQLite database."""
    ctx.obj = Ctx(db, config)


# ---------------------------------------------------------------- sync

@cli.command()
@click.option("--source", "-s", required=True, help="Source name, e.g. xpm.")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--mode", type=click.Choice(["full", "incremental"]), default=None,
              help="full: absences are deletions; incremental: changes and explicit deletes.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "ndjson", "vcard"]),
              default=None)
@click.option("--allow-mass-delete", is_flag=True,
              help="Confirm a run the mass-deletion or empty-export guard refused.")
@click.option("--encoding", default=None, help="Force utf-8 or windows-1252.")
@click.option("--delimiter", default=None, help="Force a CSV delimiter.")
@json_option
@click.pass_obj
def sync(obj: Ctx, source: str, file: str, mode: str | None, fmt: str | None,
         allow_mass_delete: bool, encoding: str | None, delimiter: str | None,
         as_json: bool) -> None:
    """Sync one export FILE of SOURCE into the mirror (one atomic run)."""
    scfg = obj.config.source(source)
    show_progress = sys.stderr.isatty() and not as_json
    with obj.mirror() as m:
        kwargs: dict[str, Any] = dict(
            mode=mode or scfg.mode, format=fmt, mapping=scfg.mapping,
            allow_mass_delete=allow_mass_delete, mass_delete_limit=scfg.mass_delete_limit,
            encoding=encoding or scfg.encoding, delimiter=delimiter or scfg.delimiter,
            max_file_bytes=scfg.max_file_bytes, ownership=scfg.ownership, unique=scfg.unique,
        )
        if show_progress:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                          TextColumn("{task.completed:,} records"), TimeElapsedColumn(),
                          transient=True) as bar:
                task = bar.add_task(f"syncing {Path(file).name}", total=None)
                report = m.sync_file(source, file,
                                     progress=lambda n: bar.update(task, completed=n), **kwargs)
        else:
            report = m.sync_file(source, file, **kwargs)
    if as_json:
        emit_json(report.to_dict())
        return
    c = report.counts
    click.echo(
        f"run {report.run_id} ({report.mode}) of {source}: {c['records']:,} records in "
        f"{report.duration_s:.2f}s: {c['created']:,} created, {c['converted']:,} converted, "
        f"{c['updated']:,} updated, {c['unchanged']:,} unchanged, {c['deleted']:,} deleted, "
        f"{c['unlinked']:,} unlinked, {c['skipped_forced_manual']:,} forced manual, "
        f"{c['ignored_external']:,} external ignored, {c['review_items']:,} to review, "
        f"{c['activities']:,} activities, {c['rejected']:,} rejected rows"
    )
    for line, reason in report.rejected[:20]:
        click.echo(f"  {escape_name(file)}, line {line}: {reason}", err=True)
    if c["rejected"] > 20:
        click.echo(f"  … {c['rejected'] - 20} more in `contactsync quarantine`", err=True)


# ---------------------------------------------------------------- status

@cli.command()
@json_option
@click.pass_obj
def status(obj: Ctx, as_json: bool) -> None:
    """Agent, sources and queues; exit 0 healthy, 1 degraded, 2 failing.

    Opens the mirror read-only: safe to call while the agent writes.
    """
    store = Store.open(obj.db, readonly=True)
    try:
        data = status_mod.collect(store, obj.config)
    finally:
        store.close()
    if as_json:
        emit_json(data)
    else:
        status_mod.render(data)
    sys.exit(status_mod.HEALTH_CODES[data["health"]])


# ---------------------------------------------------------------- contacts

@cli.group()
def contacts() -> None:
    """List, show and edit local contacts."""


@contacts.command("list")
@click.option("--type", "record_type", type=click.Choice(["manual", "external", "sync"]))
@click.option("--source", default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--offset", type=int, default=0)
@click.option("--deleted", is_flag=True, help="Include soft-deleted contacts.")
@json_option
@click.pass_obj
def contacts_list(obj: Ctx, record_type: str | None, source: str | None, limit: int,
                  offset: int, deleted: bool, as_json: bool) -> None:
    with obj.mirror(readonly=True) as m:
        rows = m.contacts(record_type=record_type, source=source, limit=limit, offset=offset,
                          include_deleted=deleted)
    if as_json:
        emit_json([c.to_dict() for c in rows])
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("id", "name", "email", "phone", "type", "forced", "source", "external id")
    for c in rows:
        t.add_row(str(c.id), c.name, c.email, c.phone or c.mobile, c.record_type,
                  "yes" if c.forced_manual else "", c.source or "", c.external_id or "")
    Console().print(t)


@contacts.command("show")
@click.argument("contact_id", type=int)
@json_option
@click.pass_obj
def contacts_show(obj: Ctx, contact_id: int, as_json: bool) -> None:
    with obj.mirror(readonly=True) as m:
        c = m.get(contact_id)
        history = [ch for ch in m.store.conn.execute(
            "SELECT seq, op, reason, at FROM changes WHERE contact_id = ? ORDER BY seq",
            (contact_id,))]
        organisation = m.organisation_of(contact_id)
        customers = m.customers(contact_id)
    if as_json:
        emit_json({**c.to_dict(), "organisation": organisation, "customers": customers,
                   "history": [{"seq": s, "op": o, "reason": r, "at": a}
                               for s, o, r, a in history]})
        return
    for k, v in c.to_dict().items():
        if v not in ("", None, {}):
            click.echo(f"{k:>14}: {v}")
    if organisation:
        org = organisation.get("organisation_name") or organisation.get("organisation_id")
        loc = organisation.get("location_name") or organisation.get("location_id")
        click.echo(f"{'organisation':>14}: {org or '-'} (location: {loc or '-'}, "
                   f"position: {organisation.get('position') or '-'})")
    for cu in customers:
        roles = ", ".join(cu["roles"]) or "no role"
        name = f" {cu['customer_name']}" if cu["customer_name"] else ""
        click.echo(f"{'customer':>14}: {cu['customer']}{name}: may act as {roles}")
    for s, o, r, a in history:
        click.echo(f"  #{s} {a} {o}: {r}")


@contacts.command("add")
@click.option("--name", default=None)
@click.option("--given-name", default="")
@click.option("--family-name", default="")
@click.option("--email", default="")
@click.option("--phone", default="")
@click.option("--mobile", default="")
@click.option("--organisation", default="")
@click.option("--type", "record_type", type=click.Choice(["manual", "external"]),
              default="manual", show_default=True)
@click.option("--source", default=None, help="For an external record: the owning integration.")
@click.option("--external-id", default=None)
@json_option
@click.pass_obj
def contacts_add(obj: Ctx, name: str | None, given_name: str, family_name: str, email: str,
                 phone: str, mobile: str, organisation: str, record_type: str,
                 source: str | None, external_id: str | None, as_json: bool) -> None:
    """Add a local contact (manual, or external to record another integration's)."""
    with obj.mirror() as m:
        cid = m.add_contact(name=name, given_name=given_name, family_name=family_name,
                            email=email, phone=phone, mobile=mobile, organisation=organisation,
                            record_type=record_type, source=source, external_id=external_id)
    if as_json:
        emit_json({"id": cid})
    else:
        click.echo(f"added contact {cid}")


@contacts.command("force-manual")
@click.argument("contact_id", type=int)
@click.option("--off", is_flag=True, help="Clear the flag instead.")
@click.pass_obj
def contacts_force_manual(obj: Ctx, contact_id: int, off: bool) -> None:
    """Keep a contact linked but never overwrite it from the source again."""
    with obj.mirror() as m:
        m.set_forced_manual(contact_id, not off)
    click.echo(f"contact {contact_id}: forced manual {'off' if off else 'on'}")


# ---------------------------------------------------------------- feed, activities

@cli.command()
@click.option("--since", type=int, default=0, show_default=True, help="Last seq already seen.")
@click.option("--limit", type=int, default=None)
@json_option
@click.pass_obj
def changes(obj: Ctx, since: int, limit: int | None, as_json: bool) -> None:
    """The change feed after sequence number SINCE."""
    with obj.mirror(readonly=True) as m:
        rows = m.changes(since=since, limit=limit)
    if as_json:
        emit_json([c.to_dict() for c in rows])
        return
    for c in rows:
        fields = ", ".join(sorted(c.fields))
        what = c.entity_type.replace("_", " ")
        click.echo(f"#{c.seq} {what} {c.entity_id} {c.op}: {c.reason} [{fields}]")


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include resolved and dismissed ones.")
@json_option
@click.pass_obj
def activities(obj: Ctx, show_all: bool, as_json: bool) -> None:
    """Reconciliation activities: source changes that could not be applied."""
    with obj.mirror(readonly=True) as m:
        rows = m.activities(status=None if show_all else "open")
    if as_json:
        emit_json([a.to_dict() for a in rows])
        return
    for a in rows:
        click.echo(f"#{a.id} [{a.status}] contact {a.contact_id} ({a.kind}): {a.reason}")


@cli.command("activity")
@click.argument("activity_id", type=int)
@click.argument("action", type=click.Choice(["resolve", "dismiss"]))
@click.option("--note", default=None)
@click.pass_obj
def activity_close(obj: Ctx, activity_id: int, action: str, note: str | None) -> None:
    """Resolve or dismiss one activity."""
    with obj.mirror() as m:
        m.close_activity(activity_id, "resolved" if action == "resolve" else "dismissed", note)
    click.echo(f"activity {activity_id} {action}d")


@cli.command()
@click.option("--run", "run_id", type=int, default=None)
@json_option
@click.pass_obj
def quarantine(obj: Ctx, run_id: int | None, as_json: bool) -> None:
    """Rows that could not be read, with file, line and reason."""
    with obj.mirror(readonly=True) as m:
        rows = m.quarantine(run_id)
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        click.echo(f"run {r['run_id']} {r['file']}, line {r['line']}: {r['reason']}")


@cli.command()
@click.option("--source", default=None)
@click.option("--limit", type=int, default=20)
@json_option
@click.pass_obj
def runs(obj: Ctx, source: str | None, limit: int, as_json: bool) -> None:
    """Recent runs with their counts."""
    with obj.mirror(readonly=True) as m:
        rows = m.runs(source, limit)
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        click.echo(f"run {r['id']} {r['source']} {r['mode']} {r['status']} {r['started_at']}: "
                   f"{r['records']} records, {r['created']} created, {r['updated']} updated, "
                   f"{r['deleted']} deleted{'; ' + r['error'] if r['error'] else ''}")


# Commands of other modules register themselves here (one line each).
EXTENSIONS: tuple[str, ...] = ("contactsync_agent.cli_agent", "contactsync_agent.cli_sources",
                              "contactsync_agent.cli_maint", "contactsync_agent.cli_entities",
                              "contactsync_agent.cli_review")


def _load_extensions() -> None:
    import importlib

    for name in EXTENSIONS:
        importlib.import_module(name).register(cli)


def main() -> None:
    _load_extensions()
    cli(prog_name="contactsync")


if __name__ == "__main__":
    main()
