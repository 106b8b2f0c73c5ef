"""The recipe's measurements (results/recipe): one choice at a time, on the configuration lesson 4 runs."""

import json
from types import SimpleNamespace

import pytest

from deberta_edu import files
from deberta_edu.training import recipe
from deberta_edu.training.configs import get_config

RESULTS = recipe.RESULTS_DIR / "results.json"


def _run(arm, seed, tokens, spans):
    return {"arm": arm, "seed": seed, "change": arm, "fields": {}, "tokens_per_s": 1, "wall_s": 1,
            "held_out": {"tokens": {"accuracy": tokens}, "whole_words": {"accuracy": spans}}}


def test_the_arms_differ_from_lesson_4_in_their_one_field_and_the_budget():
    lesson = get_config("lesson4", smoke=False)
    for _, _, changes in recipe.ARMS:
        cfg = recipe.arm_config(changes, 3_000_000)
        assert cfg.steps == 3_000_000 // lesson.tokens_per_step and cfg.budget_seconds is None
        differ = {k for k, v in cfg.to_dict().items() if v != lesson.to_dict()[k]}
        assert differ - {"steps", "budget_seconds", "warmup_steps", "eval_every", "save_every"} == set(changes)


def test_an_arm_warms_up_over_the_same_share_of_its_budget_as_lesson_4():
    lesson = get_config("lesson4", smoke=False)
    for tokens in (3_000_000, 200_000):
        cfg = recipe.arm_config({}, tokens)
        assert abs(cfg.warmup_steps - lesson.warmup_fraction * cfg.steps) < 1  # 5% of the steps, as of the clock


def test_run_keeps_each_result_and_repeats_none_of_the_same_budget(tmp_path, monkeypatch):
    from deberta_edu.training import mlm_data, pretrain

    trained, bars = [], []

    def fake_train(cfg, train_data, val_data, tokenizer, progress=True):
        trained.append(cfg.seed)
        return SimpleNamespace(model=None, tokens_per_s=1.0)

    def fake_data(cfg, progress=True):
        bars.append(progress)
        return "train", "val", "tokenizer"

    monkeypatch.setattr(mlm_data, "prepare_data", fake_data)
    monkeypatch.setattr(pretrain, "train", fake_train)
    monkeypatch.setattr(recipe, "held_out", lambda model, cfg, data: {"tokens": {"accuracy": 0.5},
                                                                     "whole_words": {"accuracy": 0.4}})
    arms = recipe.ARMS[:2]
    recipe.run(8192, tmp_path, seeds=(0,), arms=arms, progress=False)
    assert trained == [0, 0] and bars == [False]  # the data read once, its bars hidden as asked
    again = recipe.run(8192, tmp_path, seeds=(0, 1), arms=arms, progress=False)  # a cut run, run again with more
    assert trained == [0, 0, 1, 1]  # seed 0's runs are read back, not repeated
    assert sorted((r["arm"], r["seed"]) for r in again["runs"]) == sorted((a, s) for a, _, _ in arms for s in (0, 1))
    before = (tmp_path / "results.json").read_bytes()
    with pytest.raises(ValueError, match="4 runs made with another tokens"):  # another budget: not silently lost
        recipe.run(16384, tmp_path, seeds=(0,), arms=arms, progress=False)
    assert (tmp_path / "results.json").read_bytes() == before and trained == [0, 0, 1, 1]
    with pytest.raises(SystemExit, match="--overwrite to start afresh"):
        recipe.main(["--tokens", "16384", "--out", str(tmp_path), "--seeds", "0"])
    recipe.run(16384, tmp_path, seeds=(0,), arms=arms, progress=False, overwrite=True)  # asked for: nothing reused
    assert trained == [0, 0, 1, 1, 0, 0]


def test_the_table_averages_the_seeds_beside_the_recipe():
    result = {"shape": "lesson 4: tiny", "tokens": 16384, "seeds": [0, 1],
              "runs": [_run("recipe", 0, 0.20, 0.15), _run("recipe", 1, 0.24, 0.17),
                       _run("lr 1e-3", 0, 0.14, 0.12), _run("lr 1e-3", 1, 0.16, 0.12)]}
    arms = recipe.by_arm(result)
    assert list(arms) == ["recipe", "lr 1e-3"] and arms["recipe"]["tokens"] == [0.20, 0.24]
    table = recipe.table(result)
    assert table.startswith("Held-out masked-token accuracy of lesson 4: tiny: 16,384 tokens per run, seeds 0, 1.")
    assert "| recipe | 22.0% (20.0–24.0) | +0.0 | — | 16.0% (15.0–17.0) | +0.0 |" in table
    p = recipe.welch_p([0.14, 0.16], [0.20, 0.24])
    assert 0 < p < 0.2
    assert f"| lr 1e-3 | 15.0% (14.0–16.0) | -7.0 | {p:.2g} | 12.0% (12.0–12.0) | -4.0 |" in table


def test_the_committed_measurements_cover_every_arm_and_seed():
    result = json.loads(RESULTS.read_text())
    done = {(r["arm"], r["seed"]) for r in result["runs"]}
    assert done == {(name, seed) for name, _, _ in recipe.ARMS for seed in result["seeds"]}
    assert len(result["seeds"]) >= 2 and result["tokens"] == recipe.BUDGET_TOKENS
    for r in result["runs"]:  # each run's change is the arm's, as ARMS states it now
        changes = dict((name, c) for name, _, c in recipe.ARMS)[r["arm"]]
        assert r["fields"] == {k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()}


def _clock_config(monkeypatch, **changes):
    """``clock`` on the debug model (synthetic data, a fraction of a second of training time) in place of lesson 4."""
    cfg = get_config("debug").replace(budget_seconds=0.5, steps=10_000, warmup_fraction=0.05, eval_every=5,
                                      save_every=5, **changes)
    monkeypatch.setattr(recipe, "get_config", lambda name, smoke=False: cfg if name == "lesson4" else None)
    return cfg


def test_clock_runs_each_seed_twice_on_the_clock_and_keeps_what_the_page_prints(tmp_path, monkeypatch):
    cfg = _clock_config(monkeypatch)
    recipe.main(["--clock", "--out", str(tmp_path), "--seeds", "0", "1", "--no-progress"])
    result = json.loads((tmp_path / recipe.CLOCK_FILE).read_text())
    assert result["command"] == "python -m deberta_edu.training.recipe --clock"
    assert [(r["seed"], r["repeat"]) for r in result["runs"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert result["config"] == files.as_saved(cfg.to_dict()) and result["machine"]
    assert result["blanks"] == {k: list(v) for k, v in recipe.FILL_BLANKS.items()}
    assert all(r["answer_ranks"] is None for r in result["runs"])  # synthetic rows: no tokenizer, no words to rank
    for r in result["runs"]:
        assert r["steps"] > 0 and r["tokens"] == r["steps"] * cfg.tokens_per_step  # the clock decided the steps
        steps = [e["step"] for e in r["evals"]]
        assert steps[0] == 0 and steps[-1] == r["steps"] and steps == sorted(steps)  # the last one is the end's
        assert all(0 <= e["val_accuracy"] <= 1 and e["val_loss"] > 0 for e in r["evals"])


def test_clock_repeats_no_run_of_the_same_config_and_starts_afresh_for_another_if_asked(tmp_path, monkeypatch):
    from deberta_edu.training import pretrain

    _clock_config(monkeypatch)
    recipe.clock(tmp_path, seeds=(0,), repeats=1, progress=False)
    real_train, seeds = pretrain.train, []

    def counted(cfg, *args, **kwargs):
        seeds.append(cfg.seed)
        return real_train(cfg, *args, **kwargs)

    monkeypatch.setattr(pretrain, "train", counted)
    again = recipe.clock(tmp_path, seeds=(0, 1), repeats=1, progress=False)  # a cut run, run again with more
    assert seeds == [1] and [r["seed"] for r in again["runs"]] == [0, 1]
    _clock_config(monkeypatch, lr=5e-3)  # lesson 4 changed: its old runs say nothing of it, and are not lost unasked
    with pytest.raises(ValueError, match="another config"):
        recipe.clock(tmp_path, seeds=(0,), repeats=1, progress=False)
    fresh = recipe.clock(tmp_path, seeds=(0,), repeats=1, progress=False, overwrite=True)
    assert seeds == [1, 0] and len(fresh["runs"]) == 1 and fresh["config"]["lr"] == 5e-3
    with pytest.raises(ValueError, match="another blanks"):  # runs that ranked other words are not reused either
        recipe.clock(tmp_path, seeds=(0,), repeats=1, progress=False, blanks={"The web looks.": ("web",)})


def test_the_committed_clock_runs_are_of_lesson_4_as_it_is():
    result = json.loads((recipe.RESULTS_DIR / recipe.CLOCK_FILE).read_text())
    assert result["config"] == files.as_saved(get_config("lesson4", smoke=False).to_dict())
    assert sorted((r["seed"], r["repeat"]) for r in result["runs"]) == [(s, n) for s in recipe.SEEDS for n in (0, 1)]
    assert result["blanks"] == {k: list(v) for k, v in recipe.FILL_BLANKS.items()}
    assert all(set(r["answer_ranks"]) == {w for words in recipe.FILL_BLANKS.values() for w in words}
               for r in result["runs"])


def test_held_out_scores_the_model_on_its_own_device(monkeypatch):
    """train() leaves its model on the GPU when there is one; held_out built its Evaluator on the CPU, so
    `python -m deberta_edu.training.recipe` crashed there after its first run. The meta device stands in."""
    import torch

    from deberta_edu.training import evaluate

    seen = []

    class Spy:
        def __init__(self, data, cfg, spec, world, precision):
            seen.append(world.device)

        def __call__(self, model):
            return {"val_accuracy": 0.5, "val_loss": 1.0, "val_tokens": 1}

    monkeypatch.setattr(evaluate, "Evaluator", Spy)
    model = torch.nn.Linear(2, 2, device="meta")
    recipe.held_out(model, get_config("debug"), (None, None, None))
    assert seen == [torch.device("meta")] * 2
