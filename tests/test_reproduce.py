"""Lesson 6's ablation: runs that differ in the variant alone and spend the same FLOPs, paired seeds, a grid,
one file per run (resumable), plateau and constant-classifier checks, and verdicts from a paired test."""

import dataclasses
import json
import random
import statistics
from types import SimpleNamespace

import pytest
import torch
from scipy import stats as scipy_stats

from deberta_edu import exercises, files
from deberta_edu.ablation import jobs, metrics, plan, publish, report, reproduce, stats, timing
from deberta_edu.ablation.plan import VARIANTS, Scale, get_scale, run_config, variant_configs
from deberta_edu.ablation.run import run_ablation
from deberta_edu.data import corpus
from deberta_edu.data.topics import TOPICS
from deberta_edu.facts import RESULTS_ROOT
from deberta_edu.training.configs import TrainConfig
from deberta_edu.training.engine import Distributed
from deberta_edu.training.mlm_data import Batches, MaskSpec, synthetic_data

WORDS = "the new store opened beside mall model learns to predict masked words from context attention".split()
TOPIC_WORDS = ("market shares profit", "film music star", "vote party minister", "match team goal",
               "phone software web")


# ----------------------------------------------------------------------------- the plan


@pytest.mark.parametrize("name", sorted(plan.SCALES))
def test_the_runs_differ_only_in_the_variant_and_spend_the_same_flops(name):
    scale = get_scale(name)
    configs = variant_configs(scale)
    plan.check_only_variant_differs(configs)
    budget = plan.flop_budget(scale)
    for v, cfg in configs.items():
        assert set(plan.config_differences(configs["deberta"], cfg)) <= {"variant"} | plan.BUDGET_FIELDS, v
        step = plan.run_cost(cfg) * cfg.tokens_per_step
        assert abs(step * cfg.steps - budget) <= step, v  # the same FLOPs, to within one step
        assert cfg.whole_word_masking and cfg.dropout == 0.0  # span masking, the recipe's dropout
        assert cfg.eval_every * scale.evals <= cfg.steps < cfg.eval_every * (scale.evals + 1)
    # a variant that costs less per token sees more tokens
    # (BERT-style the most, DeBERTa the fewest; at L = 512 a position term costs more than the masked-only EMD)
    others = [configs[v].steps for v in ("no_emd", "no_c2p", "no_p2c")]
    assert configs["bert"].steps > max(others) and min(others) > configs["deberta"].steps


@pytest.mark.parametrize("layout", sorted(plan.LAYOUTS))
def test_the_layout_is_table_4s_v1_unless_asked(layout):
    scale = get_scale("cpu", layout=layout)
    models = {v: cfg.model_config() for v, cfg in variant_configs(scale).items()}
    for v, m in models.items():
        assert m.share_att_key is (layout == "v3") and m.norm_rel_ebd is (layout == "v3"), v
        assert m.position_buckets == (256 if layout == "v3" else -1) and m.layout == ("v2" if layout == "v3" else "v1")
    assert get_scale("cpu").layout == "v1" and "Table 4" in plan.LAYOUT_NOTES["v1"]
    # the variants are the paper's: BERT-style input positions, and one piece of DeBERTa removed at a time
    assert models["bert"].position_biased_input and not models["bert"].relative_attention
    assert models["deberta"].emd and models["deberta"].terms == ("c2c", "c2p", "p2c")
    assert not models["no_emd"].emd and models["no_c2p"].terms == ("c2c", "p2c")
    assert models["no_p2c"].terms == ("c2c", "c2p")


def test_a_run_that_differs_in_more_is_refused():
    scale = get_scale("smoke")
    configs = variant_configs(scale)
    configs["no_emd"] = configs["no_emd"].replace(lr=1e-4)
    with pytest.raises(ValueError, match="more than the variant"):
        plan.check_only_variant_differs(configs)
    configs = variant_configs(scale)
    configs["no_emd"] = configs["no_emd"].replace(steps=configs["no_emd"].steps * 2)
    with pytest.raises(ValueError, match="FLOPs"):
        plan.check_only_variant_differs(configs)
    configs = variant_configs(scale)
    configs["no_emd"] = configs["no_emd"].replace(steps=configs["no_emd"].steps + 2)  # two steps over: refused too
    with pytest.raises(ValueError, match="FLOPs"):
        plan.check_only_variant_differs(configs)


def test_the_grid_then_the_seeds():
    scale = get_scale("cpu")
    grid = plan.grid_jobs(scale)
    assert len(grid) == 5 * 3 and {s for _, s, _ in grid} == {0} and {lr for *_, lr in grid} == set(scale.lr_grid)
    best = plan.best_rates({"bert": {1e-3: 6.0, 2e-3: 5.5, 4e-3: 5.7}, "deberta": {1e-3: 5.0, 2e-3: 5.2}})
    assert best == {"bert": 2e-3, "deberta": 1e-3}
    assert plan.seed_jobs(scale, best) == [("bert", 1, 2e-3), ("deberta", 1, 1e-3), ("bert", 2, 2e-3),
                                           ("deberta", 2, 1e-3)]
    with pytest.raises(ValueError, match=">= 2 seeds"):
        get_scale("cpu", seeds=(0,))


def test_runs_of_one_seed_see_the_same_rows_and_masks_whatever_the_variant_and_rate():
    scale = get_scale("cpu")
    scale.train = scale.train.replace(source="synthetic", vocab_size=64, seq_length=32, whole_word_masking=False)
    data = synthetic_data(96, 32, 64)
    cfgs = {(v, seed, lr): run_config(scale, v, seed, lr) for v in VARIANTS for seed in (0, 1) for lr in (1e-3, 4e-3)}
    batches = {k: Batches(data, cfg, MaskSpec.of(cfg), Distributed()) for k, cfg in cfgs.items()}
    for step in (0, 5, 13):  # 13: the second epoch, a new order
        for seed in (0, 1):
            reference = batches[("deberta", seed, 1e-3)].global_batch(step)
            for k, b in batches.items():
                if k[1] == seed:
                    assert all(torch.equal(x, y) for x, y in zip(reference, b.global_batch(step), strict=True)), k
    assert not torch.equal(batches[("deberta", 0, 1e-3)].global_batch(0)[0], batches[("deberta", 1, 1e-3)]
                           .global_batch(0)[0])  # another seed draws anew


# ----------------------------------------------------------------------------- statistics


def test_the_paired_test_is_scipys_and_its_interval_is_the_t_interval():
    a, b = [0.70, 0.80, 0.75], [0.68, 0.78, 0.72]
    t = stats.paired_test(a, b)
    assert t["p"] == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue) and t["n"] == 3
    d = [x - y for x, y in zip(a, b, strict=True)]
    half = scipy_stats.t.ppf(0.975, 2) * statistics.stdev(d) / 3**0.5
    assert t["ci95"] == pytest.approx([statistics.mean(d) - half, statistics.mean(d) + half])
    assert stats.verdict(t, higher_is_better=True) == "agrees" and stats.verdict(t, False) == "disagrees"
    assert stats.verdict(stats.paired_test([0.72, 0.74, 0.70], [0.70, 0.69, 0.68]), True) == "within noise"
    assert stats.paired_test([1.0], [0.5])["p"] is None and stats.verdict(stats.paired_test([1.0], [0.5]), True) is None
    assert stats.paired_test([1.0, 2.0], [0.5, 1.5])["p"] == 0.0  # the same gain at every seed
    with pytest.raises(ValueError, match="one value per seed"):
        stats.paired_test([1.0, 2.0], [1.0])


def test_area_under_and_interpolation():
    assert stats.area_under([0, 0.5, 1], [9, 7, 5]) == pytest.approx(7.0)
    assert stats.interpolate([0, 10, 20], [9, 7, 5], 15) == pytest.approx(6.0)
    assert stats.interpolate([0, 10], [9, 7], 11) is None
    assert stats.area_under([0, 2, 4], [9, 7, 5]) == pytest.approx(7.0)  # the mean: area 28 over the width 4
    assert stats.interpolate([0, 10, 20], [9, 7, 5], 0) == 9 and stats.interpolate([0, 10, 20], [9, 7, 5], 20) == 5
    assert stats.mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3, "values": [1.0, 2.0, 3.0]}  # n − 1
    with pytest.raises(ValueError, match="two or more"):
        stats.area_under([0], [1])


def test_a_budget_fitted_to_the_step_times_fills_the_time():
    scale = get_scale("gpu")
    smoke = {"variants": {v: {"first_window_s": 2.0, "step_s": 0.02 * (2 if v == "deberta" else 1), "eval_s": 0.3,
                              "metrics_s": 3.0} for v in VARIANTS}}
    fit = timing.fit_budget(scale, smoke, 330.0, baselines_s=9.0)
    fitted = dataclasses.replace(scale, budget_tokens=fit["budget_tokens"])
    runs_per_variant = len(scale.lr_grid) + len(scale.seeds) - 1  # the grid, then the other seeds
    total = 9.0 + runs_per_variant * sum(
        timing.predict_job(jobs.Job(v, 0, 5e-4, run_config(fitted, v, 0, 5e-4), fitted, None), smoke)
        for v in VARIANTS)
    assert total == pytest.approx(330.0, rel=0.02) and fit["runs"] == 25  # evaluations charged in both
    with pytest.raises(RuntimeError, match="before any training"):
        timing.fit_budget(scale, smoke, 100.0)


def test_no_run_is_started_that_would_end_after_the_deadline(tmp_path):
    scale = get_scale("smoke")
    job = jobs.Job("bert", 0, 3e-3, run_config(scale, "bert", 0, 3e-3), scale, str(tmp_path))
    assert jobs.run_jobs([job], deadline=0.0, predict=lambda j: 1.0) == {}
    assert not job.path.exists()


# ----------------------------------------------------------------------------- a whole (micro) ablation


def _micro_data(folder):
    """A fake BBC (five topic folders of short documents) and 60 fake sentiment snippets."""
    rng = random.Random(0)
    for topic, words in zip(TOPICS, TOPIC_WORDS, strict=True):
        (folder / "data" / "bbc" / "raw" / topic).mkdir(parents=True)
        for i in range(24):
            text = " ".join(rng.choice(WORDS + words.split()) for _ in range(rng.randint(20, 50)))
            (folder / "data" / "bbc" / "raw" / topic / f"{i:03d}.txt").write_text(text.capitalize() + ".")
    lines = ["id\tsentiment\ttext"] + [
        f"{i}\t{1.5 if i % 2 else -1.5}\t{'the new store' if i % 2 else 'masked words'} {rng.choice(WORDS)}"
        for i in range(60)]
    (folder / "snippets.txt").write_text("\n".join(lines) + "\n")


def _micro_scale() -> Scale:
    model = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64)
    return Scale(
        name="micro", description="test",
        train=TrainConfig(size="tiny", model_overrides=model, source="bbc", vocab_size=320, seq_length=32,
                          batch_size=8, lr=1e-2, dropout=0.0, log_every=2, eval_rows=16, eval_batch_size=16,
                          save_every=0),
        finetune=dict(lr=1e-3, epochs=1.0, batch_size=8, max_length=16), budget_tokens=6 * 8 * 32,
        seeds=(0, 1), lr_grid=(1e-2,), evals=2, topics=dict(per_class=2, draws=1, max_chunks=1),
        probe=dict(train_windows=64, test_windows=64), random_init_finetunes=2, threads=1)


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ablation")
    _micro_data(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(corpus.DATA_ENV, str(folder / "data"))
        results = run_ablation(_micro_scale(), folder / "report", sentiment_file=folder / "snippets.txt",
                               progress=False)
        yield results, folder


def test_a_report_before_any_run_has_ended_says_what_is_missing(micro_run, tmp_path):
    """A deadline that starts no run (or a first run that does not fit) still gets its report and figures."""
    _, folder = micro_run
    for name in (report.PLAN_FILE, report.BASELINES_FILE):
        files.copy(folder / "report" / name, tmp_path / name)
    from deberta_edu.ablation import publish

    results = publish.write_report(tmp_path)  # the learning-rate plot has no point on its log axis
    assert not results["complete"] and results["missing"] and not results["runs"]
    assert (tmp_path / report.CURVES_FILE).read_bytes()[:4] == b"\x89PNG"


def test_a_budget_that_is_not_positive_is_refused_before_a_plan_is_written(tmp_path):
    with pytest.raises(ValueError, match="budget_tokens must be > 0, got -5"):
        run_ablation(_micro_scale(), tmp_path / "out", budget_tokens=-5, progress=False)
    assert not (tmp_path / "out").exists()


def test_every_run_writes_its_own_file_and_the_report_is_complete(micro_run):
    results, folder = micro_run
    out = folder / "report"
    names = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert names == sorted(f"{v}-seed{s}-lr0.01.json" for v in VARIANTS for s in (0, 1))
    assert results["complete"] and not results["missing"] and results["best_lr"] == {v: 0.01 for v in VARIANTS}
    assert report.load_results(out) == files.as_saved(results)
    for name in (report.RESULTS_FILE, report.COMPARISON_FILE, report.CURVES_FILE, report.SUMMARY_FILE,
                 report.PLAN_FILE, report.BASELINES_FILE):
        assert (out / name).exists(), name
    for name in (report.CURVES_FILE, report.SUMMARY_FILE):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 300_000, (name, len(data))
    text = (out / report.COMPARISON_FILE).read_text()
    assert "RoBERTa-ReImp_base" in text and "84.9" in text and "v1 layout" in text and "paired t-test" in text
    [ended] = results["wall_s"]  # the command's own wall time, kept in plan.json and so in results.json
    assert ended["command"] == 0 and 0 < ended["seconds"] < 3600
    assert f"Wall time {ended['seconds'] / 60:.1f} minutes, the sum over the 1 of 1 command(s) that ended" in text
    for r in results["runs"].values():  # every run: the same FLOPs, checked against the plateau, probed
        assert abs(r["flops"] - results["flops_per_run"]) <= r["flops"] / r["steps"], r  # to within one step
        assert isinstance(r["on_plateau"], bool) and 0 <= r["position_probe"] <= 1 and 0 <= r["topic_probe"] <= 1
        assert r["curve"]["step"][0] == 0 and r["curve"]["step"][-1] == r["steps"] and r["val_auc"] > 0
    b = results["baselines"]
    assert 0.5 <= b["sentiment"]["majority"] <= 1 and len(b["sentiment"]["random_init"]) == 2
    assert set(b["random_init"]) == set(VARIANTS) and b["topics"]["per_class"] == 2
    assert b["unigram"]["val_loss"] > 0


def test_every_claim_and_measure_has_a_test_or_says_why_not(micro_run):
    results, _ = micro_run
    claims = [c for c in results["claims"] if c["metric"]]
    assert len(claims) == 4 * len(report.METRICS)
    for c in claims:
        assert c["verdict"] in (*stats.VERDICTS, None) and c["test"]["n"] <= 2
        assert c["verdict"] is not None or c["note"].startswith("not tested"), c


def test_a_second_command_resumes_and_redoes_only_what_is_missing(micro_run):
    results, folder = micro_run
    out = folder / "report"
    runs = out / "runs"
    kept = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    (runs / "no_c2p-seed1-lr0.01.json").unlink()
    partial = publish.write_report(out, figures=False)
    assert not partial["complete"] and partial["missing"] == ["no_c2p-seed1-lr0.01"]
    assert "MISSING" in (out / report.COMPARISON_FILE).read_text()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(corpus.DATA_ENV, str(folder / "data"))
        again = run_ablation(_micro_scale(), out, sentiment_file=folder / "snippets.txt", progress=False)
        assert again["complete"]
        now = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
        assert {k: v for k, v in now.items() if k != "no_c2p-seed1-lr0.01.json"} == {
            k: v for k, v in kept.items() if k != "no_c2p-seed1-lr0.01.json"}  # the others were not redone
        saved = json.loads((out / report.PLAN_FILE).read_text())
        assert len(saved["commands"]) == 2 and [w["command"] for w in saved["wall_s"]] == [0, 1]  # both times kept
        total = sum(w["seconds"] for w in saved["wall_s"])
        assert f"Wall time {total / 60:.1f} minutes, the sum over the 2 of 2" in (out / report.COMPARISON_FILE).read_text()
        with pytest.raises(ValueError, match="another experiment"):  # another plan in the same folder
            run_ablation(_micro_scale(), out, sentiment_file=folder / "snippets.txt", progress=False, evals=3)


def test_a_command_on_a_finished_folder_trains_and_rewrites_nothing(micro_run, capsys):
    """Run again where every run is made (as on the committed results/ablation-cpu), the folder stays byte for byte
    as it was: before, the plan gained the command and a 'later_hardware' entry, and the report a new build time."""
    results, folder = micro_run
    out = folder / "report"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(corpus.DATA_ENV, str(folder / "data"))
        mp.setattr(timing, "smoke_check", lambda *a: pytest.fail("a smoke check on a finished folder (GPU time)"))
        again = run_ablation(_micro_scale(), out, sentiment_file=folder / "snippets.txt", progress=False,
                             smoke_first=True)  # what reproduce_gpu.sh run asks for
    assert again["complete"] and "nothing trained, nothing rewritten" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_plateau_runs_and_constant_classifiers_are_reported(micro_run):
    results, folder = micro_run
    plan_, runs, baselines = report.load_folder(folder / "report")
    unigram = dict(baselines["unigram"])
    record = dict(runs["bert-seed0-lr0.01"])
    record["sentiment"] = {**record["sentiment"], "constant": True}
    summary = report.run_summary(record, {**unigram, "val_loss": record["metrics"]["val_loss"] + 0.1})
    assert summary["on_plateau"] and summary["sentiment"] is None and summary["sentiment_raw"] is not None
    summaries = {rid: report.run_summary(r, unigram) for rid, r in runs.items()}
    summaries["bert-seed0-lr0.01"] = summary
    main = {v: {s: f"{v}-seed{s}-lr0.01" for s in (0, 1)} for v in VARIANTS}
    bert = [c for c in report.claims(main, summaries) if c["other"] == "bert" and c["metric"]]
    assert len(bert) == len(report.METRICS), bert  # one claim per metric, none dropped
    assert all(c["verdict"] is None and "bert-seed0-lr0.01" in c["note"] and "on the plateau" in c["note"]
               for c in bert)


# ----------------------------------------------------------------------------- the report, on numbers made by hand


# final held-out loss on the grid seed (0) at each rate, and at the best rate on seed 1; masked-token accuracy per seed
HAND_GRID = {"bert": (4.5, 3.9, 3.6), "deberta": (3.4, 3.0, 4.5), "no_emd": (3.2, 3.3, 4.5),
             "no_c2p": (3.6, 3.3, 4.5), "no_p2c": (3.7, 3.4, 4.5)}
HAND_SEED1 = {"bert": 3.62, "deberta": 3.1, "no_emd": 3.2, "no_c2p": 3.4, "no_p2c": 3.3}
HAND_ACCURACY = {"bert": (0.25, 0.27), "deberta": (0.30, 0.32), "no_emd": (0.29, 0.29), "no_c2p": (0.30, 0.33),
                 "no_p2c": (0.31, 0.30)}
HAND_RATES = (1e-3, 2e-3, 4e-3)


def _hand_record(variant, seed, lr, loss):
    """A run of 10 steps, evaluated at steps 0, 4 and 10; BERT-style sees 200 tokens a step, the others 100.
    BERT-style's curve passes 4.1 (seed 0) and 4.2 (seed 1) at 1,000 tokens, where DeBERTa's runs end."""
    per_step = 200 if variant == "bert" else 100
    mid = {3.6: 4.2, 3.62: 4.316}.get(loss, loss + 0.5)
    accuracy = HAND_ACCURACY[variant][seed]
    evals = [{"step": s, "tokens": s * per_step, "val_loss": v, "val_accuracy": a}
             for s, v, a in ((0, 6.5, 0.0), (4, mid, accuracy / 2), (10, loss, accuracy))]
    return {"run": plan.run_id(variant, seed, lr), "variant": variant, "seed": seed, "lr": lr, "steps": 10,
            "tokens": 10 * per_step, "flops": 1e9, "evals": evals,
            "metrics": {"val_loss": loss, "val_accuracy": accuracy, "val_perplexity": 2.718**loss},
            "position_probe": {"accuracy": 0.6 + 0.01 * seed}, "topic_probe": {"accuracy": 0.7 - 0.02 * seed},
            "sentiment": {"test": 0.6 + 0.01 * seed + 0.001 * len(variant), "constant": False}}


def _hand_folder(folder):
    runs = [_hand_record(v, 0, lr, loss) for v, losses in HAND_GRID.items() for lr, loss in zip(HAND_RATES, losses,
                                                                                                 strict=True)]
    runs += [_hand_record(v, 1, HAND_RATES[losses.index(min(losses))], HAND_SEED1[v]) for v, losses in HAND_GRID.items()]
    for r in runs:
        jobs._write(folder / jobs.RUNS_DIR / f"{r['run']}.json", r)
    jobs._write(folder / report.PLAN_FILE, {
        "schema": "deberta_edu/ablation-plan/2", "scale": "hand", "layout": "v1", "layout_note": "v1 layout",
        "description": "made by hand", "cpu_scale": True, "seeds": [0, 1], "lr_grid": list(HAND_RATES), "evals": 2,
        "budget_tokens": 1000, "flops_per_run": 1e9, "commands": ["by hand"], "software": {"torch": "-"},
        "train_config": {"whole_word_masking": True, "mlm_probability": 0.15},
        "hardware": {"gpu": None, "cpu": "hand", "workers": 1, "threads_per_worker": 1}})
    jobs._write(folder / report.BASELINES_FILE, {
        "unigram": {"val_loss": 6.0, "val_accuracy": 0.05}, "random_init": {},
        "sentiment": {"test_examples": 10, "train_examples": 20, "majority": 0.5, "bag_of_words": 0.6,
                      "random_init": [{"test": 0.55}]}})


def test_the_report_of_runs_made_by_hand(tmp_path):
    _hand_folder(tmp_path)
    results = publish.write_report(tmp_path, figures=False)
    assert results["complete"] and results["missing"] == [] and results["on_plateau"] == []
    # the best rate is the one with the lowest final loss; BERT-style's and −EMD's are at the grid's edges
    assert results["best_lr"] == {"bert": 4e-3, "deberta": 2e-3, "no_emd": 1e-3, "no_c2p": 2e-3, "no_p2c": 2e-3}
    assert sorted(results["best_lr_at_grid_edge"]) == ["bert", "no_emd"]
    loss = results["table"]["deberta"]["val_loss"]
    assert loss["mean"] == pytest.approx(3.05) and loss["std"] == pytest.approx(0.1 / 2**0.5) and loss["n"] == 2
    # equal tokens: every curve read at the 1,000 tokens DeBERTa's runs end at
    eq = results["equal_tokens"]
    assert eq["tokens"] == 1000 and eq["variants"]["deberta"]["mean"] == pytest.approx(3.05)
    assert eq["variants"]["bert"]["values"] == pytest.approx([4.1, 4.2])
    claims = {(c["other"], c["metric"]): c for c in results["claims"]}
    # DeBERTa − BERT-style, held-out loss, per seed: 3.0 − 3.6 and 3.1 − 3.62; t = −0.56 / (0.0566 / √2) = −14
    bert = claims["bert", "val_loss"]
    d = [-0.6, -0.52]
    assert bert["test"]["differences"] == pytest.approx(d) and bert["test"]["mean_difference"] == pytest.approx(-0.56)
    t = -0.56 / (statistics.stdev(d) / 2**0.5)
    assert bert["test"]["p"] == pytest.approx(2 * scipy_stats.t.sf(abs(t), 1))  # 0.045, 1 degree of freedom
    assert bert["verdict"] == "agrees"  # lower loss: the paper's way round
    accuracy = claims["no_emd", "val_accuracy"]  # differences 0.01 and 0.03: within noise with two seeds
    assert accuracy["test"]["mean_difference"] == pytest.approx(0.02) and accuracy["verdict"] == "within noise"
    text = (tmp_path / report.COMPARISON_FILE).read_text()
    # in points: 2 ± t_{0.975, 1} (12.71) x 1.414 / √2
    assert "| DeBERTa better than −EMD | masked-token accuracy (held out) | +2 pt (n=2) | -10.7 … +14.7 |" in text
    findings = "\n".join(publish.markdown.findings(results))
    assert "Every one of the 20 finished runs ended at least 1.50 nats below it." in findings  # 6.0 − the worst 4.5
    assert "DeBERTa better than −C2P? Paper: +0.4 MNLI-m, +2.4 RACE." in findings  # Table 4: 86.3 − 85.9, 71.7 − 69.3
    assert "DeBERTa better than BERT-style? Paper: +1.4 MNLI-m, +4.9 RACE." in findings
    (tmp_path / report.BASELINES_FILE).unlink()
    assert not report.summarize(tmp_path)["complete"]  # every run, but no baselines: not complete


def test_the_committed_report_is_what_the_code_makes_of_its_run_files():
    folder = RESULTS_ROOT / "ablation-cpu"
    committed = report.load_results(folder)
    rebuilt = files.as_saved(report.summarize(folder))
    rebuilt.update(report_built=committed["report_built"], files=committed["files"])
    assert rebuilt == committed
    assert publish.markdown.comparison(rebuilt) == (folder / report.COMPARISON_FILE).read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- the measures and baselines


def test_the_topic_probe_is_the_mean_over_the_draws(monkeypatch):
    monkeypatch.setattr(metrics.documents, "document_features", lambda encoder, tok, texts, *a: torch.zeros(len(texts), 2))
    accuracies = iter([0.5, 1.0, 0.6])
    monkeypatch.setattr(metrics.bow, "linear_probe", lambda *a, **k: next(accuracies))
    model = SimpleNamespace(deberta=SimpleNamespace(config=None))
    data = {"draws": [(["a"], [0]), (["b"], [1]), (["c"], [0])], "test": (["d", "e"], [0, 1])}
    found = metrics.topic_probe(model, object(), data, {"max_chunks": 1}, 16)
    assert found["draws"] == [0.5, 1.0, 0.6] and found["accuracy"] == pytest.approx(0.7)


@pytest.mark.parametrize("share, constant", [(0.0, True), (1.0, True), (0.5, False), (0.98, False)])
def test_a_classifier_with_one_answer_for_every_snippet_is_constant(monkeypatch, share, constant):
    monkeypatch.setattr(metrics, "finetune", lambda *a: SimpleNamespace(model=None, test_accuracy=0.5, dev_accuracy=0.5))
    monkeypatch.setattr(metrics, "_positive_share", lambda *a: share)
    settings = dict(lr=1e-3, epochs=1.0, batch_size=8, max_length=16)
    assert metrics.sentiment(None, None, {"test": []}, settings, 0, "cpu")["constant"] is constant


def test_the_bag_of_words_baselines_learn_from_the_training_texts_only(monkeypatch):
    for name in ("_random_model", "position_probe", "topic_probe"):
        monkeypatch.setattr(metrics, name, lambda *a: None)
    monkeypatch.setattr(metrics, "sentiment", lambda *a: {"test": 0.5})
    example = lambda text, label: SimpleNamespace(text=text, label=label)  # noqa: E731
    # the first two training snippets (max_train_examples) say good -> 1, bad -> 0; the test snippets the reverse
    splits = {"train": [example("good film", 1), example("bad film", 0), example("bad bad", 1)],
              "test": [example("good", 0), example("bad", 1), example("bad", 1)]}
    topics = {"draws": [(["goal", "vote"], [0, 1]), (["vote", "goal"], [0, 1])], "test": (["goal", "vote"], [0, 1])}
    scale = SimpleNamespace(finetune={"max_train_examples": 2}, topics={"per_class": 1}, probe={}, random_init_finetunes=1)
    out = metrics.baselines({"deberta": SimpleNamespace(seq_length=16)}, SimpleNamespace(vocab_size=10), scale, splits, topics, "cpu",
                            log=lambda line: None)
    assert out["sentiment"]["bag_of_words"] == 0.0 and out["sentiment"]["train_examples"] == 2
    assert out["sentiment"]["majority"] == pytest.approx(2 / 3)
    assert out["topics"]["bag_of_words"] == 0.5  # right on every document with the first draw, wrong with the second


def test_the_committed_run_is_of_this_design_or_not_shown(tmp_path):
    folder = report.committed_results()  # a committed run is of this design: the GPU one where there is one
    gpu = (RESULTS_ROOT / "ablation-gpu" / report.RESULTS_FILE).exists()
    assert folder == RESULTS_ROOT / ("ablation-gpu" if gpu else "ablation-cpu")
    assert report.load_results(folder)["schema"] == report.SCHEMA
    for name, schema in (("ablation-gpu", "an older design"), ("ablation-cpu", report.SCHEMA)):
        (tmp_path / name).mkdir()
        (tmp_path / name / report.RESULTS_FILE).write_text(json.dumps({"schema": schema}))
    assert report.committed_results(tmp_path) == tmp_path / "ablation-cpu"  # a run of another design is passed over
    with pytest.raises(ValueError, match="another design"):
        report.load_results(tmp_path / "ablation-gpu")  # and refused when asked for by name
    (tmp_path / "ablation-cpu" / report.RESULTS_FILE).unlink()
    assert report.committed_results(tmp_path) is None  # nothing of this design: nothing shown


def test_the_command_line(capsys, micro_run):
    _, folder = micro_run
    assert reproduce.main(["--list"]) is None
    out = capsys.readouterr().out
    assert all(name in out for name in plan.SCALES)
    with pytest.raises(SystemExit) as e:
        reproduce.main(["--help"])
    assert e.value.code == 0 and "--rebuild" in capsys.readouterr().out
    assert reproduce.main(["--missing", str(folder / "report")])["complete"]
    with pytest.raises(SystemExit, match="not an ablation folder"):
        reproduce.main(["--missing", str(folder)])


# ----------------------------------------------------------------------------- the exercise


def test_check_verdict(capsys):
    def right(a, b):
        p = scipy_stats.ttest_rel(a, b).pvalue
        return "noise" if not p < 0.05 else ("A" if statistics.mean(a) > statistics.mean(b) else "B")

    assert exercises.check_verdict(right)
    assert "all 10 cases pass" in capsys.readouterr().out
    assert not exercises.check_verdict(lambda a, b: (_ for _ in ()).throw(NotImplementedError)).attempted
    with pytest.raises(AssertionError, match="A and B swapped"):
        exercises.check_verdict(lambda a, b: right(b, a))
    for rule in ("2 SE", "2 SE paired"):  # either standard error: the same mistake
        with pytest.raises(AssertionError, match="'2 SE'"):
            exercises.check_verdict(lambda a, b, rule=rule: exercises.lesson6._verdict(a, b, rule=rule))
    with pytest.raises(AssertionError, match="'unpaired'"):
        exercises.check_verdict(lambda a, b: exercises.lesson6._verdict(a, b, rule="welch"))
    for rule, named in (("every seed agrees", "every seed agrees"), ("ddof 0", "t by hand"), ("n df", "t by hand")):
        with pytest.raises(AssertionError, match=f"this looks like '{named}'"):
            exercises.check_verdict(lambda a, b, rule=rule: exercises.lesson6._verdict(a, b, rule=rule))
    with pytest.raises(AssertionError, match="expected 'A', got 'noise'"):
        exercises.check_verdict(lambda a, b: "noise")
    with pytest.raises(AssertionError, match="1 of 10 cases fail"):  # a stricter level than the 0.05 asked for
        exercises.check_verdict(lambda a, b: right(a, b) if scipy_stats.ttest_rel(a, b).pvalue < 0.025 else "noise")


def test_the_verdict_rule_is_the_reports():
    for a, b, want in exercises.lesson6.VERDICT_CASES:
        verdict = stats.verdict(stats.paired_test(a, b), higher_is_better=True)
        assert verdict == {"A": "agrees", "B": "disagrees", "noise": "within noise"}[want], (a, b)


def test_the_plateau_line_says_how_many_stuck_runs_end_above_the_unigram():
    """Lesson 6's smoke runs end above the unigram loss, yet the line said only ON THE PLATEAU (the table beside
    it said "loss above the unigram's"); the committed CPU run has 3 such runs of its 6 on the plateau."""
    results = {"unigram_baseline": {"val_loss": 6.9, "val_accuracy": 0.04}, "on_plateau": ["a", "b"],
               "runs": {"a": {"val_loss": 7.0}, "b": {"val_loss": 6.8}, "c": {"val_loss": 5.0}}}
    [line] = publish.markdown.plateau_lines(results)
    assert "ON THE PLATEAU: a, b (2 of 3 runs; 1 of them end above it, short of even the word frequencies)" in line
    results["runs"]["a"]["val_loss"] = 6.85
    assert "(2 of 3 runs); no claim" in publish.markdown.plateau_lines(results)[0]
    committed = report.load_results(RESULTS_ROOT / "ablation-cpu")
    assert "(6 of 25 runs; 3 of them end above it" in publish.markdown.plateau_lines(committed)[0]


def test_the_reports_accuracies_are_drawn_in_percent():
    """The figures showed accuracies as fractions (0.175) beside the paper's panel and tables in percent."""
    from deberta_edu.ablation import plots

    results = report.load_results(RESULTS_ROOT / "ablation-cpu")
    curves, summary = plots.plot_curves(results), plots.plot_summary(results)
    accuracy_axes = [curves.axes[2], *(ax for ax in summary.axes[:6] if "probe" in ax.get_title()
                                       or ax.get_title().startswith("sentiment"))]
    assert len(accuracy_axes) == 4
    assert all(ax.yaxis.get_major_formatter()(0.5, 0).startswith("50") for ax in accuracy_axes)


@pytest.mark.parametrize(("deadline_s", "most"), [(None, 1000.0), (50.0, 50.0)])
def test_the_budget_is_fitted_to_what_is_left_of_the_deadline(tmp_path, monkeypatch, deadline_s, most):
    """scripts/reproduce_gpu.sh gives the command a deadline (BUDGET − MARGIN − the import): a BUDGET lowered
    below the scale's fit_seconds used to fit the runs to fit_seconds anyway, so the deadline cut them and a
    second command had to finish them. The fit now takes the smaller of the two."""
    fitted = []

    class Fitted(Exception):
        pass

    def fit_budget(scale, smoke, seconds, baselines_s=0.0):
        fitted.append(seconds)
        raise Fitted

    monkeypatch.setattr(timing, "smoke_check", lambda *a, **k: {"variants": {"deberta": {"metrics_s": 1.0}}})
    monkeypatch.setattr(timing, "fit_budget", fit_budget)
    with pytest.raises(Fitted):
        run_ablation("smoke", tmp_path, fit_seconds=1000.0, deadline_s=deadline_s, progress=False)
    assert len(fitted) == 1 and most - 5 < fitted[0] <= most
