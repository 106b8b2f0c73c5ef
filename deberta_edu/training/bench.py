"""Training-step speed and peak memory of our model against transformers' DebertaV2ForMaskedLM.

    python -m deberta_edu.bench                      # CPU target of issue 4 (2 threads)
    python -m deberta_edu.bench --against bert       # our encoder alone against BertModel (SDPA)
    python -m deberta_edu.bench --preset base --device cuda --dtype bf16   # GPU, base size

Both models get identical weights (ours is converted with ``from_hf``) and the identical batch. First the
outputs are checked equal (logits and loss to 1e-5, eval mode); then training steps (forward, backward,
AdamW) run interleaved, A B A B ..., so that both see the same machine conditions, and the median of the
per-round speed ratios is printed. ``--against bert`` times what disentangled attention costs: our encoder
(no MLM head, after the same check) against transformers' BertModel of equal size with SDPA attention,
both without dropout as in pretraining, the loss the mean square of the last hidden states. Peak memory: on CUDA ``max_memory_allocated``; on CPU, where torch
keeps no such counter, each model runs its steps in a fresh subprocess and the growth of the process's
peak resident memory over the loaded model is compared. MFU counts the FLOPs of a step with ``training.flops``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from deberta_edu import files

from .engine import check_device
from .flops import train_flops_per_token

PRESETS = {
    # issue 4's CPU target
    "cpu": dict(batch=16, length=128, hidden=256, layers=4, heads=4, ffn=1024, vocab=8000, buckets=256),
    # issue 6's GPU target: base size
    "base": dict(batch=32, length=512, hidden=768, layers=12, heads=12, ffn=3072, vocab=128100, buckets=256),
}


def hf_config(args):
    """transformers' DebertaV2Config of the benchmarked shape: v3-style (log buckets, shared keys, no EMD)."""
    from transformers import DebertaV2Config

    return DebertaV2Config(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=args.ffn, max_position_embeddings=512,
        relative_attention=True, position_buckets=args.buckets, max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm",
        position_biased_input=False, layer_norm_eps=1e-7, legacy=False,
    )


def build(args):
    from transformers import DebertaV2ForMaskedLM

    from deberta_edu.model.interop import from_hf

    from .masking import mask_tokens

    torch.manual_seed(0)
    theirs = DebertaV2ForMaskedLM(hf_config(args))
    ours = from_hf(theirs)  # emd off: the same function as transformers computes
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, args.vocab, (args.batch, args.length), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2
    inputs, labels = mask_tokens(ids, vocab_size=args.vocab, mask_token_id=4, special_token_ids=[0, 1, 2, 3, 4],
                                 generator=g)
    return ours, theirs, inputs, labels


def bert_encoder(args):
    """transformers' BertModel (SDPA attention, no pooler, no dropout) of the benchmarked size."""
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=args.ffn, max_position_embeddings=512,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="sdpa",
    )
    return BertModel(config, add_pooling_layer=False)


def encoders(ours, args):
    """``--against bert``: our encoder of the checked MLM model, dropout off, and BertModel (SDPA)."""
    encoder = ours.deberta
    for module in encoder.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    torch.manual_seed(0)
    return encoder, bert_encoder(args)


def make_step(model, inputs, labels, args, ours: bool):
    dev = torch.device(args.device)
    model.to(dev).train()
    inputs, labels = inputs.to(dev), labels.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-6, weight_decay=0.01)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    fwd = model
    if args.compile:
        fwd = torch.compile(model)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if args.against == "bert":  # both encoders alone: the same loss on the last hidden states
                loss = fwd(inputs).last_hidden_state.float().pow(2).mean()
            elif ours:
                loss = fwd(inputs, labels=labels, only_masked_logits=not args.full_logits).loss
            else:
                loss = fwd(input_ids=inputs, labels=labels).loss
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return loss

    return step


CHECK_ROWS = 2  # rows do not meet in either model, so two are the same check as the batch at a fraction of its cost


def check_equal(ours, theirs, inputs, labels, rows: int = CHECK_ROWS):
    """Both models give the same logits and loss on the batch's first ``rows`` rows, in float32 on the CPU (the
    whole base-size batch there would take minutes and tens of GB before a GPU benchmark)."""
    inputs, labels = inputs[:rows], labels[:rows]
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        a = ours(inputs, labels=labels)
        b = theirs(input_ids=inputs, labels=labels)
    d_logits = (a.logits - b.logits).abs().max().item()
    d_loss = abs(a.loss.item() - b.loss.item())
    print(f"check on {len(inputs)} rows: max |Δ logits| = {d_logits:.2e}, |Δ loss| = {d_loss:.2e}")
    if d_logits > 1e-5 or d_loss > 1e-5:
        raise SystemExit("outputs differ by more than 1e-5: not benchmarking different functions")


def flops_per_token(args) -> float:
    """Model FLOPs of one training step per token (``training.flops``), the MLM head at every position.

    Every position, as transformers computes its logits: one nominal step for both models, whatever ours
    skips (it computes logits at the masked positions only, unless --full-logits).
    """
    from deberta_edu.model.interop import config_from_hf

    return train_flops_per_token(config_from_hf(hf_config(args)), args.length, head_fraction=1.0)


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (peak memory on CPU needs Linux)")


def memory_child(args, which: str):
    """Run in a subprocess: report peak resident memory growth of three training steps."""
    ours, theirs, inputs, labels = build(args)
    if args.against == "bert":
        ours, theirs = encoders(ours, args)
    model = ours if which == "ours" else theirs
    del theirs, ours
    step = make_step(model, inputs, labels, args, ours=which == "ours")
    base = _proc_status_kib("VmHWM")  # this process's own high-water mark (ru_maxrss survives exec)
    for _ in range(3):
        step()
    peak = _proc_status_kib("VmHWM")
    print(json.dumps({"which": which, "base_kib": base, "peak_kib": peak, "growth_mib": (peak - base) / 1024}))


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, with the preset's shape and the device's dtype filled in where not given."""
    p = argparse.ArgumentParser(prog="python -m deberta_edu.bench", description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="the shape where no flag below sets it: " + "; ".join(
                       f"{k}, {d['batch']} x {d['length']} tokens, {d['layers']} layers of {d['hidden']}, vocabulary "
                       f"{d['vocab']:,}" for k, d in PRESETS.items()) + " (default: cpu)")
    p.add_argument("--against", choices=["deberta", "bert"], default="deberta",
                   help="deberta: DebertaV2ForMaskedLM, identical weights (default); bert: our encoder alone "
                        "against BertModel (SDPA) of equal size, no dropout")
    for name in ("batch", "length", "hidden", "layers", "heads", "ffn", "vocab", "buckets"):
        p.add_argument(f"--{name}", type=int, help=f"override the preset's {name}")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: %(default)s)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None,
                   help="autocast dtype of both models (default: bf16 on a GPU, else fp32)")
    p.add_argument("--threads", type=int, default=2, help="torch threads on a CPU (default: 2)")
    p.add_argument("--rounds", type=int, default=10, help="timed steps of each model, interleaved (default: 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each model first (default: 2)")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--full-logits", action="store_true", help="ours computes logits at every position too")
    p.add_argument("--peak-tflops", type=float, default=None, help="accelerator peak, for MFU")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--memory-child", choices=["ours", "theirs"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for k, v in PRESETS[args.preset].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    try:
        check_args(args)
    except ValueError as err:
        sys.exit(f"error: {err}")
    if args.dtype is None:
        args.dtype = "bf16" if on_gpu(args) else "fp32"
    return args


def on_gpu(args: argparse.Namespace) -> bool:
    """--device names a GPU (cuda, cuda:1, ...)."""
    return torch.device(args.device).type == "cuda"


def check_args(args: argparse.Namespace) -> None:
    """Sizes and counts a benchmark can run with, and a device this machine has (ValueError otherwise)."""
    for name in ("batch", "length", "hidden", "layers", "heads", "ffn", "vocab", "buckets", "threads", "rounds"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if args.hidden % args.heads:
        raise ValueError(f"--hidden {args.hidden} must be a multiple of --heads {args.heads}")
    if args.length < 4:
        raise ValueError(f"--length must be at least 4 tokens, got {args.length}")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        raise ValueError(f"--peak-tflops must be > 0, got {args.peak_tflops}")
    if args.vocab < 6:
        raise ValueError(f"--vocab must be at least 6 (the batch draws ids 5 and up; 0-4 are special), got {args.vocab}")
    if not 2 <= args.buckets <= 1021:  # log buckets over 512 positions: max_relative_positions > buckets // 2 + 1
        raise ValueError(f"--buckets must be in 2 … 1021 (log buckets over 512 positions), got {args.buckets}")
    if args.full_logits and args.against == "bert":
        raise ValueError("--full-logits is about our MLM head; --against bert times the encoders alone")
    if args.json and not Path(args.json).parent.is_dir():  # before the benchmark, not after it
        raise ValueError(f"--json {args.json}: the folder {Path(args.json).parent} does not exist")
    if args.json and Path(args.json).is_dir():
        raise ValueError(f"--json {args.json} is a folder; give the path of the JSON file to write")
    check_device(args.device)


def time_steps(steps: dict, args) -> dict[str, list[float]]:
    """Seconds per training step of each model, interleaved A B A B so both see the same machine."""
    times = {k: [] for k in steps}
    for r in range(args.warmup + args.rounds):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t)
    return times


def known_peak_tflops(gpu_name: str) -> float | None:
    """Dense bf16 peak (NVIDIA's data sheets, half the figure "with sparsity") of a GPU the course ran on.

    An H100 is not one number: the SXM card (and the H200) peaks at 989, the PCIe card at 756. Any other card,
    the H100 NVL included, has no number here: pass ``--peak-tflops`` for its MFU.
    """
    if "H100" in gpu_name and "PCIe" in gpu_name:
        return 756.0
    if "NVL" in gpu_name:
        return None
    return 989.0 if "H100" in gpu_name or "H200" in gpu_name else None


def cuda_memory(steps: dict, args, tokens_per_s: dict) -> dict:
    """Peak allocated memory of one step of each model; MFU where the accelerator's peak is known."""
    mem = {}
    for name, step in steps.items():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        step()
        mem[name] = torch.cuda.max_memory_allocated() / 2**20
    out = {"peak_memory_mib": mem}
    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or known_peak_tflops(name)
    if peak:
        out["mfu"] = {k: v * flops_per_token(args) / (peak * 1e12) for k, v in tokens_per_s.items()}
    out["gpu"] = name
    return out


def cpu_memory(args, argv) -> dict:
    """Growth of peak resident memory over the loaded model, each model in a fresh subprocess."""
    mem = {}
    for which in ("ours", "theirs"):
        out = subprocess.run([sys.executable, "-m", "deberta_edu.training.bench", *(argv or sys.argv[1:]),
                              "--memory-child", which], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        mem["ours" if which == "ours" else "transformers"] = json.loads(out.stdout.strip().splitlines()[-1])[
            "growth_mib"]
    return {"peak_memory_growth_mib": mem}


def print_result(result: dict, args) -> None:
    tps = result["tokens_per_s"]
    theirs = "BertModel" if args.against == "bert" else "transformers"
    print(f"tokens/s: ours {tps['ours']:.0f}, {theirs} {tps['transformers']:.0f}; "
          f"median speed ratio ours/{theirs} = {result['speed_ratio_median']:.2f}x"
          + (f" (our step takes {1 / result['speed_ratio_median']:.2f}x as long)" if args.against == "bert" else ""))
    mem_key = "peak_memory_mib" if on_gpu(args) else "peak_memory_growth_mib"
    m = result[mem_key]
    print(f"peak memory ({mem_key}): ours {m['ours']:.0f} MiB, {theirs} {m['transformers']:.0f} MiB")
    if "mfu" in result:
        print(f"MFU: ours {result['mfu']['ours']:.1%}, {theirs} {result['mfu']['transformers']:.1%}")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if on_gpu(args) and torch.device(args.device).index is not None:
        torch.cuda.set_device(torch.device(args.device))  # memory, name and synchronize read the current GPU
    if args.memory_child:
        return memory_child(args, args.memory_child)

    ours, theirs, inputs, labels = build(args)
    check_equal(ours, theirs, inputs, labels)
    if args.against == "bert":
        ours, theirs = encoders(ours, args)
    steps = {"ours": make_step(ours, inputs, labels, args, True),
             "transformers": make_step(theirs, inputs, labels, args, False)}
    times = time_steps(steps, args)
    tokens = args.batch * args.length
    ratios = [t / o for o, t in zip(times["ours"], times["transformers"], strict=True)]
    result = {
        "device": args.device, "dtype": args.dtype, "threads": args.threads, "torch": torch.__version__,
        "shape": {k: getattr(args, k) for k in PRESETS["cpu"]},
        "tokens_per_s": {k: tokens / statistics.median(v) for k, v in times.items()},
        "speed_ratio_median": statistics.median(ratios),
        "full_logits": args.full_logits, "compile": args.compile, "against": args.against,
    }
    if on_gpu(args):
        result.update(cuda_memory(steps, args, result["tokens_per_s"]))
    else:
        result.update(cpu_memory(args, argv))
    print_result(result, args)
    if args.json:  # atomic: a kill while writing leaves the old file, not half of one
        files.write_text(args.json, json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
