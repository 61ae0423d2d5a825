"""`contactsync source-test NAME` (also `contactsync source test NAME` when the
`source` group exists): a sample of a source and how each field maps.

A thin shell over `source_runs.preview_source`; it never opens the mirror database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from contactsync_agent.source_runs import SampleRecord


@click.command("source-test")
@click.argument("name")
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="How many records to fetch.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
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


def register(cli: click.Group) -> None:
    """Adds `source-test`, and `test` under the `source` group whenever that group is
    registered (before or after this module)."""
    cli.add_command(source_test)
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
