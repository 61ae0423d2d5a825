"""`contactsync review|duplicates|match|dedupe`: the review queue and the matching engine.

Thin commands over `Mirror.review_*` and `matching.link/dedupe`.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from contactsync_agent.cli import Ctx, emit_json, json_option
from contactsync_agent.errors import ConfigError

T = TypeVar("T")


def _with_spinner(label: str, work: Callable[[], T]) -> T:
    """Runs `work` with a spinner and elapsed time on a terminal."""
    if not sys.stderr.isatty():
        return work()
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn(label), TimeElapsedColumn(), transient=True) as p:
        p.add_task(label, total=None)
        return work()


def _match_config(path: str | None) -> Any:
    from contactsync_agent import matching

    if path is None:
        return matching.MatchConfig.contacts()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        data = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
        return matching.MatchConfig.from_dict(data)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(str(e), path=str(p)) from None


def register(cli: click.Group) -> None:
    @cli.group()
    def review() -> None:
        """Candidate matches waiting for a person: list, show, accept, reject."""

    @review.command("list")
    @click.option("--all", "show_all", is_flag=True, help="Include decided items.")
    @json_option
    @click.pass_obj
    def review_list(obj: Ctx, show_all: bool, as_json: bool) -> None:
        with obj.mirror(readonly=True) as m:
            items = m.review_items(status=None if show_all else "open")
        if as_json:
            emit_json([i.to_dict() for i in items])
            return
        for i in items:
            score = f"{i.score:.0%}" if i.score is not None else "identity"
            click.echo(f"#{i.id} [{i.status}] {i.source}:{i.external_id} (contact {i.contact_id})"
                       f" may be contact {i.candidate_id} — {score}: {i.reason}")

    @review.command("show")
    @click.argument("item_id", type=int)
    @json_option
    @click.pass_obj
    def review_show(obj: Ctx, item_id: int, as_json: bool) -> None:
        with obj.mirror(readonly=True) as m:
            items = {i.id: i for i in m.review_items(status=None)}
            if item_id not in items:
                from contactsync_agent.errors import NotFoundError

                raise NotFoundError(f"no review item with id {item_id}")
            item = items[item_id]
            incoming = m.get(item.contact_id) if item.contact_id else None
            local = m.get(item.candidate_id)
        if as_json:
            emit_json({"item": item.to_dict(), "incoming": incoming.to_dict() if incoming else None,
                       "candidate": local.to_dict()})
            return
        click.echo(f"review item #{item.id} [{item.status}]: {item.reason}")
        rows = [("name", "name"), ("email", "email"), ("phone", "phone"), ("mobile", "mobile"),
                ("organisation", "organisation"), ("street", "street"), ("city", "city"),
                ("postcode", "postcode"), ("date of birth", "date_of_birth")]
        click.echo(f"{'':>14}  {'incoming (contact ' + str(item.contact_id) + ')':<34}"
                   f"  local (contact {item.candidate_id})")
        for label, attr in rows:
            a = getattr(incoming, attr) if incoming else ""
            b = getattr(local, attr)
            if a or b:
                click.echo(f"{label:>14}  {a:<34}  {b}")
        for fld, e in item.explanation.items():
            if isinstance(e, dict):
                click.echo(f"  {fld}: {e.get('level')} ({e.get('weight', 0):+.2f})")

    @review.command("accept")
    @click.argument("item_id", type=int)
    @json_option
    @click.pass_obj
    def review_accept(obj: Ctx, item_id: int, as_json: bool) -> None:
        """The local contact is the source's record: convert and link it."""
        with obj.mirror() as m:
            out = m.review_accept(item_id)
        if as_json:
            emit_json(out)
        else:
            click.echo(f"review item {item_id} accepted: contact {out['contact']} is now linked "
                       f"to {out['external_id']}; contact {out['merged']} was merged into it")

    @review.command("reject")
    @click.argument("item_id", type=int)
    @json_option
    @click.pass_obj
    def review_reject(obj: Ctx, item_id: int, as_json: bool) -> None:
        """Not the same: never suggest this pair again."""
        with obj.mirror() as m:
            out = m.review_reject(item_id)
        if as_json:
            emit_json(out)
        else:
            click.echo(f"review item {item_id} rejected; the pair will not be suggested again")

    @cli.command()
    @click.option("--threshold", type=float, default=0.9, show_default=True,
                  help="Match probability that joins two contacts into a cluster.")
    @json_option
    @click.pass_obj
    def duplicates(obj: Ctx, threshold: float, as_json: bool) -> None:
        """Clusters of probable duplicates inside the mirror."""
        from contactsync_agent import matching
        from contactsync_agent.sync import MATCH_COLUMNS

        with obj.mirror(readonly=True) as m:
            records = m.store.match_rows("1", (), MATCH_COLUMNS)
            names = {r["id"]: (r["display_name"] or f"{r['given_name']} {r['family_name']}").strip()
                     for r in records}
        cfg = matching.MatchConfig.contacts(threshold=threshold)
        result = _with_spinner(f"matching {len(records):,} contacts",
                               lambda: matching.dedupe(records, cfg))
        clusters = result.clusters()
        if as_json:
            emit_json([{"ids": [int(i) for i in c.ids],
                        "strongest": c.strongest.probability,
                        "weakest": {"pair": [c.weakest.left_id, c.weakest.right_id],
                                    "probability": c.weakest.probability}}
                       for c in clusters])
            return
        click.echo(f"{len(clusters)} cluster(s) of probable duplicates among {len(records):,} "
                   f"contacts ({result.stats.pairs_compared:,} pairs compared)")
        for c in clusters:
            members = ", ".join(f"{i} {names.get(i, '')}" for i in c.ids)
            click.echo(f"  [{members}] strongest {c.strongest.probability:.0%}, weakest "
                       f"{c.weakest.probability:.0%} ({c.weakest.left_id}–{c.weakest.right_id})")

    def _write(result: Any, out: str | None, as_json: bool) -> None:
        if out:
            if out.lower().endswith(".json"):
                result.to_json(out)
            else:
                result.to_csv(out)
        s = result.stats
        summary = {"pairs": len(result), "pairs_compared": s.pairs_compared,
                   "capped_blocks": s.capped_blocks, "capped_pairs": s.capped_pairs,
                   "seconds": s.seconds, "out": out}
        if as_json:
            emit_json(summary)
        else:
            click.echo(f"{len(result):,} pairs above threshold ({s.pairs_compared:,} compared; "
                       f"{s.capped_blocks} oversized block(s) capped, {s.capped_pairs:,} pairs "
                       f"skipped){'; written to ' + out if out else ''}")
            if not out:
                for p in list(result)[:20]:
                    click.echo(f"  {p.left_id} ~ {p.right_id}: {p.probability:.3f}")

    @cli.command("match")
    @click.argument("left", type=click.Path(exists=True, dir_okay=False))
    @click.argument("right", type=click.Path(exists=True, dir_okay=False))
    @click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
                  help="Matching config (TOML or JSON: fields, blocking, threshold).")
    @click.option("--out", type=click.Path(dir_okay=False), help="Write pairs (.csv or .json).")
    @json_option
    def match_cmd(left: str, right: str, config_file: str | None, out: str | None,
                  as_json: bool) -> None:
        """Link two CSV files of records (one-off, large runs)."""
        from contactsync_agent import matching

        cfg = _match_config(config_file)
        result = _with_spinner(f"matching {Path(left).name} with {Path(right).name}",
                               lambda: matching.link(left, right, cfg))
        _write(result, out, as_json)

    @cli.command("dedupe")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False))
    @click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False))
    @click.option("--out", type=click.Path(dir_okay=False), help="Write pairs (.csv or .json).")
    @json_option
    def dedupe_cmd(file: str, config_file: str | None, out: str | None, as_json: bool) -> None:
        """Probable duplicates inside one CSV file of records."""
        from contactsync_agent import matching

        cfg = _match_config(config_file)
        result = _with_spinner(f"deduplicating {Path(file).name}",
                               lambda: matching.dedupe(file, cfg))
        _write(result, out, as_json)
