"""`store.entities`: the SQL of organisations, locations and contact-customer
links: their rows, inserts and updates, the contacts' organisation
links (`contact_organisations`, rebuilt set-based after a run), the unique-field
clash queries, the customer-access reads and the export's reads.

Statements only, inside the caller's transaction; it must not decide an
entity's fields, a clash's winner or an access decision (entities.py,
rules.py and access.py do), nor begin transactions itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from contactsync_agent.store.part import Part, sql_quote
from contactsync_agent.store.schema import CONTACT_COLUMNS


class Entities(Part):
    """Organisations, locations, customer links and contacts' links to them."""

    def index(self, table: str, source: str) -> dict[str, tuple[int, int, str | None]]:
        """external id -> (local id, hash, deleted_at) of one source's rows of `table`."""
        return {
            e: (i, h, d)
            for e, i, h, d in self.conn.execute(
                f"SELECT external_id, id, hash, deleted_at FROM {table} WHERE source = ?",
                (source,),
            )
        }

    def rows(self, table: str, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            cur = self.conn.execute(f"SELECT * FROM {table} WHERE id IN ({marks})", chunk)
            cols = [d[0] for d in cur.description]
            for row in cur:
                out[row[0]] = dict(zip(cols, row, strict=True))
        return out

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
               at: str) -> None:
        """Rows of new entities: values for `columns` (which start with id)."""
        marks = ", ".join("?" * len(columns))
        self.conn.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}, created_at, updated_at) "
            f"VALUES ({marks}, {sql_quote(at)}, {sql_quote(at)})",
            rows,
        )

    def update(self, table: str, entity_id: int, values: dict[str, Any], at: str) -> None:
        sets = ", ".join(f"{c} = ?" for c in values)
        self.conn.execute(f"UPDATE {table} SET {sets}, updated_at = ? WHERE id = ?",
                          [*values.values(), at, entity_id])

    def insert_relations(self, source: str, rows: Iterable[tuple[int, str, str, str]],
                         at: str) -> None:
        """`contact_organisations` rows of newly created contacts, as the Rust
        batch hands them over: (contact id, organisation ref, location ref, position)."""
        self.conn.executemany(
            "INSERT INTO contact_organisations (contact_id, source, organisation_ref, "
            f"location_ref, position, updated_at) VALUES (?1, {sql_quote(source)}, ?2, ?3, "
            f"?4, {sql_quote(at)})",
            rows,
        )

    def relink_contacts(self, source: str, first_new_id: int, touched: Sequence[int],
                        at: str) -> None:
        """Rebuilds `contact_organisations` rows of the contacts a run created
        (ids from `first_new_id` on) or changed, from the relation keys the core
        keeps in their `extra` (set-based: one statement per kind)."""
        select = (
            "SELECT id, source, coalesce(json_extract(extra, '$.organisation_ref'), ''), "
            "coalesce(json_extract(extra, '$.location_ref'), ''), "
            "coalesce(json_extract(extra, '$.position'), ''), ? FROM contacts "
        )
        has_ref = ("(instr(extra, '\"organisation_ref\"') > 0 "
                   "OR instr(extra, '\"location_ref\"') > 0)")
        # New ids never had a row (ids are never reused): a plain insert.
        self.conn.execute(
            "INSERT INTO contact_organisations (contact_id, source, organisation_ref, "
            f"location_ref, position, updated_at) {select} WHERE id >= ? AND source = ? "
            f"AND {has_ref}",
            (at, first_new_id, source),
        )
        # Changed contacts still linked to a source: their row follows their extra.
        # (Unlinked ones, kept as manual, keep the relations they had.) A row
        # that would not change is not written: its updated_at stays.
        for start in range(0, len(touched), 500):
            chunk = list(touched[start : start + 500])
            marks = ",".join("?" * len(chunk))
            self.conn.execute(
                "INSERT INTO contact_organisations (contact_id, source, "
                f"organisation_ref, location_ref, position, updated_at) {select} "
                f"WHERE id IN ({marks}) AND source IS NOT NULL AND {has_ref} "
                "ON CONFLICT (contact_id) DO UPDATE SET source = excluded.source, "
                "organisation_ref = excluded.organisation_ref, "
                "location_ref = excluded.location_ref, position = excluded.position, "
                "updated_at = excluded.updated_at "
                "WHERE (source, organisation_ref, location_ref, position) IS NOT "
                "(excluded.source, excluded.organisation_ref, excluded.location_ref, "
                "excluded.position)",
                [at, *chunk],
            )
            self.conn.execute(
                "DELETE FROM contact_organisations WHERE contact_id IN (SELECT id FROM "
                f"contacts WHERE id IN ({marks}) AND source IS NOT NULL AND NOT {has_ref})",
                chunk,
            )


    # ------------------------------------------------------------ Mirror's lists

    def list_rows(self, table: str, source: str | None,
                  include_deleted: bool) -> list[dict[str, Any]]:
        """Rows of `table` (of one source, when given) in id order, as stored."""
        where, params = ["1"], []
        if not include_deleted:
            where.append("deleted_at IS NULL")
        if source:
            where.append("source = ?")
            params.append(source)
        cur = self.conn.execute(
            f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY id", params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur]

    # ------------------------------------------------------------ unique fields

    def ensure_unique_index(self, name: str, expr: str) -> None:
        """The index a unique key's clash query uses (`expr` over `contacts`)."""
        self.conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON contacts ({expr}) "
                          "WHERE deleted_at IS NULL")

    def unique_clashes(self, expr: str, oexpr: str, first_new_id: int, source: str,
                       field_changed: Sequence[int]) -> list[tuple[int, Any, int]]:
        """(contact, value, other contact holding it) for the contacts a run wrote
        a value of the key to (`expr` on alias c, `oexpr` on alias o)."""
        marks = ",".join("?" * len(field_changed)) or "NULL"
        return self.conn.execute(
            f"SELECT c.id, {expr}, o.id FROM contacts c JOIN contacts o "
            f"ON {oexpr} = {expr} AND o.deleted_at IS NULL AND o.id != c.id "
            f"WHERE c.deleted_at IS NULL AND coalesce({expr}, '') != '' AND "
            f"((c.id >= ? AND c.source = ?) OR c.id IN ({marks}))",
            [first_new_id, source, *field_changed],
        ).fetchall()

    def unique_holder(self, expr: str, value: str, contact_id: int) -> int | None:
        """Another live contact already holding `value` of a unique key, if any."""
        hit = self.conn.execute(
            f"SELECT id FROM contacts WHERE {expr} = ? "
            "AND deleted_at IS NULL AND id != ? LIMIT 1", (value, contact_id)).fetchone()
        return int(hit[0]) if hit else None

    # ------------------------------------------------------------ customer access

    def customer_flag(self, role: str, source: str | None, contact_ref: str,
                      customer: str) -> str | None:
        """The `role` flag (Y, N, NA) of the contact's live link to the customer,
        or None without one (`role` is a checked role name)."""
        link = self.conn.execute(
            f"SELECT {role} FROM contact_customers WHERE source = ? AND contact_ref = ? "
            "AND customer = ? AND deleted_at IS NULL", (source, contact_ref, customer),
        ).fetchone()
        return None if link is None else str(link[0])

    def customers_of(self, contact_id: int) -> list[tuple[Any, ...]]:
        """(customer, name, bill_to, sold_to, ship_to, correspondence) of a contact."""
        return self.conn.execute(
            "SELECT customer, customer_name, bill_to, sold_to, ship_to, correspondence "
            "FROM contact_customer_roles WHERE contact_id = ? ORDER BY customer",
            (contact_id,)).fetchall()

    def organisation_view(self, contact_id: int) -> dict[str, Any] | None:
        """The contact's row of the `contacts_with_organisation` view, or None."""
        cur = self.conn.execute(
            "SELECT * FROM contacts_with_organisation WHERE contact_id = ?", (contact_id,))
        cols = [d[0] for d in cur.description]
        row = cur.fetchone()
        return None if row is None else dict(zip(cols, row, strict=True))

    # ------------------------------------------------------------ export

    def export_contacts(self) -> Iterator[tuple[Any, ...]]:
        """Every live contact with its organisation link: CONTACT_COLUMNS, then
        EXPORT_LINK_COLUMNS, in id order. The cursor itself: a reader that stops
        early (a closed pipe) leaves it to be collected, never closed after the
        database."""
        return self.conn.execute(_EXPORT_CONTACTS_SQL)

    def customer_roles(self) -> Iterator[tuple[Any, ...]]:
        """(contact id, customer, name, bill_to, sold_to, ship_to, correspondence)
        of every live link, by contact and customer."""
        return self.conn.execute(
            "SELECT contact_id, customer, customer_name, bill_to, sold_to, ship_to, "
            "correspondence FROM contact_customer_roles ORDER BY contact_id, customer")

    def live_rows(self, table: str) -> Iterator[dict[str, Any]]:
        """The live rows of `table` in id order."""
        cur = self.conn.execute(f"SELECT * FROM {table} WHERE deleted_at IS NULL ORDER BY id")
        cols = [d[0] for d in cur.description]
        for r in cur:
            yield dict(zip(cols, r, strict=True))


EXPORT_LINK_COLUMNS = ("organisation_id", "location_id", "position", "organisation_ref",
                       "location_ref")
_EXPORT_CONTACTS_SQL = (
    f"SELECT {', '.join('c.' + c for c in CONTACT_COLUMNS)}, "
    # Text is "" when empty, as everywhere (the ids stay NULL: no link).
    "o.id, l.id, coalesce(co.position, ''), coalesce(co.organisation_ref, ''), "
    "coalesce(co.location_ref, '') "
    "FROM contacts c LEFT JOIN contact_organisations co ON co.contact_id = c.id "
    "LEFT JOIN locations l ON l.source = co.source AND l.external_id = co.location_ref "
    "AND l.deleted_at IS NULL "
    "LEFT JOIN organisations o ON o.source = co.source AND o.external_id = "
    "coalesce(nullif(co.organisation_ref, ''), l.organisation_ref) AND o.deleted_at IS NULL "
    "WHERE c.deleted_at IS NULL ORDER BY c.id"
)
