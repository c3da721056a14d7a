"""`exportsweep report` and `exportsweep diff` on a synthetic 10,000-pair nightly.

    .venv/bin/python bench/report_diff_10k.py [--pairs 10000] [--runs 2] [--rows-per-file 2]
                                              [--out DIR] [--no-browser]

Writes ``--runs`` runs of ``--pairs`` final (entry, mode) pairs each with the real schema
through ``orchestrator.results.sink.ResultSink`` (one file per entry by default, as the driver
writes them; ``--rows-per-file 1000`` mimics a compacted run), with ``_run.json`` as a
finished sweep leaves it.  Statuses, categories, stages, messages (hence signatures,
computed by the real ``Failure.make``), wall times and memory follow the shapes of real
nightlies; each run differs from the one before by a few percent (new failures, fixes,
dropped and new entries, other root causes).  Then it times, end to end as subprocesses
(imports included), ``exportsweep report`` and ``exportsweep diff`` (table and JSON), and
in-process ``read_run``, ``compare_runs``, ``build_report``; it reports the page's size and,
when Chromium is installed, how long the page takes to load, to filter and sort (from the
URL fragment) and to screenshot.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from exporter.record import Record  # noqa: E402
from exporter.schema import RowContext, row  # noqa: E402
from exporter.taxonomy import CATEGORY_BY_NAME, STAGES, Failure  # noqa: E402
from orchestrator.results.layout import RunMeta  # noqa: E402
from orchestrator.results.sink import ResultSink  # noqa: E402

EXPORTSWEEP = os.path.join(os.path.dirname(sys.executable), "exportsweep")
FAMILIES = (("timm", 0.45), ("transformers", 0.25), ("torchvision", 0.2), ("manual", 0.1))
TAGS = {"timm": ["vision", "timm"], "torchvision": ["vision"], "transformers": ["nlp"],
        "manual": ["custom"]}
# (category, weight, stage, message template): {n} {m} {op} vary per model and normalize away.
FAILURES = (
    ("DATA_DEPENDENT_GUARD", 30, "export",
     "Could not guard on data-dependent expression Eq(u{n}, {m}) (unhinted: Eq(u{n}, {m})). "
     "(Size-like symbols: u{n})\n\nCaused by: {file}:{n} in forward"),
    ("GRAPH_BREAK", 20, "export",
     "Unsupported: call_function UserDefinedClassVariable(<class 'transformers.cache.Dyn{m}'>) "
     "[] {{}}\n  from user code:\n   File \"{file}\", line {n}, in forward"),
    ("CONSTRAINT_VIOLATION", 12, "export",
     "Constraints violated (batch)! Not all values of batch = L['x'].size()[0] in the specified "
     "range batch <= {m} are valid because batch was inferred to be a constant ({n})."),
    ("DECOMPOSITION_ERROR", 8, "decompose",
     "aten.{op}.default has no decomposition to core ATen; found in node {op}_{n}"),
    ("NUMERIC_MISMATCH", 8, "numerics",
     "output 0: max abs err {m}.{n}e-3 > atol 1e-4 (max rel err 0.{n})"),
    ("DYNAMIC_SHAPE_FAILURE", 6, "dynamic",
     "at batch={m}: shape mismatch: expected [{m}, {n}] but got [{n}, {m}]"),
    ("DESERIALIZE_ERROR", 5, "serialize",
     "SerializeError: Unsupported argument type <class 'torch.{op}'> for node {op}_{n}"),
    ("MISSING_FAKE_KERNEL", 4, "export",
     "RuntimeError: There was no fake impl registered for CustomOpDef(mylib::{op}_{m})"),
    ("UNSUPPORTED_TYPE", 3, "export",
     "Unsupported input type <class 'models.Config{m}'>. Register it with pytree (line {n})"),
    ("SPEC_VIOLATION", 2, "verify", "SpecViolationError: Operator '{op}' is not an allowed op"),
    ("EAGER_ERROR", 2, "eager", "RuntimeError: mat1 and mat2 shapes cannot be multiplied "
                                "({m}x{n} and {n}x{m})"),
)
INFRA = (("TIMEOUT", 6, "entry ran past its deadline of 300 s (elapsed {m}.{n} s)"),
         ("WORKER_CRASH", 3, "worker {n} died: SIGSEGV (attempt {m})"),
         ("OOM", 1, "the memory monitor killed worker {n} ({m} GiB)"))
OPS = ("_native_batch_norm_legit", "upsample_bicubic2d", "roi_align", "nonzero", "unique_dim",
       "scaled_dot_product_attention", "grid_sampler_2d", "embedding_bag")


def _entries(pairs: int, rnd: random.Random) -> list[tuple[str, str]]:
    names = []
    for i in range(pairs // 2):
        family = rnd.choices([f for f, _ in FAMILIES], [w for _, w in FAMILIES])[0]
        names.append((f"{family}/model_{i:05d}", family))
    return names


def _outcome(rnd: random.Random) -> tuple[str, str | None, str | None, str | None]:
    """(status, category, stage, message template) for one pair."""
    x = rnd.random()
    if x < 0.70:
        return "PASS", None, None, None
    if x < 0.72:
        return "SKIP", None, None, "cuda entry: no GPU in the cluster"
    if x < 0.73:
        return "XPASS", None, None, None
    if x < 0.76:
        cat, _, tpl = rnd.choices(INFRA, [w for _, w, _ in INFRA])[0]
        return "ERROR", cat, None, tpl
    cat, _, stage, tpl = rnd.choices(FAILURES, [w for _, w, _, _ in FAILURES])[0]
    return ("XFAIL" if x < 0.82 else "FAIL"), cat, stage, tpl


def _row(run_id: str, entry: str, family: str, mode: str, outcome, rnd: random.Random,
         started: float) -> dict:
    status, cat, stage, tpl = outcome
    r = Record(entry=entry, family=family, mode=mode, device="cpu", tags=TAGS[family],
               repro=f"exportsweep repro manifests/nightly.yaml {entry} --mode {mode}")
    # a model's time and memory are its own (median ~5 s and ~1.3 GiB, long tails), nightly
    # noise a few percent
    own = random.Random(entry)
    scale = own.lognormvariate(1.6, 0.9) * rnd.uniform(0.95, 1.05)
    mem = own.lognormvariate(7.2, 0.6) * rnd.uniform(0.97, 1.03)
    if status == "SKIP":
        r.skip(tpl)
    else:
        stop = stage or ("serialize" if cat is None else own.choice(STAGES[:7]))
        for s in STAGES[:-1]:
            r.seconds[s] = round(scale * {"export": 0.35, "decompose": 0.2, "serialize": 0.15}
                                 .get(s, 0.06) * own.uniform(0.7, 1.3), 3)
            if s == stop and cat:
                break
            r.passed(s)
            if s == stop:
                break
        if cat:
            # the same model fails the same way every night, unless its outcome was redrawn
            msg = tpl.format(n=own.randint(1, 400), m=own.randint(2, 64), op=own.choice(OPS),
                             file=f"/models/{family}/{entry.split('/')[1]}.py")
            r.fail(Failure.make(cat, None if CATEGORY_BY_NAME[cat].infra else stage, msg,
                                exception_type="torch._dynamo.exc.UserError" if stage == "export"
                                else "RuntimeError", error_code=cat.lower()))
        r.status = status
        if status == "XFAIL":
            r.expected = f"FAIL {cat}"
        if status == "XPASS":
            r.expected = "FAIL GRAPH_BREAK"
    r.total_s = round(sum(r.seconds.values()), 3)
    r.peak_rss_mb = round(mem, 1)
    r.max_abs_err = rnd.choice([None, 0.0, 1e-7, 3e-6]) if status == "PASS" else None
    r.started_at = started
    r.finished_at = started + r.total_s
    return row(r, RowContext(run_id=run_id, worker_id=f"w{rnd.randint(0, 31)}", pool="cpu"))


def build_dataset(out: str, pairs: int, runs: int, rows_per_file: int, seed: int = 0) -> list[str]:
    rnd = random.Random(seed)
    entries = _entries(pairs, rnd)
    outcomes = {(e, m): _outcome(rnd) for e, _ in entries for m in ("non-strict", "strict")}
    t0 = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)
    ids = []
    for n in range(runs):
        run_id = f"night-{n:02d}"
        if n:      # a few percent change between nights
            for key in rnd.sample(sorted(outcomes), k=max(1, pairs // 40)):
                outcomes[key] = _outcome(rnd)
            dropped = set(rnd.sample(range(len(entries)), k=max(1, len(entries) // 500)))
            entries = [e for i, e in enumerate(entries) if i not in dropped]
            for i in range(len(dropped)):
                name = (f"timm/new_{n}_{i:04d}", "timm")
                entries.append(name)
                for m in ("non-strict", "strict"):
                    outcomes[(name[0], m)] = _outcome(rnd)
        start = t0 + timedelta(days=n)
        sink = ResultSink(out, run_id)
        rows = [_row(run_id, e, f, m, outcomes[(e, m)], rnd, start.timestamp() + i)
                for i, (e, f) in enumerate(entries) for m in ("non-strict", "strict")]
        parts = {}
        for i in range(0, len(rows), rows_per_file):
            chunk = rows[i:i + rows_per_file]
            parts[sink.write(chunk)] = len(chunk)
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        wall = 3600 * rnd.uniform(2.5, 3.5)
        sink.write_meta(RunMeta(
            run_id, started_at=start.isoformat(timespec="seconds"),
            finished_at=(start + timedelta(seconds=wall)).isoformat(timespec="seconds"),
            wall_s=round(wall, 2), counts=counts, rows=len(rows), parts=parts,
            expected_pairs=len(rows), executor="ray", manifest="manifests/nightly.yaml",
            versions={"torch": "2.14.1", "exportsweep": "bench"}))
        ids.append(run_id)
    return ids


def timed(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return wall, proc.stdout


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def browser_timings(page: str) -> list[tuple[str, float]]:
    """Chromium wall time per invocation (start-up included), and the page script's own time."""
    chromium = shutil.which("chromium")
    if not chromium:
        return []
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND"]
    uri = "file://" + os.path.abspath(page)
    blank = os.path.join(os.path.dirname(page), "blank.html")
    with open(blank, "w") as f:
        f.write("<!DOCTYPE html><title>blank</title><p>blank</p>")
    out = []
    for label, extra, target in (
            ("chromium start-up floor (--dump-dom of a blank page)", ["--dump-dom"],
             "file://" + blank),
            ("chromium --dump-dom report.html", ["--dump-dom"], uri),
            ("chromium --dump-dom #status=FAIL&sort=wall_s&desc=1", ["--dump-dom"],
             uri + "#status=FAIL&sort=wall_s&desc=1"),
            ("chromium --dump-dom #q=model_01&sort=entry", ["--dump-dom"],
             uri + "#q=model_01&sort=entry"),
            ("chromium --dump-dom #all=1 (every row laid out)", ["--dump-dom"], uri + "#all=1"),
            ("chromium --screenshot 1400x2400", [f"--screenshot={page}.png",
                                                 "--window-size=1400,2400"], uri)):
        with tempfile.TemporaryDirectory() as profile:
            t = time.perf_counter()
            proc = subprocess.run([chromium, *flags, f"--user-data-dir={profile}",
                                   "--virtual-time-budget=10000", *extra, target],
                                  capture_output=True, text=True, timeout=300, check=True)
            out.append((label, time.perf_counter() - t))
        found = re.search(r'data-script-ms="(\d+)"', proc.stdout)
        if found:
            out.append(("    of which the page's script (filter, sort, page)",
                        int(found.group(1)) / 1000))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000, help="final pairs per run")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rows-per-file", type=int, default=2,
                        help="rows per Parquet file (2: one entry per file, as the driver writes)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="exportsweep-bench-report-")
    t = time.perf_counter()
    ids = build_dataset(out, args.pairs, args.runs, args.rows_per_file)
    print(f"dataset: {args.runs} runs x {args.pairs:,} pairs, {args.rows_per_file} rows/file, "
          f"written in {time.perf_counter() - t:.1f}s to {out}")
    base, new = ids[-2] if len(ids) > 1 else ids[-1], ids[-1]
    page = os.path.join(out, "report.html")

    from orchestrator.views import diff, report
    from orchestrator.results.runs import list_runs, read_run
    rows: list[tuple[str, float]] = []
    rows.append(("exportsweep report DIR (subprocess)",
                 timed([EXPORTSWEEP, "report", out, "-o", page])[0]))
    rows.append(("exportsweep diff DIR BASE NEW (subprocess)",
                 timed([EXPORTSWEEP, "diff", out, base, new])[0]))
    rows.append(("exportsweep diff --format json (subprocess)",
                 timed([EXPORTSWEEP, "diff", out, base, new, "--format", "json"])[0]))
    rows.append(("python -c 'import orchestrator.cli' (startup floor)",
                 timed([sys.executable, "-c", "import orchestrator.cli"])[0]))
    data, before = read_run(out, new), read_run(out, base)
    rows.append(("in-process read_run(new)", best_of(1, lambda: read_run(out, new))))
    history, _ = report.load_history(out, list_runs(out), {new: data, base: before})
    rows.append(("in-process compare_runs", best_of(3, lambda: diff.compare_runs(
        before.final_rows, data.final_rows))))
    rows.append(("in-process build_report", best_of(3, lambda: report.build_report(
        data, history, before))))
    rows.append(("in-process write_report (load + build + write)",
                 best_of(1, lambda: report.write_report(out, new, None, page))))
    if not args.no_browser:
        rows += browser_timings(page)
    size = os.path.getsize(page)
    print(f"\n{'what':<56} {'seconds':>8}")
    for label, secs in rows:
        print(f"{label:<56} {secs:>8.2f}")
    print(f"\nreport.html: {size / 2**20:.2f} MiB for {len(data.final_rows):,} pairs "
          f"({size / max(1, len(data.final_rows)):,.0f} bytes per pair); "
          f"{sum(r['status'] != 'PASS' for r in data.final_rows):,} non-PASS rows")
    print(f"results and report in {out}")


if __name__ == "__main__":
    main()
