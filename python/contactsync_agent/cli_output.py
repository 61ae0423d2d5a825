"""How the CLI prints: tables that fit the terminal (80 columns too), the
same rows as TSV or CSV for pipes and scripts, summaries wrapped on word
boundaries, the `status` layout, "did you mean" for a mistyped command,
-q/-v, and the progress shown on stderr while a file is read or records are
matched.

Only rendering. It must not open the mirror, decide what a command shows or
redacts (the commands do), nor print a value without escaping it (`safetext`).
The progress displays appear only when stderr is a terminal and never on
stdout; in a pipe nothing of them is written.
"""

from __future__ import annotations

import difflib
import io
import shutil
import sys
import textwrap
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, TypeVar

import click

from contactsync_agent import csvsafe
from contactsync_agent.health import parse_time
from contactsync_agent.safetext import escape

F = TypeVar("F", bound=Callable[..., Any])

#: What `--format` takes wherever a table is printed; json is the same as --json.
FORMATS = ("table", "tsv", "csv", "json")

#: `Context.meta` key: -q (negative) / -v (positive) given, summed over the
#: group's options and the command's.
VERBOSITY_META = "contactsync.verbosity"

#: Columns of a narrow terminal when none is known (a pipe, a file).
NARROW = 80


# ---------------------------------------------------------------- formats


def format_option(f: F) -> F:
    """`--format table|tsv|csv|json` for a command that prints a table."""
    return click.option(
        "--format", "out_format", type=click.Choice(FORMATS), default=None,
        help="table (the default on a terminal), tsv (the default in a pipe: a header "
             "line, then one tab-separated line per row), csv, or json (as --json).",
    )(f)


def output_format(chosen: str | None, as_json: bool = False) -> str:
    """The format to print in: --json, else --format, else a table on a
    terminal and TSV in a pipe or file."""
    if as_json:
        return "json"
    if chosen:
        return chosen
    return "table" if sys.stdout.isatty() else "tsv"


def stdout_width() -> int:
    """Columns of the terminal on stdout (80 when it is not one)."""
    if not sys.stdout.isatty():
        return NARROW
    return max(20, shutil.get_terminal_size((NARROW, 24)).columns)


# ---------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    """One column of a listing. `drop`: 0 always shown; the higher, the sooner
    it is left out of a table that would not fit the terminal, together with
    the other columns of the same rank (TSV, CSV and JSON always have every
    column)."""

    key: str
    title: str
    drop: int = 0
    right: bool = False


@dataclass
class Listing:
    """Rows (column key -> text, escaped when printed) under `columns`."""

    columns: Sequence[Column]
    rows: list[dict[str, str]] = field(default_factory=list)
    #: Markup styles of single cells ((row, key) -> rich style), tables only.
    styles: dict[tuple[int, str], str] = field(default_factory=dict)

    def add(self, style: dict[str, str] | None = None, **values: Any) -> None:
        self.rows.append({c.key: "" if values.get(c.key) is None else str(values[c.key])
                          for c in self.columns})
        for key, s in (style or {}).items():
            self.styles[(len(self.rows) - 1, key)] = s


def _cell_width(text: str) -> int:
    from rich.cells import cell_len

    return cell_len(text)


def _table(listing: Listing, cols: Sequence[Column]) -> Any:
    """A rich table of `cols` (a line under the titles, two spaces between
    columns, no outer border), never wrapped."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for c in cols:
        t.add_column(c.title, no_wrap=True, justify="right" if c.right else "left")
    for i, r in enumerate(listing.rows):
        t.add_row(*[Text(escape(r[c.key]), style=listing.styles.get((i, c.key), ""))
                    for c in cols])
    return t


def _natural_width(listing: Listing, cols: Sequence[Column]) -> int:
    """Columns the table of `cols` takes unwrapped (rich's own measure)."""
    from rich.console import Console
    from rich.measure import Measurement

    con = Console(width=100_000, file=io.StringIO())
    return Measurement.get(con, con.options, _table(listing, cols)).maximum


def _filled(listing: Listing, c: Column) -> bool:
    """Some row has a value in column `c`."""
    return any(r[c.key] != "" for r in listing.rows)


def fitting_columns(listing: Listing, width: int) -> list[Column] | None:
    """The columns of a table that fits `width` unwrapped, leaving out the
    droppable ones every row leaves empty, then the others (highest `drop`
    first); None when even the required ones do not fit (then print one
    block per row)."""
    cols = [c for c in listing.columns  # a droppable column nothing fills says nothing
            if not (c.drop and listing.rows and not _filled(listing, c))]
    while _natural_width(listing, cols) > width:
        worst = max((c.drop for c in cols), default=0)
        if not worst:
            return None
        cols = [c for c in cols if c.drop != worst]  # columns of one rank go together
    return cols


def counted(n: int, one: str, many: str | None = None) -> str:
    """"1 contact", "2 contacts", "0 activities": a count and its noun."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def print_listing(listing: Listing, fmt: str, con: Any = None) -> None:
    """Prints `listing` as a table (fitting `con`'s width), TSV or CSV."""
    if fmt in ("tsv", "csv"):
        print_rows(listing.columns, listing.rows, fmt)
        return
    con = con or table_console()
    print_table(listing, con)


def print_rows(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]], fmt: str) -> None:
    """Prints rows (column key -> value) as TSV or CSV as they come: a
    listing of any size streams in constant memory."""
    out = sys.stdout
    if fmt == "tsv":
        out.write("\t".join(c.key for c in columns) + "\n")
        for r in rows:
            out.write("\t".join(escape("" if r.get(c.key) is None else str(r[c.key]))
                                for c in columns) + "\n")
    else:
        w = csvsafe.writer(out, lineterminator="\n")
        w.writerow([c.key for c in columns])
        w.writerows(["" if r.get(c.key) is None else str(r[c.key]) for c in columns]
                    for r in rows)
    out.flush()


def table_console(width: int | None = None) -> Any:
    """The console tables print through (`safetext.console`), at `width`
    columns when given."""
    from contactsync_agent.safetext import console

    c = console()
    if width is not None:
        c.width = width
    return c


def print_table(listing: Listing, con: Any) -> None:
    """A table that fits `con.width`: every column when it can, else without
    the droppable ones (it says which), else one key: value block per row.
    A value is never cut: a block folds a value longer than the line."""
    from rich.text import Text

    cols = fitting_columns(listing, con.width)
    if cols is None:
        print_blocks(listing, con)
        return
    con.print(_table(listing, cols))
    left_out = [c.title for c in listing.columns  # not the empty ones: nothing is missed
                if c not in cols and _filled(listing, c)]
    if left_out:
        con.print(Text(f"(not shown at {con.width} columns: {', '.join(left_out)}; "
                       "--format tsv for every column)", style="dim"))


def print_blocks(listing: Listing, con: Any) -> None:
    """One block per row: the first column as its head, then `title: value`."""
    from rich.text import Text

    head, rest = listing.columns[0], listing.columns[1:]
    label = max((_cell_width(c.title) for c in rest), default=0)
    for i, r in enumerate(listing.rows):
        if i:
            con.print()
        con.print(Text(f"{head.title} {escape(r[head.key])}", style="bold"),
                  overflow="fold")
        for c in rest:
            value = Text(f"  {c.title + ':':<{label + 1}} ")
            value.append(escape(r[c.key]), style=listing.styles.get((i, c.key), ""))
            con.print(value, overflow="fold")


# ---------------------------------------------------------------- prose


def wrap(text: str, width: int | None = None) -> str:
    """`text` wrapped on word boundaries at `width` (the terminal's when it is
    one); in a pipe (no width given) one line, for grep. A word longer than
    the line (a path) is kept whole."""
    if width is None:
        if not sys.stdout.isatty():
            return text
        width = stdout_width()
    return textwrap.fill(text, width=width, break_long_words=False, break_on_hyphens=False,
                         subsequent_indent="  ")


def wrap_err(text: str) -> str:
    """`wrap` for stderr: wrapped at the terminal's width when stderr is one
    (an error or a note longer than the line breaks between words, not
    mid-word), one line in a pipe or a log."""
    if not sys.stderr.isatty():
        return text
    return wrap(text, max(20, shutil.get_terminal_size((NARROW, 24)).columns))


def suggest(word: str, choices: Sequence[str]) -> str:
    """"; did you mean X?" for the closest of `choices`, or "" (difflib)."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


#: Commands that were removed, and what to type instead.
REMOVED_COMMANDS = {"source-test": "source test"}


class SuggestingGroup(click.Group):
    """A group whose unknown command says the closest one ("did you mean"),
    and what replaced a removed one; its subgroups are SuggestingGroups too."""

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name in REMOVED_COMMANDS and name not in self.commands and ctx.parent is None:
            ctx.fail(f"`{name}` was removed: use `contactsync {REMOVED_COMMANDS[name]}`")
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as e:
            if name and not name.startswith("-") and name not in self.commands:
                hint = suggest(name, [n for n, c in self.commands.items()
                                          if not c.hidden])
                if hint:
                    ctx.fail(f"no such command {name!r}{hint}")
            raise e


SuggestingGroup.group_class = SuggestingGroup


# ---------------------------------------------------------------- durations


def duration_s(started: str | None, finished: str | None) -> float | None:
    """Seconds between two ISO times (None when either is missing)."""
    a, b = parse_time(started), parse_time(finished)
    return None if a is None or b is None else max(0.0, (b - a).total_seconds())


def span(seconds: float | None) -> str:
    """`0.42s`, `12.3s`, `4m 05s`, `2h 03m`; "—" for None."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


def short_time(text: str | None) -> str:
    """An ISO time as `2026-11-30 03:40:05` (UTC), or "—"."""
    t = parse_time(text)
    return "—" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------- status

_COLOUR = {"healthy": "green", "degraded": "yellow", "failing": "red", "unknown": "magenta"}


def ago(now: datetime, text: str | None) -> str:
    """`12s ago`, `5 min ago`, `in 3 min`, `2.5 h ago`; "—" when unknown."""
    t = parse_time(text)
    if t is None:
        return "—"
    age = (now - t).total_seconds()
    if -2 < age < 0:
        age = 0.0
    a = abs(age)
    s = (f"{a:.0f}s" if a < 120 else f"{a / 60:.0f} min" if a < 7200
         else f"{a / 3600:.1f} h" if a < 172800 else f"{a / 86400:.1f} d")
    return f"{s} ago" if age >= 0 else f"in {s}"


def status_sources(data: dict[str, Any], now: datetime) -> tuple[Listing, Listing]:
    """The sources of a `status.report` as (what a table shows, what TSV/CSV
    carry: one machine-readable column per value)."""
    shown = Listing([Column("source", "source"), Column("on", "on"),
                     Column("health", "health"), Column("contacts", "contacts", right=True),
                     Column("last_run", "last run"), Column("outcome", "outcome"),
                     Column("records", "records (+new ~upd -del !rej)"),
                     Column("next", "next check")])
    full = Listing([Column(k, k) for k in (
        "source", "enabled", "judged", "health", "contacts", "last_run_at", "outcome",
        "records", "created", "updated", "deleted", "rejected", "next_run", "why")])
    for s in data.get("sources", []):
        r = s["last_run"] or {}
        health = s["health"] if s["judged"] else (
            f"{s['health']} ({'disabled' if s['configured'] else 'not configured'}: "
            "not judged)")
        counts = (f"{r['records']:,} (+{r['created']:,} ~{r['updated']:,} "
                  f"-{r['deleted']:,} !{r['rejected']:,})") if r else "—"
        shown.add(style={"health": _COLOUR.get(s["health"], "") if s["judged"] else "dim"},
                  source=s["name"], on="yes" if s["enabled"] else "no", health=health,
                  contacts=f"{s['contacts']:,}",
                  last_run=ago(now, r.get("finished_at") or r.get("started_at")),
                  outcome=r.get("status", "—"), records=counts,
                  next=ago(now, s["next_run"]) if s["next_run"] else "—")
        full.add(source=s["name"], enabled=str(s["enabled"]).lower(),
                 judged=str(s["judged"]).lower(), health=s["health"], contacts=s["contacts"],
                 last_run_at=r.get("finished_at") or r.get("started_at") or "",
                 outcome=r.get("status", ""), records=r.get("records", ""),
                 created=r.get("created", ""), updated=r.get("updated", ""),
                 deleted=r.get("deleted", ""), rejected=r.get("rejected", ""),
                 next_run=s["next_run"] or "", why=s["why"])
    return shown, full


def render_status(data: dict[str, Any], con: Any, fmt: str = "table") -> None:
    """`status` for a person (`table`: a few lines wrapped on word boundaries,
    then the sources as a table that fits `con.width`, or one key: value block
    per source when it does not) or a script (`tsv`/`csv`: the sources table)."""
    from rich.text import Text

    now = parse_time(data.get("checked_at")) or datetime.now(UTC)
    if fmt in ("tsv", "csv"):
        # A verdict other than healthy also on stderr: stdout stays one table
        # (the exit code says it too).
        if data["health"] != "healthy":
            from contactsync_agent.status import problems

            why = "; ".join(problems(data))
            click.echo(escape(f"contactsync: health: {data['health']}"
                              + (f": {why}" if why else "")), err=True)
        print_listing(status_sources(data, now)[1], fmt)
        return
    h = data["health"]

    def line(*parts: tuple[str, str] | str) -> None:
        t = Text()
        for p in parts:
            t.append(*(p if isinstance(p, tuple) else (escape(p), "")))
        con.print(t)

    def units(*groups: tuple[tuple[str, str] | str, ...], sep: str = "   ") -> None:
        """Lines of `groups` (each a label with its value, kept whole: a line
        breaks only between groups, never inside `health: healthy`)."""
        from rich.cells import cell_len

        texts = [Text.assemble(*((escape(p), "") if isinstance(p, str) else p for p in g))
                 for g in groups]
        row: list[Text] = []
        for t in texts:
            if row and cell_len(sep.join(r.plain for r in [*row, t])) > con.width:
                con.print(Text(sep).join(row))
                row = [Text("  ") + t]
            else:
                row.append(t)
        if row:
            con.print(Text(sep).join(row))

    health = (f"health: {h}", f"bold {_COLOUR.get(h, '')}")
    if "daemon" not in data:  # no mirror at all
        line(("Mirror", "bold"), " — ", health, ": " + str(data.get("why", "")))
        return
    units((("Mirror", "bold"), f" {data['database']}"),
          (f"({data['database_bytes'] / 1e6:.1f} MB, WAL {data['wal_bytes'] / 1e6:.1f} MB)",),
          ("— ", health), sep=" ")
    for why in data["storage"]["reasons"]:
        line("  ", ("storage", _COLOUR.get(data["storage"]["health"], "")), f": {why}")
    if data["outbox"]["why"]:
        line("  ", ("outbox", _COLOUR.get(data["outbox"]["health"], "")),
             f": {data['outbox']['why']}")
    d = data["daemon"]
    if d["running"]:
        line("agent: ", ("running", "green"),
             f" pid {d['pid']} on {d['host']}, up {(d['uptime_s'] or 0) / 3600:.1f} h, "
             f"last heartbeat {ago(now, d['heartbeat_at'])} ({d['why']})")
    else:
        line("agent: ", (d["state"], _COLOUR.get(d["health"], "")),
             f" (pid {d['pid']}): {d['why']}" if d["pid"] else
             f": {d['why']}" if d["health"] != "healthy" else "")
    c, o = data["contacts"], data["outbox"]
    line(f"contacts: {c['total']:,} ({c['sync']:,} sync, {c['manual']:,} manual, "
         f"{c['external']:,} external; {c['deleted']:,} deleted)")
    oldest = (f" (oldest {o['oldest_pending_age']:.0f}s)"
              if o["oldest_pending_age"] is not None else "")
    units((f"open activities: {data['open_activities']}",),
          (f"review items: {data['open_review_items']}",),
          (f"quarantined rows: {data['quarantined_rows']}",),
          (f"outbox: {o['depth']}{oldest}, conflicts: {o['conflicts_open']}",),
          (f"change feed at seq {data['last_change_seq']:,}",))
    shown, _ = status_sources(data, now)
    if shown.rows:
        if fitting_columns(shown, con.width) == list(shown.columns):
            print_table(shown, con)
        else:
            con.print()
            print_blocks(shown, con)
    for s in data["sources"]:
        if s["health"] != "healthy" or s["reasons"]:
            style = _COLOUR.get(s["health"], "") if s["judged"] else "dim"
            line("  ", (s["name"], style), ("" if s["judged"] else " (not judged)")
                 + f": {s['why']}")


# ---------------------------------------------------------------- verbosity


def verbosity() -> int:
    """-q (-1 each) and -v (+1 each) given to the group and the command."""
    ctx = click.get_current_context(silent=True)
    return int(ctx.meta.get(VERBOSITY_META, 0)) if ctx is not None else 0


def _count(delta: int) -> Callable[[click.Context, click.Parameter, int], int]:
    def note(ctx: click.Context, _param: click.Parameter, value: int) -> int:
        if value:
            ctx.meta[VERBOSITY_META] = int(ctx.meta.get(VERBOSITY_META, 0)) + delta * value
            configure_logging(ctx.meta[VERBOSITY_META])
        return value

    return note


def configure_logging(level: int) -> None:
    """The library's log on stderr for a command (the daemon sets up its own):
    -v INFO, -vv DEBUG, -q only errors; escaped and redacted as the agent's
    log is. Called again, it replaces the handler it added."""
    import logging

    from contactsync_agent.daemon.logs import RedactFilter
    from contactsync_agent.safetext import EscapingFormatter

    logger = logging.getLogger("contactsync_agent")
    for h in [h for h in logger.handlers if getattr(h, "contactsync_cli", False)]:
        logger.removeHandler(h)
    if level < 0:
        logger.setLevel(logging.ERROR)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.contactsync_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(EscapingFormatter("contactsync: %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if level == 1 else logging.DEBUG)


def verbosity_params() -> list[click.Option]:
    """-q/--quiet and -v/--verbose, for the group and every command."""
    return [
        click.Option(["-q", "--quiet"], count=True, expose_value=False, callback=_count(-1),
                     help="Less on stderr: no progress, no notes; errors still.",
                     is_eager=True),
        click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_count(1),
                     help="More on stderr: the library's log (-vv: debug); for `daemon`, "
                          "its log level (INFO, -vv DEBUG).", is_eager=True),
    ]


def add_verbosity(cmd: click.Command) -> None:
    """Adds -q/-v to `cmd` and, for a group, to each of its commands (those it
    already has no -q or -v of their own)."""
    taken = {o for p in cmd.params for o in getattr(p, "opts", [])}
    if not taken & {"-q", "-v", "--quiet", "--verbose"}:
        cmd.params.extend(verbosity_params())
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            add_verbosity(sub)


def show_progress(as_json: bool = False) -> bool:
    """Progress goes to a terminal on stderr, not with --json or -q."""
    return sys.stderr.isatty() and not as_json and verbosity() >= 0


# ---------------------------------------------------------------- progress


class Meter(Protocol):
    """What a file progress bar reads (`_core.ReadMeter`)."""

    @property
    def bytes_read(self) -> int: ...
    @property
    def total_bytes(self) -> int: ...


#: Seconds between two updates of a bar from its meter.
PROGRESS_EVERY = 0.1


class FileProgress:
    """A bar of the bytes read of a file (with rate and time left) on stderr,
    polled from `meter` every `PROGRESS_EVERY` seconds by a thread, and the
    records written so far (`written`); left on screen at the end with a
    final line (`done`)."""

    def __init__(self, label: str, meter: Meter, console: Any = None,
                 total: int | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.table import Column

        from contactsync_agent.safetext import markup

        def whole() -> Column:  # a column the bar gives way to, never wrapped
            return Column(no_wrap=True)

        self.meter = meter
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}", table_column=whole()), BarColumn(bar_width=None),
            DownloadColumn(table_column=whole()), TransferSpeedColumn(table_column=whole()),
            TimeRemainingColumn(table_column=whole()),
            TextColumn("{task.fields[records]}", table_column=whole()),
            console=self.console, refresh_per_second=10, transient=False,
            expand=False,
        )
        # `total`: the file's size as known before the reader opens it, so the
        # first frame does not say "0/? bytes".
        self.total = total or None
        self.task = self.progress.add_task(markup(label), total=self.total, records="")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="contactsync-progress",
                                        daemon=True)
        self.updates = 0

    def _poll(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY):
            self.update()

    def update(self) -> None:
        total = self.meter.total_bytes or self.total
        self.progress.update(self.task, completed=self.meter.bytes_read,
                             total=total or None)
        self.updates += 1

    def written(self, records: int) -> None:
        """Told by the sync after each batch written."""
        self.progress.update(self.task, records=f"{records:,} records written")

    def __enter__(self) -> FileProgress:
        self.progress.start()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        if exc_type is None:
            self.update()
        self.progress.stop()

    def done(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False)


class PairMeter(Protocol):
    """What a matching display reads (`_core.MatchMeter`)."""

    @property
    def phase(self) -> int: ...
    @property
    def pairs(self) -> int: ...


#: The phases of `match`/`dedupe`, by `MatchMeter.phase`.
MATCH_PHASES = ("reading", "blocking", "comparing", "scoring")


class MatchProgress:
    """The phases of a `match` or `dedupe` on stderr (reading, blocking,
    comparing with the count of pairs, scoring): the current one with a
    spinner and its time, polled from `meter` every `PROGRESS_EVERY` seconds,
    and one line left on screen for each phase done."""

    def __init__(self, label: str, meter: PairMeter, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        from contactsync_agent.safetext import markup

        self.meter = meter
        self.label = markup(label)
        self.console = console or Console(stderr=True)
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                 TimeElapsedColumn(), console=self.console,
                                 refresh_per_second=10, transient=True)
        self.task = self.progress.add_task(self.label, total=None)
        self._phase = 0
        self._since = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="contactsync-progress",
                                        daemon=True)
        self.lines: list[str] = []

    def _poll(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY):
            self.update()

    def _finish(self, upto: int, now: float) -> None:
        """Prints the line of each phase before `upto` not yet printed."""
        while self._phase < min(upto, len(MATCH_PHASES)):
            name = MATCH_PHASES[self._phase]
            pairs = f", {self.meter.pairs:,} pairs" if name == "comparing" else ""
            line = f"{name}: {span(now - self._since)}{pairs}"
            self.lines.append(line)
            self.progress.console.print(line, markup=False, highlight=False)
            self._phase += 1
            self._since = now

    def update(self) -> None:
        import time

        now = time.monotonic()
        self._finish(self.meter.phase, now)
        if self._phase < len(MATCH_PHASES):
            name = MATCH_PHASES[self._phase]
            pairs = f" {self.meter.pairs:,} pairs" if name == "comparing" else ""
            self.progress.update(self.task, description=f"{self.label}: {name}…{pairs}")

    def __enter__(self) -> MatchProgress:
        import time

        self._since = time.monotonic()
        self.progress.start()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        import time

        self._stop.set()
        self._thread.join()
        if exc_type is None:
            self._finish(len(MATCH_PHASES), time.monotonic())
        self.progress.stop()


__all__ = [
    "FORMATS",
    "Column",
    "FileProgress",
    "Listing",
    "MatchProgress",
    "duration_s",
    "fitting_columns",
    "format_option",
    "output_format",
    "print_blocks",
    "print_listing",
    "print_table",
    "show_progress",
    "span",
    "suggest",
    "wrap",
]


# ---------------------------------------------------------------- --json

#: ctx.meta key: the command was given --json (its errors are JSON on stdout too).
JSON_META = "contactsync.as_json"


def _note_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[JSON_META] = True
    return value


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, callback=_note_json,
                        help="Print JSON for scripts (errors too: one object on stdout "
                             "with status, error and exit_code).")(f)
