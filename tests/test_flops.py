"""training.flops: one FLOP model, checked by hand on a small config, and what its two users get from it."""

import argparse
import json

import pytest
import torch

from deberta_edu import exercises
from deberta_edu.ablation import plan
from deberta_edu.model.config import DebertaConfig
from deberta_edu.model.positions import table_span
from deberta_edu.training import bench
from deberta_edu.training.flops import relative_rows, train_flops_per_token


def not_yet(*args):
    raise NotImplementedError


def small(**changes) -> DebertaConfig:
    # D = 8, F = 16, V = 100, 2 layers, k = 4 with the plain clamp (v1): a table of 2k = 8 rows
    base = dict(vocab_size=100, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
                max_position_embeddings=16, max_relative_positions=4, position_buckets=-1)
    return DebertaConfig(**{**base, **changes})


def test_a_hand_count():
    # L = 8: 2L − 1 = 15 distances, more than the 8 rows, so R = 8 (the whole table)
    projections_ffn = 2 * (4 * 8 * 8 + 2 * 8 * 16)  # 1,024: W_q, W_k, W_v, W_out and the FFN
    c2c_and_values = 2 * 2 * 8 * 8  # 256: scores and probs @ V against 8 keys
    position_terms = 2 * (2 * 8 * 8)  # 256: c2p and p2c, each against R = 8 rows
    layer = projections_ffn + c2c_and_values + position_terms  # 1,536
    # the EMD: two passes; the masked 15% of queries pay W_q, W_out, the FFN, the scores, probs @ V and c2p ...
    emd_queries = 2 * (2 * 8 * 8 + 2 * 8 * 16) + c2c_and_values + 2 * 8 * 8  # 1,152
    # ... and every position pays K and V of H and p2c's key side
    emd_keys = 2 * (2 * 8 * 8) + 2 * 8 * 8  # 384
    emd = 2 * (0.15 * emd_queries + emd_keys)  # 1,113.6
    head = 0.15 * 2 * (8 * 8 + 8 * 100)  # 259.2: on the masked 15%
    by_hand = 3 * (2 * layer + emd + head)
    assert by_hand == pytest.approx(13_334.4)
    assert relative_rows(small(), 8) == 8
    assert train_flops_per_token(small(), 8) == pytest.approx(by_hand, rel=1e-12)
    # L = 3: 2L − 1 = 5 distances, fewer than the 8 rows: R = 5
    assert relative_rows(small(), 3) == 5
    layer_3 = 1024 + 2 * 2 * 3 * 8 + 2 * (2 * 5 * 8)
    emd_3 = 2 * (0.15 * (768 + 2 * 2 * 3 * 8 + 2 * 5 * 8) + 256 + 2 * 5 * 8)
    assert train_flops_per_token(small(), 3) == pytest.approx(3 * (2 * layer_3 + emd_3 + head), rel=1e-12)
    # no EMD: the EMD's share gone; BERT-style: no relative table, no position terms
    assert train_flops_per_token(small(emd=False), 8) == pytest.approx(by_hand - 3 * emd, rel=1e-12)
    bert = small(relative_attention=False, terms=("c2c",), emd=False)
    assert relative_rows(bert, 8) == 0
    assert train_flops_per_token(bert, 8) == pytest.approx(3 * (2 * (1024 + 256) + head), rel=1e-12)
    # logits everywhere: the EMD decodes every query and the head runs on every token
    assert train_flops_per_token(small(), 8, head_fraction=1.0) == pytest.approx(
        3 * (2 * layer + 2 * (emd_queries + emd_keys) + 2 * (8 * 8 + 8 * 100)), rel=1e-12)
    # −C2P keeps p2c's key side in the EMD, −P2C keeps c2p's query side
    no_c2p = small(terms=("c2c", "p2c"))
    assert train_flops_per_token(no_c2p, 8) == pytest.approx(
        3 * (2 * (layer - 128) + 2 * (0.15 * (emd_queries - 128) + emd_keys) + head), rel=1e-12)
    no_p2c = small(terms=("c2c", "c2p"))
    assert train_flops_per_token(no_p2c, 8) == pytest.approx(
        3 * (2 * (layer - 128) + 2 * (0.15 * emd_queries + emd_keys - 128) + head), rel=1e-12)


# What the ablation's cost (plan.run_cost) gives, pinned: BERT-style and −EMD as before the FLOP models became
# one (measured on the code before that change, to the last digit); the EMD variants since the EMD decodes only
# the masked tokens (less than the two full passes they were charged before).
ABLATION_BEFORE = {
    "smoke": {"bert": 1250918.4, "deberta": 2069337.6, "no_emd": 1642598.4, "no_c2p": 1844121.6,
              "no_p2c": 1677657.6},
    "cpu": {"bert": 3688857.6, "deberta": 5669760.0, "no_emd": 4472217.6, "no_c2p": 5219328.0,
            "no_p2c": 4886400.0},
    "gpu": {"bert": 147102105.6, "deberta": 181547827.2, "no_emd": 165976473.6, "no_c2p": 171638784.0,
            "no_p2c": 168964915.2},
}


@pytest.mark.parametrize("scale", sorted(ABLATION_BEFORE))
def test_the_ablation_costs_what_it_cost_before(scale):
    configs = plan.variant_configs(plan.get_scale(scale, layout="v3"))  # the layout these were measured in
    assert {run: plan.run_cost(cfg) for run, cfg in configs.items()} == pytest.approx(ABLATION_BEFORE[scale],
                                                                                      rel=1e-12)


# bench.flops_per_token before: its own rough count, 3 x (layers x [2 (4 D² + 2 D F) + 12 L D] + 2 (D² + D V)),
# that is three score terms and the values each against L keys. Now: c2c and probs @ V against L keys, c2p and
# p2c against the R rows they gather. Everything else is the same count, so the two differ by exactly
# 3 x layers x D x (12 L − 4 L − 2 x 2 R).
BENCH_BEFORE = {"cpu": 36_274_176, "base": 1_273_300_992}
BENCH_NOW = {"cpu": 36_261_888, "base": 1_216_677_888}  # −0.03% (R = 255 ≈ 2L) and −4.4% (R = 512 = L)


@pytest.mark.parametrize("preset", sorted(BENCH_BEFORE))
def test_the_benchmark_counts_with_the_same_model(preset):
    args = argparse.Namespace(**bench.PRESETS[preset])
    now = bench.flops_per_token(args)
    assert now == pytest.approx(BENCH_NOW[preset], rel=1e-12)
    R = min(2 * args.buckets, 2 * args.length - 1)
    rough_minus_counted = 3 * args.layers * args.hidden * (12 * args.length - 4 * args.length - 2 * 2 * R)
    assert BENCH_BEFORE[preset] - now == pytest.approx(rough_minus_counted, rel=1e-12)


def test_check_flops(capsys):
    assert exercises.check_flops(train_flops_per_token).cases == 20
    assert "all 20 cases pass" in capsys.readouterr().out
    assert exercises.check_flops(lambda c, L: train_flops_per_token(c, L) * (1 + 5e-5))  # rounding, not a term
    assert not exercises.check_flops(not_yet).attempted
    head_square = lambda c, L: train_flops_per_token(c, L) - 3 * 0.15 * 2 * c.hidden_size ** 2  # noqa: E731
    with pytest.raises(AssertionError, match="20 of 20 cases fail"):  # the smallest term the exercise names
        exercises.check_flops(head_square)


@pytest.mark.parametrize(
    "mistake, wrong",
    [
        ("forward only", lambda c, L: train_flops_per_token(c, L) / 3),
        ("no EMD", lambda c, L: train_flops_per_token(c.replace(emd=False), L)),
        ("EMD on every token", lambda c, L: train_flops_per_token(c, L, head_fraction=1.0)
         - 3 * 0.85 * 2 * (c.hidden_size ** 2 + c.hidden_size * c.vocab_size)),
        ("head on every token", lambda c, L: train_flops_per_token(c, L)
         + 3 * 0.85 * 2 * (c.hidden_size ** 2 + c.hidden_size * c.vocab_size)),
        ("no position terms", lambda c, L: train_flops_per_token(c.replace(terms=("c2c",)), L)),
    ],
)
def test_check_flops_names_the_mistake(mistake, wrong):
    with pytest.raises(AssertionError, match="cases fail") as e:
        exercises.check_flops(wrong)
    assert f"this looks like '{mistake}'" in str(e.value)
    assert "MFLOP per token" in str(e.value)


def test_check_flops_whole_table():
    def whole_table(config, L):  # R = 2 x table_span, never capped at 2L − 1
        D, F, V = config.hidden_size, config.intermediate_size, config.vocab_size
        R = 2 * table_span(config.max_relative_positions, config.position_buckets) if config.relative_attention else 0
        terms = config.position_terms
        per_pass = 2 * (4 * D * D + 2 * D * F) + 2 * (2 * L * D) + len(terms) * 2 * R * D
        queries = 2 * (2 * D * D + 2 * D * F) + 2 * (2 * L * D) + ("c2p" in terms) * 2 * R * D
        emd = 2 * (0.15 * queries + 4 * D * D + ("p2c" in terms) * 2 * R * D) if config.emd else 0
        return 3 * (config.num_hidden_layers * per_pass + emd + 0.15 * 2 * (D * D + D * V))

    with pytest.raises(AssertionError, match="whole table"):
        exercises.check_flops(whole_table)
    with pytest.raises(AssertionError, match="expected a number"):
        exercises.check_flops(lambda c, L: "many")


def test_the_benchmark_times_both_models_in_turn_after_the_warmup():
    calls = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("ours", "transformers")}
    times = bench.time_steps(steps, argparse.Namespace(warmup=2, rounds=3))
    assert calls == ["ours", "transformers"] * 5  # A B A B: both see the same machine
    assert [len(t) for t in times.values()] == [3, 3]  # the two warm-up rounds left out


def test_the_speed_ratio_is_ours_over_theirs(monkeypatch, capsys, tmp_path):
    # our steps take 2, 2 and 4 s, transformers' 1 s each: per round their time over ours, 0.5, 0.5 and 0.25
    monkeypatch.setattr(bench.torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(bench, "build", lambda args: (None, None, None, None))
    monkeypatch.setattr(bench, "check_equal", lambda *a: None)
    monkeypatch.setattr(bench, "make_step", lambda *a: None)
    monkeypatch.setattr(bench, "time_steps", lambda steps, args: {"ours": [2.0, 2.0, 4.0], "transformers": [1.0] * 3})
    monkeypatch.setattr(bench, "cpu_memory", lambda *a: {"peak_memory_growth_mib": {"ours": 1.0, "transformers": 2.0}})
    out = tmp_path / "bench.json"
    result = bench.main(["--device", "cpu", "--batch", "2", "--length", "8", "--json", str(out)])
    assert result["speed_ratio_median"] == 0.5  # ours runs at half their speed
    assert result["tokens_per_s"] == {"ours": 16 / 2.0, "transformers": 16 / 1.0}
    assert "ours/transformers = 0.50x" in capsys.readouterr().out
    assert json.loads(out.read_text()) == result  # --json holds what was printed, written whole (files.write_text)


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                        ("NVIDIA H100 NVL", None), ("NVIDIA H200", 989.0), ("NVIDIA A10G", None)])
def test_mfu_divides_by_the_peak_of_the_card_named(name, peak):
    assert bench.known_peak_tflops(name) == peak  # an H100 PCIe's MFU over 989 would read a quarter low


def test_cuda_memory_reports_mfu_against_the_peak_in_teraflops(monkeypatch):
    """On a GPU, MFU = tokens/s x FLOPs per token / (peak TFLOP/s x 1e12): the fraction of the card the
    benchmark used, with peak memory in MiB of each model's step."""
    cuda = bench.torch.cuda
    calls = []
    monkeypatch.setattr(cuda, "empty_cache", lambda: calls.append("empty"))
    monkeypatch.setattr(cuda, "reset_peak_memory_stats", lambda *a: calls.append("reset"))
    monkeypatch.setattr(cuda, "max_memory_allocated", lambda *a: 3 * 2**20)
    monkeypatch.setattr(cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    args = argparse.Namespace(**bench.PRESETS["cpu"], peak_tflops=None)
    steps = {name: (lambda name=name: calls.append(name)) for name in ("ours", "transformers")}
    tokens_per_s = {"ours": 2.0e5, "transformers": 1.0e5}
    out = bench.cuda_memory(steps, args, tokens_per_s)
    assert calls == ["empty", "reset", "ours", "empty", "reset", "transformers"]
    assert out["peak_memory_mib"] == {"ours": 3.0, "transformers": 3.0} and out["gpu"] == "NVIDIA H100 80GB HBM3"
    per_token = bench.flops_per_token(args)
    assert out["mfu"] == pytest.approx({k: v * per_token / (989.0 * 1e12) for k, v in tokens_per_s.items()})
    assert 0 < out["mfu"]["ours"] < 1  # a fraction of the card
    args.peak_tflops = 100.0  # --peak-tflops wins over the table
    assert bench.cuda_memory(steps, args, tokens_per_s)["mfu"]["ours"] == pytest.approx(2.0e5 * per_token / 1e14)


def test_the_benchmark_checks_equal_outputs_on_two_rows_and_refuses_a_difference(one_thread, capsys):
    """check_equal runs both models on the batch's first CHECK_ROWS rows only (the base preset's whole batch
    took minutes and tens of GB of host memory before a GPU benchmark), and still refuses models that differ."""
    args = bench.parse_args(["--device", "cpu", "--batch", "5", "--length", "16", "--hidden", "32", "--layers", "1",
                             "--heads", "2", "--ffn", "64", "--vocab", "100"])
    ours, theirs, inputs, labels = bench.build(args)
    rows = []
    ours.register_forward_pre_hook(lambda module, inputs: rows.append(len(inputs[0])))
    bench.check_equal(ours, theirs, inputs, labels)
    assert rows == [bench.CHECK_ROWS] == [2] and len(inputs) == 5
    assert "check on 2 rows" in capsys.readouterr().out
    with torch.no_grad():
        ours.deberta.encoder.layers[0].ffn.ffn_out.bias[0] += 0.1  # another function on every row
    with pytest.raises(SystemExit, match="outputs differ"):
        bench.check_equal(ours, theirs, inputs, labels)
