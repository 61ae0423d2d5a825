"""`contactsync access`, `contacts edit`, `export` and `entities ...`: the CLI
of organisations, locations, customer links, ownership and the full export.

A thin shell over `Mirror` (its `access`, `ownership` and `entities` parts and
`export`); registered from cli.py.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from contactsync_agent.cli_output import SuggestingGroup, json_option
from contactsync_agent.entities import ROLES
from contactsync_agent.mapping import FIELDS
from contactsync_agent.safetext import escape

KINDS = ("organisations", "locations", "customer-links")


def _obj_helpers() -> tuple[Any, Any]:
    from contactsync_agent.cli import emit_json, json_option

    return emit_json, json_option


@click.command("access")
@click.argument("contact_id", type=int)
@click.argument("customer")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="The customer type the contact would act as.")
@json_option
@click.pass_obj
def access(obj: Any, contact_id: int, customer: str, role: str, as_json: bool) -> None:
    """May CONTACT_ID act for CUSTOMER in ROLE? Exit 0 allowed, 1 denied."""
    emit_json, _ = _obj_helpers()
    with obj.mirror(readonly=True) as m:
        decision = m.access.check(contact_id, customer, role)
    if as_json:
        emit_json(decision.to_dict())
    else:
        click.echo(escape(decision.reason))
    sys.exit(0 if decision.allowed else 1)


def _edit_options(f: Any) -> Any:
    for name in reversed(FIELDS):
        f = click.option(f"--{name.replace('_', '-')}", name, default=None,
                         help=f"New {name.replace('_', ' ')}.")(f)
    return f


@click.command("edit")
@click.argument("contact_id", type=int)
@_edit_options
@click.option("--extra", "extras", multiple=True, metavar="KEY=VALUE",
              help="Set an extra column (KEY= with no value removes it); repeatable.")
@json_option
@click.pass_obj
def contacts_edit(obj: Any, /, contact_id: int, extras: tuple[str, ...], as_json: bool,
                  **fields: str | None) -> None:
    """Edit a contact locally. Fields the source owns (or locked ones) are refused
    with who owns them; see `contacts force-manual` to take a contact over."""
    emit_json, _ = _obj_helpers()
    values = {k: v for k, v in fields.items() if v is not None}
    extra: dict[str, str | None] = {}
    for item in extras:
        if "=" not in item:
            raise click.UsageError(f"--extra expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        extra[k] = v or None
    if not values and not extra:
        raise click.UsageError("nothing to edit: give at least one --FIELD VALUE")
    with obj.mirror() as m:
        source = m.get(contact_id).source  # NotFoundError (exit 6) when there is none
        if source and source in obj.config.sources:
            scfg = obj.config.sources[source]
            m.ownership.set_policy(source, scfg.ownership, scfg.unique)
            m.ownership.set_sync_policy(source, scfg.sync_policy())
        written = m.ownership.edit_contact(contact_id, extra=extra or None, **values)
    if as_json:
        emit_json({"id": contact_id, "changed": written})
    elif written:
        click.echo(f"contact {contact_id}: edited {', '.join(sorted(written))}")
    else:
        click.echo(f"contact {contact_id}: nothing changed")


@click.command("export")
@click.option("--full", is_flag=True, hidden=True,
              help="Accepted for old scripts: an export is always the whole mirror.")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json",
              show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="File to write (default: standard output).")
@click.pass_obj
def export(obj: Any, full: bool, fmt: str, out: str | None) -> None:
    """Write the whole mirror as one consistent snapshot. Its `last_seq` is the
    feed position to continue from with `changes --since` (the increments)."""
    from contactsync_agent.export import export_to_path

    with obj.mirror(readonly=True) as m:
        result = export_to_path(m.export, out, fmt, sys.stdout)
    if out and out != "-":
        counts = ", ".join(f"{v} {k}" for k, v in result.items()
                           if isinstance(v, int) and k != "last_seq")
        click.echo(f"exported {counts} to {result['path']} (last_seq {result['last_seq']}; "
                   f"continue with `contactsync changes --since {result['last_seq']}`)",
                   err=True)


@click.group("entities", cls=SuggestingGroup)
def entities_group() -> None:
    """Organisations, locations and contact–customer links mirrored from a source."""


@entities_group.command("sync")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--source", "-s", required=True)
@click.option("--mode", type=click.Choice(["full", "incremental"]), default="full",
              show_default=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "ndjson"]), default=None)
@click.option("--allow-mass-delete", is_flag=True)
@json_option
@click.pass_obj
def entities_sync(obj: Any, kind: str, file: str, source: str, mode: str, fmt: str | None,
                  allow_mass_delete: bool, as_json: bool) -> None:
    """Sync one export FILE of organisations, locations or customer links (one run)."""
    emit_json, _ = _obj_helpers()
    scfg = obj.config.source(source)
    table_key = {"organisations": "organisations", "locations": "locations",
                 "customer-links": "customer_links"}[kind]
    mapping = scfg.options.get(f"{table_key}_mapping") or {}
    with obj.mirror() as m:
        report = m.entities.sync_file(kind, source, file, format=fmt, mode=mode, mapping=mapping,
                                      allow_mass_delete=allow_mass_delete,
                                      mass_delete_limit=scfg.mass_delete_limit)
    if as_json:
        emit_json(report.to_dict())
        return
    c = report.counts
    click.echo(f"run {report.run_id} ({mode}) of {source} {kind}: {c['records']} records: "
               f"{c['created']} created, {c['updated']} updated, {c['unchanged']} unchanged, "
               f"{c['deleted']} deleted, {c['rejected']} rejected rows")
    for line, reason in report.rejected[:20]:
        click.echo(escape(f"  {file}, line {line}: {reason}"), err=True)


@entities_group.command("list")
@click.argument("kind", type=click.Choice(("organisations", "locations")))
@click.option("--source", default=None)
@json_option
@click.pass_obj
def entities_list(obj: Any, kind: str, source: str | None, as_json: bool) -> None:
    emit_json, _ = _obj_helpers()
    with obj.mirror(readonly=True) as m:
        rows = (m.entities.organisations(source) if kind == "organisations"
                else m.entities.locations(source))
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        org = f" (organisation {r['organisation_ref']})" if r.get("organisation_ref") else ""
        click.echo(escape(f"{r['id']} {r['source']}:{r['external_id']} {r['name']}{org}"))


def register(cli: click.Group) -> None:
    cli.add_command(access)
    cli.add_command(export)
    cli.add_command(entities_group)
    contacts = cli.commands.get("contacts")
    if isinstance(contacts, click.Group):
        contacts.add_command(contacts_edit)
