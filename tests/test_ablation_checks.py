"""Lesson 6's ablation, the checks no other test pins down: the position probe scores held-out windows at the
noun's state, a DeBERTa run on the plateau blocks a verdict, saved runs of other settings are refused, the step
time is a median, and the figures plot what their titles say (tokens, the baselines' own lines, the mean bar).

Everything runs on stubs and runs made by hand: no training, no data."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from deberta_edu.ablation import jobs, markdown, metrics, plots, report
from deberta_edu.ablation.plan import VARIANTS, get_scale, run_config, run_cost, run_id
from deberta_edu.training.probe import ProbeTask, held_out, majority_rate, probe_batch

# ----------------------------------------------------------------------------- the position probe

PROBE_WORDS = {"the": 5, "new": 6, **{noun: 10 + i for i, noun in enumerate(metrics.PROBE_NOUNS)}}


class _Tokenizer:
    """Every probe word is one piece of its own."""

    def encode(self, word):
        return [PROBE_WORDS[word]]


class _Encoder(nn.Module):
    """The state at position p of a window is (p, the id at p): which position was read shows in column 0."""

    encoder = SimpleNamespace(layers=["last layer"])

    def forward(self, ids, mask):
        b, window = ids.shape
        positions = torch.arange(window, dtype=torch.float32).expand(b, window)
        state = torch.stack([positions, ids.float()], dim=-1)  # (b, window, 2)
        return SimpleNamespace(last_hidden_state=state, encoder_state=state)


class _Model(nn.Module):
    """What ``_noun_states`` touches of a DebertaForMaskedLM: ``deberta``, ``emd`` and a parameter."""

    def __init__(self, emd=None):
        super().__init__()
        self.deberta = _Encoder()
        self.emd = emd
        self.weight = nn.Parameter(torch.zeros(1))


class _Emd:
    """An EMD whose output is the encoder state; the last layer's own state is made useless (all -1)."""

    def __call__(self, layer, encoder_state):
        assert layer == "last layer"
        return encoder_state


def _model(with_emd: bool) -> _Model:
    if not with_emd:
        return _Model()
    model = _Model(_Emd())
    forward = model.deberta.forward

    def without_last_state(ids, mask):
        out = forward(ids, mask)
        return SimpleNamespace(last_hidden_state=torch.full_like(out.last_hidden_state, -1.0),
                               encoder_state=out.encoder_state)

    model.deberta.forward = without_last_state
    return model


def test_the_position_probe_is_scored_on_the_held_out_windows(monkeypatch):
    """The probe learns from the training windows and is scored on ``held_out``'s: scored on the windows it
    learned from, it would report memorization as knowledge of position."""
    seen = {}

    def linear_probe(train_x, train_y, test_x, test_y, **kwargs):
        seen.update(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, **kwargs)
        return 0.75

    monkeypatch.setattr(metrics.bow, "linear_probe", linear_probe)
    settings = {"train_windows": 40, "test_windows": 40}  # the same count: only the draws differ
    found = metrics.position_probe(_model(False), _Tokenizer(), settings)
    task = metrics.probe_task(_Tokenizer())
    test = held_out(task, settings["test_windows"])
    train = probe_batch(task, settings["train_windows"], torch.Generator().manual_seed(0))
    assert seen["test_y"] == test.label.tolist() and seen["train_y"] == train.label.tolist()
    assert torch.equal(seen["test_x"][:, 0], test.pos.float()) and torch.equal(seen["test_x"][:, 1],
                                                                               test.ids[range(40), test.pos].float())
    assert not torch.equal(seen["train_x"], seen["test_x"])
    assert seen["classes"] == 2
    assert found == {"accuracy": 0.75, "chance": majority_rate(test.label)}


@pytest.mark.parametrize("with_emd", [False, True])
def test_the_probe_reads_the_state_at_the_noun(with_emd):
    """The probe's features are the state at each window's noun (the EMD's output where there is one), not
    [CLS] at position 0: read elsewhere, the probe would measure something other than the noun's slot."""
    task = ProbeTask(the=5, new=6, nouns=(10, 11, 12))
    batch = probe_batch(task, 10, torch.Generator().manual_seed(3))
    assert len(set(batch.pos.tolist())) > 1  # the nouns sit at different positions
    states = metrics._noun_states(_model(with_emd), batch, batch_size=4)  # three batches, the last one short
    assert states.dtype == torch.float32 and states.shape == (10, 2)
    assert torch.equal(states[:, 0], batch.pos.float())
    assert torch.equal(states[:, 1], batch.ids[range(10), batch.pos].float())  # the noun's id, not "the" or "new"


# ----------------------------------------------------------------------------- runs made by hand

BASE_LOSS = {"bert": 3.6, "deberta": 3.0, "no_emd": 3.2, "no_c2p": 3.3, "no_p2c": 3.4}
RATE = 1e-3


def _record(variant: str, seed: int) -> dict:
    """A run of 10 steps evaluated at steps 0, 4 and 10; its loss, probes and sentiment depend on the seed."""
    loss = BASE_LOSS[variant] + 0.2 * seed + 0.01 * len(variant) * seed
    per_step = 100 if variant == "deberta" else 150
    evals = [{"step": s, "tokens": s * per_step, "val_loss": v, "val_accuracy": a}
             for s, v, a in ((0, 6.5, 0.0), (4, loss + 0.5, 0.1), (10, loss, 0.3 - 0.01 * seed))]
    return {"run": run_id(variant, seed, RATE), "variant": variant, "seed": seed, "lr": RATE, "steps": 10,
            "tokens": 10 * per_step, "flops": 2e9, "evals": evals,
            "metrics": {"val_loss": loss, "val_accuracy": 0.3 - 0.01 * seed, "val_perplexity": 2.718**loss},
            "position_probe": {"accuracy": 0.6 + 0.05 * seed}, "topic_probe": {"accuracy": 0.7 - 0.03 * seed},
            "sentiment": {"test": 0.6 + 0.02 * seed + 0.001 * len(variant), "constant": False}}


UNIGRAM = {"val_loss": 6.0, "val_accuracy": 0.05}
POSITION_BASELINE = {"chance": 0.5, "accuracy": 0.62}


@pytest.fixture
def hand_results(tmp_path):
    """``report.summarize`` of two seeds of every variant at one rate, with baselines."""
    for v in VARIANTS:
        for seed in (0, 1):
            jobs._write(tmp_path / jobs.RUNS_DIR / f"{run_id(v, seed, RATE)}.json", _record(v, seed))
    jobs._write(tmp_path / report.PLAN_FILE, {
        "schema": "deberta_edu/ablation-plan/2", "scale": "hand", "layout": "v1", "cpu_scale": True,
        "seeds": [0, 1], "lr_grid": [RATE], "budget_tokens": 1000, "flops_per_run": 2e9})
    jobs._write(tmp_path / report.BASELINES_FILE, {
        "unigram": UNIGRAM, "random_init": {
            "deberta": {"position_probe": POSITION_BASELINE, "topic_probe": None},
            "bert": {"position_probe": {"chance": POSITION_BASELINE["chance"], "accuracy": 1.0},
                     "topic_probe": {"accuracy": 0.4}}},
        "sentiment": {"majority": 0.5, "bag_of_words": 0.6, "random_init": [{"test": 0.55}]}})
    return report.summarize(tmp_path)


# ----------------------------------------------------------------------------- the plateau


def test_a_deberta_run_on_the_plateau_leaves_every_claim_untested():
    """A DeBERTa run that has not left the unigram plateau blocks every verdict against every variant, just as
    the other variant's run does: a run that learned no context says nothing about the architecture."""
    records = {run_id(v, s, RATE): _record(v, s) for v in VARIANTS for s in (0, 1)}
    summaries = {rid: report.run_summary(r, UNIGRAM) for rid, r in records.items()}
    main = {v: {s: run_id(v, s, RATE) for s in (0, 1)} for v in VARIANTS}
    before = [c for c in report.claims(main, summaries) if c["metric"]]
    assert any(c["verdict"] is not None for c in before)  # without the plateau, claims get verdicts
    stuck = run_id("deberta", 0, RATE)
    record = records[stuck]
    summaries[stuck] = report.run_summary(record, {**UNIGRAM, "val_loss": record["metrics"]["val_loss"] + 0.1})
    assert summaries[stuck]["on_plateau"]
    after = [c for c in report.claims(main, summaries) if c["metric"]]
    assert len(after) == len(report.OTHERS) * len(report.METRICS)
    assert all(c["verdict"] is None and stuck in c["note"] and "on the plateau" in c["note"] for c in after), after


# ----------------------------------------------------------------------------- saved runs and their timings


@pytest.mark.parametrize("change", ["finetune", "probe"])
def test_a_saved_run_of_other_settings_is_refused(tmp_path, change):
    """A run file whose key (config, fine-tuning, probe settings …) differs from this command's is refused:
    reused, it would mix two experiments into one report under the same run id."""
    scale = get_scale("smoke")
    job = jobs.Job("deberta", 0, 3e-3, run_config(scale, "deberta", 0, 3e-3), scale, str(tmp_path))
    jobs._write(job.path, {"run": job.id, "key": job.key(), "metrics": {"val_loss": 3.0}})
    assert jobs.finished([job])[job.id]["metrics"] == {"val_loss": 3.0}  # the same settings: reused
    if change == "finetune":
        other = dataclasses.replace(scale, finetune={**scale.finetune, "lr": 2 * scale.finetune["lr"]})
    else:
        other = dataclasses.replace(scale, probe={**scale.probe, "test_windows": scale.probe["test_windows"] + 1})
    moved = dataclasses.replace(job, scale=other)
    assert moved.path == job.path and moved.key() != job.key()
    with pytest.raises(ValueError, match="other settings"):
        jobs.finished([moved])


def test_the_step_time_is_the_median_after_the_first_window():
    """``step_s`` is the median seconds per step of the train records after the first (whose window holds
    compilation and warm-up): a minimum would predict runs faster than they are, and the deadline would be
    overrun."""
    cfg = SimpleNamespace(tokens_per_step=100)
    seconds = [10.0, 1.0, 2.0, 100.0]  # per step, in each record's window
    history = [{"kind": "train", "step": 10 * (i + 1), "tokens_per_s": 100 / s} for i, s in enumerate(seconds)]
    history.insert(2, {"kind": "eval", "step": 20, "val_loss": 3.0, "eval_s": 4.0})  # between two windows
    history.insert(0, {"kind": "eval", "step": 0, "val_loss": 9.0, "eval_s": 5.0})
    history.append({"kind": "eval", "step": 40, "val_loss": 2.0, "eval_s": 3.0})
    found = jobs._timings(history, cfg)
    assert found["step_s"] == pytest.approx(2.0)
    assert found["first_window_s"] == pytest.approx(10 * 10.0)  # 10 steps of 10 s
    # the first evaluation is a cost of its own (compilation); of the others the longest, erring towards early
    assert found["first_eval_s"] == 5.0 and found["eval_s"] == 4.0
    assert jobs._timings([{"kind": "eval", "step": 0}], cfg) == {}
    one = jobs._timings(history[:3], cfg)  # a single evaluation (step 0): it is both
    assert one["first_eval_s"] == one["eval_s"] == 5.0


def test_a_run_makes_the_evaluations_the_time_fit_charges_and_times_each(one_thread):
    """timing.evaluations counts what pretrain does (step 0, every eval_every steps, the end; here 11 steps
    every 4: 0, 4, 8, 11), and each eval record keeps its seconds (eval_s), which no step time holds."""
    from deberta_edu.ablation import timing
    from deberta_edu.training import pretrain

    scale = get_scale("smoke")
    cfg = run_config(scale, "bert", 0, 3e-3).replace(steps=11, eval_every=4, log_every=2, warmup_steps=1,
                                                     source="synthetic", vocab_size=50, seq_length=16, batch_size=4)
    data = torch.randint(5, 50, (64, 16), generator=torch.Generator().manual_seed(0))
    result = pretrain.train(cfg, data[:48], data[48:], progress=False)
    evals = [r for r in result.history if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 4, 8, 11] and timing.evaluations(cfg) == 4
    assert all(r["eval_s"] > 0 for r in evals) and jobs._timings(result.history, cfg)["eval_s"] > 0
    assert timing.evaluations(cfg.replace(eval_every=0)) == 1  # the end only


def test_a_run_whose_fine_tuning_diverges_is_written_as_failed(monkeypatch, tmp_path, capsys):
    """A diverged fine-tuning (finetune raises FloatingPointError) fails its run as a diverged pretraining does:
    written as failed, so the report leaves it out and says so, and the other runs go on. It used to be scored:
    the NaN classifier's accuracy, the share of one class, went into the sentiment column."""
    scale = get_scale("smoke")
    cfg = run_config(scale, "bert", 0, 3e-3)
    job = jobs.Job("bert", 0, 3e-3, cfg, scale, str(tmp_path))
    monkeypatch.setattr(jobs.mlm_data, "prepare_data", lambda cfg: (None, None, None))
    monkeypatch.setattr(jobs.pretrain, "train", lambda *a, **k: SimpleNamespace(model=None, history=[], metrics={}))

    def diverge(job, model, tokenizer):
        raise FloatingPointError("the fine-tuning loss became nan at step 3")

    monkeypatch.setattr(jobs, "_measure", diverge)
    record = jobs.run_job(job)
    assert record["failed"] == "the fine-tuning loss became nan at step 3" and "sentiment" not in record
    assert jobs.finished([job])[job.id]["failed"] == record["failed"]  # on disk: a resumed command keeps it
    assert "failed: the fine-tuning loss became nan" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the figures


def _axis(fig, title):
    (ax,) = [a for a in fig.axes if a.get_title() == title]
    return ax


def test_the_loss_against_tokens_panel_is_plotted_against_tokens(hand_results):
    """The "equal tokens" panel puts tokens seen on its x axis (the FLOPs panel is beside it): the two
    comparisons differ because variants cost different FLOPs per token."""
    fig = plots.plot_curves(hand_results)
    ax = _axis(fig, "equal tokens: loss vs tokens")
    curves = [hand_results["runs"][r]["curve"] for v in VARIANTS for r in hand_results["main_runs"][v].values()]
    assert all(c["tokens"] != c["flops"] for c in curves)  # the two axes would tell apart
    lines = [line for line in ax.lines if line.get_label() != "word frequencies alone"]
    assert len(lines) == len(curves) == 2 * len(VARIANTS)
    for line, c in zip(lines, curves, strict=True):
        assert list(line.get_xdata()) == c["tokens"] and list(line.get_ydata()) == c["val_loss"]
    assert list(fig.axes[0].lines[0].get_xdata()) == curves[0]["tokens"]


def test_the_probes_baselines_are_chance_and_each_variants_own_random_weights(hand_results):
    """Beside the position probe: a dashed line at chance, and across each variant's column a bar at that
    variant's own random-weight score. One random-init line for all would read BERT-style's 100% untrained (its
    positions are at the input) against DeBERTa's, and chance swapped with it would pass a random model off as
    chance."""
    ax = _axis(plots.plot_summary(hand_results), "position probe, frozen features")
    handles, labels = ax.get_legend_handles_labels()
    assert labels == ["chance", "random init, same variant"]
    assert list(handles[0].get_ydata()) == [POSITION_BASELINE["chance"]] * 2
    spans = {tuple(seg[:, 0]): set(seg[:, 1]) for seg in handles[1].get_segments()}
    bert, deberta = VARIANTS.index("bert"), VARIANTS.index("deberta")
    assert spans == {(bert - 0.4, bert + 0.4): {1.0}, (deberta - 0.4, deberta + 0.4): {POSITION_BASELINE["accuracy"]}}
    topics = _axis(plots.plot_summary(hand_results), "BBC topics, frozen features + linear probe")
    (marks,) = [c for c in topics.collections if c.get_label() == "random init, same variant"]
    assert [(tuple(s[:, 0]), set(s[:, 1])) for s in marks.get_segments()] == [((bert - 0.4, bert + 0.4), {0.4})]


def test_each_bar_is_the_mean_over_the_seeds(hand_results):
    """A variant's bar is its mean over seeds, the number in the report's table; the dots show each seed. A bar
    at the best seed would flatter the variants with the most spread."""
    ax = _axis(plots.plot_summary(hand_results), "held-out MLM loss, end of the run")
    heights = {round(p.get_x() + p.get_width() / 2): p.get_height() for p in ax.patches}
    table = hand_results["table"]
    assert all(len(set(table[v]["val_loss"]["values"])) == 2 for v in VARIANTS)  # seeds differ: mean != max
    assert heights == pytest.approx({i: table[v]["val_loss"]["mean"] for i, v in enumerate(VARIANTS)})


# ----------------------------------------------------------------------------- plan, budget, report words


def test_a_machine_too_slow_for_twenty_steps_per_run_is_refused():
    """fit_budget refuses a budget of fewer than 20 DeBERTa steps per run, and fewer than evals x (evals - 1)
    (56 at the GPU scale's 8): such runs could show nothing, and a slow machine should hear so before the
    experiment starts."""
    from deberta_edu.ablation import timing

    scale = get_scale("gpu")
    deberta = run_config(scale, "deberta", scale.grid_seed, scale.lr_grid[0])
    slow = {"variants": {v: {"first_window_s": 2.0, "step_s": 10.0, "metrics_s": 3.0} for v in VARIANTS}}
    with pytest.raises(RuntimeError, match=f"at least {56 * deberta.tokens_per_step:,}, 56 steps"):
        timing.fit_budget(scale, slow, 330.0, baselines_s=9.0)
    few = get_scale("gpu", evals=3)
    with pytest.raises(RuntimeError, match=f"at least {20 * deberta.tokens_per_step:,}, 20 steps"):
        timing.fit_budget(few, slow, 330.0, baselines_s=9.0)


@pytest.mark.parametrize("evals", [3, 8])
def test_a_fitted_budget_runs_no_more_evaluations_than_the_fit_charged(evals):
    """fit_budget charges evals + 2 evaluations per run before the step counts are known. That bounds a run of at
    least evals x (evals - 1) steps (eval_every = steps // evals); a 20-step run at evals 8 makes 11. So at the
    smallest budget the fit accepts, no variant's run evaluates more often than charged (each takes at least
    DeBERTa's steps)."""
    from deberta_edu.ablation import timing

    scale = get_scale("gpu", evals=evals)
    per_step = {v: 0.02 * run_cost(run_config(scale, v, 0, 5e-4)) / run_cost(run_config(scale, "deberta", 0, 5e-4))
                for v in VARIANTS}
    smoke = {"variants": {v: {"first_window_s": 2.0, "step_s": per_step[v], "first_eval_s": 1.0, "eval_s": 0.1,
                              "metrics_s": 3.0} for v in VARIANTS}}
    refused, accepted = 0.0, 10_000.0
    while accepted - refused > 0.01:  # the least time the fit accepts
        middle = (refused + accepted) / 2
        try:
            timing.fit_budget(scale, smoke, middle)
            accepted = middle
        except RuntimeError:
            refused = middle
    fit = timing.fit_budget(scale, smoke, accepted)
    fitted = get_scale("gpu", evals=evals, budget_tokens=fit["budget_tokens"])
    counts = {v: timing.evaluations(run_config(fitted, v, 0, 5e-4)) for v in VARIANTS}
    assert max(counts.values()) <= evals + 2, counts
    steps = {v: run_config(fitted, v, 0, 5e-4).steps for v in VARIANTS}
    assert min(steps, key=steps.get) == "deberta" and steps["deberta"] >= max(20, evals * (evals - 1))
    for s in range(evals * (evals - 1), 3000):
        every = max(1, s // evals)
        assert timing.evaluations(SimpleNamespace(steps=s, eval_every=every)) <= evals + 2, s


def test_every_run_warms_up_over_its_share_of_its_own_steps():
    """Each variant's warmup is the scale's fraction of that run's steps (at least one): variants of other costs
    take other step counts, and each warms up over the same share of its budget."""
    for name in ("cpu", "gpu"):
        scale, warmups = get_scale(name), set()
        for v in VARIANTS:
            cfg = run_config(scale, v, scale.grid_seed, scale.lr_grid[0])
            assert cfg.warmup_steps == max(1, round(scale.warmup_fraction * cfg.steps)), (name, v)
            warmups.add(cfg.warmup_steps)
        assert len(warmups) > 1 and min(warmups) > 1, name  # the variants differ, and warm up over many steps


def test_the_findings_count_a_claim_the_data_contradicts(hand_results):
    """A "disagrees" verdict is said in the findings: dropped, a result against the paper would read as
    nothing tested."""
    claim = next(c for c in hand_results["claims"] if c["metric"] and c["other"] == "no_emd")
    for c in hand_results["claims"]:
        if c["other"] == "no_emd":
            c["verdict"] = None
    claim["verdict"] = "disagrees"
    line = next(f for f in markdown.findings(hand_results) if "−EMD?" in f)
    assert line.endswith("Ours, over " + str(sum(1 for c in hand_results["claims"]
                                                 if c["other"] == "no_emd" and c["metric"])) + " measures: 1 disagrees.")


def test_a_report_without_figures_lists_no_figure_files(hand_results, tmp_path, monkeypatch):
    """write_report(figures=False) lists only the files it wrote: results.json and comparison.md."""
    from deberta_edu.ablation import publish

    monkeypatch.setattr(publish.markdown, "comparison", lambda results: "the text\n")  # hand runs: no hardware
    assert publish.write_report(tmp_path, figures=False)["files"] == [report.RESULTS_FILE, report.COMPARISON_FILE]
    assert not (tmp_path / report.CURVES_FILE).exists()


def test_a_resumed_command_must_match_the_plan_in_every_key(tmp_path):
    """Each key of the first command's plan that shapes the runs (and the token budget, unless the budget was
    fitted to the machine) must match: otherwise two experiments would mix in one folder."""
    import json

    from deberta_edu.ablation import run

    base = {"schema": run.PLAN_SCHEMA, "scale": "cpu", "layout": "v1", "seeds": [0, 1, 2], "lr_grid": [1e-3],
            "evals": 6, "train_config": {"batch_size": 32}, "budget_tokens": 1000, "fit": None,
            "commands": ["first"], "hardware": {"cpu": "x"}}

    def load(saved, fresh):
        path = tmp_path / "plan.json"
        path.write_text(json.dumps(saved))
        return run._load_plan(path, fresh, "again")

    assert load(base, base)["commands"] == ["first", "again"]
    for key, other in (("scale", "gpu"), ("layout", "v3"), ("seeds", [0]), ("lr_grid", [2e-3]), ("evals", 3),
                       ("train_config", {"batch_size": 16}), ("budget_tokens", 2000)):
        with pytest.raises(ValueError, match=f"another experiment .*'{key}'"):
            load(base, {**base, key: other})
    fitted = {**base, "fit": {"seconds": 500}}  # a budget fitted to this machine: a resume may not refit it
    assert load(fitted, {**base, "budget_tokens": 2000})["budget_tokens"] == 1000


def test_the_best_rate_is_chosen_from_whole_grids_that_learned():
    """A variant's rate is chosen only once every rate of its grid has finished, and not at all when every one
    diverged: a partial grid would pick from what happened to finish first."""
    from deberta_edu.ablation import run

    scale = get_scale("smoke")
    rates = list(scale.lr_grid)
    done = {run_id(v, scale.grid_seed, lr): {"metrics": {"val_loss": 3.0 + i}} for v in VARIANTS
            for i, lr in enumerate(rates)}
    done.pop(run_id("no_c2p", scale.grid_seed, rates[0]))  # one rate still to run
    for lr in rates:
        done[run_id("bert", scale.grid_seed, lr)] = {"failed": "diverged"}  # every rate diverged
    found = run._grid_losses(scale, done)
    assert set(found) == set(VARIANTS) - {"no_c2p", "bert"}
    assert found["deberta"] == {lr: 3.0 + i for i, lr in enumerate(rates)}
