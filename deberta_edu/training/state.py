"""What a run leaves behind to be read or continued: its JSONL log, and its resumable state.

Resumable runs save everything that decides the future (weights, optimizer moments, step, the random
state that drives dropout, the seconds trained) in one safetensors file, written atomically; data order and
masks are pure functions of (seed, step) (``engine.derive_seed``), and so is the learning rate under a step
budget, so they need no saving at all.
A run killed mid-write leaves a torn last log line, which ``read_jsonl`` drops.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from deberta_edu import files
from deberta_edu.facts import CONFIG_FILE, LOG_FILE, MODEL_FILE, STATE_FILE, cpu_name
from deberta_edu.model.checkpoint import load_tensors, read_header, save_tensors

from .engine import Distributed, Precision, derive_seed, unwrap

STATE_FORMAT = "deberta_edu/train-state/1"


# ----------------------------------------------------------------------------- logs


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file. A broken last line (the process was killed mid-write) is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n != len(lines) - 1:
                raise ValueError(f"{path}, line {n + 1} is not JSON: {line[:80]!r}") from None
    return records


class JsonlLogger:
    """Keeps every record in ``records`` and appends it, as one JSON line, to ``path`` (if given).

    ``resume_step=s`` keeps the file's records up to step s and drops the rest: a run killed after
    its last checkpoint logged steps that the resumed run will log again. Without it, the file
    starts empty.
    """

    def __init__(self, path: str | Path | None = None, resume_step: int | None = None):
        self.path = Path(path) if path is not None else None
        self.records: list[dict] = []
        if self.path is None:
            return
        if resume_step is not None:
            self.records = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def log(self, record: dict) -> None:
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()


# ----------------------------------------------------------------------------- the output folder


LOCK_NAME = ".trainer.lock"  # in the output folder, held by the trainer writing it (files.exclusive)
RUN_FILES = (STATE_FILE, LOG_FILE, CONFIG_FILE, MODEL_FILE)  # what a run writes into its output folder


def check_output_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start afresh in a folder that holds a run (its log, state and model would be overwritten),
    and to resume in one that holds none."""
    files.check_not_a_file(out)
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite starts it again: give one of them")
    if resume and not any((out / name).exists() for name in RUN_FILES):  # a mistyped --out, most likely
        raise ValueError(f"nothing to resume in {out}: it {'holds no run' if out.is_dir() else 'does not exist'}; "
                         "check the path, or drop --resume to start a run there")
    if not out.is_dir():
        return
    # A trainer still writing here holds the lock: refused now, before its files are deleted or the data is built
    with files.exclusive(out / LOCK_NAME, f"the output folder {out}"):
        held = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        if held and not (overwrite or resume):
            raise ValueError(f"{out} is not empty ({', '.join(held[:4])}{' ...' if len(held) > 4 else ''}): "
                             "add --resume to continue the run in it, --overwrite to start it again, or choose "
                             "another --out")
        for name in RUN_FILES if overwrite else ():
            (out / name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- resumable checkpoints


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _rng_states_of_all_ranks(world: Distributed) -> dict[str, torch.Tensor]:
    """{"rng.cpu.<rank>": state, ...}: every process draws its own dropout masks."""
    mine = _rng_state(world.device)
    states = [mine]
    if world.enabled:
        states = [None] * world.world_size
        dist.all_gather_object(states, mine)
    return {f"rng.{kind}.{rank}": t for rank, s in enumerate(states) for kind, t in s.items()}


def save_training_state(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    *,
    precision: Precision | None = None,
    world: Distributed | None = None,
    metadata: dict | None = None,
) -> Path | None:
    """Everything a run needs to continue exactly, in one safetensors file (no pickle).

    Tensors: ``model.<name>``, ``optimizer.<param name>.<exp_avg|exp_avg_sq|step>``, ``rng.cpu.<rank>``
    (and ``rng.cuda.<rank>``). JSON metadata: step, the optimizer's hyperparameters, the GradScaler,
    and whatever ``metadata`` holds. Call it on every rank (they exchange RNG states); rank 0 writes.
    """
    world = world or Distributed()
    rng = _rng_states_of_all_ranks(world)
    if not world.is_main:
        return None
    model = unwrap(model)
    names = {p: n for n, p in model.named_parameters()}
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    order = [names[p] for g in optimizer.param_groups for p in g["params"]]
    sd = optimizer.state_dict()
    for index, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{order[index]}.{key}"] = torch.as_tensor(value)
    tensors.update(rng)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
    meta = {
        "format": STATE_FORMAT,
        "step": str(step),
        "world_size": str(world.world_size),
        "optimizer_groups": json.dumps(groups),
        "optimizer_params": json.dumps([[order[i] for i in g["params"]] for g in sd["param_groups"]]),
        "scaler": json.dumps(precision.scaler.state_dict() if precision else {}),
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()},
    }
    return save_tensors(tensors, path, meta)


def load_training_state(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    precision: Precision | None = None,
    world: Distributed | None = None,
    restore_rng: bool = True,
    check: Callable[[dict[str, str]], None] | None = None,
) -> dict[str, str]:
    """Put a ``save_training_state`` file back into model, optimizer, scaler and RNG; returns the metadata.

    Before any tensor is read: the file's header (a damaged or foreign file is refused, naming it), then
    ``check(metadata)`` (e.g. "was this trained with the same config?"), then the tensor names and shapes
    against the model's. Then the tensors, whose checksum is verified.
    """
    world = world or Distributed()
    meta, shapes = read_header(path)
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a training state (format {meta.get('format')!r}, expected {STATE_FORMAT!r})")
    if check is not None:
        check(meta)
    model = unwrap(model)
    _check_model_shapes(model, shapes, path)
    tensors, meta = load_tensors(path)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    if optimizer is not None:
        _restore_optimizer(optimizer, model, tensors, meta, path)
    if precision is not None and json.loads(meta.get("scaler", "{}")):
        precision.scaler.load_state_dict(json.loads(meta["scaler"]))
    if restore_rng:
        _restore_rng(tensors, meta, world, path)
    return meta


def _check_model_shapes(model: nn.Module, shapes: dict, path) -> None:
    mine = {f"model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: v for k, v in shapes.items() if k.startswith("model.")}
    wrong = [f"{k[6:]}: {theirs[k]}, this model {v}" for k, v in mine.items() if k in theirs and theirs[k] != v]
    missing = sorted(set(mine) ^ set(theirs))
    if wrong or missing:
        listed = "; ".join(wrong[:3] + [f"{k[6:]!r} in one only" for k in missing[:3]])
        raise ValueError(f"{path} holds the weights of another model ({listed}); resume with the config that "
                         "wrote it, or start afresh in another --out folder")


def _restore_optimizer(optimizer, model: nn.Module, tensors: dict, meta: dict, path) -> None:
    """The AdamW moments and hyperparameters, matched to this optimizer's parameters by name."""
    saved = json.loads(meta["optimizer_params"])
    names = {p: n for n, p in model.named_parameters()}
    current = [[names[p] for p in g["params"]] for g in optimizer.param_groups]
    if saved != current:
        raise ValueError(
            f"{path} holds optimizer state for other parameters than this model's optimizer; "
            "was it written for another model config?"
        )
    order = [n for g in saved for n in g]
    state = {}
    for index, name in enumerate(order):
        prefix = f"optimizer.{name}."
        entry = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if entry:
            state[index] = entry
    groups, start = [], 0
    for g, params in zip(json.loads(meta["optimizer_groups"]), saved, strict=True):
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append({**g, "params": list(range(start, start + len(params)))})
        start += len(params)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _restore_rng(tensors: dict, meta: dict, world: Distributed, path) -> None:
    """This rank's random state (it drives dropout), or a fresh seed, with a warning, if none was saved."""
    saved = int(meta.get("world_size", "1"))
    if saved > world.world_size and world.is_main:  # fewer ranks: the others' streams are dropped, also say so
        warnings.warn(f"{path} was saved by {saved} processes and is resumed by {world.world_size}: the dropout "
                      f"states of its other {saved - world.world_size} rank(s) are dropped, so the run is no longer "
                      "bit-exact", stacklevel=3)
    key = f"rng.cpu.{world.rank}"
    if key in tensors:
        torch.set_rng_state(tensors[key])
        if world.device.type == "cuda" and f"rng.cuda.{world.rank}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.cuda.{world.rank}"], world.device)
    else:
        warnings.warn(
            f"{path} has no random state for rank {world.rank} (it was saved by {meta.get('world_size')} "
            "process(es)); dropout continues from a fresh seed, so the run is no longer bit-exact",
            stacklevel=3,  # the caller of load_training_state
        )
        torch.manual_seed(derive_seed("resume", int(meta["step"]), world.rank))


def describe_machine() -> str:
    """Where a result was measured: the processor, the threads torch uses, torch's version."""
    threads = torch.get_num_threads()
    return f"{cpu_name()}, {threads} thread{'s' * (threads != 1)}, torch {torch.__version__}"
