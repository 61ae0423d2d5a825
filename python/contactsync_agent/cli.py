"""The `contactsync` command: a thin shell over `Mirror` and friends.

Parses options, calls the library, prints a table or JSON. Errors become one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from contactsync_agent import cli_output as out
from contactsync_agent import status as status_mod
from contactsync_agent.config import AgentConfig, load_config
from contactsync_agent.errors import (
    ContactSyncError,
    SafetyLimitError,
    SourceFormatError,
    seconds,
)
from contactsync_agent.locking import AgentLock
from contactsync_agent.mirror import Mirror, default_db_path
from contactsync_agent.models import Contact, SyncReport
from contactsync_agent.safetext import console, escape, escape_name
from contactsync_agent.store import DEFAULT_WRITE_WAIT

F = TypeVar("F", bound=Callable[..., Any])


class Ctx:
    def __init__(self, db: str | None, config: str | None,
                 wait: float = DEFAULT_WRITE_WAIT) -> None:
        self.config_path = config
        self._config: AgentConfig | None = None
        self._db = db
        self.wait = wait

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
                           auto_link_threshold=cfg.auto_link_threshold,
                           wait=self.wait, on_wait=self.say_waiting)

    def say_waiting(self, pid: int | None) -> None:
        """Told once per write that has to wait for the writer lock (said on
        stderr, unless -q)."""
        if out.verbosity() < 0:
            return
        agent = AgentLock(self.db).holder()
        who = ("the agent's run" if pid is not None and pid == agent
               else f"process {pid}'s write" if pid else "another write")
        click.echo(f"contactsync: waiting for {who} to finish… (up to {seconds(self.wait)}; "
                   "--wait to change)", err=True)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def emit_json_stream(items: Iterable[Any], ndjson: bool = False) -> int:
    """Writes `items` as they come: one JSON array, or one object a line
    (`ndjson`); memory holds one item at a time. Returns how many."""
    out = sys.stdout
    n = 0
    if ndjson:
        for item in items:
            out.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")
            n += 1
    else:
        for item in items:
            out.write(("[\n" if n == 0 else ",\n") + json.dumps(item, ensure_ascii=False,
                                                              default=str))
            n += 1
        out.write("\n]\n" if n else "[]\n")
    out.flush()
    return n


def say(text: str, err: bool = False) -> None:
    """Prints one line that may quote input: non-printable characters escaped;
    on stderr wrapped between words when that is a terminal (`wrap_err`)."""
    click.echo(out.wrap_err(escape(text)) if err else escape(text), err=err)


def _stdout_is_gone() -> bool:
    """True when stdout's reader has gone away (`... | head`): flushing what is
    still buffered fails again, or the pipe reports an error (no reader left)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        pass
    try:
        import select

        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0))
    except (AttributeError, OSError, ValueError):
        return True  # no poll() (Windows): a broken pipe this far up is stdout's


def _quiet_exit() -> NoReturn:
    """Stops silently with exit 0, as Unix tools do when their reader stops
    reading; stdout is pointed at the null device so that the interpreter's
    last flush does not complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


#: `Context.meta` key (shared by a command's context and its parents'): --json was given.
JSON_META = out.JSON_META
json_option = out.json_option


def permission_hint(e: PermissionError) -> str:
    """What a permission error means: the file or directory, the user, and the fix."""
    import getpass

    if not e.filename:
        return str(e)
    path = Path(os.fsdecode(e.filename))
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "this user"
    shown = escape_name(path)
    if path.exists() and not path.is_dir():
        return (f"permission denied: {user} may not open {shown}; fix: `sudo chown {user} "
                f"{shown}` (or `chmod 600` it if {user} owns it), or use another file")
    folder = path if path.is_dir() else path.parent
    dir_shown = escape_name(folder)
    return (f"permission denied: {shown}: {user} may not create or write files in the "
            f"directory {dir_shown}; fix: `sudo chown {user} {dir_shown}` and "
            f"`chmod 700 {dir_shown}`, or choose another place (--db, --config, or "
            "[agent] database)")


def _db_named(ctx: click.Context) -> str:
    """`PATH: ` of the mirror the command was opening, for a database error's
    message (`file is not a database` alone does not say which file)."""
    obj = ctx.find_object(Ctx)
    try:
        return f"{escape_name(obj.db)}: " if obj is not None else ""
    except Exception:  # no path could be worked out: say the error alone
        return ""


class CliGroup(out.SuggestingGroup):
    """Turns the package's errors into one line and their exit code (and, when the
    command was given --json, also one JSON object on stdout)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ContactSyncError as e:
            refused = isinstance(e, (SafetyLimitError, SourceFormatError))
            self._fail(ctx, f"contactsync: error: {e}", str(e), e.exit_code,
                       "refused" if refused else "error")
        except sqlite3.Error as e:
            where = _db_named(ctx)
            # A run is one transaction: what failed in it changed nothing.
            after = ("; the run was rolled back (the mirror is as it was before it)"
                     if ctx.invoked_subcommand == "sync" else "")
            self._fail(ctx, f"contactsync: database error: {where}{e}{after}",
                       f"database error: {where}{e}{after}", 1)
        except BrokenPipeError as e:
            if _stdout_is_gone():
                _quiet_exit()
            self._fail(ctx, f"contactsync: error: {e}", str(e), 1)
        except PermissionError as e:
            hint = permission_hint(e)
            self._fail(ctx, f"contactsync: error: {hint}", hint, 1)
        except OSError as e:
            self._fail(ctx, f"contactsync: error: {e}", str(e), 1)
        except KeyboardInterrupt:
            click.echo("contactsync: interrupted; the run was rolled back", err=True)
            sys.exit(130)

    @staticmethod
    def _fail(ctx: click.Context, line: str, message: str, code: int,
              status: str = "error") -> NoReturn:
        say(line, err=True)
        if ctx.meta.get(JSON_META):
            emit_json({"status": status, "error": escape(message), "exit_code": code})
        sys.exit(code)


class WaitSeconds(click.FloatRange):
    """--wait's seconds (>= 0); a bad value taken from CONTACTSYNC_WAIT names the
    variable, not only the option nobody typed."""

    def __init__(self) -> None:
        super().__init__(min=0)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as e:
            if (ctx is not None and param is not None and param.name is not None
                    and ctx.get_parameter_source(param.name)
                    is click.core.ParameterSource.ENVIRONMENT):
                raise click.BadParameter(
                    f"{e.message.rstrip('.')}; give seconds (e.g. CONTACTSYNC_WAIT=30) or "
                    "unset the variable", ctx=ctx,
                    param_hint="'--wait', from the environment variable CONTACTSYNC_WAIT",
                ) from None
            raise


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="CONTACTSYNC_DB", type=click.Path(dir_okay=False),
              help="Mirror database (default: [agent] database, else the user data directory).")
@click.option("--config", "config", envvar="CONTACTSYNC_CONFIG",
              type=click.Path(dir_okay=False), help="Config file (TOML).")
@click.option("--wait", "wait", envvar="CONTACTSYNC_WAIT", type=WaitSeconds(),
              default=DEFAULT_WRITE_WAIT, show_default=True,
              help="Seconds a write waits while the agent's run (or another write) holds "
                   "the mirror; past it the command exits 5.")
@click.version_option(None, "-V", "--version", package_name="contactsync-agent")
@click.pass_context
def cli(ctx: click.Context, db: str | None, config: str | None, wait: float) -> None:
    """Mirror a practice-management system's contacts into a local SQLite database.

    Writes work while the agent runs: a write waits for the agent's current run
    to finish (up to --wait seconds), then goes in between two runs."""
    ctx.obj = Ctx(db, config, wait)


# ---------------------------------------------------------------- sync

@cli.command()
@click.option("--source", "-s", required=True, help="Source name, e.g. xpm.")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--mode", type=click.Choice(["full", "incremental"]), default=None,
              help="full: absences are deletions; incremental: changes and explicit deletes.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "ndjson", "vcard"]),
              default=None)
@click.option("--allow-mass-delete", is_flag=True,
              help="Confirm a run the mass-deletion or empty-export guard refused.")
@click.option("--allow-column-drop", is_flag=True,
              help="Confirm a full snapshot whose header lost a column the source sent "
                   "before, or that empties a field on more than the mass-deletion share "
                   "of the source's contacts (the field is then cleared).")
@click.option("--dry-run", is_flag=True,
              help="Run the whole plan and roll it back: print what would happen (counts, "
                   "the first creates, updates, deletes, unlinks, and whether a guard would "
                   "refuse); nothing is written. Exit 4 when the real run would be refused.")
@click.option("--encoding", default=None, help="Force utf-8 or windows-1252.")
@click.option("--delimiter", default=None, help="Force a CSV delimiter.")
@click.option("--force", is_flag=True,
              help="Sync into a source the config does not list, or has disabled "
              "(recorded on the run).")
@json_option
@click.pass_obj
def sync(obj: Ctx, source: str, file: str | None, mode: str | None, fmt: str | None,
         allow_mass_delete: bool, allow_column_drop: bool, dry_run: bool,
         encoding: str | None, delimiter: str | None, force: bool, as_json: bool) -> None:
    """Sync one export FILE of SOURCE into the mirror (one atomic run).

    full (the default): the file is the whole source, each row the whole
    record: an empty cell clears the field, an absent row is a deletion.
    incremental: changes only; a column or key a row leaves out keeps the
    mirror's value, an empty cell or null clears it, and only rows marked
    deleted are deletions.

    When a config file exists, SOURCE must be one of its sources and enabled
    (a mistyped name would otherwise copy every contact again under it);
    --force overrides. Without a config file any name is taken.

    Without FILE, pulls the configured SOURCE once: a sql or http source is read
    (incrementally by its cursor when its mode is incremental; the cursor moves
    only with the commit); a folder source's waiting files are synced as the
    agent would (moved to processed/ or failed/). Exit 0 when every run is ok;
    for a folder, 4 when a file was refused, 1 when one failed. Works while the
    agent runs (each run waits for the agent's current one).
    """
    if file is None:
        given = [o for o, v in (("--format", fmt), ("--encoding", encoding),
                                ("--delimiter", delimiter), ("--dry-run", dry_run),
                                ("--force", force)) if v]
        if given:
            raise click.UsageError(f"{', '.join(given)} applies to a FILE; without one the "
                                   "source's configured settings are used")
        _pull(obj, source, mode, allow_mass_delete, allow_column_drop, as_json)
        return
    forced = obj.config.check_sync_target(source, force=force)
    scfg = obj.config.source(source)
    show_progress = out.show_progress(as_json)
    with obj.mirror() as m:
        if source in obj.config.sources and not dry_run:
            m.ownership.set_sync_policy(source, scfg.sync_policy())
        kwargs: dict[str, Any] = dict(
            mode=mode or scfg.mode, format=fmt, mapping=scfg.mapping,
            allow_mass_delete=allow_mass_delete, mass_delete_limit=scfg.mass_delete_limit,
            encoding=encoding or scfg.encoding, delimiter=delimiter or scfg.delimiter,
            max_file_bytes=scfg.max_file_bytes, ownership=scfg.ownership, unique=scfg.unique,
            forced=forced, allow_column_drop=allow_column_drop, dry_run=dry_run,
        )
        if show_progress:
            report = _sync_with_bar(m, source, file, kwargs)
        else:
            report = m.sync_file(source, file, **kwargs)
    if as_json:
        emit_json(report.to_dict())
    else:
        _echo_report(source, report, file)
    if report.dry_run and report.refused:
        sys.exit(4)  # what the real run would do (SafetyLimitError's code)


def _sync_with_bar(m: Mirror, source: str, file: str, kwargs: dict[str, Any]
                   ) -> SyncReport:
    """`Mirror.sync_file` with a bar of the bytes read on stderr (a terminal):
    the Rust reader's `ReadMeter`, polled every 0.1 s; left on screen with a
    final line."""
    import time

    from contactsync_agent import _core

    meter = _core.ReadMeter()
    started = time.monotonic()
    try:
        file_bytes: int | None = Path(file).stat().st_size
    except OSError:  # the sync names it
        file_bytes = None
    with out.FileProgress(f"reading {escape_name(Path(file).name)}", meter,
                          total=file_bytes) as bar:
        report = m.sync_file(source, file, progress=bar.written, meter=meter, **kwargs)
    took = time.monotonic() - started
    total = meter.total_bytes
    def size(n: float) -> str:  # "4.2 kB" for the sample, "141.0 MB" for an export
        return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"

    rate = f", {size(total / took)}/s" if took > 0 and total else ""
    bar.done(f"read {size(total)} ({report.counts['records']:,} records) in "
             f"{took:.2f}s{rate}")
    return report


def _echo_report(source: str, report: SyncReport, origin: str) -> None:
    c = report.counts
    what = ("dry run" if report.dry_run else f"run {report.run_id}")
    click.echo(out.wrap(
        f"{what} ({report.mode}) of {source}: {c['records']:,} records in "
        f"{report.duration_s:.2f}s: {c['created']:,} created, {c['converted']:,} converted, "
        f"{c['updated']:,} updated, {c['unchanged']:,} unchanged, {c['deleted']:,} deleted, "
        f"{c['unlinked']:,} unlinked, {c['skipped_forced_manual']:,} forced manual, "
        f"{c['ignored_external']:,} external ignored, {c['review_items']:,} to review, "
        f"{c['activities']:,} activities, {c['rejected']:,} rejected rows"
        + (f", {c['deletions_skipped']:,} deletions skipped" if c.get("deletions_skipped")
           else "")
    ))
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)
    for line, reason in report.rejected[:20]:
        say(f"  {escape_name(origin)}, line {line}: {reason}", err=True)
    if c["rejected"] > 20:
        click.echo(f"  … {c['rejected'] - 20} more in `contactsync quarantine`", err=True)
    if not report.dry_run:
        return
    click.echo("dry run: nothing was written (no run, no change, no feed entry)")
    for message in report.refused:
        click.echo(f"would be refused: {message.removeprefix('refused: ')}")
    if report.refused:
        click.echo("what it would do once confirmed:")
    for key, label in (("creates", "create"), ("converts", "convert"), ("updates", "update"),
                       ("deletes", "delete"), ("unlinks", "unlink")):
        items = report.preview.get(key, [])
        for item in items:
            who = f"{item['external_id'] or '-'} (contact {item['contact_id']})"
            if key == "creates":
                detail = ", ".join(f for f in item["fields"]
                                   if f not in ("record_type", "source", "external_id"))
            elif key in ("updates", "converts"):
                detail = "; ".join(f"{f}: {_short(b)} -> {_short(a)}"
                                   for f, b, a in _field_changes(item["fields"]))
            else:
                detail = item["reason"]
            click.echo(f"  {label} {_short(who, 60)}: {detail}")
        total = {"creates": c["created"], "updates": c["updated"], "deletes": c["deleted"],
                 "unlinks": c["unlinked"]}.get(key, 0)
        if total > len(items):
            click.echo(f"  … and {total - len(items):,} more to {label}")


def _field_changes(fields: dict[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    """(field, before, after) of a feed entry's changes; `extra` as the keys
    that changed (`extra.Partner`), since the whole object cut to a line hides
    what differs."""
    for f, (before, after) in fields.items():
        if f == "extra" and isinstance(before, dict) and isinstance(after, dict):
            for k in [*before, *(k for k in after if k not in before)]:
                if before.get(k) != after.get(k):
                    yield f"extra.{k}", before.get(k), after.get(k)
        else:
            yield f, before, after


def _short(value: Any, width: int = 40) -> str:
    """A value for one line of text: non-printable characters escaped, cut."""
    if value is None or value == "":
        return "(empty)"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _pull(obj: Ctx, source: str, mode: str | None, allow_mass_delete: bool,
          allow_column_drop: bool, as_json: bool) -> None:
    """`sync --source NAME` without a FILE: `runner.pull_source`, printed."""
    from contactsync_agent.runner import pull_source

    with obj.mirror() as m:
        pulled = pull_source(m, obj.config, source, mode=mode,
                             allow_mass_delete=allow_mass_delete,
                             allow_column_drop=allow_column_drop)
    if as_json:
        emit_json(pulled.to_dict())
    elif pulled.report is not None:
        _echo_report(source, pulled.report, pulled.report.source)
    elif not pulled.files:
        click.echo(f"source {source}: no files waiting")
    for f in [] if as_json else pulled.files:
        if f.report is not None and f.status == "ok":
            _echo_report(source, f.report, f.file)
        else:
            why = f" ({f.report.error})" if f.report and f.report.error else ""
            click.echo(f"{f.file}: {f.status}{why}", err=True)
        click.echo(f"  {f.file}: " + (f"moved to {f.moved_to}/" if f.moved_to
                                      else "left in the folder"))
    if not pulled.ok:
        statuses = {f.status for f in pulled.files}
        sys.exit(4 if statuses <= {"ok", "refused"} else 1)


# ---------------------------------------------------------------- status

class StatusUsageError(click.UsageError):
    """A usage error of `status`: UNKNOWN for a monitor (click's exit 2 would read
    as CRITICAL, a verdict on the mirror)."""

    exit_code = 3


class StatusCommand(click.Command):
    """`status` answers monitors: a usage error exits 3 (UNKNOWN)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            raise StatusUsageError(e.format_message(), e.ctx) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            raise StatusUsageError(e.format_message(), e.ctx) from None


def _status_data(obj: Ctx) -> dict[str, Any]:
    """`status.report` under the CLI's config; a bad config or anything else that
    keeps status from answering is `unknown` (exit 3), never a health."""
    try:
        return status_mod.report(obj.db, obj.config)
    except Exception as e:
        return status_mod.unknown(obj._db, e)


@cli.command(cls=StatusCommand)
@json_option
@click.option("--nagios", is_flag=True,
              help="One Nagios/Icinga plugin line with perfdata (contacts, last run age, run "
                   "duration, queue depths).")
@click.option("--prometheus", is_flag=True,
              help="Prometheus text exposition format (for node_exporter's textfile collector).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="With --prometheus: write FILE atomically (a temporary file renamed over "
                   "it) instead of stdout.")
@click.option("--output-mode", default="0600", show_default=True,
              help="With --output: the file's permissions; 0644 lets node_exporter read it "
                   "(it holds counts, ages and source names, no personal data).")
@out.format_option
@click.pass_obj
def status(obj: Ctx, as_json: bool, nagios: bool, prometheus: bool, output: str | None,
           output_mode: str, out_format: str | None) -> None:
    """Agent, sources and queues; exit 0 healthy, 1 degraded, 2 failing,
    3 unknown (could not determine: the mirror unreadable, a config error,
    a failure inside status; a usage error too).

    Opens the mirror read-only: safe to call while the agent writes. With a
    config file, only its enabled sources are judged (others are listed as not
    judged), and an agent that is not running while sources are enabled is
    degraded; no database at the path is failing (exit 2).
    """
    if sum((as_json or out_format is not None, nagios, prometheus)) > 1:
        raise click.UsageError("give one of --json/--format, --nagios and --prometheus")
    if output is not None and not prometheus:
        raise click.UsageError("--output goes with --prometheus")
    mode = 0o600
    if output is not None:
        from contactsync_agent.metrics import parse_mode

        try:
            mode = parse_mode(output_mode)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--output-mode'") from None
    data = _status_data(obj)
    unknown = data["health"] == status_mod.UNKNOWN
    if unknown:
        say(f"contactsync: status unknown: {data['why']}", err=True)
    code = status_mod.HEALTH_CODES[data["health"]]
    try:
        if nagios:
            click.echo(status_mod.nagios_line(data))
        elif prometheus:
            from contactsync_agent import metrics

            if output is not None:
                metrics.write_textfile(output, data, mode)
            else:
                sys.stdout.buffer.write(metrics.exposition(data))
                sys.stdout.flush()
        elif (fmt := out.output_format(out_format, as_json)) == "json":
            emit_json(data)
        elif not unknown:
            out.render_status(data, console(), fmt)
    except BrokenPipeError:
        raise
    except Exception as e:  # could not show or write it: not a verdict on the mirror
        where = f"cannot write {escape_name(output)}" if output else "cannot show it"
        say(f"contactsync: status unknown: {where}: {e}", err=True)
        code = status_mod.HEALTH_CODES[status_mod.UNKNOWN]
    sys.exit(code)


# ---------------------------------------------------------------- contacts

#: Rows the `contacts list` table shows without --limit.
TABLE_PAGE = 50


@cli.group()
def contacts() -> None:
    """List, show and edit local contacts."""


_CONTACT_COLUMNS = [
    out.Column("id", "id", right=True), out.Column("name", "name"),
    out.Column("email", "email"), out.Column("phone", "phone"),
    out.Column("type", "type", drop=4), out.Column("forced", "forced", drop=3),
    out.Column("source", "source", drop=2), out.Column("external_id", "external id", drop=1)]


def _contact_row(c: Contact) -> dict[str, Any]:
    """A contact as `contacts list` shows it (phone: the landline, else the mobile)."""
    return dict(id=c.id, name=c.name, email=c.email, phone=c.phone or c.mobile,
                type=c.record_type, forced="yes" if c.forced_manual else "",
                source=c.source or "", external_id=c.external_id or "")


@contacts.command("list")
@click.option("--type", "record_type", type=click.Choice(["manual", "external", "sync"]))
@click.option("--source", default=None)
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="At most N contacts (default: all of them with --json / --ndjson "
              f"/ TSV / CSV, the first {TABLE_PAGE} in the table).")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip the first N.")
@click.option("--deleted", is_flag=True, help="Include soft-deleted contacts.")
@json_option
@click.option("--ndjson", is_flag=True, help="One JSON object a line instead of one array.")
@out.format_option
@click.pass_obj
def contacts_list(obj: Ctx, record_type: str | None, source: str | None, limit: int | None,
                  offset: int, deleted: bool, as_json: bool, ndjson: bool,
                  out_format: str | None) -> None:
    """The mirror's contacts, in id order.

    --json (one array), --ndjson (one object a line), TSV and CSV (--format;
    TSV is the default in a pipe) give the whole result set, streamed, unless
    --limit is given. The table (on a terminal) shows a page and says how
    many there are in all; at 80 columns it leaves out the columns that do
    not fit (type, forced, source, external id: it says so) rather than cut a
    value, and prints one block per contact when even that is too wide. TSV
    and CSV have every column.
    """
    filters: dict[str, Any] = dict(record_type=record_type, source=source,
                                   include_deleted=deleted)
    fmt = out.output_format(out_format, as_json)
    with obj.mirror(readonly=True) as m:
        if fmt == "json" or ndjson:
            emit_json_stream((c.to_dict() for c in m.iter_contacts(
                **filters, limit=limit, offset=offset)), ndjson=ndjson)
            return
        if fmt != "table":  # a script's: every row, streamed
            out.print_rows(_CONTACT_COLUMNS, (_contact_row(c) for c in m.iter_contacts(
                **filters, limit=limit, offset=offset)), fmt)
            return
        rows = m.contacts(**filters, limit=TABLE_PAGE if limit is None else limit,
                          offset=offset)
        total = m.count_contacts(**filters)
    listing = out.Listing(_CONTACT_COLUMNS)
    for c in rows:
        listing.add(**_contact_row(c))
    out.print_listing(listing, fmt)
    if offset + len(rows) < total:
        click.echo(f"{len(rows):,} of {total:,} shown, --limit to see more"
                   + (f" (from #{offset + 1})" if offset else ""), err=fmt != "table")


@contacts.command("show")
@click.argument("contact_id", type=int)
@json_option
@click.pass_obj
def contacts_show(obj: Ctx, contact_id: int, as_json: bool) -> None:
    """One contact: its fields, extra columns, organisation, customer roles and
    its history from the change feed (every change with its reason)."""
    with obj.mirror(readonly=True) as m:
        c = m.get(contact_id)
        history = m.history(contact_id)
        organisation = m.entities.organisation_of(contact_id)
        customers = m.access.customers(contact_id)
    if as_json:
        # `organisation` stays the contact's text field ("" when empty, as in
        # `export`); the linked organisation record is `organisation_link`.
        emit_json({**c.to_dict(), "organisation_link": organisation, "customers": customers,
                   "history": [{"seq": s, "op": o, "reason": r, "at": a}
                               for s, o, r, a in history]})
        return
    for k, v in c.to_dict().items():
        if isinstance(v, dict):  # the extra columns, one line each
            for n, (ek, ev) in enumerate(v.items()):
                say(f"{k if n == 0 else '':>14}{':' if n == 0 else ' '} {ek}: {ev}")
        elif isinstance(v, bool):
            if v:
                say(f"{k:>14}: yes")
        elif v not in ("", None):
            say(f"{k:>14}: {v}")
    if organisation:
        org = organisation.get("organisation_name") or organisation.get("organisation_id")
        loc = organisation.get("location_name") or organisation.get("location_id")
        say(f"{'organisation':>14}: {org or '-'} (location: {loc or '-'}, "
            f"position: {organisation.get('position') or '-'})")
    for cu in customers:
        roles = ", ".join(cu["roles"]) or "no role"
        name = f" {cu['customer_name']}" if cu["customer_name"] else ""
        say(f"{'customer':>14}: {cu['customer']}{name}: may act as {roles}")
    for s, o, r, a in history:
        say(f"  #{s} {a} {o}: {r}")


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
    """Add a local contact (manual, or external to record another integration's).

    At least one of --name, --given-name, --family-name, --email, --phone,
    --mobile or --organisation is needed."""
    if not any((name, given_name, family_name, email, phone, mobile, organisation)):
        raise click.UsageError("nothing to add: give at least one of --name, --given-name, "
                               "--family-name, --email, --phone, --mobile, --organisation")
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


@contacts.group("ref")
def contacts_ref() -> None:
    """What uses a contact (a case, a document, an app).

    A contact in use is unlinked, never deleted, when its source drops it.
    """


@contacts_ref.command("add")
@click.argument("contact_id", type=int)
@click.argument("ref")
@json_option
@click.pass_obj
def contacts_ref_add(obj: Ctx, contact_id: int, ref: str, as_json: bool) -> None:
    """Register that REF (e.g. case:42) uses the contact (again: no change)."""
    with obj.mirror() as m:
        m.add_reference(contact_id, ref)
        refs = m.references(contact_id)
    if as_json:
        emit_json({"contact": contact_id, "ref": ref, "references": refs})
    else:
        say(f"contact {contact_id} is used by {ref} ({len(refs)} reference(s))")


@contacts_ref.command("remove")
@click.argument("contact_id", type=int)
@click.argument("ref")
@json_option
@click.pass_obj
def contacts_ref_remove(obj: Ctx, contact_id: int, ref: str, as_json: bool) -> None:
    """Unregister REF; exit 6 when the contact has no such reference."""
    from contactsync_agent.errors import NotFoundError

    with obj.mirror() as m:
        if not m.remove_reference(contact_id, ref):
            raise NotFoundError(f"contact {contact_id} has no reference {ref!r}")
        refs = m.references(contact_id)
    if as_json:
        emit_json({"contact": contact_id, "ref": ref, "references": refs})
    else:
        say(f"contact {contact_id} is no longer used by {ref} ({len(refs)} reference(s) left)")


@contacts_ref.command("list")
@click.argument("contact_id", type=int)
@json_option
@click.pass_obj
def contacts_ref_list(obj: Ctx, contact_id: int, as_json: bool) -> None:
    """What uses the contact, oldest first."""
    with obj.mirror(readonly=True) as m:
        refs = m.references(contact_id)
    if as_json:
        emit_json(refs)
        return
    if not refs:
        click.echo(f"contact {contact_id}: no references (not in use)")
    for r in refs:
        say(f"{r['ref']}  (since {r['registered_at']})")


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
        fields = f" [{', '.join(sorted(c.fields))}]" if c.fields else ""
        what = c.entity_type.replace("_", " ")
        say(f"#{c.seq} {what} {c.entity_id} {c.op}: {c.reason}{fields}")


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
        say(f"#{a.id} [{a.status}] contact {a.contact_id} ({a.kind}): {a.reason}")


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
        say(f"run {r['run_id']} {r['file']}, line {r['line']}: {r['reason']}")


@cli.command()
@click.option("--source", default=None)
@click.option("--limit", type=int, default=20)
@json_option
@out.format_option
@click.pass_obj
def runs(obj: Ctx, source: str | None, limit: int, as_json: bool,
         out_format: str | None) -> None:
    """Recent runs, newest first, with their duration and counts (duration_s
    in JSON: null while a run is going on)."""
    with obj.mirror(readonly=True) as m:
        rows = m.runs(source, limit)
    for r in rows:
        r["duration_s"] = out.duration_s(r.get("started_at"), r.get("finished_at"))
    fmt = out.output_format(out_format, as_json)
    if fmt == "json":
        emit_json(rows)
        return
    listing = out.Listing([
        out.Column("id", "run", right=True), out.Column("source", "source"),
        out.Column("mode", "mode", drop=3), out.Column("status", "status"),
        out.Column("started_at", "started"), out.Column("duration_s", "took", right=True),
        out.Column("records", "records", right=True),
        out.Column("created", "new", right=True, drop=2),
        out.Column("updated", "upd", right=True, drop=2),
        out.Column("deleted", "del", right=True, drop=2),
        out.Column("error", "error", drop=1)])
    table = fmt == "table"
    for r in rows:
        listing.add(
            id=r["id"], source=r["source"], mode=r["mode"], status=r["status"],
            started_at=out.short_time(r["started_at"]) if table else r["started_at"],
            duration_s=(out.span(r["duration_s"]) if table else
                        "" if r["duration_s"] is None else f"{r['duration_s']:.3f}"),
            records=f"{r['records']:,}" if table else r["records"],
            created=r["created"], updated=r["updated"], deleted=r["deleted"],
            error=r["error"] or "")
    out.print_listing(listing, fmt)


def exit_code_epilog() -> str:
    """`contactsync --help`'s table of exit codes, from `errors.EXIT_CODES` (the
    one place they are written; the README's table is checked against it)."""
    import textwrap

    from contactsync_agent.errors import EXIT_CODES, STATUS_EXIT_CODES

    def rows(codes: tuple[tuple[int, str], ...]) -> str:
        lines: list[str] = []
        for code, meaning in codes:
            lines += textwrap.wrap(meaning.replace("`", ""), width=74,
                                   initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
        return "\b\n" + "\n".join(lines)  # \b: click keeps the lines as they are

    return (f"Exit codes (every command):\n\n{rows(EXIT_CODES)}\n\n"
            f"status (a monitoring plugin's codes):\n\n{rows(STATUS_EXIT_CODES)}")


cli.epilog = exit_code_epilog()


@cli.command("web")
@click.option("--host", default=None,
              help="Address to listen on (default: [web] host, else 127.0.0.1). Any address "
              "other than loopback needs a token of 16+ characters (CONTACTSYNC_WEB_TOKEN or "
              "[web] token_file); it travels in clear: on a network use a TLS reverse proxy.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port (default: [web] port, else 8765; 0 picks a free one).")
@click.option("--print-url", is_flag=True,
              help="Print the console's URL, with the token when one is set, on stdout "
              "(0.0.0.0 or :: as this machine's host name).")
@click.pass_obj
def web_cmd(obj: Ctx, host: str | None, port: int | None, print_url: bool) -> None:
    """Serve the local web console in the foreground until Ctrl-C or SIGTERM.

    Dashboard, review queue (keys a/r/j/k/u), activities, contacts and their
    history, quarantine. Opening the printed URL once sets the token cookie.
    """
    from contactsync_agent.web import WebServer, read_token

    web = obj.config.web
    server = WebServer(obj.db, host=host or web.host, port=web.port if port is None else port,
                       token=read_token(web.token_file), config=obj.config)

    def ready(s: WebServer) -> None:
        if print_url:
            click.echo(s.url_with_token())
        click.echo(f"contactsync: web console on {s.url} (Ctrl-C stops it)", err=True)

    server.run(ready)


# Commands of other modules register themselves here (one line each).
EXTENSIONS: tuple[str, ...] = ("contactsync_agent.cli_agent", "contactsync_agent.cli_sources",
                              "contactsync_agent.cli_maint", "contactsync_agent.cli_entities",
                              "contactsync_agent.cli_review")


def _load_extensions() -> None:
    import importlib

    for name in EXTENSIONS:
        importlib.import_module(name).register(cli)
    out.add_verbosity(cli)  # -q/-v on the group and on every command


def main() -> None:
    _load_extensions()
    cli(prog_name="contactsync")


if __name__ == "__main__":
    main()
