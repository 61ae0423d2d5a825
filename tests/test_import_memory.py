"""Memory of reading an export, as the peak of a real process (VmHWM): the
CSV reader parses the file itself, a chunk at a time, so memory never holds
the whole text (issue 19: a 1,000,000-row export is 141 MB, and the import's
peak RSS must stay ≤ 600 MB). With the file read whole, reading grew the
process by the file's size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# VmHWM, the process's own peak (ru_maxrss would carry the parent's peak over
# the exec: Linux keeps the larger of the two).
CHILD = r"""
import json, sys
from contactsync_agent import _core
from contactsync_agent.mapping import build_mapping
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
mapping, differ = build_mapping(None), _core.Differ()
before = hwm()
records = rejected = 0
for batch in _core.open_file(sys.argv[1], "csv", mapping, differ, chunk_size=1000):
    records += batch.total
    rejected += len(batch.rejected())
print(json.dumps({"records": records, "rejected": rejected, "grew_kib": hwm() - before}))
"""


def read_in_a_child(path: Path) -> dict[str, int]:
    r = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                       text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    out: dict[str, int] = json.loads(r.stdout)
    return out


def test_reading_an_export_does_not_hold_the_file(tmp_path: Path) -> None:
    f = tmp_path / "wide.csv"
    notes = "n" * 2000  # wide rows: the file is large, its links few
    with f.open("w", encoding="utf-8", newline="") as out:
        out.write("\ufeffClient ID,First Name,Last Name,Email,Notes\r\n")  # a BOM, CRLF
        for i in range(50_000):
            out.write(f"C{i:07d},Given{i},Family{i},p{i}@example.org,{notes}\r\n")
            if i == 40_000:
                out.write("C-bad,a,b,c,d,e,f\r\n")  # a ragged row, late in the file
    size = f.stat().st_size
    assert size > 100_000_000
    out = read_in_a_child(f)
    assert out["records"] == 50_001 and out["rejected"] == 1
    grew = out["grew_kib"] * 1024
    assert grew < size / 2, f"reading grew by {grew / 1e6:.0f} MB for a {size / 1e6:.0f} MB file"
