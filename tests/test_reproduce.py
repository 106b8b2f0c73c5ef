"""Lesson 6's ablation: the runs differ in the variant alone, see the same data, and write a complete report."""

import json
import math
import random
import statistics

import pytest
import torch

from deberta_edu import exercises
from deberta_edu.ablation import plan, report, reproduce
from deberta_edu.ablation.plan import NOISE_RUN, VARIANTS, Scale, get_scale, variant_configs
from deberta_edu.ablation.run import run_ablation
from deberta_edu.data import corpus
from deberta_edu.training.configs import TrainConfig
from deberta_edu.training.engine import Distributed
from deberta_edu.training.flops import train_flops_per_token
from deberta_edu.training.mlm_data import Batches, MaskSpec, synthetic_data

WORDS = "the model learns to predict masked words from context while attention mixes content and position".split()


@pytest.mark.parametrize("name", sorted(plan.SCALES))
def test_the_runs_differ_only_in_the_variant(name):
    configs = variant_configs(get_scale(name))
    assert set(VARIANTS) <= set(configs)
    plan.check_only_variant_differs(configs)
    for v in VARIANTS:
        assert plan.config_differences(configs["deberta"], configs[v]) == (
            {} if v == "deberta" else {"variant": ("deberta", v)})
    if NOISE_RUN in configs:
        assert set(plan.config_differences(configs["deberta"], configs[NOISE_RUN])) == {"seed"}
    # the variants are the paper's: BERT-style input positions, and one piece of DeBERTa removed at a time
    models = {v: configs[v].model_config() for v in VARIANTS}
    assert models["bert"].position_biased_input and not models["bert"].relative_attention
    assert models["deberta"].emd and models["deberta"].terms == ("c2c", "c2p", "p2c")
    assert not models["no_emd"].emd and models["no_emd"].terms == ("c2c", "c2p", "p2c")
    assert models["no_c2p"].emd and models["no_c2p"].terms == ("c2c", "p2c")
    assert models["no_p2c"].emd and models["no_p2c"].terms == ("c2c", "c2p")


def test_a_config_that_differs_in_more_is_refused():
    configs = variant_configs(get_scale("smoke"))
    configs["no_emd"] = configs["no_emd"].replace(lr=1e-4)
    with pytest.raises(ValueError, match="more than the variant"):
        plan.check_only_variant_differs(configs)


def test_every_variant_sees_the_same_rows_and_masks():
    scale = get_scale("cpu")  # it has the noise run
    scale.train = scale.train.replace(source="synthetic", vocab_size=64, seq_length=32)
    data = synthetic_data(96, 32, 64)
    batches = {v: Batches(data, cfg, MaskSpec.of(cfg), Distributed()) for v, cfg in variant_configs(scale).items()}
    for step in (0, 1, 5, 13):  # 13: the second epoch, a new order
        reference = batches["deberta"].global_batch(step)
        for v in VARIANTS:
            assert all(torch.equal(a, b) for a, b in zip(reference, batches[v].global_batch(step), strict=True)), v
    other_seed = batches[NOISE_RUN].global_batch(0)
    assert not torch.equal(other_seed[0], batches["deberta"].global_batch(0)[0])  # the yardstick draws anew


def test_flops_count_the_emd_and_the_position_terms():
    cfgs = variant_configs(get_scale("gpu"))
    flops = {v: train_flops_per_token(cfgs[v].model_config(), 512) for v in VARIANTS}
    assert flops["deberta"] > flops["no_c2p"] == flops["no_p2c"] > flops["no_emd"] > flops["bert"]
    assert 1.5e8 < flops["deberta"] < 3e8  # ~2e8 for the small size at 512 tokens (the GPU scale's sizing)


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    """A whole ablation on a 40-word corpus and 60 fake snippets: a few seconds."""
    folder = tmp_path_factory.mktemp("ablation")
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))).capitalize() + "." for _ in range(200)]
    (folder / "corpus.txt").write_text("\n\n".join(docs))
    lines = ["id\tsentiment\ttext"] + [
        f"{i}\t{1.5 if i % 2 else -1.5}\t{'the model learns' if i % 2 else 'attention mixes'} {rng.choice(WORDS)}"
        for i in range(60)
    ]
    (folder / "snippets.txt").write_text("\n".join(lines) + "\n")
    model = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64, position_buckets=16)
    scale = Scale(
        name="micro", description="test",
        train=TrainConfig(size="tiny", model_overrides=model, source=str(folder / "corpus.txt"), vocab_size=320,
                          seq_length=32, batch_size=8, steps=12, lr=1e-2, dropout=0.0, log_every=2, eval_every=6,
                          eval_rows=16, eval_batch_size=16, save_every=0),
        finetune=dict(lr=1e-3, epochs=1.0, batch_size=8, max_length=16), finetune_seeds=(0, 1), threads=1,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(corpus.DATA_ENV, str(folder / "data"))
        results = run_ablation(scale, folder / "report", sentiment_file=folder / "snippets.txt",
                                         progress=False)
    return results, folder / "report"


def test_results_json_has_the_promised_fields(micro_run):
    results, out = micro_run
    saved = report.load_results(out)
    assert saved == json.loads(json.dumps(results))
    for key in ("scale", "cpu_scale", "command", "hardware", "software", "wall_time_s", "train_config",
                "tokens_per_run", "finetune_config", "variants", "noise", "paper", "comparison"):
        assert key in saved, key
    assert saved["hardware"]["cpu"] and "gpu" in saved["hardware"]
    assert saved["software"]["torch"] == torch.__version__ and "transformers" in saved["software"]
    assert list(saved["variants"]) == list(VARIANTS) and saved["cpu_scale"] is True
    assert saved["tokens_per_run"] == 12 * 8 * 32
    for v, r in saved["variants"].items():
        assert r["tokens"] == saved["tokens_per_run"], v
        assert r["val_loss"] > 0 and 0 <= r["val_accuracy"] <= 1 and r["val_perplexity"] > 1
        assert len(r["finetune"]["test"]) == 2 and 0 <= r["finetune"]["test_mean"] <= 1
        assert r["curves"]["eval"]["step"] == [0, 6, 12] and len(r["curves"]["train"]["loss"]) == 6
    assert saved["noise"]["seed"] == 1 and saved["comparison"]["seed_noise_val_loss"] is not None
    assert {c["other"] for c in saved["comparison"]["claims"]} == {"bert", "no_emd", "no_c2p", "no_p2c"}
    report.assert_learning(saved)


def test_the_report_files_are_written_and_small(micro_run):
    results, out = micro_run
    for name in results["files"]:
        assert (out / name).exists(), name
    for name in (report.CURVES_FILE, report.SUMMARY_FILE):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000, (name, len(data))
    assert (out / report.RESULTS_FILE).stat().st_size < 200_000
    text = (out / report.COMPARISON_FILE).read_text()
    assert "RoBERTa-ReImp_base" in text and "84.9" in text and "71.7" in text  # the paper, side by side
    assert "scale (CPU)" in text  # a CPU run says so


def test_a_loss_that_does_not_fall_is_reported(micro_run):
    results, _ = micro_run
    broken = json.loads(json.dumps(results))
    broken["variants"]["no_c2p"]["val_loss"] = broken["variants"]["no_c2p"]["val_loss_start"] + 1
    with pytest.raises(AssertionError, match="no_c2p: held-out loss"):
        report.assert_learning(broken)


def test_a_diverged_run_is_reported_not_fatal(micro_run, tmp_path):
    results, _ = micro_run
    broken = json.loads(json.dumps(results))
    broken["variants"]["no_p2c"] = {"label": "−P2C", "variant": "no_p2c", "seed": 0,
                                    "failed": "the training loss became nan at step 7"}
    broken["comparison"] = report.compare_with_paper(broken)
    assert broken["comparison"]["failed_runs"] == ["no_p2c"]
    assert "no_p2c" not in broken["comparison"]["our_order_val_loss"]
    report.write_report(broken, tmp_path)
    assert "failed: the training loss became nan" in (tmp_path / report.COMPARISON_FILE).read_text()
    with pytest.raises(AssertionError, match="no_p2c: the training loss became nan"):
        report.assert_learning(broken)


def test_a_report_is_rebuilt_from_its_results(micro_run, tmp_path):
    results, out = micro_run
    folder = tmp_path / "rebuilt"
    folder.mkdir()
    (folder / report.RESULTS_FILE).write_bytes((out / report.RESULTS_FILE).read_bytes())
    rebuilt = report.rebuild_report(folder)
    assert rebuilt["comparison"] == json.loads(json.dumps(results["comparison"])) and "report_rebuilt" in rebuilt
    assert all((folder / name).exists() for name in results["files"])
    (folder / report.RESULTS_FILE).write_text(json.dumps({"schema": "something else"}))
    with pytest.raises(ValueError, match="not an ablation result"):
        report.load_results(folder)


def test_the_committed_run_is_found():
    folder = report.committed_results()
    assert folder is not None and folder.parent.name == "results", folder
    assert report.load_results(folder)["scale"] in ("cpu", "gpu")


def test_the_command_line_lists_the_scales(capsys):
    assert reproduce.main(["--list"]) is None
    out = capsys.readouterr().out
    assert all(name in out for name in plan.SCALES)
    with pytest.raises(SystemExit) as e:
        reproduce.main(["--help"])
    assert e.value.code == 0 and "--rebuild" in capsys.readouterr().out


def test_check_verdict(capsys):
    def right(a, b):
        n = len(a)
        diff = statistics.mean(a) - statistics.mean(b)
        if abs(diff) <= 2 * math.sqrt((statistics.stdev(a) ** 2 + statistics.stdev(b) ** 2) / n):
            return "noise"
        return "A" if diff > 0 else "B"

    assert exercises.check_verdict(right)
    assert "all 7 cases pass" in capsys.readouterr().out
    assert not exercises.check_verdict(lambda a, b: (_ for _ in ()).throw(NotImplementedError)).attempted
    with pytest.raises(AssertionError, match="A and B swapped"):
        exercises.check_verdict(lambda a, b: right(b, a))
    with pytest.raises(AssertionError, match="'one SE'"):
        exercises.check_verdict(lambda a, b: exercises.lesson6._verdict(a, b, ses=1.0))
    with pytest.raises(AssertionError, match="'population std'"):
        exercises.check_verdict(lambda a, b: exercises.lesson6._verdict(a, b, std=statistics.pstdev))
    with pytest.raises(AssertionError, match="expected 'A', got 'noise'"):
        exercises.check_verdict(lambda a, b: "noise")


def test_the_verdict_rule_is_the_reports():
    # the checker's reference and report.compare_with_paper call the same differences noise
    for a, b, want in exercises.lesson6.VERDICT_CASES:
        finetune = {x: {"test": t, "test_mean": statistics.mean(t), "test_std": statistics.stdev(t)}
                    for x, t in (("deberta", a), ("bert", b))}
        verdict = report._claim({x: {"val_loss": 1.0, "finetune": f} for x, f in finetune.items()}, "bert", None)
        assert verdict["finetune_verdict"] == {"A": "agrees", "B": "disagrees", "noise": "within fine-tuning noise"}[want]
