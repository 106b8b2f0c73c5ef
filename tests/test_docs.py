"""What the README, results/README.md and the book's own pages tell a reader, held to the code and the results.

- every `python -m deberta_edu.<x> ...` they show parses with that command's own parser (nothing is run), a
  `--config` is a named config, and the flags the README's speed section names are bench's;
- every `deberta_edu.<name>` they write in backticks exists, and every name a page puts after a library file
  (`model/emd.py`: `EnhancedMaskDecoder`) is defined in that file;
- the README's map of the library names every module of every wing;
- the sizes, counts and times the READMEs quote are those of the committed results under results/.

A failure says which page, what it says and what the code or the results hold.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "results"
PAGES = [README, RESULTS / "README.md", *sorted((ROOT / "book").glob("*.md"))]


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


# ----------------------------------------------------------------------------- commands


def shown_commands(text: str) -> list[str]:
    """`python -m deberta_edu.x ...` as a page shows it: a line of a code block (its comment dropped), or inline."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced and line.strip().startswith("python -m deberta_edu."):
            found.append(line.split(" #", 1)[0].strip())
    found += re.findall(r"(?<!`)`(python -m deberta_edu\.[^`]+)`", text)
    return found


class Parsed(Exception):
    """Raised in place of running a command, where its parser reads the command line: (parser, namespace)."""


def _main_until_parse(module: str, argv: list[str], monkeypatch, parse: bool = True) -> tuple:
    """(parser, namespace) of ``module``'s main() where it calls parse_args; the command itself never runs.
    ``parse=False``: the parser alone, taken before it reads anything (a required argument would end the command)."""
    original = argparse.ArgumentParser.parse_args

    def stop(self, args=None, namespace=None):
        raise Parsed(self, original(self, args, namespace) if parse else None)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    try:
        importlib.import_module(module).main(argv)
    except Parsed as parsed:
        return parsed.args
    finally:
        monkeypatch.undo()
    pytest.fail(f"{module}: its main() returned without parsing a command line")


def parse_only(command: str, monkeypatch, capsys) -> argparse.Namespace:
    """The namespace `command` parses to with its module's own parser; fails with argparse's message if it does
    not parse. The command itself never runs: its main() stops as soon as parse_args returns."""
    words = shlex.split(command)
    assert words[:2] == ["python", "-m"], command
    try:
        return _main_until_parse(words[2], words[3:], monkeypatch)[1]
    except SystemExit as exit_:
        pytest.fail(f"`{command}` does not parse (exit {exit_.code}): {capsys.readouterr().err.strip()}")


COMMANDS = sorted({(_name(page), command) for page in PAGES for command in shown_commands(_text(page))})


def test_the_pages_show_commands():
    """The extraction itself: the README's pretraining block and results/README's rebuild are found."""
    commands = [c for _, c in COMMANDS]
    assert "python -m deberta_edu.training.downstream" in commands
    assert "python -m deberta_edu.reproduce --rebuild results/ablation-cpu" in commands
    assert len([p for p, _ in COMMANDS if p == "README.md"]) >= 12, COMMANDS


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}: {c}" for p, c in COMMANDS])
def test_every_command_shown_parses(page, command, monkeypatch, capsys):
    args = parse_only(command, monkeypatch, capsys)
    if getattr(args, "config", None) is not None and command.split()[2] == "deberta_edu.pretrain":
        from deberta_edu.training.configs import CONFIGS

        assert args.config in CONFIGS, f"{page}: `{command}` names config {args.config!r}; --list has {sorted(CONFIGS)}"


def test_a_command_that_does_not_parse_is_caught(monkeypatch, capsys):
    with pytest.raises(pytest.fail.Exception, match="does not parse"):
        parse_only("python -m deberta_edu.finetune --lambdas 0", monkeypatch, capsys)  # --lams is the flag


def _parser_of(module: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a command's main() builds, taken where it would parse (nothing runs)."""
    return _main_until_parse(module, [], monkeypatch, parse=False)[0]


def _options_without_help(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _options_without_help(sub, f"{prefix}{name} ")
        elif action.help is None:  # an option, or a positional argument
            missing.append(prefix + (action.option_strings[-1] if action.option_strings else action.dest))
    return missing


@pytest.mark.parametrize("module", sorted({c.split()[2] for _, c in COMMANDS}))
def test_every_option_of_every_command_shown_says_what_it_does(module, monkeypatch):
    """`--help` of a command the pages show explains each option and argument (subcommands' too): a bare
    `--seed SEED` or `--out OUT` leaves a learner to guess the default and the unit."""
    assert _options_without_help(_parser_of(module, monkeypatch)) == [], module


def test_an_option_without_help_is_caught(monkeypatch):
    parser = argparse.ArgumentParser()
    parser.add_argument("--said", help="what it does")
    parser.add_argument("--bare")
    monkeypatch.setattr("deberta_edu.training.selection.main", lambda argv: parser.parse_args(argv))
    assert _options_without_help(_parser_of("deberta_edu.training.selection", monkeypatch)) == ["--bare"]


def test_the_speed_sections_flags_are_benchs(monkeypatch, capsys):
    """"`--full-logits` makes ours ...", "`--against bert`", "(`--rounds 20` and `--rounds 30`)"."""
    speed = _text(README).split("## Speed", 1)[1].split("\n## ", 1)[0]
    flags = re.findall(r"`(--[\w-]+(?: \w+)?)`", speed)
    assert {"--full-logits", "--against bert", "--rounds 20"} <= set(flags), flags
    for flag in flags:
        parse_only(f"python -m deberta_edu.bench {flag}", monkeypatch, capsys)


def test_the_console_scripts_named_are_installed_with_those_commands():
    """"The same commands are installed as `deberta-pretrain`, `deberta-corpus` and `deberta-bench`"."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    said = re.search(r"installed as ((?:`[\w-]+`(?:, | and )?)+)\s*\(for ((?:`[\w.]+`(?:, | and )?)+)\)",
                     _text(README).replace("\n", " ").replace("  ", " "))
    assert said, "README.md no longer says which console scripts are installed"
    names, modules = re.findall(r"`([\w-]+)`", said.group(1)), re.findall(r"`([\w.]+)`", said.group(2))
    assert len(names) == len(modules)
    for name, module in zip(names, modules, strict=True):
        assert name in scripts, f"README.md names the console script {name}; pyproject.toml has {sorted(scripts)}"
        target, func = scripts[name].split(":")
        assert importlib.import_module(module).main is getattr(importlib.import_module(target), func), (
            f"{name} runs {scripts[name]}, not what `python -m {module}` runs")


def test_the_gpu_script_has_the_subcommands_shown():
    script = (ROOT / "scripts" / "reproduce_gpu.sh").read_text(encoding="utf-8")
    shown = set(re.findall(r"scripts/reproduce_gpu\.sh (\w+)", "\n".join(_text(p) for p in PAGES)))
    assert shown, "the pages no longer show scripts/reproduce_gpu.sh"
    for sub in shown:
        assert re.search(rf"^\s*{sub}\)", script, re.M), f"scripts/reproduce_gpu.sh has no `{sub}` subcommand"
    budget = re.search(r"BUDGET=(\d+)", _text(README)).group(1)
    assert re.search(rf"BUDGET:-{budget}\b", script), f"README.md says BUDGET={budget} s; the script's default differs"


# ----------------------------------------------------------------------------- names


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_library_names_written_on_the_pages_exist(page):
    """`deberta_edu.training.sift.SiFT`, `deberta_edu.mask_tokens`, `deberta_edu.ablation.report.committed_results()`."""
    names = set(re.findall(r"`(deberta_edu(?:\.\w+)+)(?:\(\))?`", _text(page)))
    missing = []
    for dotted in sorted(names):
        try:
            _resolve(dotted)
        except (ImportError, AttributeError):
            missing.append(dotted)
    assert not missing, f"{_name(page)} names what deberta_edu does not have: {missing}"


NAMED_IN_FILE = re.compile(r"`((?:\w+/)+\w+)\.py`((?:\s*(?::|\(|,|and)\s*`\w+`\)?)+)")


def names_after_files(text: str) -> list[tuple[str, str]]:
    """(library file, name) for "`model/emd.py`: `EnhancedMaskDecoder`, `MLMHead`" and "`model/emd.py` (`select`)"."""
    return [(m.group(1).removeprefix("deberta_edu/"), name)
            for m in NAMED_IN_FILE.finditer(text) for name in re.findall(r"`(\w+)`", m.group(2))]


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_names_put_after_a_library_file_are_in_it(page):
    """paper_map's "where it lives" column: a renamed class or function breaks it."""
    wrong = []
    for path, name in names_after_files(_text(page)):
        source = ROOT / "deberta_edu" / f"{path}.py"
        if not source.exists():  # test_citations checks that the file exists
            continue
        if not re.search(rf"\b{name}\b", source.read_text(encoding="utf-8")):
            wrong.append(f"`{path}.py`: `{name}`")
    assert not wrong, f"{_name(page)} puts names after files that do not define them: {wrong}"


def test_a_name_in_the_wrong_file_is_caught():
    text = "`model/emd.py`: `EnhancedMaskDecoder`, `DisentangledSelfAttention`"
    pairs = names_after_files(text)
    assert pairs == [("model/emd", "EnhancedMaskDecoder"), ("model/emd", "DisentangledSelfAttention")]
    source = (ROOT / "deberta_edu" / "model" / "emd.py").read_text(encoding="utf-8")
    assert not re.search(r"\bDisentangledSelfAttention\b", source)


def test_the_readme_maps_every_module_of_every_wing():
    """README's "What is where" row for deberta_edu/ names each module of model/, data/, training/, ablation/,
    lessons/ (a module added without a word there fails), and each top-level command alias."""
    row = next(line for line in _text(README).splitlines() if line.startswith("| `deberta_edu/`"))
    missing = []
    for wing in ("model", "data", "training", "ablation", "lessons"):
        said = row.split(f"`{wing}/` (", 1)
        assert len(said) == 2, f"README.md's library row no longer describes `{wing}/`"
        for module in sorted(p for p in (ROOT / "deberta_edu" / wing).iterdir()
                             if p.name != "__init__.py" and not p.name.startswith(("_", ".")) and p.suffix != ".html"):
            if not re.search(rf"(?<![\w/]){module.stem}(?!\w)", said[1]):
                missing.append(f"{wing}/{module.name}")
    for alias in (ROOT / "deberta_edu").glob("*.py"):
        if alias.name != "__init__.py" and f"`{alias.name}`" not in row:
            missing.append(alias.name)
    assert not missing, f"README.md's map of deberta_edu/ does not name: {missing}"


# ----------------------------------------------------------------------------- numbers from results/


def _json(path: str) -> dict:
    return json.loads((RESULTS / path).read_text(encoding="utf-8"))


def _minutes_said(command: str) -> str:
    """The "(~85 min, ...)" or "(<= 90 min; ...)" the README's command block gives a command."""
    line = next(line for line in _text(README).splitlines() if line.startswith(command + " ") or line == command)
    found = re.search(r"\((~|<= )(\d+) min", line)
    assert found, f"README.md: `{command}` no longer says how long it takes"
    return found.group(1) + found.group(2)


@pytest.mark.parametrize(("command", "recorded_s"), [
    ("python -m deberta_edu.pretrain --config course", lambda: _json("course-model/metrics.json")["wall_time_s"]),
    ("python -m deberta_edu.training.downstream", lambda: _json("pretraining-value/results.json")["wall_time_s"]),
    ("python -m deberta_edu.training.selection", lambda: _json("pretraining-value/selection.json")["wall_time_s"]),
    # the runs' own clocks: the command's time less building the data and the report
    ("python -m deberta_edu.training.recipe", lambda: sum(r["wall_s"] for r in _json("recipe/results.json")["runs"])),
], ids=["course", "downstream", "selection", "recipe"])
def test_the_readmes_times_are_the_committed_runs(command, recorded_s):
    said = _minutes_said(command)
    minutes = recorded_s() / 60
    assert said.startswith("~") and abs(int(said[1:]) - minutes) <= 0.1 * minutes, (
        f"README.md says `{command}` takes {said} min; its committed run took {minutes:.1f} min")


def test_the_readmes_ablation_bound_is_the_scales():
    from deberta_edu.ablation.plan import get_scale

    said, bound = _minutes_said("python -m deberta_edu.reproduce --scale cpu"), get_scale("cpu").max_minutes
    assert said == f"<= {bound:g}", f"README.md says the CPU ablation takes {said} min; its scale promises {bound:g}"
    assert _json("ablation-cpu/results.json")["max_minutes"] == bound


def _results_row(folder: str) -> str:
    return next(line for line in _text(RESULTS / "README.md").splitlines() if line.startswith(f"| `{folder}/`"))


def test_results_readme_describes_the_committed_ablation():
    row, result = _results_row("ablation-cpu"), _json("ablation-cpu/results.json")
    runs = [json.loads(Path(p).read_text()) for p in glob.glob(str(RESULTS / "ablation-cpu" / "runs" / "*.json"))]
    assert f"({len(result['runs'])} runs)" in row and len(runs) == len(result["runs"])
    assert f"a learning-rate grid of {len(result['lr_grid'])} on seed 0 then {len(result['seeds'])} seeds" in row
    assert result["budget_tokens"] == 2_000_000 and "the FLOPs of 2M DeBERTa tokens" in row
    assert "(2 layers, hidden 128)" in row and "(2 layers, hidden 128)" in result["description"]
    run_minutes = sum(r["wall_s"] for r in runs) / 60
    assert f"{round(run_minutes)} minutes in all over the command's {result['hardware']['workers']} worker" in row, (
        run_minutes)
    said = int(re.search(r"; (\d+) minutes on 2 cores, as the command printed it", row).group(1))
    # its workers cannot have run their runs in less time than the runs took, nor past the scale's bound
    assert run_minutes / result["hardware"]["workers"] <= said <= result["max_minutes"], said
    bert = list(result["main_runs"]["bert"].values())  # BERT-style at its best rate, one run per seed
    on_plateau = [name for name in bert if name in result["on_plateau"]]
    assert f"on the unigram plateau on {len(on_plateau)} of its {len(bert)} seeds" in row, on_plateau
    others = [c for c in result["claims"] if c["other"] != "bert"]
    assert all(c["verdict"] == "within noise" for c in others) and f"the other {len(others)} comparisons" in row
    assert all(c["verdict"] is None for c in result["claims"] if c["other"] == "bert"), "DeBERTa vs BERT-style is tested"
    assert f"schema `{result['schema']}`" in _text(RESULTS / "README.md")


def test_results_readme_describes_the_other_committed_results():
    text = _text(RESULTS / "README.md")
    sift = _json("sift/results.json")
    assert f"over {len(sift['seeds'])} seeds" in _results_row("sift") and sift["seeds"] == [0, 1, 2]
    recipe, clock = _json("recipe/results.json"), _json("recipe/clock.json")
    assert recipe["tokens"] == 3_000_000 and len(recipe["seeds"]) == 3 and "every arm 3M tokens, 3 seeds" in text
    seeds = [r["seed"] for r in clock["runs"]]
    assert clock["config"]["budget_seconds"] == 150 and "150 s on the clock" in text
    assert len(set(seeds)) == 3 and all(seeds.count(s) == 2 for s in seeds) and "three seeds twice each" in text
    value = _json("pretraining-value/results.json")
    per_class = sorted(int(n) for n in value["topics_by_labels"]["per_class"])
    assert "20 labelled documents per class" in value["topics"]["task"]
    assert f"(20 labels per class, and {per_class[0]}–{per_class[-1]})" in _results_row("pretraining-value")
    metrics = _json("course-model/metrics.json")
    assert {"held_out", "unigram_baseline"} <= set(metrics) and "fp16 weights" in _results_row("course-model")
    from safetensors import safe_open

    with safe_open(str(RESULTS / "course-model" / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}


# ----------------------------------------------------------------------------- the glossary's facts


def test_the_glossarys_special_tokens_are_the_librarys():
    from deberta_edu import facts

    glossary = _text(ROOT / "book" / "glossary.md")
    rows = re.findall(r"^\| `(\[\w+\])` \| (\d+) \|", glossary, re.M)
    assert rows, "book/glossary.md has lost its table of special tokens"
    assert {piece: int(i) for piece, i in rows} == {p: i for i, p in enumerate(facts.SPECIAL_PIECES)}, rows


def test_the_glossarys_log_bucket_ends_are_measured():
    """"its last row on the right is shared from distance 506 on (v1's from 511), its last on the left from −512
    (v1's from −512 too)": the released k = 512 with 256 buckets against the plain clamp."""
    import torch

    from deberta_edu.model.positions import relative_distance_matrix

    said = re.search(r"shared from distance (\d+) on \(v1's from (\d+)\), its last on the left from −(\d+) "
                     r"\(v1's from\s+−(\d+)", _text(ROOT / "book" / "glossary.md"))
    assert said, "book/glossary.md no longer gives where log buckets' end rows start"
    n = 1100
    distance = (torch.arange(n)[:, None] - torch.arange(n)[None, :])
    ends = []
    for buckets in (256, -1):
        rows = relative_distance_matrix(n, k=512, position_buckets=buckets)
        ends.append((distance[rows == rows.max()].min().item(), -distance[rows == rows.min()].max().item()))
    (v2_right, v2_left), (v1_right, v1_left) = ends
    assert tuple(int(x) for x in said.groups()) == (v2_right, v1_right, v2_left, v1_left), (said.groups(), ends)


def test_where_the_readme_says_a_command_writes_is_its_default_out(monkeypatch, capsys):
    """"python -m deberta_edu.finetune   # ... -> results/sift/results.json": its --out, given nothing."""
    arrows = re.findall(r"^(python -m deberta_edu\.[^#\n]*?)\s+#.*?-> (results/[\w./-]+)", _text(README), re.M)
    assert len(arrows) >= 4, arrows
    for command, target in arrows:
        args = parse_only(command.strip(), monkeypatch, capsys)
        out = Path(args.out).resolve()
        assert out == (ROOT / target).resolve() or out in (ROOT / target).resolve().parents, (
            f"README.md: `{command.strip()}` writes to {target}, says the README; its --out is {args.out}")
