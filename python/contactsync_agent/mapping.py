"""Source columns to canonical contact fields.

Builds the lower-cased column -> target table the Rust readers apply; it must
not read files or touch the database.
"""

from __future__ import annotations

from collections.abc import Mapping

from contactsync_agent import _core
from contactsync_agent.errors import ConfigError

#: The canonical mirrored fields, in the order of the canonical serialisation
#: (defined once, in the Rust core: `rust/src/model.rs`).
FIELDS: tuple[str, ...] = tuple(_core.FIELDS)

#: Targets besides the canonical fields: the source's id, a full name to split,
#: a delete marker, "keep in extra", "drop", and the record's modification time
#: at the source (`modified_at`: two-way sync's last-write-wins compares it; it
#: is carried beside the record, never stored or hashed).
SPECIAL_TARGETS: frozenset[str] = frozenset(
    {"external_id", "name", "deleted", "extra", "ignore", "modified_at"})
#: A contact's relations: the source's id of its organisation and location and
#: its position there. The core keeps them in `extra` under these fixed keys
#: (whatever the column is called); after a run they become the contact's row
#: in `contact_organisations` (`store.entities.relink_contacts`, called by sync.py).
RELATION_TARGETS: tuple[str, ...] = ("organisation_ref", "location_ref", "position")
TARGETS: frozenset[str] = frozenset(FIELDS) | SPECIAL_TARGETS | frozenset(RELATION_TARGETS)

#: Common export headings (matched case-insensitively).
DEFAULT_HEADINGS: dict[str, tuple[str, ...]] = {
    "external_id": (
        "external_id", "external id", "id", "client id", "clientid", "contact id", "contactid",
        "uuid", "uid", "record id", "metadata",
    ),
    "name": ("name", "full name", "fullname", "contact name", "client name"),
    "given_name": (
        "given_name", "first name", "firstname", "first_name", "given name", "first", "forename",
    ),
    "family_name": (
        "family_name", "surname", "last name", "lastname", "last_name", "family name", "last",
    ),
    "display_name": ("display_name", "display name", "preferred name"),
    "organisation": (
        "organisation", "organization", "company", "company name", "business name", "employer",
    ),
    "email": (
        "email", "e-mail", "email address", "e-mail address", "emailaddress", "email_address",
        "mail",
    ),
    "phone": (
        "phone", "telephone", "phone number", "phone_number", "work phone", "business phone",
        "landline",
    ),
    "mobile": ("mobile", "mobile phone", "mobile number", "mobile_number", "cell", "cell phone"),
    "street": ("street", "address", "street address", "address line 1", "address1"),
    "city": ("city", "suburb", "town", "locality"),
    "region": ("region", "state", "province", "county"),
    "postcode": (
        "postcode", "post code", "postal code", "postal_code", "zip", "zip code", "zipcode",
    ),
    "country": ("country",),
    "date_of_birth": ("date_of_birth", "date of birth", "dob", "birthday", "birth date"),
    "notes": ("notes", "note", "comments", "comment"),
    "deleted": ("deleted", "_deleted", "is_deleted", "is deleted", "delete"),
    "organisation_ref": ("organisation_ref",),
    "location_ref": ("location_ref",),
}


def default_mapping() -> dict[str, str]:
    """The built-in heading table: lower-cased heading -> target."""
    table: dict[str, str] = {}
    for target, headings in DEFAULT_HEADINGS.items():
        for h in headings:
            table[h.lower()] = target
    return table


def build_mapping(
    overrides: Mapping[str, str] | None = None, *, where: str = "mapping"
) -> dict[str, str]:
    """The default table with a source's own entries (source column -> target) on top."""
    table = default_mapping()
    for column, target in (overrides or {}).items():
        if target not in TARGETS:
            allowed = ", ".join(sorted(TARGETS))
            raise ConfigError(
                f"unknown target field {target!r} for column {column!r} (one of: {allowed})",
                key=f"{where}.{column}",
            )
        table[column.strip().lower()] = target
    return table
