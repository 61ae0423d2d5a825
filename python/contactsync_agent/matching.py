"""Record linkage and deduplication: `link` two record sets, or `dedupe` one.

Builds the engine's configuration, hands the records to the Rust core (which
releases the GIL) and wraps its output. No comparison logic lives here, and
nothing here touches the database.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeAlias

from contactsync_agent import _core
from contactsync_agent.csvsafe import neutralise
from contactsync_agent.errors import SourceFormatError
from contactsync_agent.infile import BLANK_PROBE, is_blank, open_private_text

Records: TypeAlias = Iterable[Mapping[str, Any]] | str | os.PathLike[str]

FIELD_TYPES = (
    "name",
    "given_name",
    "family_name",
    "email",
    "phone",
    "date",
    "postcode",
    "address",
    "id",
    "text",
)


@dataclass(frozen=True)
class Field:
    """One compared field: its type decides normalisation and comparison.

    `columns` (default: the field's own name) lists the source columns; several
    make a multi-valued field such as phone + mobile. `tf` weighs exact
    agreement by how rare the value is; fields sharing a `group` are
    correlated and count once. `m` / `u` fix the probabilities per agreement
    level (see `field_levels`) instead of estimating them.
    """

    name: str
    type: str
    columns: tuple[str, ...] = ()
    tf: bool = False
    group: str | None = None
    m: tuple[float, ...] | None = None
    u: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.type not in FIELD_TYPES:
            raise ValueError(
                f"field {self.name!r}: unknown type {self.type!r} (one of {', '.join(FIELD_TYPES)})"
            )
        if isinstance(self.columns, str):
            object.__setattr__(self, "columns", (self.columns,))
        if not self.columns:
            object.__setattr__(self, "columns", (self.name,))


@dataclass(frozen=True)
class BlockingRule:
    """Records meet for comparison when all of `keys` agree.

    Keys are field names, optionally wrapped in functions: `soundex(...)`,
    `metaphone(...)` (Double Metaphone's primary code), `nysiis(...)`,
    `nick(...)` (formal given name), `initial(...)`, `prefixN(...)`,
    `first(...)`, `last(...)`, `local(...)` / `domain(...)` of an e-mail,
    `year(...)`, `last8(...)`. With `unordered` the parts are compared as a
    set, so swapped given and family names still meet. `train` lets the
    rule's pairs estimate m; switch it off for rules whose pairs share more
    than their keys by nature (a landline or postcode + surname: households).
    """

    keys: tuple[str, ...]
    unordered: bool = False
    name: str | None = None
    train: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.keys, str):
            object.__setattr__(self, "keys", (self.keys,))
        if not self.keys:
            raise ValueError("a blocking rule needs at least one key")


@dataclass(frozen=True)
class MatchConfig:
    """Everything a run needs; `MatchConfig.contacts()` is the default."""

    fields: tuple[Field, ...]
    blocking: tuple[BlockingRule, ...]
    id_field: str = "id"
    threshold: float = 0.5
    cluster_threshold: float | None = None
    max_block_size: int = 64  # larger blocks: sorted neighbourhood of `window`
    window: int = 10
    u_sample_pairs: int = 1_000_000  # a cap: 3 random pairs per record, at least 300,000
    em: bool = True
    em_iterations: int = 25
    prior: float | None = None
    region: str = "AU"
    seed: int = 42
    name_source: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(_as_field(f) for f in self.fields))
        object.__setattr__(self, "blocking", tuple(_as_rule(r) for r in self.blocking))
        if not self.fields:
            raise ValueError("config: no fields to compare")
        if not self.blocking:
            raise ValueError("config: at least one blocking rule is needed")

    @classmethod
    def contacts(cls, **overrides: Any) -> MatchConfig:
        """Defaults for this project's contact fields (no e-mail or phone needed)."""
        # Family name, address, landline and sometimes the e-mail address are
        # shared by a household: grouped, they count once, so a spouse is not a
        # duplicate. Given name, mobile and date of birth belong to one person.
        fields = (
            Field("given_name", "given_name", tf=True),
            Field("family_name", "family_name", tf=True, group="household"),
            Field("organisation", "text", tf=True),
            Field("email", "email", group="household"),
            Field("mobile", "phone", columns=("mobile",)),
            Field("phone", "phone", columns=("phone",), group="household"),
            Field("street", "address", group="household"),
            Field("city", "text", tf=True, group="household"),
            Field("postcode", "postcode", group="household"),
            Field("date_of_birth", "date"),
        )
        blocking = (
            BlockingRule(("email",)),
            BlockingRule(("mobile",)),
            BlockingRule(("phone",), train=False),
            BlockingRule(("nick(first(given_name))", "soundex(family_name)"), unordered=True),
            BlockingRule(("postcode", "prefix3(family_name)"), train=False),
            BlockingRule(
                ("date_of_birth", "initial(nick(first(given_name)))", "initial(family_name)"),
                unordered=True,
            ),
            BlockingRule(("local(email)",)),
        )
        base = cls(fields=fields, blocking=blocking, name_source="display_name")
        return replace(base, **overrides) if overrides else base

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MatchConfig:
        """From a plain mapping (a parsed TOML or JSON file); unknown keys are errors."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"config: unknown keys {sorted(unknown)}")
        if "fields" not in data or "blocking" not in data:
            raise ValueError("config: 'fields' and 'blocking' are required")
        return cls(**dict(data))

    def columns(self) -> list[str]:
        """Every source column the configuration reads."""
        out: list[str] = []
        for f in self.fields:
            out.extend(c for c in f.columns if c not in out)
        if self.name_source and self.name_source not in out:
            out.append(self.name_source)
        return out

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("id_field")
        return json.dumps(data)


def _as_field(f: Field | Mapping[str, Any]) -> Field:
    if isinstance(f, Field):
        return f
    if not isinstance(f, Mapping):
        raise ValueError(f"config: a field must be a mapping, got {type(f).__name__}")
    d = dict(f)
    for k in ("columns", "m", "u"):
        if d.get(k) is not None and not isinstance(d[k], str):
            d[k] = tuple(d[k])
    try:
        return Field(**d)
    except TypeError as e:
        raise ValueError(f"config: bad field {dict(f)!r}: {e}") from None


def _as_rule(r: BlockingRule | Mapping[str, Any] | Sequence[str] | str) -> BlockingRule:
    if isinstance(r, BlockingRule):
        return r
    if isinstance(r, str):
        return BlockingRule((r,))
    if isinstance(r, Mapping):
        d = dict(r)
        if isinstance(d.get("keys"), list | tuple):
            d["keys"] = tuple(d["keys"])
        try:
            return BlockingRule(**d)
        except TypeError as e:
            raise ValueError(f"config: bad blocking rule {dict(r)!r}: {e}") from None
    return BlockingRule(tuple(r))


@dataclass(frozen=True)
class FieldContribution:
    """How one field agreed for a pair, and the weight (bits) it added."""

    level: str
    weight: float


@dataclass(frozen=True)
class MatchPair:
    left_id: str
    right_id: str
    probability: float
    weight: float
    explanation: dict[str, FieldContribution]


@dataclass(frozen=True)
class Cluster:
    """Probable duplicates; `weakest` is the link that holds it together."""

    ids: tuple[str, ...]
    strongest: MatchPair
    weakest: MatchPair


@dataclass(frozen=True)
class RuleStats:
    """What one blocking rule did. `scanned_blocks` had more than
    `max_block_size` records and were scanned by sorted neighbourhood
    (`scanned_block_pairs`: their all-against-all pairs, not compared)."""

    rule: str
    blocks: int
    pairs: int
    pairs_raw: int
    capped_blocks: int
    capped_pairs: int
    largest_block: int
    scanned_blocks: int = 0
    scanned_block_pairs: int = 0


@dataclass(frozen=True)
class MatchStats:
    """What blocking and estimation did. `pairs` per rule counts the pairs that
    rule added to the union (a pair several rules find is compared once);
    blocks above `max_block_size` are scanned by sorted neighbourhood, never
    dropped (`capped_*` stay 0; kept for old readers).
    `estimated_blocking_recall` needs no labels: from the pairs above the
    threshold, how often each rule finds what the others find, combined as
    if the rules missed independently (capture-recapture; optimistic when
    rules miss the same pairs). `model_source` is "em" or "reference" (too
    few compared pairs: the shipped reference population's m)."""

    records_left: int
    records_right: int
    rules: tuple[RuleStats, ...]
    pairs_compared: int
    capped_blocks: int
    capped_pairs: int
    pairs_above_threshold: int
    clusters: int
    distinct_patterns: int
    u_pairs_sampled: int
    em_iterations: int
    prior: float
    blocked_prior: float
    true_pairs: int | None
    true_pairs_blocked: int | None
    seconds: dict[str, float] = field(default_factory=dict)
    estimated_blocking_recall: float | None = None

    @property
    def blocking_recall(self) -> float | None:
        """Share of the known true pairs that blocking produced (needs truth)."""
        if not self.true_pairs:
            return None
        return (self.true_pairs_blocked or 0) / self.true_pairs


class MatchResult:
    """The pairs above threshold, iterated best-first, plus clusters and stats."""

    def __init__(self, output: _core.MatchOutput, inputs: Sequence[InputInfo] = (),
                 config: MatchConfig | None = None) -> None:
        self._out = output
        self._config = config
        #: How each CSV file was read (empty for records given as mappings).
        self.inputs: tuple[InputInfo, ...] = tuple(inputs)
        s = json.loads(output.stats_json())
        s["rules"] = tuple(RuleStats(**r) for r in s["rules"])
        s["seconds"] = {k: v for k, v in s["seconds"]}
        self.stats = MatchStats(**s)
        self.model: dict[str, Any] = json.loads(output.model_json())
        # best-first order of the pairs, sorted by the core when first iterated
        self._order: list[int] | None = None

    def __len__(self) -> int:
        return len(self._out)

    def __iter__(self) -> Iterator[MatchPair]:
        if self._order is None:
            self._order = self._out.order()
        for k in self._order:
            yield self._pair(k)

    @property
    def is_link(self) -> bool:
        return self._out.is_link

    def _pair(self, k: int) -> MatchPair:
        left, right, prob, weight = self._out.pair(k)
        expl = {f: FieldContribution(level, w) for f, level, w in self._out.explain(k)}
        return MatchPair(left, right, prob, weight, expl)

    def id_pairs(self) -> set[tuple[str, str]]:
        """The (left id, right id) pairs, cheaply (no explanations)."""
        left, right, _, _ = self._out.arrays()
        return set(zip(left, right, strict=True))

    def to_splink_settings(self, path: str | os.PathLike[str]) -> list[str]:
        """Writes the fitted model as a Splink settings file (see
        `splink_export`); returns the notes on what Splink cannot reproduce."""
        from contactsync_agent.splink_export import export

        if self._config is None:
            raise ValueError("this result has no configuration to export")
        exp = export(self._config, self.model, self.is_link)
        exp.write(path)
        return exp.notes

    def scored_pairs(self) -> list[tuple[str, str, float]]:
        """(left id, right id, probability) of every pair, cheaply (no explanations)."""
        left, right, probs, _ = self._out.arrays()
        return list(zip(left, right, probs, strict=True))

    def clusters(self) -> list[Cluster]:
        """Clusters of probable duplicates (dedupe only), largest first."""
        if self.is_link:
            raise ValueError("clusters are for dedupe results; a link result has pairs only")
        return [
            Cluster(tuple(ids), self._pair(s), self._pair(w)) for ids, s, w in self._out.clusters()
        ]

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """One row per pair: ids, probability, weight, then level and weight per field."""
        fields = self._out.fields
        # Owner-only: it holds the input's ids.
        with open_private_text(path, exclusive=False, follow_links=True) as fh:
            w = csv.writer(fh)
            w.writerow(
                ["left_id", "right_id", "probability", "weight"]
                + [f"{f}_{x}" for f in fields for x in ("level", "weight")]
            )
            for p in self:
                # Ids come from the input: a formula-like one is neutralised (csvsafe).
                row: list[Any] = [
                    neutralise(p.left_id),
                    neutralise(p.right_id),
                    f"{p.probability:.6f}",
                    f"{p.weight:.3f}",
                ]
                for f in fields:
                    c = p.explanation[f]
                    row += [c.level, f"{c.weight:.3f}"]
                w.writerow(row)

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Stats, model, pairs with explanations and (dedupe) clusters as one document."""
        doc: dict[str, Any] = {
            "stats": {**asdict(self.stats), "blocking_recall": self.stats.blocking_recall},
            "model": self.model,
            "pairs": [asdict(p) for p in self],
        }
        if not self.is_link:
            doc["clusters"] = [
                {
                    "ids": list(c.ids),
                    "strongest": [c.strongest.left_id, c.strongest.right_id, c.strongest.weight],
                    "weakest": [c.weakest.left_id, c.weakest.right_id, c.weakest.weight],
                }
                for c in self.clusters()
            ]
        # Owner-only: the explanations hold the input's values.
        with open_private_text(path, exclusive=False, follow_links=True) as fh:
            fh.write(json.dumps(doc, indent=1))


def _config(config: MatchConfig | Mapping[str, Any] | None) -> MatchConfig:
    if config is None:
        return MatchConfig.contacts()
    if isinstance(config, MatchConfig):
        return config
    if isinstance(config, Mapping):
        return MatchConfig.from_dict(config)
    raise TypeError(f"config must be a MatchConfig or a mapping, not {type(config).__name__}")


@dataclass(frozen=True)
class InputInfo:
    """How a CSV file was read: the column that gave the ids (None: each row's
    line number did), the source columns used and the field each was read as,
    the encoding, and the rows that could not be read (with the first few)."""

    path: str
    id_column: str | None
    columns: dict[str, str]
    encoding: str
    rejected: int = 0
    first_rejected: tuple[tuple[int, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "id_column": self.id_column,
                "ids": "column" if self.id_column else "line numbers",
                "columns": dict(self.columns), "encoding": self.encoding,
                "rejected": self.rejected,
                "first_rejected": [{"line": ln, "reason": r} for ln, r in self.first_rejected]}


def _mapped_table(path: str, cfg: MatchConfig, columns: Sequence[str],
                  mapping: Mapping[str, str] | None, id_column: str | None,
                  encoding: str | None, delimiter: str | None,
                  ) -> tuple[_core.RecordTable, InputInfo]:
    """A CSV file read as `sync` reads it: the same core reader, encodings and
    mapping (built-in headings plus `mapping`, as in `[sources.NAME.mapping]`).
    A config column that is a canonical field (or a heading mapped to one)
    reads that field; any other reads the unmapped column of that name."""
    from contactsync_agent.mapping import FIELDS, build_mapping

    table = build_mapping(mapping)
    if id_column is None and cfg.id_field != "id":
        id_column = cfg.id_field
    if id_column is not None:
        table = {k: ("extra" if v == "external_id" else v) for k, v in table.items()}
        table[id_column.strip().lower()] = "external_id"
    specs: list[tuple[str, str]] = []
    for c in columns:
        target = c if c in FIELDS else table.get(c.strip().lower(), "extra")
        if target == "name":
            target = "display_name"
        specs.append((c, f"field:{target}" if target in FIELDS else f"column:{c}"))
    try:
        with open(path, "rb") as f:
            blank = is_blank(f.read(BLANK_PROBE), os.fstat(f.fileno()).st_size)
    except OSError:
        blank = False  # the reader names the problem
    if blank:
        # As `sync` refuses it: an empty file is no records, not "no duplicates".
        raise SourceFormatError(path, 1, 0, "the file is empty (not even a header line)")
    core, (header, targets, id_col, enc, rejected, first) = _core.RecordTable.from_mapped_csv(
        path, table, specs, encoding, delimiter)
    if id_column is not None and id_col is None:
        raise ValueError(f"{path}: no column {id_column!r} for the ids (columns: "
                         f"{', '.join(header[:12])}{', …' if len(header) > 12 else ''})")
    fields_used = {sp[6:] for _, sp in specs if sp.startswith("field:")}
    raw_used = {sp[7:].strip().lower() for _, sp in specs if sp.startswith("column:")}
    used: dict[str, str] = {}
    for h, t in zip(header, targets, strict=True):
        if t in fields_used and t not in used.values():
            used[h] = t
        elif t == "name" and fields_used & {"given_name", "family_name", "display_name"}:
            used[h] = "name"
        elif t == "extra" and h.strip().lower() in raw_used:
            used[h] = h
    info = InputInfo(path, id_col, used, enc, rejected, tuple(first))
    return core, info


def _table(records: Records, cfg: MatchConfig, extra: Sequence[str] = (),
           read: ReadOptions | None = None, infos: list[InputInfo] | None = None,
           ) -> _core.RecordTable:
    columns = cfg.columns() + [c for c in extra if c not in cfg.columns()]
    if isinstance(records, str | os.PathLike):
        r = read or ReadOptions()
        core, info = _mapped_table(os.fspath(records), cfg, columns, r.mapping, r.id_column,
                                   r.encoding, r.delimiter)
        if infos is not None:
            infos.append(info)
        return core
    if isinstance(records, Mapping):
        raise TypeError("records must be an iterable of mappings (or a CSV path), not a mapping")
    ids: list[str] = []
    cols: dict[str, list[Any]] = {c: [] for c in columns}
    id_field = cfg.id_field
    for n, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise TypeError(f"record {n} is a {type(rec).__name__}, not a mapping")
        try:
            ids.append(str(rec[id_field]))
        except KeyError:
            raise ValueError(f"record {n} has no {id_field!r} field") from None
        for c, values in cols.items():
            values.append(rec.get(c))
    return _core.RecordTable.from_columns(ids, cols)


@dataclass(frozen=True)
class ReadOptions:
    """How CSV files are read (records given as mappings ignore it): `mapping`
    is a source's column -> field table on top of the built-in headings (as
    `[sources.NAME.mapping]`), `id_column` the column holding the ids (default:
    the one mapped to external_id; with none, each row's line number is its
    id), `encoding` / `delimiter` as for `sync`."""

    mapping: Mapping[str, str] | None = None
    id_column: str | None = None
    encoding: str | None = None
    delimiter: str | None = None


def link(
    left: Records,
    right: Records,
    config: MatchConfig | Mapping[str, Any] | None = None,
    *,
    truth_column: str | None = None,
    read: ReadOptions | None = None,
    meter: _core.MatchMeter | None = None,
) -> MatchResult:
    """Pairs (left record, right record) that probably refer to the same entity.

    `truth_column`, when given, names a column of known entity labels: the
    stats then report blocking recall against them. CSV paths are read as
    `sync` reads them (`read`); `result.inputs` says how. `meter` is told the
    phase and the pairs compared, for a progress display on another thread.
    """
    cfg = _config(config)
    extra = [truth_column] if truth_column else []
    infos: list[InputInfo] = []
    out = _core.run_match(
        cfg.to_json(), _table(left, cfg, extra, read, infos), _table(right, cfg, extra, read,
                                                                     infos), truth_column,
        meter=meter,
    )
    return MatchResult(out, infos, cfg)


def dedupe(
    records: Records,
    config: MatchConfig | Mapping[str, Any] | None = None,
    *,
    truth_column: str | None = None,
    read: ReadOptions | None = None,
    meter: _core.MatchMeter | None = None,
) -> MatchResult:
    """Probable duplicate pairs inside one record set, and their clusters.
    A CSV path is read as `sync` reads it (`read`); `result.inputs` says how.
    `meter`: as for `link`."""
    cfg = _config(config)
    extra = [truth_column] if truth_column else []
    infos: list[InputInfo] = []
    out = _core.run_match(cfg.to_json(), _table(records, cfg, extra, read, infos), None,
                          truth_column, meter=meter)
    return MatchResult(out, infos, cfg)


def field_levels(field_type: str) -> list[str]:
    """The agreement levels of a field type, from "missing" up to the best."""
    return list(_core.field_levels(field_type))


__all__ = [
    "BlockingRule",
    "Cluster",
    "Field",
    "FieldContribution",
    "InputInfo",
    "MatchConfig",
    "MatchPair",
    "MatchResult",
    "MatchStats",
    "ReadOptions",
    "RuleStats",
    "dedupe",
    "field_levels",
    "link",
]
