"""BENCHMARKS.md from every result file present in the results folder."""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Optional

from bench.sections import ORDER, module_of

TITLE = "# mfexp benchmarks"


def load_results(folder: Path) -> list[dict]:
    results = []
    for name in ORDER:
        path = folder / f"{name}.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
    return results


def _measured(t: dict) -> str:
    value = t["measured"]
    if value is None:
        return "not measured"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f} {t['unit']}"
    if isinstance(value, (int, float)) and abs(value) >= 1000:
        return f"{value:,} {t['unit']}"
    return f"{value:g} {t['unit']}" if isinstance(value, (int, float)) else f"{value} {t['unit']}"


def _verdict(met: Optional[bool]) -> str:
    return {True: "met", False: "**missed**", None: "-"}[met]


def _cpu(m: dict) -> str:
    return f"{m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), RAM {m['ram_gb']} GB, {m['os']}"


def _machine(results: list[dict], earlier_loads: dict[str, str],
             earlier_cpus: Optional[dict[str, str]] = None) -> list[str]:
    """The machine each section was measured on: one CPU line when they share one, else the CPU of
    each group of sections (a run of some sections on another machine keeps the others' machine)."""
    m = results[0]["machine"]
    loads = {r["section"]: f"{r['machine']['load_avg'][0]:g}" for r in results}
    loads = ", ".join(f"{name} {loads.get(name) or earlier_loads[name]}" for name in ORDER
                      if name in loads or name in earlier_loads)
    cpus = {**(earlier_cpus or {}), **{r["section"]: _cpu(r["machine"]) for r in results}}
    groups: dict[str, list[str]] = {}
    for name in ORDER:
        if name in cpus:
            groups.setdefault(cpus[name], []).append(name)
    cpu = next(iter(groups)) if len(groups) == 1 else "; ".join(
        f"{desc} {SECTIONS_OPEN}{', '.join(names)}]" for desc, names in groups.items())
    threads = ", ".join(f"{k}={v}" for k, v in m["threads"].items() if v) or "MXNet defaults"
    return ["## Machine", "",
            f"{CPU}{cpu}",
            f"- Python {m['python']}, mxnet {m['mxnet']} (CPU), numpy {m['numpy']}, optuna {m['optuna']}, "
            f"mlflow {m['mlflow']}",
            f"- Threads in the environment: {threads}",
            f"{LOADS}{loads} (other work on the machine "
            "slows every figure; the ratios are measured side by side)", ""]


CPU = "- CPU: "
SECTIONS_OPEN = "[sections: "


def _cpus(line: str, names) -> dict[str, str]:
    """Per section, its CPU from an earlier summary's CPU line (one machine for all, or groups)."""
    body = line[len(CPU):]
    if SECTIONS_OPEN not in body:
        return {name: body for name in names}
    out = {}
    for part in body.split("]; "):
        desc, _, listed = part.rstrip("]").partition(" " + SECTIONS_OPEN)
        out.update({name: desc for name in listed.split(", ") if name})
    return out


LOADS = "- 1-minute load average when each section finished: "


def earlier_sections(text: str) -> dict[str, dict]:
    """From an earlier BENCHMARKS.md, per section: its text block, its rows of the Targets table and
    its load average, so that a run of some sections (--only) keeps the figures of the others."""
    lines = text.splitlines()
    heads = [n for n, line in enumerate(lines) if line.startswith("## ")] + [len(lines)]
    found: dict[str, dict] = {}
    targets: list[str] = []
    for start, end in zip(heads, heads[1:]):
        name = lines[start][3:].removesuffix(" (quick)").strip()
        block = lines[start:end]
        while block and not block[-1].strip():
            block.pop()
        if name in ORDER:
            found[name] = {"block": block, "targets": [], "load": None, "cpu": None}
        elif name == "Targets":
            targets = block
    for line in targets:
        cells = line.split("|")
        if len(cells) > 2 and cells[1].strip() in found:
            found[cells[1].strip()]["targets"].append(line)
    for line in lines:
        if line.startswith(CPU):
            for name, desc in _cpus(line, list(found)).items():
                if name in found:
                    found[name]["cpu"] = desc
        if line.startswith(LOADS):
            for pair in line[len(LOADS):].split(" (")[0].split(", "):
                name, _, value = pair.rpartition(" ")
                if name in found:
                    found[name]["load"] = value
    return found


def render_markdown(results: list[dict], command: str, earlier: Optional[dict[str, dict]] = None) -> str:
    """The summary of `results`; sections without a result keep their block from `earlier`."""
    fresh = {r["section"] for r in results}
    kept = {name: e for name, e in (earlier or {}).items() if name not in fresh}
    quick = any(r.get("quick") for r in results) or any(e["block"][0].endswith("(quick)") for e in kept.values())
    lines = [TITLE, ""]
    if quick:
        lines += ["> **Quick figures** (`--quick`: tiny sizes, a smoke test of the benchmark itself). They say "
                  "nothing about the targets; regenerate with the full `make bench` on a quiet machine.", ""]
    lines += ["Generated by `python -m bench` from `bench/results/*.json`; do not edit by hand.", "",
              f"Last command: `{command}` (`make bench ARGS=...`); each section's own command is under its "
              "heading." + (" Sections without a result file here keep their earlier text: "
                            f"{', '.join(n for n in ORDER if n in kept)}." if kept else ""), ""]
    loads = {name: e["load"] for name, e in kept.items() if e["load"]}
    cpus = {name: e["cpu"] for name, e in kept.items() if e.get("cpu")}
    lines += _machine(results, loads, cpus) if results else ["No results yet: run `make bench`.", ""]
    by_name = {r["section"]: r for r in results}
    if results or kept:
        lines += ["## Targets", "", "| section | target | goal | measured | verdict | note |",
                  "|---|---|---|---:|---|---|"]
        for name in ORDER:
            if name in kept:
                lines += kept[name]["targets"]
            for t in by_name[name]["targets"] if name in by_name else []:
                r = by_name[name]
                verdict = "not judged (quick)" if r.get("quick") else _verdict(t["met"])
                lines.append(f"| {r['section']} | {t['name']} | {t['goal']} | {_measured(t)} | {verdict} | "
                             f"{t.get('note', '')} |")
        lines.append("")
    for name in ORDER:
        if name in kept:
            lines += kept[name]["block"] + [""]
        elif name in by_name:
            lines += _section(by_name[name])
    return "\n".join(lines).rstrip() + "\n"


def _section(r: dict) -> list[str]:
    module = importlib.import_module(module_of(r["section"]))
    lines = [f"## {r['section']}{' (quick)' if r.get('quick') else ''}", "",
             f"`{r['command']}`, {r['wall_s']:.0f} s, finished {r['finished']}.", ""]
    if r.get("error"):
        return lines + [f"**Failed:** {r['error']}", ""]
    try:
        lines += module.render(r) + [""]
    except (KeyError, TypeError, ValueError) as err:  # a result file from an older bench
        lines += [f"(cannot render this result: {type(err).__name__}: {err}; rerun the section)", ""]
    return lines + [f"- {n}" for n in r.get("notes", [])] + [""]


def write_markdown(folder: Path, path: Path) -> Path:
    """Regenerate `path` from the results in `folder`; sections without a result there keep their
    text from the `path` already present."""
    last = folder / "last_run.json"
    command = json.loads(last.read_text())["command"] if last.exists() else "python -m bench"
    earlier = earlier_sections(path.read_text()) if path.exists() else {}
    path.write_text(render_markdown(load_results(folder), command, earlier))
    return path
