"""`contactsync source test NAME`: a sample of a source and how each field
maps (the old `source-test` spelling is gone: `cli.REMOVED_COMMANDS` points
to this one); and the two-way commands `contactsync push --source NAME` and
`contactsync outbox list`.

A thin shell over `source_runs.preview_source` (which never opens the mirror
database) and `Mirror.push` / `Mirror.outbox`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from contactsync_agent import cli_output as out
from contactsync_agent.cli_output import SuggestingGroup, json_option

if TYPE_CHECKING:
    from contactsync_agent.source_runs import SampleRecord


@click.command("test")
@click.argument("name")
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="How many records to fetch.",
)
@json_option
@click.pass_obj
def source_test(obj: Any, name: str, limit: int, as_json: bool) -> None:
    """Fetch a sample of source NAME and show how it maps (writes nothing)."""
    # Imported here: SQLAlchemy and vobject would add a second to every command's start.
    from contactsync_agent.cli import emit_json
    from contactsync_agent.source_runs import preview_source

    config = obj.config
    if name not in config.sources:
        known = ", ".join(sorted(config.sources)) or "none configured"
        raise click.UsageError(f"no source {name!r} in the config (sources: {known})")
    sample, warnings = preview_source(
        config.sources[name], limit=limit, region=config.default_region
    )
    if as_json:
        emit_json({"source": name, "records": [r.to_dict() for r in sample], "warnings": warnings})
        return
    if not sample:
        click.echo(f"source {name}: no records")
    for rec in sample:
        _print_record(rec)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)


def _print_record(rec: SampleRecord) -> None:
    click.echo(f"record {rec.number}: external id {rec.external_id or '(none)'}")
    width = max((len(f.source_field) for f in rec.fields), default=0)
    for f in rec.fields:
        value = f.canonical if f.target not in ("ignore",) else f.value
        line = f"  {f.source_field:<{width}} → {f.target:<13} {value!r}"
        if f.note:
            line += f"  ({f.note})"
        click.echo(line)
    if rec.problem:
        click.echo(f"  ! {rec.problem}")


@click.command("push")
@click.option("--source", "source", required=True, help="The source to push to.")
@click.option("--dry-run", is_flag=True, help="List what would be pushed; send nothing.")
@json_option
@click.pass_obj
def push_cmd(obj: Any, source: str, dry_run: bool, as_json: bool) -> None:
    """Push local changes of out/both fields (and new contacts, under the
    source's push_new policy) to source SOURCE now; the agent pushes after
    each pull."""
    from contactsync_agent.cli import emit_json

    config = obj.config
    if source not in config.sources:
        known = ", ".join(sorted(config.sources)) or "none configured"
        raise click.UsageError(f"no source {source!r} in the config (sources: {known})")
    with obj.mirror() as m:
        report = m.push(config.sources[source], dry_run=dry_run)
    if as_json:
        emit_json({"source": report.source, "dry_run": report.dry_run,
                   "counts": report.counts, "entries": report.entries})
        return
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.counts.items() if v) \
        or "nothing to push"
    click.echo(f"push {source}{' (dry run)' if dry_run else ''}: {counts}")
    for e in report.entries:
        if dry_run:  # what would go: entry, contact, fields (values: outbox list --json)
            what = "a new contact" if e["kind"] == "create" else ", ".join(e["fields"])
            click.echo(f"  entry {e['id']} (contact {e['contact_id']}, {e['status']}): {what}")
        elif e["status"] in ("rejected", "conflict"):
            click.echo(f"  entry {e['id']} (contact {e['contact_id']}): {e['status']}: "
                       f"{', '.join(e['fields'])}: {e['reason']}")


@click.group("outbox", cls=SuggestingGroup)
def outbox_group() -> None:
    """The outbox of two-way sync: local changes waiting to be pushed."""


@outbox_group.command("list")
@click.option("--source", "source", default=None, help="Only this source's entries.")
@json_option
@out.format_option
@click.pass_obj
def outbox_list(obj: Any, source: str | None, as_json: bool, out_format: str | None) -> None:
    """Pending, sent, rejected and conflicting entries with their age."""
    from contactsync_agent.cli import emit_json

    with obj.mirror(readonly=True) as m:
        rows = m.outbox(source)
    fmt = out.output_format(out_format, as_json)
    if fmt == "json":
        emit_json(rows)
        return
    if not rows and fmt == "table":
        click.echo("the outbox is empty")
        return
    listing = out.Listing([
        out.Column("id", "entry", right=True), out.Column("source", "source"),
        out.Column("contact_id", "contact", right=True), out.Column("kind", "kind"),
        out.Column("status", "status"), out.Column("age_seconds", "age", right=True),
        out.Column("fields", "fields", drop=2), out.Column("reason", "reason", drop=1)])
    for r in rows:
        listing.add(id=r["id"], source=r["source"], contact_id=r["contact_id"],
                    kind=r["kind"], status=r["status"],
                    age_seconds=(out.span(r["age_seconds"]) if fmt == "table"
                                 else f"{r['age_seconds']:.0f}"),
                    fields=", ".join(r["fields"]), reason=r["reason"] or "")
    out.print_listing(listing, fmt)


def register(cli: click.Group) -> None:
    """Adds `push`, `outbox`, and `test` under the `source` group whenever that
    group is registered (before or after this module)."""
    cli.add_command(push_cmd)
    cli.add_command(outbox_group)
    group = cli.commands.get("source")
    if isinstance(group, click.Group):
        group.add_command(source_test, "test")
        return
    add = cli.add_command

    def add_command(cmd: click.Command, name: str | None = None) -> None:
        add(cmd, name)
        if (name or cmd.name) == "source" and isinstance(cmd, click.Group):
            cmd.commands.setdefault("test", source_test)

    cli.add_command = add_command  # type: ignore[method-assign]
