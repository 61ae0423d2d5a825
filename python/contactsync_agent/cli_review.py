"""`contactsync review|duplicates|match|dedupe`: the review queue and the matching engine.

Thin commands over `Mirror.review` (candidate matches, and two-way conflicts:
`review resolve`) and `matching.link/dedupe`.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from contactsync_agent import cli_output as cli_out
from contactsync_agent.cli import Ctx, emit_json, json_option, say
from contactsync_agent.errors import ConfigError
from contactsync_agent.safetext import escape, escape_name

T = TypeVar("T")


def _with_phases(label: str, work: Callable[[Any], T]) -> T:
    """Runs `work(meter)` (a `_core.MatchMeter`, or None) showing its phases on
    a terminal: reading, blocking, comparing (with the pairs), scoring."""
    if not cli_out.show_progress():
        return work(None)
    from contactsync_agent import _core

    meter = _core.MatchMeter()
    with cli_out.MatchProgress(label, meter):
        return work(meter)


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


def _deprecated_config(ctx: click.Context, _param: click.Parameter,
                       value: str | None) -> str | None:
    """`match|dedupe --config FILE`, the old spelling of --match-config: still
    taken, with a note on stderr."""
    if value is not None:
        click.echo("contactsync: note: `--config` after match/dedupe is now `--match-config` "
                   "(the old spelling will go; the agent's own --config goes before the "
                   "command)", err=True)
    return value


def _conflict_line(i: dict[str, Any], show_all: bool) -> None:
    """One two-way conflict in `review list`: the field and its three values
    (shown as `review show` shows contacts: in the terminal, escaped)."""
    c = i["conflict"]
    status = f" [{i['status']}]" if show_all else ""
    head = f"#{i['id']:<5} {'':>8}  {'conflict':<9}"
    say(f"{head} {escape(c['field'])} of contact {i['contact_id']} "
        f"({i['source']}:{escape(i['external_id'])}){status}")
    say(f"{'':<{len(head)}} base {escape(c['base']) or '-'} | local "
        f"{escape(c['local']) or '-'} | source {escape(c['remote']) or '-'}")


def _show_conflict(item: dict[str, Any], c: dict[str, Any]) -> None:
    """`review show` of a two-way conflict: the three values and how to settle it."""
    say(f"review item #{item['id']} [{item['status']}]: two-way conflict on "
        f"{escape(c['field'])} of contact {item['contact_id']} "
        f"({item['source']}:{escape(item['external_id'])})")
    rows = [("base", c["base"], "what the source last sent"),
            ("local", c["local"], "the mirror's value"),
            ("source", c["remote"], "what the source sent since")]
    width = max(len(escape(v) or "-") for _, v, _ in rows)
    for label, value, note in rows:
        click.echo(f"  {label:<7}{(escape(value) or '-').ljust(width)}  ({note})")
    if item["status"] == "open":
        click.echo(f"settle it: contactsync review resolve {item['id']} --take source|local, "
                   "or --value TEXT")
    elif "closed" in c:
        click.echo(f"closed: {escape(c['closed'])}")
    else:
        click.echo(f"resolved: {c.get('resolution', item['status'])}")


def register(cli: click.Group) -> None:
    @cli.group()
    def review() -> None:
        """Candidate matches and two-way conflicts waiting for a person: list,
        show, accept, reject (matches), resolve (conflicts)."""

    @review.command("list")
    @click.option("--all", "show_all", is_flag=True, help="Include decided items.")
    @click.option("--min-score", type=click.FloatRange(0, 1), default=None,
                  help="Only items scored at least P (0-1).")
    @json_option
    @click.pass_obj
    def review_list(obj: Ctx, show_all: bool, min_score: float | None, as_json: bool) -> None:
        """The queue: score and both contacts' names and e-mails for each item."""
        with obj.mirror(readonly=True) as m:
            items = m.review.summaries(status=None if show_all else "open", min_score=min_score)
        if as_json:
            emit_json(items)
            return
        if not items:
            click.echo("no review items" + ("" if show_all else " open"))
            return
        for i in items:
            if i["kind"] == "conflict":
                _conflict_line(i, show_all)
                continue
            a, b = i["incoming"], i["candidate"]
            score = f"{i['score']:.0%}" if i["score"] is not None else "identity"
            status = f" [{i['status']}]" if show_all else ""
            head = f"#{i['id']:<5} {score:>8}  {i['kind']:<9}"
            say(f"{head} incoming: {a['name'] or '-'} <{a['email'] or '-'}> (contact "
                f"{a['contact_id']}, {i['source']}:{i['external_id']}){status}")
            say(f"{'':<{len(head)}} local:    {b['name'] or '-'} <{b['email'] or '-'}> "
                f"(contact {b['contact_id']})")

    @review.command("show")
    @click.argument("item_id", type=int)
    @json_option
    @click.pass_obj
    def review_show(obj: Ctx, item_id: int, as_json: bool) -> None:
        """The two records side by side, with each field's agreement level."""
        with obj.mirror(readonly=True) as m:
            cmp = m.review.compare(item_id)
        if as_json:
            emit_json(cmp)
            return
        if "conflict" in cmp:
            _show_conflict(cmp["item"], cmp["conflict"])
            return
        item, a, b = cmp["item"], cmp["incoming"], cmp["candidate"]
        score = f"{item['score']:.0%}" if item["score"] is not None else "identity"
        say(f"review item #{item['id']} [{item['status']}] {score}: {item['reason']}")
        rows = [("field", f"incoming (contact {a['contact_id']})",
                 f"local (contact {b['contact_id']})", "agreement")]
        for f in cmp["fields"]:
            if not (f["incoming"] or f["candidate"] or f["level"]):
                continue
            level = f["level"] or "-"
            if isinstance(f["weight"], int | float):
                level += f" ({f['weight']:+.2f})"
            rows.append((f["field"], escape(f["incoming"]), escape(f["candidate"]), level))
        widths = [max(len(r[k]) for r in rows) for k in range(3)]
        for r in rows:
            click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False))
                       + "  " + r[3])

    def _decide(obj: Ctx, action: str, item_ids: tuple[int, ...], take_all: bool,
                min_score: float | None, yes: bool, as_json: bool) -> None:
        if take_all == bool(item_ids):
            raise click.UsageError("give item ids, or --all (with --min-score P)")
        if min_score is not None and not take_all:
            raise click.UsageError("--min-score goes with --all")
        with obj.mirror() as m:
            ids = list(item_ids) if item_ids else m.review.select(min_score)
            if take_all:
                above = f" scored at least {min_score:.0%}" if min_score is not None else ""
                click.echo(f"{len(ids)} open review item(s){above} to {action}", err=True)
                if ids and not yes:
                    click.confirm(f"{action} them all?", abort=True, err=True)
            out = (m.review.accept_many(ids) if action == "accept"
                   else m.review.reject_many(ids))
        if as_json:
            emit_json(out)
        else:
            for r in out["done"]:
                if action == "accept":
                    say(f"review item {r['item']} accepted: contact {r['contact']} is now "
                        f"linked to {r['external_id']}; contact {r['merged']} was merged "
                        "into it")
                else:
                    say(f"review item {r['item']} rejected; the pair will not be suggested "
                        "again")
            for f in out["failed"]:
                say(f"contactsync: error: {f['error']}", err=True)
        if out["failed"]:
            sys.exit(1)

    @review.command("resolve")
    @click.argument("item_id", type=int)
    @click.option("--take", type=click.Choice(["source", "local"]), default=None,
                  help="source: take the source's value; local: keep the local value and "
                  "push it to the source.")
    @click.option("--value", default=None, metavar="TEXT",
                  help="Store this value instead (and push it to the source).")
    @json_option
    @click.pass_obj
    def review_resolve(obj: Ctx, item_id: int, take: str | None, value: str | None,
                       as_json: bool) -> None:
        """Settle a two-way conflict (a field changed both locally and at the
        source, under the `review` strategy): --take source, --take local, or
        --value TEXT. A pushed value goes out through the outbox (`contactsync
        push`, or the agent after its next pull). A stale item (the field
        changed again since) is refused and closed. Library twin:
        `Mirror.review.resolve_conflict(ID, take=..., value=...)`."""
        if (take is None) == (value is None):
            raise click.UsageError("give --take source|local, or --value TEXT (one of them)")
        with obj.mirror() as m:
            out = m.review.resolve_conflict(
                item_id, take=cast(Any, take), value=value)
        if as_json:
            emit_json(out)
            return
        what = {"source": "takes the source's value",
                "local": "keeps the local value",
                "value": "takes the value given"}[out["resolution"]]
        pushed = (f"; queued to push to {out['source']} (outbox entry {out['outbox_entry']})"
                  if out["pushed"] else "")
        say(f"review item {item_id} resolved: {out['field']} of contact {out['contact']} "
            f"{what}{pushed}")

    decide_options: list[Callable[[Any], Any]] = [
        click.argument("item_ids", nargs=-1, type=int),
        click.option("--all", "take_all", is_flag=True, help="Every open item (see --min-score)."),
        click.option("--min-score", type=click.FloatRange(0, 1), default=None,
                     help="With --all: only items scored at least P (0-1)."),
        click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (--all)."),
        json_option,
        click.pass_obj,
    ]

    def with_decide_options(f: Callable[..., None]) -> Callable[..., None]:
        for opt in reversed(decide_options):
            f = opt(f)
        return f

    @review.command("accept")
    @with_decide_options
    def review_accept(obj: Ctx, item_ids: tuple[int, ...], take_all: bool,
                      min_score: float | None, yes: bool, as_json: bool) -> None:
        """The local contact is the source's record: convert and link it.

        Takes several ITEM_IDS, or --all [--min-score P] (shows the count and
        asks first unless --yes). Each item is decided on its own; one that
        cannot be is reported and the exit code is non-zero.
        """
        _decide(obj, "accept", item_ids, take_all, min_score, yes, as_json)

    @review.command("reject")
    @with_decide_options
    def review_reject(obj: Ctx, item_ids: tuple[int, ...], take_all: bool,
                      min_score: float | None, yes: bool, as_json: bool) -> None:
        """Not the same: never suggest these pairs again.

        Takes several ITEM_IDS, or --all [--min-score P] (shows the count and
        asks first unless --yes).
        """
        _decide(obj, "reject", item_ids, take_all, min_score, yes, as_json)

    @cli.command()
    @click.option("--threshold", type=float, default=0.9, show_default=True,
                  help="Match probability that joins two contacts into a cluster.")
    @json_option
    @click.pass_obj
    def duplicates(obj: Ctx, threshold: float, as_json: bool) -> None:
        """Clusters of probable duplicates inside the mirror."""
        from contactsync_agent import matching
        with obj.mirror(readonly=True) as m:
            records = m.match_records()
            names = {r["id"]: (r["display_name"] or f"{r['given_name']} {r['family_name']}").strip()
                     for r in records}
        cfg = matching.MatchConfig.contacts(threshold=threshold)
        result = _with_phases(f"matching {len(records):,} contacts",
                              lambda meter: matching.dedupe(records, cfg, meter=meter))
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
            say(f"  [{members}] strongest {c.strongest.probability:.0%}, weakest "
                f"{c.weakest.probability:.0%} ({c.weakest.left_id}–{c.weakest.right_id})")

    def _read_options(obj: Ctx, source: str | None, id_column: str | None) -> Any:
        from contactsync_agent import matching

        if source is None:
            return matching.ReadOptions(id_column=id_column)
        cfg = obj.config
        if cfg.path is not None and source not in cfg.sources:
            known = ", ".join(sorted(cfg.sources)) or "none"
            raise ConfigError(f"no source {source!r} (sources: {known})", path=str(cfg.path))
        scfg = cfg.source(source)
        return matching.ReadOptions(mapping=scfg.mapping, id_column=id_column,
                                    encoding=scfg.encoding, delimiter=scfg.delimiter)

    def _matching_config(config_file: str | None, threshold: float | None) -> Any:
        from dataclasses import replace

        cfg = _match_config(config_file)
        return cfg if threshold is None else replace(cfg, threshold=threshold)

    def _run(work: Callable[[], T]) -> T:
        """Matching errors (a bad file, a bad setting) as one line, never a traceback."""
        from contactsync_agent.errors import ContactSyncError

        try:
            return work()
        except ValueError as e:
            raise ContactSyncError(str(e)) from None

    def _describe_inputs(result: Any) -> None:
        if cli_out.verbosity() < 0:  # -q: only the result
            return
        for info in result.inputs:
            ids = (f"ids from column {info.id_column!r}" if info.id_column
                   else "no id column: line numbers are the ids (--id COLUMN to choose one)")
            used = ", ".join(f"{h} → {f}" if h != f else h for h, f in info.columns.items())
            say(f"{info.path}: {ids}; columns used: {used or 'none'} ({info.encoding})",
                err=True)
            if info.rejected:
                say(f"{info.path}: {info.rejected} row(s) could not be read and were left "
                    "out", err=True)
                for line, reason in info.first_rejected[:5]:
                    say(f"  line {line}: {reason}", err=True)

    def _write(result: Any, out: str | None, as_json: bool,
               export_splink: str | None = None) -> None:
        if out:
            if out.lower().endswith(".json"):
                result.to_json(out)
            else:
                result.to_csv(out)
        notes: list[str] = []
        if export_splink:
            notes = _run(lambda: result.to_splink_settings(export_splink))
            if not as_json:
                say(f"Splink settings written to {export_splink}", err=True)
                for n in notes:
                    say(f"  note: {n}", err=True)
        s = result.stats
        scanned = sum(r.scanned_blocks for r in s.rules)
        summary = {"pairs": len(result), "pairs_compared": s.pairs_compared,
                   "comparisons": s.pairs_compared,
                   "estimated_blocking_recall": s.estimated_blocking_recall,
                   "scanned_blocks": scanned,
                   "capped_blocks": s.capped_blocks, "capped_pairs": s.capped_pairs,
                   "model": result.model.get("source"), "prior": s.prior,
                   "seconds": s.seconds, "out": out,
                   "splink_settings": export_splink, "splink_notes": notes,
                   "inputs": [i.to_dict() for i in result.inputs]}
        if as_json:
            emit_json(summary)
        else:
            _describe_inputs(result)
            recall = s.estimated_blocking_recall
            click.echo(cli_out.wrap(
                f"{len(result):,} pairs above threshold ({s.pairs_compared:,} comparisons; "
                f"estimated blocking recall "
                f"{'n/a' if recall is None else format(recall, '.4f')}; "
                f"{scanned} oversized block(s) scanned by sorted neighbourhood)"
                f"{'; written to ' + out if out else ''}"))
            if not out:
                for p in list(result)[:20]:
                    say(f"  {p.left_id} ~ {p.right_id}: {p.probability:.3f}")

    def matching_options(f: Callable[..., None]) -> Callable[..., None]:
        options: list[Callable[[Any], Any]] = [
            click.option("--match-config", "config_file",
                         type=click.Path(exists=True, dir_okay=False),
                         help="Matching config (TOML or JSON: fields, blocking, threshold; "
                         "see docs/matching.md). Not the agent's --config, which goes "
                         "before the command."),
            click.option("--config", "old_config_file", hidden=True,
                         type=click.Path(exists=True, dir_okay=False),
                         callback=_deprecated_config),
            click.option("--source", "-s", default=None,
                         help="Read the file as this configured source's exports "
                         "([sources.NAME.mapping], encoding, delimiter)."),
            click.option("--id", "id_column", default=None, metavar="COLUMN",
                         help="The column holding the ids (default: the one sync maps to "
                         "external_id, e.g. id or Client ID; without one, line numbers)."),
            click.option("--threshold", type=click.FloatRange(0, 1), default=None,
                         metavar="P", help="Report pairs with a match probability of at "
                         "least P (default 0.5, or the config's)."),
            click.option("--out", type=click.Path(dir_okay=False),
                         help="Write pairs (.csv or .json)."),
            click.option("--export-splink", "export_splink", type=click.Path(dir_okay=False),
                         metavar="SETTINGS.json",
                         help="Also write the fitted model as a Splink settings file "
                         "(DuckDB or Spark; see docs/matching.md)."),
            json_option,
            click.pass_obj,
        ]
        for opt in reversed(options):
            f = opt(f)
        return f

    @cli.command("match")
    @click.argument("left", type=click.Path(exists=True, dir_okay=False))
    @click.argument("right", type=click.Path(exists=True, dir_okay=False))
    @matching_options
    def match_cmd(obj: Ctx, left: str, right: str, config_file: str | None,
                  old_config_file: str | None,
                  source: str | None, id_column: str | None, threshold: float | None,
                  out: str | None, export_splink: str | None, as_json: bool) -> None:
        """Link two CSV files of records (one-off, large runs).

        Columns are read as `sync` reads them: the built-in headings (First
        Name, Surname, Email Address, Mobile, ...) and, with --source, that
        source's [sources.NAME.mapping]. The columns used are named on stderr
        (and under "inputs" with --json).
        """
        from contactsync_agent import matching

        cfg = _matching_config(config_file or old_config_file, threshold)
        read = _read_options(obj, source, id_column)
        result = _run(lambda: _with_phases(
            f"matching {escape_name(Path(left).name)} with {escape_name(Path(right).name)}",
            lambda meter: matching.link(left, right, cfg, read=read, meter=meter)))
        _write(result, out, as_json, export_splink)

    @cli.command("dedupe")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False))
    @matching_options
    def dedupe_cmd(obj: Ctx, file: str, config_file: str | None,
                   old_config_file: str | None, source: str | None,
                   id_column: str | None, threshold: float | None, out: str | None,
                   export_splink: str | None, as_json: bool) -> None:
        """Probable duplicates inside one CSV file of records.

        Columns are read as for `match` (and `sync`); without an id column the
        line numbers are the ids, and it says so.
        """
        from contactsync_agent import matching

        cfg = _matching_config(config_file or old_config_file, threshold)
        read = _read_options(obj, source, id_column)
        result = _run(lambda: _with_phases(
            f"deduplicating {escape_name(Path(file).name)}",
            lambda meter: matching.dedupe(file, cfg, read=read, meter=meter)))
        _write(result, out, as_json, export_splink)
