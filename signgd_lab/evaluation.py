"""Accuracy of a converted network over a whole data set at several T, on one process or many.

``evaluate`` converts once, then runs every batch of the evaluation split through the ANN and
through one anytime SNN run of max(T) steps, counting top-1 (and top-5 with more than 10
classes) correct answers at every T.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1) it joins the process group (gloo on CPU, nccl on
CUDA, device ``cuda:LOCAL_RANK``). Batches are cut from the whole split first (fixed
``batch_size``), and rank r takes batches r, r + W, r + 2W, ...: every sample is counted exactly
once (no padding), and every batch holds the same samples whatever the number of processes, so
1 and N processes give identical counts. The counts are summed with ``all_reduce``; rank 0
writes ``OUT/results.json`` and ``OUT/results.md``.

With an output folder the run is resumable: after every batch each rank replaces
``OUT/partial/rank<r>.json`` (its finished batch indices and counts, written to a temporary
file and renamed). A run restarted with the same arguments (same fingerprint, same number of
processes) skips the batches already counted.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from .conversion import SpikingNetwork, convert
from .conversion.timestamps import check_timestamps
from .zoo.datasets import (LoadedData, calibration_loader, check_model_fits, data_config_of,
                           load_data)
from .zoo.errors import SpecError
from .zoo.model_spec import LoadedModel, load_model

ABORT_ENV = "SIGNGD_LAB_EVALUATE_ABORT_AFTER"  # testing hook: "K" or "K@RANK"


class EvaluationAborted(RuntimeError):
    """Raised after K batches when ``$SIGNGD_LAB_EVALUATE_ABORT_AFTER`` is ``K`` (or ``K@R``
    on rank R): simulates a killed run in tests; the partial counts stay on disk for the
    resumed run."""


@dataclass
class EvaluationResult:
    """Counts and accuracies of one evaluation.

    Attributes:
        model, data, dynamics: what was evaluated (specs and the conversion preset).
        timestamps: the time-steps T.
        samples: evaluated samples (the whole evaluation split).
        classes: outputs of the model's head.
        ann_correct, ann_correct5: ANN top-1 / top-5 correct counts.
        snn_correct, snn_correct5: SNN top-1 / top-5 correct counts, one per T (top-5 lists
            are None with 10 classes or fewer).
        world_size: number of processes.
        batches, resumed_batches: batches in the split; batches taken from partial counts of
            an earlier, interrupted run.
        convert_seconds, eval_seconds: wall time of conversion (with one warm-up run of one
            sample, which compiles the neuron kernels) and of this run's batches (slowest rank).
        images_per_second: images evaluated by this run over ``eval_seconds`` (all processes).
        details: data description, model source, date, versions.
    """

    model: str
    data: str
    dynamics: str
    timestamps: list[int]
    samples: int
    classes: int
    ann_correct: int
    ann_correct5: int | None
    snn_correct: list[int]
    snn_correct5: list[int] | None
    world_size: int = 1
    batches: int = 0
    resumed_batches: int = 0
    convert_seconds: float = 0.0
    eval_seconds: float = 0.0
    images_per_second: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ann_top1(self) -> float:
        """ANN top-1 accuracy."""
        return self.ann_correct / self.samples

    @property
    def snn_top1(self) -> list[float]:
        """SNN top-1 accuracy at every T."""
        return [c / self.samples for c in self.snn_correct]

    def to_dict(self) -> dict[str, Any]:
        """Everything, accuracies included (what ``results.json`` holds)."""
        out = asdict(self)
        out["ann_top1"] = self.ann_top1
        out["snn_top1"] = dict(zip(map(str, self.timestamps), self.snn_top1))
        if self.ann_correct5 is not None:
            out["ann_top5"] = self.ann_correct5 / self.samples
            out["snn_top5"] = {str(t): c / self.samples
                               for t, c in zip(self.timestamps, self.snn_correct5)}
        return out

    def markdown(self) -> str:
        """A markdown table: ANN and SNN accuracy per T."""
        top5 = self.ann_correct5 is not None
        lines = [f"# {self.model} on {self.data}, dynamics {self.dynamics}", "",
                 f"{self.samples} samples, {self.classes} classes, {self.world_size} "
                 f"process(es), {self.images_per_second:.1f} images/s", "",
                 "| | top-1 |" + (" top-5 |" if top5 else ""),
                 "|---|---|" + ("---|" if top5 else ""),
                 f"| ANN | {self.ann_top1:.4f} |"
                 + (f" {self.ann_correct5 / self.samples:.4f} |" if top5 else "")]
        for i, t in enumerate(self.timestamps):
            lines.append(f"| SNN T={t} | {self.snn_top1[i]:.4f} |"
                         + (f" {self.snn_correct5[i] / self.samples:.4f} |" if top5 else ""))
        return "\n".join(lines) + "\n"


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    created: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1


def _init_distributed(device: str) -> _Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    created = False
    if not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend)
        created = True
    return _Dist(rank, dist.get_world_size(), local, created)


def _device(device: str, ctx: _Dist) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SpecError("device cuda was asked for but torch sees no CUDA device")
        if ctx.active or dev.index is None:
            dev = torch.device("cuda", ctx.local_rank if ctx.active else 0)
        torch.cuda.set_device(dev)
    return dev


def evaluate(model: str | nn.Module, data: str | LoadedData = "digits",
             dynamics: str = "paper", timestamps: Sequence[int] = (8, 32, 128),
             calibration_samples: int = 256, batch_size: int = 64, device: str = "cpu",
             out: str | os.PathLike | None = None, seed: int = 0, pretrained: bool = False,
             weights: str | os.PathLike | None = None, trust_model_file: bool = False,
             image_size: int | None = None, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None, workers: int = 0,
             append: str | os.PathLike | None = None,
             save_network: str | os.PathLike | None = None, restart: bool = False,
             limit: int | None = None, progress: bool = True) -> EvaluationResult:
    """Convert ``model`` and measure ANN and SNN accuracy at every T over the whole data set.

    Args:
        model: a model spec (zoo name, ``timm:NAME``, ``module.path:factory``, a model file,
            a network saved by :meth:`SpikingNetwork.save`), a module, or a SpikingNetwork
            (already converted: no conversion, ``dynamics`` is its own).
        data: a data spec (``digits``, an image folder, ``torchvision:NAME:ROOT``, a ``.pt``
            file) or a :class:`~signgd_lab.zoo.datasets.LoadedData`.
        dynamics: ``paper``, ``extended`` or ``if``.
        timestamps: the T at which outputs are decoded (one run of max(T) steps per batch).
        calibration_samples: training samples drawn (seeded) for calibration.
        batch_size: evaluation and calibration batch size.
        device: ``cpu`` or ``cuda`` (under torchrun: ``cuda:LOCAL_RANK``).
        out: folder for ``results.json``, ``results.md`` and the resumable partial counts;
            None: nothing is written and nothing resumed.
        seed: seed of the calibration sample and of random initialisations.
        pretrained, weights, trust_model_file: see :func:`signgd_lab.zoo.load_model`.
        image_size, mean, std: image preprocessing overriding the model's (timm) config.
        workers: DataLoader worker processes.
        append: a ``.jsonl`` file that gets one line with the results (rank 0).
        save_network: write the converted network there (rank 0), with the data config, so
            it can be evaluated again without calibration.
        restart: ignore partial counts of an earlier run.
        limit: evaluate only the first ``limit`` samples of the split (quick runs).
        progress: a tqdm bar on rank 0.

    Raises:
        SpecError: a bad model or data spec, before any work.
        EvaluationAborted: the testing hook ``$SIGNGD_LAB_EVALUATE_ABORT_AFTER`` fired.
    """
    ts = check_timestamps(list(timestamps))
    for key, value in (("batch_size", batch_size), ("calibration_samples", calibration_samples),
                       ("limit", 1 if limit is None else limit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"{key} must be a positive integer, got {value!r}")
    ctx = _init_distributed(device)
    try:
        return _evaluate(ctx, model, data, dynamics, ts, calibration_samples, batch_size, device,
                         out, seed, pretrained, weights, trust_model_file, image_size, mean, std,
                         workers, append, save_network, restart, limit, progress)
    except Exception as err:
        if ctx.active:  # say which rank failed; torchrun then stops the other ranks
            print(f"signgd_lab.evaluate: rank {ctx.rank} of {ctx.world} failed: "
                  f"{type(err).__name__}: {err}", file=sys.stderr, flush=True)
        raise
    finally:
        if ctx.created:
            import torch.distributed as dist

            dist.destroy_process_group()


def _evaluate(ctx: _Dist, model_spec: str | nn.Module, data_spec: str | LoadedData, dynamics: str,
              ts: list[int], calibration_samples: int, batch_size: int, device: str,
              out: str | os.PathLike | None, seed: int, pretrained: bool,
              weights: str | os.PathLike | None, trust_model_file: bool,
              image_size: int | None, mean: Sequence[float] | None, std: Sequence[float] | None,
              workers: int, append: str | os.PathLike | None,
              save_network: str | os.PathLike | None, restart: bool, limit: int | None,
              progress: bool) -> EvaluationResult:
    dev = _device(device, ctx)
    if isinstance(model_spec, nn.Module):
        loaded = LoadedModel(type(model_spec).__name__, model_spec, "module", "module given",
                             data_config=getattr(model_spec, "data_config", None))
    else:
        loaded = load_model(model_spec, pretrained, weights, trust_model_file, seed)
    data = data_spec if isinstance(data_spec, LoadedData) else load_data(
        data_spec, loaded, image_size, mean, std)
    if limit is not None and limit < len(data.evaluation):
        data = dataclasses.replace(data, evaluation=Subset(data.evaluation, range(limit)),
                                   description=f"{data.description}, first {limit} samples")
    net = loaded.model
    if loaded.kind == "module":  # the user's module is left as it is
        if next(iter(net.parameters()), torch.empty(0)).device != dev or net.training:
            net = copy.deepcopy(net).eval()
    net = net.to(dev)
    classes = check_model_fits(net, data, dev)
    fingerprint = _fingerprint(loaded, data, dynamics, ts, calibration_samples, batch_size, dev,
                               seed, weights, pretrained, image_size, mean, std, ctx.world)

    start = time.perf_counter()
    if isinstance(net, SpikingNetwork):
        snn, dyn_name = net, net.recipe_name
    else:
        cal = calibration_loader(data, calibration_samples, batch_size, seed, workers)
        snn, dyn_name = convert(net, cal, dynamics=dynamics), dynamics
    with torch.no_grad():  # compiles the neuron kernels before the timed loop
        snn(data.evaluation[0][0].unsqueeze(0).to(dev), ts)
    convert_seconds = time.perf_counter() - start
    if save_network is not None and ctx.rank == 0:
        config = data_config_of(loaded)
        if config is not None:  # later runs shape the data for it without the original model
            snn.data_config = config
        snn.save(save_network)
    ann = snn.ann if isinstance(net, SpikingNetwork) else net

    n = len(data.evaluation)
    n_batches = math.ceil(n / batch_size)
    mine = list(range(ctx.rank, n_batches, ctx.world))
    top5 = classes > 10
    k = len(ts)
    counts = torch.zeros(3 + 2 * k, dtype=torch.int64)  # n, ann1, ann5, snn1[k], snn5[k]
    partial = Path(out) / "partial" / f"rank{ctx.rank}.json" if out is not None else None
    done: list[int] = []
    if partial is not None and partial.exists() and not restart:
        saved = json.loads(partial.read_text())
        if saved.get("fingerprint") == fingerprint:
            done = saved["done"]
            counts = torch.tensor(saved["counts"], dtype=torch.int64)
    resumed = len(done)
    finished = set(done)
    todo = [b for b in mine if b not in finished]
    indices = [i for b in todo for i in range(b * batch_size, min(n, (b + 1) * batch_size))]
    loader = DataLoader(Subset(data.evaluation, indices), batch_size=batch_size,
                        num_workers=workers, pin_memory=dev.type == "cuda")
    abort_after = _abort_after(ctx.rank)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(mine), initial=resumed, unit="batch", disable=not progress or ctx.rank != 0,
               desc=f"{loaded.spec} T={ts[-1]}")
    evaluated = 0
    start = time.perf_counter()
    try:
        for b, (x, y) in zip(todo, loader):
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            with torch.no_grad():
                logits = ann(x)
                spiking = snn(x, ts)  # (k, B, classes): every T from one run
            counts += _batch_counts(logits, spiking, y, top5)
            done.append(b)
            evaluated += len(y)
            if partial is not None:
                _write_atomic(partial, json.dumps(dict(fingerprint=fingerprint, done=done,
                                                       counts=counts.tolist())))
            bar.update(1)
            bar.set_postfix(snn_top1=f"{counts[3 + k - 1].item() / max(1, counts[0].item()):.3f}")
            if abort_after and len(done) - resumed >= abort_after:
                raise EvaluationAborted(f"stopped after {abort_after} batch(es) ({ABORT_ENV})")
    finally:
        bar.close()
    eval_seconds = time.perf_counter() - start
    stats = torch.tensor([evaluated, resumed], dtype=torch.int64)
    if ctx.active:
        import torch.distributed as dist

        reduce_dev = dev if dev.type == "cuda" else torch.device("cpu")
        packed = torch.cat([counts, stats]).to(reduce_dev)
        dist.all_reduce(packed)
        seconds = torch.tensor([eval_seconds, convert_seconds], device=reduce_dev)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        counts, stats = packed[:-2].cpu(), packed[-2:].cpu()
        eval_seconds, convert_seconds = seconds.tolist()
    if int(counts[0]) != n:
        raise RuntimeError(f"counted {int(counts[0])} samples but the split has {n}; the partial "
                           f"counts in {Path(out) / 'partial'} are inconsistent: rerun with "
                           "--restart")
    result = EvaluationResult(
        model=loaded.spec, data=data.spec, dynamics=dyn_name, timestamps=ts, samples=n,
        classes=classes, ann_correct=int(counts[1]), ann_correct5=int(counts[2]) if top5 else None,
        snn_correct=counts[3:3 + k].tolist(), snn_correct5=counts[3 + k:].tolist() if top5 else None,
        world_size=ctx.world, batches=n_batches, resumed_batches=int(stats[1]),
        convert_seconds=convert_seconds, eval_seconds=eval_seconds,
        images_per_second=int(stats[0]) / eval_seconds if eval_seconds > 0 else 0.0,
        details=dict(data_description=data.description, model_source=loaded.source,
                     batch_size=batch_size, calibration_samples=calibration_samples, seed=seed,
                     device=str(dev.type), date=_dt.datetime.now(_dt.timezone.utc).isoformat(
                         timespec="seconds"), torch=torch.__version__))
    if ctx.rank == 0:
        if out is not None:
            _write_atomic(Path(out) / "results.json", json.dumps(result.to_dict(), indent=2))
            _write_atomic(Path(out) / "results.md", result.markdown())
        if append is not None:
            with open(append, "a") as f:
                f.write(json.dumps(result.to_dict()) + "\n")
    return result


def _abort_after(rank: int) -> int:
    """The testing hook: ``K`` (every rank) or ``K@R`` (rank R only) stops after K batches."""
    value = os.environ.get(ABORT_ENV, "")
    if not value:
        return 0
    count, _, only = value.partition("@")
    return int(count) if not only or int(only) == rank else 0


def _batch_counts(logits: torch.Tensor, spiking: torch.Tensor, y: torch.Tensor, top5: bool
                  ) -> torch.Tensor:
    """[n, ann top-1, ann top-5, snn top-1 per T, snn top-5 per T] correct counts of a batch."""
    def correct(z: torch.Tensor, k: int) -> torch.Tensor:  # z (..., B, C) -> (...,)
        return (z.topk(k, dim=-1).indices == y.unsqueeze(-1)).any(-1).sum(-1)

    k5 = 5 if top5 else 1
    parts = [torch.tensor([len(y)], device=y.device), correct(logits, 1).view(1),
             correct(logits, k5).view(1) if top5 else torch.zeros(1, dtype=torch.int64,
                                                                  device=y.device),
             correct(spiking, 1),
             correct(spiking, k5) if top5 else torch.zeros(len(spiking), dtype=torch.int64,
                                                           device=y.device)]
    return torch.cat([p.to(torch.int64) for p in parts]).cpu()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fingerprint(loaded: LoadedModel, data: LoadedData, dynamics: str, ts: list[int],
                 calibration_samples: int, batch_size: int, dev: torch.device, seed: int,
                 weights: Any, pretrained: bool, image_size: Any, mean: Any, std: Any,
                 world: int) -> str:
    """What must match for a restarted run to reuse partial counts: every argument that
    changes a count, the model's weights and the number of processes."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in loaded.model.state_dict().items()}, buf)
    key = dict(model=loaded.spec, weights_hash=hashlib.sha256(buf.getvalue()).hexdigest(),
               data=data.spec, samples=len(data.evaluation), dynamics=dynamics, timestamps=ts,
               calibration_samples=calibration_samples, batch_size=batch_size,
               device=dev.type, seed=seed, weights=str(weights), pretrained=pretrained,
               image_size=image_size, mean=list(mean or []), std=list(std or []), world=world)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
