"""The lease script's JSON (scripts/gpu-lease.sh): a section's record where its own process wrote none (the
gpu-marked tests, a section killed at its time limit or skipped for time), and the summary at the end.

    python3 scripts/lease_json.py section OUT NAME RC SECONDS LIMIT [JUNIT_XML]
    python3 scripts/lease_json.py summary OUT LEASE_S

Standard library only: it runs on the device image before anything else is known to work.
"""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

SKIPPED = -1  # RC of a section the script did not start (too little time left)
KILLED = (124, 137)  # timeout's exit codes: the limit's SIGTERM, or the SIGKILL after it


def write(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (a temporary file in the same folder, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def junit(xml: Path) -> dict[str, Any]:
    """pytest's JUnit XML as counts and one line per test that did not pass."""
    if not xml.is_file():
        return {}
    cases = ET.parse(xml).getroot().iter("testcase")
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    problems = []
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        found = [c for c in case if c.tag in ("failure", "error", "skipped")]
        if not found:
            counts["passed"] += 1
            continue
        kind = "skipped" if found[0].tag == "skipped" else "failed"
        counts[kind] += 1
        problems.append(f"{kind} {name}: {(found[0].get('message') or '').splitlines()[0][:200] if found[0].get('message') else ''}")
    return {**counts, "not_passed": problems}


def section(out: Path, name: str, rc: int, seconds: float, limit: float, xml: str | None = None) -> dict[str, Any]:
    """The record of section `name` (exit code `rc` after `seconds` of its `limit`), merged into what
    its own process wrote: a killed process's JSON holds what it finished (e.g. 200M before 2B hung)."""
    path = out / f"{name}.json"
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        data = {}
    status = ("skipped" if rc == SKIPPED else "killed at its time limit" if rc in KILLED
              else "ok" if rc == 0 else f"failed (exit {rc})")
    lease = {"section": name, "status": status, "exit_code": rc, "seconds": round(seconds, 1),
             "limit_s": round(limit, 1)}
    if rc == SKIPPED:
        lease["skipped"] = f"time: {limit:.0f} s left, too little to start it"
    if xml:
        lease["tests"] = junit(Path(xml))
    data["lease"] = lease
    write(path, data)
    return data


def summary_lines(out: Path, lease_s: float) -> tuple[list[str], dict[str, Any]]:
    """What every section said, in lines and as one JSON."""
    lines, sections = [f"== GPU lease summary ({out})"], {}
    for path in sorted(out.glob("*.json"), key=lambda p: p.stat().st_mtime):
        if path.name == "summary.json":
            continue
        data = json.loads(path.read_text())
        lease = data.get("lease", {})
        name = lease.get("section", path.stem)
        sections[name] = {"lease": lease, "summary": (data.get("summary") or {}).get(name)}
        lines.append(f"{name:8} {lease.get('status', '?'):26} {lease.get('seconds', 0):6.0f} s of {lease.get('limit_s', 0):.0f}")
        tests = lease.get("tests")
        if tests:
            lines.append(f"         {tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped")
            lines += [f"         {p}" for p in tests["not_passed"]]
        figures = sections[name]["summary"] or {}
        for row in figures.get("rows", []):
            lines.append("         " + row_text(row))
        for skip in figures.get("skipped", []):
            lines.append(f"         skipped: {skip}")
        if figures.get("error") or lease.get("skipped"):
            lines.append(f"         {figures.get('error') or lease.get('skipped')}")
    total = sum(s["lease"].get("seconds", 0) for s in sections.values())
    lines.append(f"sections took {total:.0f} s of the lease's {lease_s:.0f} s")
    return lines, {"lease_s": lease_s, "sections_s": round(total, 1), "sections": sections}


def row_text(row: dict[str, Any]) -> str:
    """One model or trial: planner vs measured peak, MFU, samples/s, compile, OOM."""
    def num(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    compiled = "off" if not row.get("compile") else ("compiled" if row.get("compiled") else "EAGER (fell back)")
    text = (f"{row['what']}: peak planned {num(row.get('planner_peak_gb'), '.2f')} GB, measured "
            f"{num(row.get('measured_peak_gb'), '.2f')} GB; MFU {num(row.get('mfu'), '.3f')}; "
            f"{num(row.get('samples_per_sec'), '.0f')} samples/s; compile {compiled}")
    if row.get("oom"):
        text += "; OOM"
    if row.get("error") and not row.get("oom"):
        text += f"; error: {row['error']}"
    if row.get("skipped"):
        text += f"; skipped: {row['skipped']}"
    return text


def main(argv: list[str]) -> int:
    if argv[:1] == ["section"] and len(argv) in (6, 7):
        out, name, rc, seconds, limit = Path(argv[1]), argv[2], int(argv[3]), float(argv[4]), float(argv[5])
        section(out, name, rc, seconds, limit, argv[6] if len(argv) == 7 else None)
        return 0
    if argv[:1] == ["summary"] and len(argv) == 3:
        out = Path(argv[1])
        lines, data = summary_lines(out, float(argv[2]))
        write(out / "summary.json", data)
        print("\n".join(lines), flush=True)
        return 0
    usage = [line.strip() for line in __doc__.splitlines() if line.strip().startswith("python3 ")]
    print("usage: " + "\n       ".join(usage), file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
