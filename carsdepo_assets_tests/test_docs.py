"""The documentation can be trusted: the README stays short, the site builds strictly with its
generated pages, no user document carries development history, the asset graph drawn in the
docs is the one the code defines, and every command the docs show parses with the real command
line of the tool it names."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr
from functools import cache
from io import StringIO
from pathlib import Path

import click
import pytest

from benchmarks import report
from carsdepo_assets.cli.parser import build_parser
from carsdepo_assets.state import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
# Hand-written user documents (docs/gen/ holds the generators; their pages are checked built).
USER_DOCUMENTS = [README, PROJECT_ROOT / "CHANGELOG.md",
                  *sorted(p for p in DOCS.rglob("*.md") if "gen" not in p.relative_to(DOCS).parts)]
# Every document whose shell commands are shown on the site or in the repository's front files.
COMMAND_DOCUMENTS = [*USER_DOCUMENTS, PROJECT_ROOT / "DEVELOPERS.md",
                     PROJECT_ROOT / "deploy" / "README.md"]
MAX_README_LINES = 200
# Tools of their own whose commands the docs show and no test here can check (no Docker daemon,
# no cluster, no network): named, so that any other program in a command block fails the test.
UNCHECKED_PROGRAMS = {"git", "pip", "curl", "docker", "kubectl", "helm"}
HISTORY_WORDS = re.compile(r"\bissue\s*#?\d+|(?<![\w/#&])#\d{1,5}\b|\bsessions?\b(?! fixture)",
                           re.IGNORECASE)
HEX_WORD = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move detail to docs/")


def history_in(text: str) -> list[str]:
    """Issue numbers, session talk and commit ids of this repository found in ``text``."""
    found = [match.group(0) for match in HISTORY_WORDS.finditer(text)]
    candidates = sorted(set(HEX_WORD.findall(text)))
    if candidates:
        checked = subprocess.run(["git", "cat-file", "--batch-check"], cwd=PROJECT_ROOT,
                                 input="\n".join(candidates) + "\n", capture_output=True,
                                 text=True, check=True).stdout.splitlines()
        found += [word for word, answer in zip(candidates, checked, strict=True)
                  if answer.split()[1:2] == ["commit"]]
    return found


def test_history_detector_finds_what_it_looks_for():
    # a recent commit whose short id has a letter: an all-digit one reads as a number and is
    # left alone on purpose (HEX_WORD)
    recent = subprocess.run(["git", "log", "-n", "50", "--format=%h", "--abbrev=10"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    commit = next(short for short in recent if not short.isdigit())
    text = f"Fixed in {commit} for issue 12 (see #27), as an earlier session said."
    assert history_in(text) == ["issue 12", "#27", "session", commit]
    assert history_in("dataset cb1fa9a1a6f5, run 29311c1c; a session fixture; [x](#run-1)") == []


@pytest.mark.parametrize("document", USER_DOCUMENTS, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_user_documents_carry_no_development_history(document: Path):
    assert history_in(document.read_text()) == [], (
        f"{document.relative_to(PROJECT_ROOT)} names issues, sessions or commits: history goes "
        "to CHANGELOG.md, dated, in words")


def test_readme_links_lead_to_files():
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text()):
        if not re.match(r"[a-z]+://", target):
            assert (PROJECT_ROOT / target).exists(), f"README.md links to {target}: missing"


# --- the asset graph drawn in the docs ----------------------------------------------------

def drawn_edges(text: str) -> set[tuple[str, str]]:
    """``(upstream, downstream)`` of every ``a --> b`` in the document's mermaid blocks."""
    edges = set()
    for language, body in FENCE.findall(text):
        if language != "mermaid":
            continue
        for line in body.splitlines():
            nodes = [re.sub(r"\[.*$", "", part.strip()) for part in line.split("-->")]
            edges |= set(zip(nodes, nodes[1:], strict=False))
    return edges


@pytest.mark.slow  # loads the Dagster definitions (about 10 s)
@pytest.mark.parametrize("document", [README, DOCS / "concepts.md"], ids=["README", "concepts"])
def test_drawn_asset_graph_is_the_code_s(document: Path):
    from carsdepo_assets.definitions import defs

    graph = defs.get_repository_def().asset_graph
    defined = {(parent.to_user_string(), key.to_user_string())
               for key in graph.get_all_asset_keys() for parent in graph.get(key).parent_keys}
    drawn = drawn_edges(document.read_text())
    assert drawn == defined, (f"drawn but not defined: {sorted(drawn - defined)}; "
                              f"defined but not drawn: {sorted(defined - drawn)}")


# --- every command the docs show ----------------------------------------------------------

def shown_commands(document: Path) -> Iterator[str]:
    """Each command of the document's ``bash``/``sh`` blocks (continuations joined, comments
    dropped). A line that only sets shell variables (``export A=1``, ``B="--x 2"``) is no
    command: its variables are expanded in the commands after it, as the shell would."""
    variables: dict[str, str] = {}
    for language, body in FENCE.findall(document.read_text()):
        if language not in ("bash", "sh"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m[1], m[0]), line)
            words = shlex.split(line, comments=True)
            assignments = words[1:] if words[:1] == ["export"] else words
            if assignments and all(ASSIGNMENT.match(word) for word in assignments):
                variables.update(word.split("=", 1) for word in assignments)
            elif words:
                yield shlex.join(words)


def mentioned_commands(document: Path) -> Iterator[str]:
    """Inline code in the prose that names a ``carsdepo`` command or a ``make`` target: often a
    fragment (``carsdepo import-coco --keep-splits test``), so only its names are checked."""
    for span in INLINE_CODE.findall(FENCE.sub("", document.read_text())):
        if re.match(r"(carsdepo|make) [a-z]", span):
            yield span


def all_commands() -> list[tuple[str, str]]:
    return [(str(doc.relative_to(PROJECT_ROOT)), command)
            for doc in COMMAND_DOCUMENTS for command in shown_commands(doc)]


def all_mentions() -> list[tuple[str, str]]:
    return [(str(doc.relative_to(PROJECT_ROOT)), span)
            for doc in COMMAND_DOCUMENTS for span in mentioned_commands(doc)]


@cache
def make_targets() -> set[str]:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+):", makefile, re.MULTILINE))


@cache
def registered_markers() -> set[str]:
    lines = (PROJECT_ROOT / "setup.cfg").read_text().split("markers =", 1)[1].splitlines()[1:]
    return {line.split(":")[0].strip() for line in lines if line.startswith((" ", "\t"))}


@cache
def benchmark_help(module: str) -> str:
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"python -m {module} --help failed: {done.stderr}"
    return done.stdout


def click_tool(program: str) -> click.Group:
    if program == "dagster":
        from dagster._cli import cli
    elif program == "mlflow":
        from mlflow.cli import cli
    else:
        from mkdocs.__main__ import cli
    return cli


def check_click_command(group: click.Group, words: list[str]) -> None:
    """Parse ``words`` as the tool itself would (no command is run)."""
    command, name = group, "cli"
    while isinstance(command, click.Group) and words and words[0] in command.commands:
        name, words = words[0], words[1:]
        command = command.commands[name]
    assert not isinstance(command, click.Group), f"no sub-command given or known: {words}"
    command.make_context(name, list(words))


def check_command(command: str) -> None:
    words = shlex.split(command)
    while words and ASSIGNMENT.match(words[0]):  # VARIABLE=value before the program
        words = words[1:]
    program, args = words[0].removeprefix(".venv/bin/"), words[1:]
    if program == "carsdepo":
        errors = StringIO()
        with redirect_stderr(errors):
            try:
                build_parser().parse_args(args)
            except SystemExit as stop:
                raise AssertionError(errors.getvalue().strip()) from stop
    elif program == "make":
        targets = [word for word in args if "=" not in word]
        assert targets, "make with no target"
        missing = set(targets) - make_targets()
        assert not missing, f"no such Makefile target: {sorted(missing)}"
        for word in args:  # what make train-real passes on to carsdepo train-real
            if word.startswith("TRAIN_REAL_ARGS="):
                check_command(f"carsdepo train-real {word.split('=', 1)[1]}")
    elif program in ("dagster", "mlflow", "mkdocs"):
        check_click_command(click_tool(program), args)
    elif program in ("python", "python3") and args[:1] == ["-m"]:
        module, options = args[1], [word.split("=")[0] for word in args[2:]
                                    if word.startswith("--")]
        assert module.startswith("benchmarks."), f"python -m {module}: not a project module"
        unknown = [option for option in options if option not in benchmark_help(module)]
        assert not unknown, f"python -m {module} has no option {unknown}"
    elif program == "pytest":
        markers = [args[i + 1] for i, word in enumerate(args) if word == "-m"]
        named = {word for marker in markers for word in re.findall(r"[a-z_0-9]+", marker)}
        unknown = named - registered_markers() - {"not", "and", "or"}
        assert not unknown, f"unregistered pytest markers: {sorted(unknown)}"
    else:
        assert program in UNCHECKED_PROGRAMS, (
            f"{program}: a program this test does not know; check it here or name it in "
            "UNCHECKED_PROGRAMS")


def test_commands_are_found():
    commands = {command for _, command in all_commands()}
    assert "make demo" in commands and "make test" in commands
    assert any(command.startswith("carsdepo train") for command in commands)
    assert any(".venv/bin/dagster job backfill" in command for command in commands)


@pytest.mark.parametrize("where,command", all_commands())
def test_shown_command_parses(where: str, command: str):
    try:
        check_command(command)
    except (AssertionError, click.ClickException) as error:
        raise AssertionError(f"{where}: `{command}`: {error}") from None


def check_mention(span: str) -> None:
    """The command and the options a prose fragment names exist."""
    words = span.split()
    if words[0] == "make":
        missing = {w for w in words[1:2] if "=" not in w} - make_targets()
        assert not missing, f"no such Makefile target: {sorted(missing)}"
        return
    commands = {name: sub for action in build_parser()._actions if action.dest == "command"
                for name, sub in action.choices.items()}
    assert words[1] in commands, f"no command carsdepo {words[1]}"
    known = {option for action in commands[words[1]]._actions for option in action.option_strings}
    unknown = [w.split("=")[0] for w in words[2:] if w.startswith("-") and w.split("=")[0]
               not in known and w not in ("-", "--")]
    assert not unknown, f"carsdepo {words[1]} has no option {unknown}"


@pytest.mark.parametrize("where,span", all_mentions())
def test_mentioned_command_exists(where: str, span: str):
    try:
        check_mention(span.rstrip(".,;:"))
    except AssertionError as error:
        raise AssertionError(f"{where}: `{span}`: {error}") from None


@pytest.mark.parametrize("command", [
    "carsdepo demo --iterations many",  # not a number
    "carsdepo no-such-command",
    "make no-such-target",
    ".venv/bin/dagster job execute -w workspace.yaml -j monitoring_job",  # no -w here
    "mlflow server --no-such-option",
    "python -m benchmarks.bench_demo --no-such-option",
    ".venv/bin/pytest -m no_such_marker",
    "rm -rf /",
    "make train-real TRAIN_REAL_ARGS='--no-such-option 1'",
])
def test_a_wrong_command_is_caught(command: str):
    with pytest.raises((AssertionError, click.ClickException)):
        check_command(command)


# --- the generated benchmarks page --------------------------------------------------------

def write_results(folder: Path, suite: str, rows: list[dict]) -> None:
    (folder / f"{suite}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_benchmarks_page_comes_from_the_results(tmp_path: Path):
    machine = "Test CPU, x86_64 3 cores"
    base = {"machine": machine, "recorded_at": "2031-04-05T06:07:08+00:00"}
    write_results(tmp_path, "demo", [{
        **base, "name": "demo_run", "value": 777.0, "unit": "s", "data": "demo", "seed": 42,
        "test_AP50": 0.912, "test_AP50_lower_bound": 0.871, "unseen_AP50": 0.93,
        "v1_training": {"iterations": 315, "seconds": 194.0, "stopped_by": "time budget"},
        "v2_training": {"iterations": 200, "seconds": 150.0, "stopped_by": "iterations"},
        "targets_met": {"wall_s": False, "unseen_AP50": True}}])
    write_results(tmp_path, "real", [
        {**base, "name": "real_test_AP50", "value": 0.4321, "unit": "AP", "preset": "real_cpu",
         "data": "lensor; torchvision real_cpu preset: 10 it x 4 at 640-640 px"},
        {**base, "name": "real_train_wall", "value": 600.0, "unit": "s", "preset": "real_cpu",
         "images_per_s": 3.25, "data": "lensor; torchvision real_cpu preset: 10 it x 4"}])
    write_results(tmp_path, "synth", [{**base, "name": "synth_images_per_s", "value": 12.5,
                                       "unit": "images/s", "data": "40 synthetic"}])
    page = report.page(tmp_path)
    demo_row = next(line for line in page.splitlines() if "| 42 |" in line)
    assert all(text in demo_row for text in ("2031-04-05", machine, "777 s", "0.912 (0.871)",
                                             "wall_s", "| 315 (time budget) / 200 |"))
    real_row = next(line for line in page.splitlines() if "0.432" in line)
    assert all(text in real_row for text in ("2031-04-05", machine, "10.0 min", "3.25"))
    assert "| synth | synth_images_per_s | 12.5 images/s |" in page
    assert "## The ablation" not in page  # no rows, no section


def test_a_demo_row_shows_the_unseen_figures_of_the_versions_it_did_not_end_with(tmp_path: Path):
    run = {"name": "demo_run", "value": 500.0, "unit": "s", "data": "demo", "machine": "m",
           "recorded_at": "2031-04-05T06:07:08+00:00", "seed": 8,
           "champions": ["detector v1", "detector v2"],
           "unseen_AP50": 0.941, "unseen_AP50_scratch": 0.926, "unseen_AP50_dent": 0.957,
           "unseen_by_version": {
               "1": {"AP50": 0.95, "AP50_scratch": 0.931, "AP50_dent": 0.969},
               "2": {"AP50": 0.941, "AP50_scratch": 0.926, "AP50_dent": 0.957}}}
    write_results(tmp_path, "demo", [run])

    row = next(line for line in report.page(tmp_path).splitlines() if "| 8 |" in line)

    assert "| 0.941 (0.926 / 0.957); v1 0.950 (0.931 / 0.969) |" in row


def test_a_run_recorded_twice_is_one_row(tmp_path: Path):
    row = {"name": "real_test_AP50", "value": 0.25, "unit": "AP", "preset": "real_cpu",
           "machine": "m", "data": "lensor; torchvision real_cpu preset: 10 it x 4"}
    write_results(tmp_path, "real", [{**row, "recorded_at": "2031-01-01T00:00:00+00:00"},
                                     {**row, "recorded_at": "2031-01-01T00:30:00+00:00"},
                                     {**row, "recorded_at": "2031-01-02T00:00:00+00:00",
                                      "value": 0.3}])
    rows = [line for line in report.page(tmp_path).splitlines() if line.startswith("| 2031")]
    assert [("0.250" in line, "0.300" in line) for line in rows] == [(True, False), (False, True)]


def test_seeded_ablation_runs_are_summarised_by_mean_and_range_per_variant(tmp_path: Path):
    def figure(variant: str, name: str, value: float) -> dict:
        return {"name": name, "value": value, "unit": "AP", "preset": "real_cpu_short",
                "machine": "m", "data": "lensor", "variant": variant,
                "recorded_at": "2031-01-01T00:00:00+00:00"}

    write_results(tmp_path, "real", [
        figure("all changes, seed 0", "real_test_AP50", 0.10),
        figure("all changes, seed 1", "real_test_AP50", 0.20),
        figure("all changes, seed 2", "real_test_AP50", 0.15),
        figure("all changes, seed 1 + flip TTA", "real_test_AP50", 0.30),
        figure("baseline", "real_test_AP50", 0.01)])  # one run without a seed: no summary

    section = report.page(tmp_path).split("## The ablation over seeds")[1].split("##")[0]

    assert "| all changes | 3 | 0.150 (0.100-0.200) |" in section
    assert "| all changes + flip TTA | 1 | 0.300 (0.300-0.300) |" in section
    assert "baseline" not in section


def test_benchmarks_page_without_results_says_so(tmp_path: Path):
    assert "No benchmark results yet" in report.page(tmp_path)


def test_a_broken_results_line_is_named(tmp_path: Path):
    (tmp_path / "demo.jsonl").write_text('{"name": "demo_run"}\nnot json\n')
    with pytest.raises(ValueError, match=r"demo.jsonl, line 2: not JSON"):
        report.page(tmp_path)


# --- the site -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    done = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict",
                           "--quiet", "-d", str(site)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return site


def page_text(site: Path, page: str) -> str:
    html = (site / page / "index.html").read_text()
    main = html.split('<article', 1)[1].split("</article>", 1)[0]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", main))


@pytest.mark.slow  # builds the site, the Dagster definitions included (about 30 s)
def test_site_builds_strictly_with_its_generated_pages(built_site: Path):
    cli = page_text(built_site, "reference/cli")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert all(f"carsdepo {name}" in cli for name in commands)
    config = page_text(built_site, "reference/configuration")
    from carsdepo_assets.detection.config import PRESETS, DetectorConfig
    assert all(name in config for name in [*PRESETS, *DetectorConfig().to_dict()])
    catalogue = page_text(built_site, "reference/catalogue")
    assert all(name in catalogue for name in ("quality_gate", "drift_sensor", "training_job"))
    benchmarks = page_text(built_site, "benchmarks")
    runs = [row for row in report.every_row() if row["name"] == "demo_run"]
    assert all(f"{run['value']:.0f} s" in benchmarks for run in runs)
    changelog = page_text(built_site, "changelog")
    newest = re.search(r"^## (\S+)", (PROJECT_ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert newest.group(1) in changelog


@pytest.mark.slow
def test_built_pages_carry_no_development_history(built_site: Path):
    for page in ("reference/cli", "reference/configuration", "reference/catalogue",
                 "benchmarks", "developing", "deployment"):
        assert history_in(page_text(built_site, page)) == [], page
