"""Docs that cannot rot: the README front page, the walkthrough of docs/first-door.md run as written,
the exit-code table against edge_verify/errors.py, option tables against the parser, troubleshooting
messages against the code, and every figure of the measurements page naming its command."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = ROOT / "docs"
CODE_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
MARKER = re.compile(r"^<!-- test: (run(?:, exit (\d+))?|skip: ([^>\n]+?)) -->\n```bash\n((?s:.*?))```", re.M)


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every Markdown table row (header and separator rows included)."""
    rows = []
    for line in markdown.splitlines():
        if line.startswith("|") and line.rstrip().endswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
            rows.append([c.strip() for c in cells])
    return rows


def sections(markdown: str, level: str = "##") -> dict[str, str]:
    """Heading -> text up to the next heading of that level or above (fewer #)."""
    parts = re.split(rf"^(#{{1,{len(level)}}}) (.+)$", markdown, flags=re.M)
    return {parts[i + 1]: parts[i + 2] for i in range(1, len(parts) - 2, 3)}


# --- README ---------------------------------------------------------------------------------------------------


def test_readme_is_a_front_page_whose_first_commands_are_the_contract():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    blocks = [code for lang, code in CODE_BLOCK.findall(readme) if lang == "bash"]
    assert blocks[0].strip() == "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && edge-verify demo"
    assert blocks[1].strip() == "pip install -e '.[host,dlib,kiosk,web,fleet,test]' && python -m pytest"
    for page in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / page).exists() or page in PAGES_OF_OTHER_ISSUES, page


# Pages written under their own issues (operating points, web app, fleet): linked before they land.
PAGES_OF_OTHER_ISSUES: set[str] = set()


# --- Your first door ------------------------------------------------------------------------------------------


def walkthrough_blocks() -> list[tuple[str, int | None, str | None]]:
    """(script, expected exit code or None when skipped, skip reason) for each bash block, in order."""
    page = (DOCS / "first-door.md").read_text()
    marked = MARKER.findall(page)
    assert len(marked) == page.count("```bash"), "every bash block of first-door.md needs a <!-- test: ... --> marker"
    return [(code, None if skip else int(exit_code or 0), skip or None) for _, exit_code, skip, code in marked]


def test_every_walkthrough_block_is_marked_and_skips_only_for_hardware():
    blocks = walkthrough_blocks()
    run = [b for b in blocks if b[1] is not None]
    assert run and all(b[2].strip() for b in blocks if b[1] is None)
    assert any("edge-verify check" in script for script, *_ in run)


@pytest.mark.slow
def test_first_door_walkthrough_runs_as_written(tmp_path):
    """The rehearsal blocks in order, in one shell (variables carry over), each with its exit code: a block
    that must succeed runs under ``set -e``; one that must fail runs in a subshell, whose code is compared."""
    script = ["set -eu"]
    for n, (code, expected, _) in enumerate(walkthrough_blocks()):
        script.append(f"echo '--- block {n}' >&2")
        if expected == 0:
            script.append(code)
        elif expected is not None:
            script += [
                f"set +e; ( set -e\n{code}); rc=$?; set -e",
                f'[ $rc -eq {expected} ] || {{ echo "block {n}: exit $rc, expected {expected}" >&2; exit 99; }}',
            ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ACCEPTED alice:" in r.stdout and "REJECTED alice:" in r.stdout  # the check blocks, not only the demo
    # calibrate on three photos: the bundle's FAR curve, as the page says, and nothing written
    assert "comes from the bundle's measured FAR curve" in r.stdout and "dry run: nothing written" in r.stdout
    assert "audit log intact" in r.stdout and (tmp_path / "log.csv").read_text().count("\n") >= 4
    assert (tmp_path / "door.db").exists() and (tmp_path / "door.db.key").exists()


# --- Exit codes -----------------------------------------------------------------------------------------------


def exit_code_table() -> dict[int, list[str]]:
    """code -> its row's cells (code, error classes, meaning, what to do, test)."""
    rows = table_rows((DOCS / "commands" / "exit-codes.md").read_text())
    return {int(r[0]): r for r in rows if r[0].isdigit()}


def exit_codes_in_code() -> dict[int, set[str]]:
    """Every exit code the CLI can give: each error class's, and those ``cli.main`` returns itself."""
    import edge_verify.cli as cli
    import edge_verify.errors as errors
    from edge_verify.cli.common import ACCEPTED, REJECTED

    codes: dict[int, set[str]] = {ACCEPTED: set(), REJECTED: set()}
    for obj in vars(errors).values():
        if isinstance(obj, type) and issubclass(obj, errors.EdgeVerifyError):
            codes.setdefault(obj.exit_code, set()).add(obj.__name__)
    tree = ast.parse(Path(cli.__file__).read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    for node in ast.walk(main):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant):
            codes.setdefault(node.value.value, set())
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Name) and node.value.id.isupper():
            codes.setdefault(getattr(cli, node.value.id), set())
    return codes


def test_exit_code_table_and_errors_py_agree():
    table, code = exit_code_table(), exit_codes_in_code()
    assert sorted(table) == sorted(code)
    for n, classes in code.items():
        assert set(re.findall(r"`(\w+)`", table[n][1])) == classes, f"exit {n}: {table[n][1]} vs {classes}"
        assert table[n][2], f"exit {n} has no meaning in the table"


def test_every_exit_code_in_the_table_has_a_test_that_asserts_it():
    """The test named for each code exists and compares an exit code with that number."""
    import edge_verify.cli as cli

    for n, row in exit_code_table().items():
        path, name = row[4].strip("`").split("::")
        tree = ast.parse((ROOT / path).read_text())
        fn = next((f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == name), None)
        assert fn is not None, f"exit {n}: {row[4]} does not exist"
        source = ast.get_source_segment((ROOT / path).read_text(), fn).replace(
            "cli.INTERNAL_ERROR", str(cli.INTERNAL_ERROR)
        )
        compared = {
            int(m)
            for line in source.splitlines()
            if re.search(r"returncode|code|main\(", line)
            for m in re.findall(r"==\s*(\d+)\b", line)
        }
        assert n in compared, f"exit {n}: {row[4]} asserts no exit code {n}"


def test_command_pages_use_only_exit_codes_of_the_table():
    codes = exit_code_table()
    for page in (DOCS / "commands").glob("*.md"):
        for row in table_rows(page.read_text()):
            if len(row) == 2 and row[0].isdigit():  # "exit | when" tables
                assert int(row[0]) in codes, f"{page.name}: exit {row[0]} is not in exit-codes.md"


# --- Commands ---------------------------------------------------------------------------------------------


def long_options(rows: list[list[str]]) -> set[str]:
    return {o for r in rows for o in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", r[0])}


def test_command_pages_list_exactly_the_options_of_each_command():
    from edge_verify.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = {
        name: {o for a in command._actions if a.help != argparse.SUPPRESS for o in a.option_strings if o[1] == "-"}
        for name, command in sub.choices.items()
    }
    shared = set.intersection(*options.values()) - {"--help"}
    index = sections((DOCS / "commands" / "index.md").read_text())["Options every command takes"]
    assert long_options(table_rows(index)) == shared
    documented: dict[str, set[str]] = {}
    for page in ("identities", "site", "kiosk", "host"):
        for heading, text in sections((DOCS / "commands" / f"{page}.md").read_text()).items():
            if heading.startswith("`"):  # not the page's title
                documented[heading.strip("`")] = long_options(table_rows(text.split("###")[0]))
    assert set(documented) == set(sub.choices)
    for name in sub.choices:
        own = options[name] - shared - {"--help"}
        assert documented[name] == own, f"{name}: documented {documented[name]} vs parser {own}"


def test_defaults_in_option_tables_are_the_parser_defaults():
    """Each "(default X)" of a command page's option table agrees with argparse, where argparse holds it."""
    from edge_verify.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    checked = 0
    for page in ("identities", "site", "kiosk", "host"):
        for heading, text in sections((DOCS / "commands" / f"{page}.md").read_text()).items():
            if not heading.startswith("`"):
                continue
            actions = {o: a for a in sub.choices[heading.strip("`")]._actions for o in a.option_strings}
            for row in table_rows(text.split("###")[0]):
                options, stated = long_options([row]), re.search(r"\(default:? `?([\w.]+)`?[,;)]", row[-1])
                default = actions[min(options)].default if options and stated else None
                if default not in (None, False):
                    assert str(default) == stated[1] or float(default) == float(stated[1]), f"{heading} {row[0]}"
                    checked += 1
    assert checked >= 20


def test_every_documented_command_line_uses_options_its_command_has():
    """`edge-verify CMD [SUB] --option` in any code block or code span of the README, docs/ and the
    firmware examples' READMEs: the command exists and takes every option written (a removed or renamed
    option, e.g. calibrate's old --force, fails here)."""
    import shlex

    def commands(parser):
        return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})

    from edge_verify.cli import build_parser

    top = commands(build_parser())
    pages = [ROOT / "README.md", *DOCS.rglob("*.md"), *ROOT.glob("firmware_examples/*/README.md")]
    checked, wrong = 0, []
    for page in pages:
        text = page.read_text()
        snippets = [code for _, code in CODE_BLOCK.findall(text)] + re.findall(r"(?<!`)`(edge-verify [^`]+)`", text)
        for line in "\n".join(snippets).replace("\\\n", " ").splitlines():
            for call in re.findall(r"edge-verify\s+([^#|;&()]*)", line):
                try:
                    words = shlex.split(call)
                except ValueError:  # a quote closed on a later line
                    words = call.split()
                if not words or words[0] not in top:
                    continue
                parser, name, rest = top[words[0]], words[0], words[1:]
                if rest and rest[0] in commands(parser):
                    parser, name, rest = commands(parser)[rest[0]], f"{name} {rest[0]}", rest[1:]
                known = {o for a in parser._actions for o in a.option_strings}
                wrong += [f"{page.name}: {name} {w}" for w in rest if w[0] == "-" and w.split("=")[0] not in known]
                checked += 1
    assert checked >= 100 and not wrong, wrong


REPO_FILE = re.compile(
    r"((?:benchmarks|scripts|converters|training|tests|edge_verify(?:/\w+)*|firmware_examples/\w+)/[\w.-]+\."
    r"(?:py|sh|toml|service|md))((?: --[a-z][\w-]*(?: [^\s`-][^\s`]*)?)*)"
)


def test_every_file_and_script_option_the_docs_name_exists():
    """A benchmark, script or example the docs point to exists, and a script takes the options written after it."""
    pages = [ROOT / "README.md", *DOCS.rglob("*.md"), *ROOT.glob("firmware_examples/*/README.md")]
    named = [(page.name, *m) for page in pages for m in REPO_FILE.findall(page.read_text())]
    assert len(named) >= 50
    for page, path, options in named:
        assert (ROOT / path).is_file(), f"{page}: {path} does not exist"
        if path.endswith((".py", ".sh")):
            source = (ROOT / path).read_text()
            for option in re.findall(r"--[a-z][\w-]*", options):
                assert f'"{option}"' in source or f" {option}" in source, f"{page}: {path} takes no {option}"


def test_kiosk_page_lists_every_kiosk_toml_setting():
    from edge_verify.kiosk import KioskConfig

    text = sections((DOCS / "commands" / "kiosk.md").read_text(), "###")["`kiosk.toml`"]
    documented = {name for r in table_rows(text) for name in re.findall(r"`(\w+)`", r[0])}
    settings = {f.name for f in dataclasses.fields(KioskConfig)} - {"max_frames"}  # tests and benchmarks only
    assert documented == settings


# --- Troubleshooting and measurements -----------------------------------------------------------------------


def test_troubleshooting_quotes_only_messages_the_code_still_writes():
    source = "\n".join(p.read_text() for p in (ROOT / "edge_verify").rglob("*.py"))
    rows = table_rows((DOCS / "troubleshooting.md").read_text())
    quoted = [m for r in rows for m in re.findall(r"^`([^`]+)`$", r[0])]
    assert len(quoted) >= 40
    missing = [q for q in quoted if q not in source]
    assert not missing, f"messages no longer in edge_verify/: {missing}"


FIGURE = re.compile(r"\d+(\.\d+)?\s?(%|ms|MB|s\b|x\b|frames/s)|\b0\.\d{3,}")


def test_every_figure_of_models_and_measurements_names_its_command():
    page = (DOCS / "measurements.md").read_text()
    for heading, text in sections(page, "###").items():
        if FIGURE.search(text):
            assert re.search(r"(benchmarks|scripts)/\w+\.(py|sh)", text), f"section {heading!r}: figures, no command"
    for row in table_rows(page):
        if len(row) == 3 and row[0] not in ("what", "---"):  # "what | figure | command" tables
            assert row[2], f"row {row[0]!r} names no command"


# --- Operating points -----------------------------------------------------------------------------------------


def shipped_bundle(name: str) -> dict:
    import json

    return json.loads((ROOT / "edge_verify" / "models" / f"face-{name}-v1" / "bundle.json").read_text())


def test_operating_points_page_quotes_the_shipped_bundles():
    """Thresholds, versions, FAR and FRR of the points table, the other bundles' points and the calibrate
    output shown: each as the packaged bundle.json says (a recalibration that forgets the page fails here)."""
    page = (DOCS / "operating-points.md").read_text()
    fused = shipped_bundle("fused")
    assert re.search(r"`fused`, the default bundle \(([\d.]+)\)", page)[1] == fused["version"]
    rows = {r[0].split()[0].strip("`"): r for r in table_rows(page) if re.match(r"`\w+` \(1e-\d\)$", r[0])}
    assert set(rows) == set(fused["operating_points"])
    for name, point in fused["operating_points"].items():
        row, measured = rows[name], {m["set"]: m for m in point["measured"]}
        assert float(row[1]) == point["threshold"], name
        for cell, data in ((row[2], "faces_dev/celebs"), (row[3], "faces_dev/yaleb")):
            far, frr = re.match(r"([\d.]+e-\d+)", cell)[1], re.search(r"/ \**([\d.]+)%", cell)[1]
            assert float(far) == float(f"{measured[data]['far']:.1e}"), f"{name} {data} FAR"
            assert float(frr) == round(100 * measured[data]["frr"], 1), f"{name} {data} FRR"
        single = [float(x) for x in re.findall(r"([\d.]+)%", row[5])]
        wanted = [round(100 * measured[s]["single_pairs"]["frr"], 1) for s in ("faces_dev/celebs", "faces_dev/yaleb")]
        assert single == wanted, f"{name} single pairs"
    for name, version, *points in re.findall(r"`(resnet29|sface)` \(([\d.]+)\): ([\d.]+) / ([\d.]+) / ([\d.]+)", page):
        bundle = shipped_bundle(name)
        assert version == bundle["version"], name
        assert [float(p) for p in points] == [bundle["operating_points"][p]["threshold"] for p in rows], name
    shown = [float(t) for t in re.findall(r"^ +(0\.\d{4}) +\de-\d\d ", page, re.M)]  # calibrate's table
    assert shown == list(dict.fromkeys(t for _, t, _ in fused["far_curve"]))


def test_thresholds_quoted_in_decision_lines_are_the_shipped_default():
    default = shipped_bundle("fused")["operating_points"]["default"]["threshold"]
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for quoted in re.findall(r"score \d\.\d{4} >= (\d\.\d{4})", page.read_text()):
            assert float(quoted) == default, f"{page.name}: {quoted} is not the default threshold {default}"
