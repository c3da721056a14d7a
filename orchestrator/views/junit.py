"""A run as JUnit XML, the format every CI system renders: one <testcase> per (entry, mode).

classname is ``exportsweep.<family>``, name ``<entry>[<mode>]``, or ``<entry>[<mode>@<env>]``
in a run with several environments (an ``env`` property too). FAIL is a <failure>,
ERROR (infrastructure) an <error>, SKIP and XFAIL a <skipped> (as pytest reports xfail),
XPASS a <failure> asking to update the expectation. The category is the failure's type;
stage, signature, error code, user frame, repro and stage timings are <properties>.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from exporter.environments import CURRENT
from exporter.schema import row_env
from exporter.status import STATUS_BY_NAME
from exporter.taxonomy import STAGES
from exporter.text import xml_safe

_PROPERTIES = ("status", "stage_reached", "failed_stage", "category", "signature", "error_code",
               "exception_type", "user_frame", "repro", "expected", "device", "worker_id",
               "attempt", "env", "torch_version")


def to_junit(rows: list[dict[str, Any]], run_id: str) -> ET.ElementTree:
    suite = ET.Element("testsuite", name=f"exportsweep.{run_id}")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total = 0.0
    started = min((r["started_at"] for r in rows if r.get("started_at")), default=None)
    props = ET.SubElement(suite, "properties")
    for key in ("torch_version", "python_version", "hostname"):
        values = sorted({str(r[key]) for r in rows if r.get(key)})
        if values:
            ET.SubElement(props, "property", name=key, value=",".join(values))
    ET.SubElement(props, "property", name="run_id", value=run_id)
    several = {row_env(r) for r in rows} != {CURRENT}
    for r in sorted(rows, key=lambda r: (r["family"] or "", r["entry"], r["mode"], row_env(r))):
        counts["tests"] += 1
        seconds = float(r.get("total_s") or 0.0)
        total += seconds
        where = f"{r['mode']}@{row_env(r)}" if several else r["mode"]
        case = ET.SubElement(suite, "testcase", classname=f"exportsweep.{r['family']}",
                             name=f"{r['entry']}[{where}]", time=f"{seconds:.3f}")
        case_props = ET.SubElement(case, "properties")
        for key in _PROPERTIES:
            if r.get(key) is not None:
                ET.SubElement(case_props, "property", name=key, value=str(r[key]))
        for stage in STAGES:
            if r.get(f"seconds_{stage}") is not None:
                ET.SubElement(case_props, "property", name=f"seconds_{stage}",
                              value=f"{r[f'seconds_{stage}']:.3f}")
        _result(case, r, counts)
        if r.get("repro"):
            ET.SubElement(case, "system-out").text = f"repro: {r['repro']}"
    suite.attrib.update({k: str(v) for k, v in counts.items()}, time=f"{total:.3f}")
    if started is not None:
        suite.set("timestamp", started.replace(tzinfo=None).isoformat(timespec="seconds"))
    root = ET.Element("testsuites", name="exportsweep", time=f"{total:.3f}",
                      **{k: str(v) for k, v in counts.items() if k != "skipped"})
    root.append(suite)
    ET.indent(root)
    _make_well_formed(root)
    return ET.ElementTree(root)


def _make_well_formed(root: ET.Element) -> None:
    """Messages carry whatever torch and the models printed (ANSI colours, NULs): XML 1.0
    cannot hold some characters even escaped, so they are written as visible escapes."""
    for element in root.iter():
        if element.text:
            element.text = xml_safe(element.text)
        for key, value in element.attrib.items():
            element.attrib[key] = xml_safe(value)


def _result(case: ET.Element, r: dict[str, Any], counts: dict[str, int]) -> None:
    status = STATUS_BY_NAME.get(r["status"])
    if status is None:              # a damaged row: an error, never a pass
        counts["errors"] += 1
        ET.SubElement(case, "error", type="UNKNOWN_STATUS",
                      message=f"unknown status {r['status']!r} in the results")
        return
    category = r.get("category")
    head = (r.get("message") or "").splitlines()[0][:300] if r.get("message") else ""
    where = f"{category} at {r.get('failed_stage') or '?'}"
    if status.junit in ("failure", "error"):
        counts["failures" if status.junit == "failure" else "errors"] += 1
        if status.failure:
            ET.SubElement(case, status.junit, type=category or status.name,
                          message=f"{where}: {head}").text = r.get("message") or ""
        else:                       # passed, but a failure was expected
            ET.SubElement(case, status.junit, type=status.name, message=(
                f"expected {r.get('expected')}, but it passed: update the expectation"))
    elif status.junit == "skipped":
        counts["skipped"] += 1
        message = f"expected failure: {where}: {head}" if status.failure else \
            (r.get("skip_reason") or "")
        ET.SubElement(case, "skipped", type=status.name.lower(), message=message)
