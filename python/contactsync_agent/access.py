"""Customer access: may a contact act for a customer in a role (bill-to,
sold-to, ship-to, correspondence), decided from the mirrored contact–customer
links, with the reason; and the customers a contact is linked to.

`Mirror.access` is the `Access` part below. Reads only, through the store
(`store.contacts`, `store.entities`: no SQL lives here); it never writes and
never raises for a missing contact (the decision says why it is denied).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contactsync_agent.entities import ROLES
from contactsync_agent.errors import ConfigError
from contactsync_agent.store import Store

ROLE_WORDS = {"bill_to": "bill-to", "sold_to": "sold-to", "ship_to": "ship-to",
              "correspondence": "correspondence"}


@dataclass(frozen=True)
class AccessDecision:
    """Whether a contact may act for a customer in a role, and why."""

    allowed: bool
    reason: str
    contact_id: int
    customer: str
    role: str

    def __bool__(self) -> bool:
        return self.allowed

    def to_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "reason": self.reason, "contact_id": self.contact_id,
                "customer": self.customer, "role": self.role}


def check_role(role: str) -> str:
    r = role.strip().lower().replace("-", "_").replace(" ", "_")
    if r not in ROLES:
        raise ConfigError(f"unknown role {role!r} (one of {', '.join(ROLES)})", key="role")
    return r


def access(store: Store, contact_id: int, customer: str, role: str) -> AccessDecision:
    """The access check of the customer-contact document: the contact must be
    linked to the customer with the role's flag Y; NA means the customer is
    not of that type at all. Unknown, deleted or unlinked contacts are denied."""
    role = check_role(role)
    word = ROLE_WORDS[role]

    def deny(reason: str) -> AccessDecision:
        return AccessDecision(False, "denied: " + reason, contact_id, customer, role)

    row = store.contacts.link(contact_id)
    if row is None:
        return deny(f"no contact with id {contact_id}")
    src, ext, deleted = row
    if deleted is not None:
        return deny(f"contact {contact_id} was deleted")
    if ext is None:
        return deny(f"contact {contact_id} is not linked to a source, so it has no customers")
    flag = store.entities.customer_flag(role, src, ext, customer)
    if flag is None:
        return deny(f"contact {contact_id} is not assigned to customer {customer}")
    if flag == "NA":
        return deny(f"customer {customer} is not a {word} customer")
    if flag != "Y":
        return deny(f"contact {contact_id} is assigned to customer {customer}, "
                    f"but not for {word}")
    return AccessDecision(True, f"allowed: contact {contact_id} may act for customer "
                          f"{customer} as {word}", contact_id, customer, role)


def customers_of(store: Store, contact_id: int) -> list[dict[str, Any]]:
    """The customers a contact is linked to, with each role's flag and the roles it may use."""
    out = []
    for customer, name, *flags in store.entities.customers_of(contact_id):
        roles = dict(zip(ROLES, flags, strict=True))
        out.append({"customer": customer, "customer_name": name, "flags": roles,
                    "roles": [r for r in ROLES if roles[r] == "Y"]})
    return out


class Access:
    """`Mirror.access`: the access check and a contact's customers."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def check(self, contact_id: int, customer: str, role: str) -> AccessDecision:
        """May the contact act for the customer in `role` (bill_to, sold_to, ship_to,
        correspondence)? Answers with the reason; never raises for a missing contact."""
        return access(self._store, contact_id, str(customer), role)

    def customers(self, contact_id: int) -> list[dict[str, Any]]:
        """Customers the contact is linked to, with each role's flag and the usable roles."""
        return customers_of(self._store, contact_id)
