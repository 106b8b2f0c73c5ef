"""Every committed result (results/) is what its own recorded command makes with today's code.

Each test parses a result's recorded command with the real command line (its ``main``, stopped or fed
where the work would start: no training, no data read) and compares what today's code builds from it with
what the file records, field by field; a changed default would otherwise leave a committed result that its
own command no longer makes. Already tested elsewhere, and not repeated here: the course config's
trajectory fields (test_course_model: differences_from_course), clock.json's config against lesson 4's
(test_recipe), the recipe arms' fields (test_recipe), selection's recipes and readings (test_selection),
the sift files' flags against their names (test_course_model), results.json of the ablation rebuilt from
its runs (test_reproduce).
"""

import json
import shlex
import statistics
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from deberta_edu import files
from deberta_edu.facts import CONFIG_FILE, MODEL_FILE, RESULTS_ROOT, TOKENIZER_FILE

# imported before any test moves RESULTS_ROOT, so that COURSE_DIR stays the committed model
from deberta_edu.training import course

ABSENT = "<absent>"
SIFT_FILES = sorted(p.relative_to(RESULTS_ROOT).as_posix() for p in (RESULTS_ROOT / "sift").rglob("*.json"))
# FinetuneConfig fields that results/sift does not record (finetune.main sets batch 32 and length 64 without saying
# so): the values its runs were made with. Changing one makes lesson 5's results unreproducible by their commands.
UNRECORDED_FINETUNE = {"batch_size": 32, "max_length": 64, "warmup_fraction": 0.1, "weight_decay": 0.01,
                       "dropout": 0.1, "max_train_examples": None, "precision": "auto"}


class _Parsed(Exception):
    """Raised by a stand-in where a command would start work, carrying what it was given."""


def _stop(cfg, **kwargs):
    """A stand-in for prepare_data: the command has built its config, and stops before reading any data."""
    raise _Parsed(cfg)


def _load(path: str) -> dict:
    return json.loads((RESULTS_ROOT / path).read_text(encoding="utf-8"))


def _argv(command: str, module: str) -> list[str]:
    """The arguments of a recorded ``python -m <module> ...`` command."""
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", module], f"{command!r} is not a command of {module}"
    return words[3:]


def _differences(recorded: dict, today: dict, skip=(), where: str = "") -> dict:
    """{path: (recorded, today's)} of every field of either that differs, ``skip`` aside; nested dicts are
    compared field by field (path "train_config/batch_size"), so a message names the field, not the section."""
    out = {}
    for k in sorted(set(recorded) | set(today)):
        old, new = recorded.get(k, ABSENT), today.get(k, ABSENT)
        if k in skip:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            out |= _differences(old, new, where=f"{where}{k}/")
        elif old != new:
            out[f"{where}{k}"] = (old, new)
    return out


def _assert_same(recorded: dict, today: dict, what: str, skip=()) -> None:
    """Fail naming each field in which ``today`` differs from ``recorded``: {field: (recorded, today's)}."""
    differ = _differences(files.as_saved(recorded), files.as_saved(today), skip)
    assert not differ, f"{what}: {differ} (recorded, today's)"


def _run(main, argv: list[str]):
    """``main(argv)``; a refusal (SystemExit) fails the test with the command's own reason."""
    try:
        return main(argv)
    except SystemExit as err:
        pytest.fail(f"today's command line refuses the recorded arguments {argv}: {err}")


# ----------------------------------------------------------------------------- course-model


def test_course_model_command_builds_the_recorded_config_and_model(monkeypatch):
    """metrics.json's `pretrain --config course` builds train_config.json on every field (differences_from_course
    leaves out logging and evaluation), and the model it would train has the config in the safetensors metadata
    (a change to the tiny size or a DebertaConfig default shows only there)."""
    from deberta_edu.data.tokenizer import Tokenizer
    from deberta_edu.model.checkpoint import read_header
    from deberta_edu.training import pretrain
    from deberta_edu.training.engine import Distributed

    monkeypatch.delenv("DEBERTA_EDU_SMOKE", raising=False)
    monkeypatch.setattr(pretrain, "setup_distributed", lambda device=None: Distributed())
    monkeypatch.setattr(pretrain, "check_output_folder", lambda *a: None)
    monkeypatch.setattr(pretrain, "prepare_data", _stop)
    first = course.course_metrics()["command"].split("; ")[0]
    with pytest.raises(_Parsed) as parsed:
        _run(pretrain.main, _argv(first, "deberta_edu.pretrain"))
    cfg = parsed.value.args[0]
    saved = json.loads((course.COURSE_DIR / CONFIG_FILE).read_text())
    _assert_same(saved, cfg.to_dict(), f"train_config.json vs `{first}` today")
    meta, _ = read_header(course.COURSE_DIR / MODEL_FILE)
    model = cfg.model_config(Tokenizer(course.COURSE_DIR / TOKENIZER_FILE).vocab_size).to_dict()
    _assert_same(json.loads(meta["config"]), model, "the committed model's config (safetensors metadata) vs today's")


def test_course_model_export_command_records_itself(monkeypatch, tmp_path):
    """`course export course3` (metrics.json's second command) parses, takes the committed run for a course run,
    writes to results/course-model, and would record the very command metrics.json holds."""
    recorded = course.course_metrics()
    run_dir = tmp_path / recorded["command"].split()[-1]
    run_dir.mkdir()
    (run_dir / CONFIG_FILE).write_bytes((course.COURSE_DIR / CONFIG_FILE).read_bytes())
    calls = []
    monkeypatch.setattr(course, "export", lambda run, out, command: calls.append((out, command)) or recorded)
    monkeypatch.chdir(tmp_path)
    _run(course.main, _argv(recorded["command"].split("; ")[1], "deberta_edu.training.course"))
    want = [(str(course.COURSE_DIR), recorded["command"])]
    assert calls == want, f"metrics.json: {recorded['command']!r}; today's export: {calls}"


def test_course_model_tokens_are_its_steps():
    """metrics.json's tokens = steps x batch x length of train_config.json, within the config's steps and time."""
    m, cfg = course.course_metrics(), json.loads((course.COURSE_DIR / CONFIG_FILE).read_text())
    step = cfg["batch_size"] * cfg["seq_length"]
    assert m["tokens"] == m["steps"] * step, f"metrics.json: {m['tokens']:,} tokens, {m['steps']} steps of {step}"
    assert 0 < m["steps"] <= cfg["steps"] and m["train_time_s"] <= m["wall_time_s"]


# ----------------------------------------------------------------------------- recipe


@pytest.mark.parametrize("name", ["results.json", "clock.json"])
def test_recipe_commands_find_every_committed_run_their_own(name, monkeypatch, tmp_path):
    """results/recipe: each recorded command, run today over a copy of its file, keeps every run (same budget;
    same config and blanks), so trains nothing, and writes the header the file holds (budget, seeds, shape,
    config)."""
    from deberta_edu.training import mlm_data, recipe

    recorded = _load(f"recipe/{name}")
    (tmp_path / name).write_text(json.dumps(recorded))
    monkeypatch.setattr(recipe, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(mlm_data, "prepare_data", lambda cfg, **kw: pytest.fail(
        f"today's `{recorded['command']}` would train again (seed {cfg.seed}): a run it asks for is not committed"))
    made = []
    for step in ("run", "clock"):
        real = getattr(recipe, step)
        monkeypatch.setattr(recipe, step, lambda *a, real=real, **kw: made.append(real(*a, **kw)) or made[-1])
    _run(recipe.main, _argv(recorded["command"], "deberta_edu.training.recipe"))
    [today] = made
    _assert_same(recorded, today, f"{name} vs `{recorded['command']}` today", skip=("machine",))


def test_clock_runs_tokens_are_their_steps():
    """clock.json: every run's tokens = its steps x batch x length of the recorded config."""
    result = _load("recipe/clock.json")
    step = result["config"]["batch_size"] * result["config"]["seq_length"]
    for r in result["runs"]:
        assert r["tokens"] == r["steps"] * step, (
            f"clock.json seed {r['seed']} repeat {r['repeat']}: {r['tokens']:,} tokens, {r['steps']} steps of {step}")


# ----------------------------------------------------------------------------- ablation-cpu


def _ablation_today(monkeypatch) -> tuple[dict, dict, object]:
    """(plan.json, the plan today's code makes from its command, today's Scale with plan.json's budget): the
    command parsed by reproduce.main, the plan built as run_ablation builds it (no smoke check, no fit on CPU)."""
    from deberta_edu.ablation import reproduce, run

    recorded = _load("ablation-cpu/plan.json")
    calls = []
    monkeypatch.setattr(reproduce, "run_ablation", lambda scale, out, **kw: calls.append((scale, out, kw)) or {
        "complete": True})
    monkeypatch.setattr(reproduce, "findings", lambda results: [])
    _run(reproduce.main, _argv(recorded["commands"][0], "deberta_edu.reproduce"))
    [(scale, out, kw)] = calls
    assert out == "results/ablation-cpu", f"the command writes to {out}"
    changes = {k: v for k, v in kw.items() if k not in ("smoke_first", "deadline_s", "sentiment_file", "command")}
    scale = run.on_this_machine(scale, **changes)
    smoke = kw["smoke_first"] or (kw["smoke_first"] is None and not scale.cpu_scale)
    assert not (scale.fit_seconds or smoke), "today the command fits its budget or makes a smoke check: plan.json " \
        "has neither"
    monkeypatch.setattr(run, "_hardware", lambda scale: {})
    monkeypatch.setattr(run, "_software", dict)
    today = run._new_plan(scale, None, kw["command"], fit_now=False)
    return recorded, today, scale


def test_ablation_command_makes_the_recorded_plan(monkeypatch):
    """plan.json = the plan today's code makes from its command, on every field but when and where it ran."""
    recorded, today, _ = _ablation_today(monkeypatch)
    _assert_same(recorded, today, f"plan.json vs `{recorded['commands'][0]}` today",
                 skip=("created", "hardware", "software", "wall_s"))


def test_ablation_runs_are_todays_jobs(monkeypatch):
    """runs/: each file's key is today's Job.key() of its run (its TrainConfig, steps and warm-up from the FLOP
    budget, the fine-tuning, probes), its tokens are its steps' tokens, and the files are exactly today's grid
    and the other seeds at each variant's best grid rate."""
    import dataclasses

    from deberta_edu.ablation import jobs, plan, run

    recorded, _, scale = _ablation_today(monkeypatch)
    scale = dataclasses.replace(scale, budget_tokens=recorded["budget_tokens"])
    folder = RESULTS_ROOT / "ablation-cpu" / jobs.RUNS_DIR
    done = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}
    for run_id, r in done.items():
        cfg = plan.run_config(scale, r["variant"], r["seed"], r["lr"])
        key = jobs.Job(r["variant"], r["seed"], r["lr"], cfg, scale, None).key()
        _assert_same(r["key"], key, f"runs/{run_id}.json's key vs today's Job.key()")
        assert r["tokens"] == r["steps"] * cfg.tokens_per_step, run_id
    best = plan.best_rates(run._grid_losses(scale, done))
    wanted = {plan.run_id(*j) for j in plan.grid_jobs(scale) + plan.seed_jobs(scale, best)}
    assert set(done) == wanted, f"committed runs {sorted(set(done) - wanted)}, not made {sorted(wanted - set(done))}"


# ----------------------------------------------------------------------------- sift


def _replayed_finetune(recorded: dict, configs: list):
    """A stand-in for finetune.finetune that keeps each run's FinetuneConfig and gives back the recorded run."""

    def finetune(model, splits, tokenizer, cfg):
        configs.append(cfg)
        row = recorded["test_accuracy"][f"lambda={cfg.adversarial.lam}"]
        n = recorded["seeds"].index(cfg.seed)
        return SimpleNamespace(test_accuracy=row["test"][n], dev_accuracy=row["dev"][n],
                               test_hits=[c == "1" for c in row["hits"][n]], history=[{"adv_loss": row["adv_loss"][n]}])

    return finetune


@pytest.mark.parametrize("name", SIFT_FILES)
def test_sift_command_writes_the_recorded_file(name, monkeypatch, tmp_path):
    """results/sift: the recorded command, run today with each fine-tuning replayed from the file, writes the
    file again (encoder, seeds, λs, the adversarial settings of today's AdversarialConfig, means); each run's
    FinetuneConfig has the command's rate and epochs, today's adversarial defaults, and the unrecorded fields
    as the runs were made."""
    from deberta_edu.data import sentiment
    from deberta_edu.training import finetune as ft

    recorded, configs = _load(name), []
    monkeypatch.setattr(sentiment, "load_splits", lambda *a, **k: {})
    monkeypatch.setattr(ft, "finetune", _replayed_finetune(recorded, configs))
    monkeypatch.chdir(tmp_path)  # the recorded --out is relative: the file is written here
    argv = _argv(recorded["command"], "deberta_edu.finetune")
    today = _run(ft.main, argv)
    _assert_same(recorded, today, f"{name} vs `{recorded['command']}` today", skip=("machine", "wall_time_s"))
    assert json.loads(Path(argv[argv.index("--out") + 1]).read_text()) == today
    for cfg in configs:
        settings = asdict(cfg)
        asked = (float(argv[argv.index("--lr") + 1]), float(argv[argv.index("--epochs") + 1]))
        assert (cfg.lr, cfg.epochs) == asked, f"{name}: runs at (lr, epochs) {(cfg.lr, cfg.epochs)}, asked {asked}"
        _assert_same(recorded["adversarial"], {k: v for k, v in settings.pop("adversarial").items() if k != "lam"},
                     f"{name}: the adversarial settings a run gets today")
        _assert_same(UNRECORDED_FINETUNE, {k: settings[k] for k in UNRECORDED_FINETUNE},
                     f"FinetuneConfig fields {name} does not record, as its runs had them vs today's")


# ----------------------------------------------------------------------------- pretraining-value


def test_pretraining_value_command_writes_the_recorded_settings(monkeypatch, tmp_path):
    """results.json: `downstream` today, its experiments replayed from the file, writes the same probe, tests,
    baselines and fine-tuning recipe (every FinetuneRecipe field), and asks each experiment for as many draws
    as the file holds, fine-tuned where the file has fine-tuned arms."""
    from deberta_edu import facts
    from deberta_edu.data import sentiment, topics
    from deberta_edu.training import downstream

    recorded, asked = _load("pretraining-value/results.json"), {}

    def replay(key):
        def experiment(model, tokenizer, seeds, **kwargs):
            asked[key] = {"draws": len(seeds), "finetune": kwargs.get("finetune", False)}
            return recorded[key]
        return experiment

    for name, key in (("topic_experiment", "topics"), ("sentiment_experiment", "sentiment"),
                      ("topic_curve", "topics_by_labels")):
        monkeypatch.setattr(downstream, name, replay(key))
    monkeypatch.setattr(facts, "RESULTS_ROOT", tmp_path)  # the default --out: a folder here
    monkeypatch.setattr(topics, "load_topics", lambda *a, **k: {})
    monkeypatch.setattr(sentiment, "load_splits", lambda *a, **k: {})
    _run(downstream.main, _argv(recorded["command"], "deberta_edu.training.downstream"))
    today = json.loads((tmp_path / "pretraining-value" / "results.json").read_text())
    _assert_same(recorded, today, "pretraining-value/results.json vs `downstream` today", skip=("wall_time_s",))
    for key in ("topics", "sentiment"):
        arms = recorded[key]["arms"]
        want = {"draws": len(arms["pretrained"]["runs"]), "finetune": "pretrained, fine-tuned" in arms}
        assert asked[key] == want, f"{key}: the file holds {want}, today's command asks for {asked[key]}"
    curve = recorded["topics_by_labels"]["per_class"].values()
    held = {len(p["arms"]["pretrained"]["runs"]) for p in curve}
    assert held == {asked["topics_by_labels"]["draws"]}, f"curve: {held} draws held, {asked['topics_by_labels']} asked"


def test_selection_command_writes_the_recorded_settings(monkeypatch, tmp_path):
    """selection.json: `selection` today, its measurements replayed from the file, writes the same model, dev
    split description and chosen recipe."""
    from deberta_edu import facts
    from deberta_edu.data import topics
    from deberta_edu.training import selection

    recorded = _load("pretraining-value/selection.json")
    monkeypatch.setattr(selection, "reading_and_baseline", lambda *a, **k: recorded["reading"])
    monkeypatch.setattr(selection, "recipe_grid", lambda *a, **k: recorded["recipes"])
    monkeypatch.setattr(facts, "RESULTS_ROOT", tmp_path)
    monkeypatch.setattr(topics, "load_topics", lambda *a, **k: {"train": []})
    _run(selection.main, _argv(recorded["command"], "deberta_edu.training.selection"))
    today = json.loads((tmp_path / "pretraining-value" / "selection.json").read_text())
    _assert_same(recorded, today, "selection.json vs `selection` today", skip=("wall_time_s",))


# ----------------------------------------------------------------------------- means and spreads


def _summaries(node, where=""):
    """(where, values, mean, std) of every dict in a results file that holds "mean" and "std" beside its runs
    ("runs", or sift's "test")."""
    if isinstance(node, dict):
        values = node.get("runs", node.get("test"))
        if {"mean", "std"} <= set(node) and isinstance(values, list):
            yield where, values, node["mean"], node["std"]
        for k, v in node.items():
            yield from _summaries(v, f"{where}/{k}")


@pytest.mark.parametrize("name", ["pretraining-value/results.json", "pretraining-value/selection.json", *SIFT_FILES])
def test_every_mean_and_std_is_its_runs(name):
    """Each mean and (sample) standard deviation recorded beside its runs is recomputed from them."""
    found = list(_summaries(_load(name)))
    assert found, f"{name} holds no mean beside runs"
    for where, values, mean, std in found:
        again = statistics.mean(values)
        assert mean == pytest.approx(again, rel=1e-12, abs=1e-15), f"{name}{where}: mean {mean}, its runs' {again}"
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        assert std == pytest.approx(spread, rel=1e-9, abs=1e-15), f"{name}{where}: std {std}, its runs' {spread}"
