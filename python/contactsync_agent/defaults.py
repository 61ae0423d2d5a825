"""The defaults of the mirror's safety limits and thresholds, named once.

Every module that offers one of them as a default (a run's options, the config
file, the API's keyword arguments) takes it from here, so that changing one is
one edit. Values only: no logic, and no import of the package, so that any
layer may import this module.
"""

from __future__ import annotations

# A full snapshot that would delete more than this share of a source's contacts
# is refused until a user confirms it (spec: "default 20 %").
MASS_DELETE_LIMIT = 0.20

# A full snapshot that empties one field on more than that share of a source's
# contacts is refused the same way, once it has emptied at least this many (a
# few contacts' fields cleared in a small source are ordinary edits).
CLEAR_GUARD_MIN = 10

# Rule 5: fuzzy candidates above this match probability become review items.
REVIEW_THRESHOLD = 0.5

# A field value longer than this (bytes) quarantines its record.
MAX_FIELD_BYTES = 1 << 20
