"""signgd_lab.evaluate / signgd-lab evaluate: counts, resuming, torchrun with 2 processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import signgd_lab as sl
from signgd_lab.evaluation import ABORT_ENV, EvaluationAborted, evaluate
from signgd_lab.zoo import SpecError, calibration_loader, load_data, load_model

# 225 digits test images (odd) in batches of 32: 7 full batches and one of a single sample
ARGS = dict(model="digits_cnn", data="digits", dynamics="paper", timestamps=[4, 16],
            calibration_samples=96, batch_size=32, limit=225, progress=False)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference() -> dict:
    """Correct counts computed here, batch by batch, with the same conversion."""
    loaded = load_model("digits_cnn")
    data = load_data("digits", loaded)
    snn = sl.convert(loaded.model, calibration_loader(data, 96, 32, seed=0), dynamics="paper")
    x, y = data.evaluation.tensors[0][:225], data.evaluation.tensors[1][:225]
    ann, snn_counts = 0, torch.zeros(2, dtype=torch.int64)
    for i in range(0, 225, 32):
        ann += int((loaded.model(x[i:i + 32]).argmax(-1) == y[i:i + 32]).sum())
        snn_counts += (snn(x[i:i + 32], [4, 16]).argmax(-1) == y[i:i + 32]).sum(-1)
    return dict(ann=ann, snn=snn_counts.tolist())


@pytest.fixture(scope="module")
def single(tmp_path_factory, reference):
    out = tmp_path_factory.mktemp("single")
    return evaluate(**ARGS, out=out), out


def test_counts_match_a_direct_computation(single, reference):
    result, out = single
    assert result.samples == 225 and result.batches == 8 and result.classes == 10
    assert result.ann_correct == reference["ann"]
    assert result.snn_correct == reference["snn"]
    assert result.snn_correct5 is None  # top-5 only with more than 10 classes
    saved = json.loads((out / "results.json").read_text())
    assert saved["snn_correct"] == reference["snn"]
    assert saved["snn_top1"]["16"] == reference["snn"][1] / 225
    assert "| SNN T=16 |" in (out / "results.md").read_text()


def test_killed_and_resumed_equals_uninterrupted(tmp_path, monkeypatch, single):
    monkeypatch.setenv(ABORT_ENV, "3")
    with pytest.raises(EvaluationAborted):
        evaluate(**ARGS, out=tmp_path)
    partial = json.loads((tmp_path / "partial" / "rank0.json").read_text())
    assert partial["done"] == [0, 1, 2] and partial["counts"][0] == 96
    assert not (tmp_path / "results.json").exists()
    monkeypatch.delenv(ABORT_ENV)
    resumed = evaluate(**ARGS, out=tmp_path)
    assert resumed.resumed_batches == 3
    assert (resumed.ann_correct, resumed.snn_correct) == (single[0].ann_correct,
                                                          single[0].snn_correct)
    again = evaluate(**ARGS, out=tmp_path, restart=True)  # --restart recounts everything
    assert again.resumed_batches == 0 and again.snn_correct == single[0].snn_correct


def test_changed_arguments_do_not_reuse_partial_counts(tmp_path, monkeypatch):
    monkeypatch.setenv(ABORT_ENV, "2")
    with pytest.raises(EvaluationAborted):
        evaluate(**ARGS, out=tmp_path)
    monkeypatch.delenv(ABORT_ENV)
    other = evaluate(**{**ARGS, "timestamps": [4, 8], "limit": 64}, out=tmp_path)
    assert other.resumed_batches == 0 and other.samples == 64


def test_saved_network_evaluates_without_conversion(tmp_path, single):
    first = evaluate(**ARGS, out=tmp_path / "a", save_network=tmp_path / "snn.pt")
    with pytest.raises(SpecError, match="--trust-model-file"):
        evaluate(**{**ARGS, "model": str(tmp_path / "snn.pt")}, out=tmp_path / "b")
    second = evaluate(**{**ARGS, "model": str(tmp_path / "snn.pt")}, out=tmp_path / "b",
                      trust_model_file=True)
    assert second.snn_correct == first.snn_correct == single[0].snn_correct
    assert second.ann_correct == first.ann_correct
    assert "SpikingNetwork" in second.details["model_source"]  # used as saved, not converted


def test_bad_specs_stop_before_any_work(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        evaluate(**{**ARGS, "data": str(tmp_path / "none")}, out=tmp_path)
    torch.save((torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 30])), tmp_path / "d.pt")
    with pytest.raises(SpecError, match="labels up to 30"):
        evaluate(**{**ARGS, "data": str(tmp_path / "d.pt")}, out=tmp_path)
    assert not (tmp_path / "partial").exists()


def _torchrun(out: Path, env_extra: dict) -> subprocess.CompletedProcess:
    # SIGNGD_LAB_NO_KERNELS=1 spares each process the numba compilation; on this ReLU /
    # max-pool network the torch path computes the same numbers bit for bit (test_kernels)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SIGNGD_LAB_NO_KERNELS": "1", **env_extra}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "signgd_lab.cli", "evaluate", "--model", "digits_cnn", "--data", "digits",
           "--dynamics", "paper", "--timestamps", "4,16", "--calibration-samples", "96",
           "--batch-size", "32", "--limit", "225", "--no-progress", "--out", str(out)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _check_same_counts(out: Path, single) -> dict:
    result = json.loads((out / "results.json").read_text())
    assert result["world_size"] == 2 and result["samples"] == 225 and result["batches"] == 8
    assert result["ann_correct"] == single[0].ann_correct
    assert result["snn_correct"] == single[0].snn_correct
    return result


def test_two_processes_count_exactly_like_one(tmp_path, single):
    """torchrun --nproc-per-node 2 (gloo): 225 samples in 8 batches, 4 per rank, the last one
    a single sample (nothing padded); the summed counts equal the single-process counts."""
    done = _torchrun(tmp_path, {})
    assert done.returncode == 0, done.stderr[-3000:]
    assert _check_same_counts(tmp_path, single)["resumed_batches"] == 0
    assert "| SNN T=16 |" in done.stdout  # printed by rank 0 only
    assert done.stdout.count("| SNN T=16 |") == 1


@pytest.mark.slow
def test_failing_rank_is_named_and_the_restart_resumes(tmp_path, single):
    """Rank 1 fails after one batch: it is named, torchrun stops rank 0 and no result is
    written; the restarted run resumes from both ranks' partial counts."""
    failed = _torchrun(tmp_path, {ABORT_ENV: "1@1"})
    assert failed.returncode != 0
    assert "rank 1 of 2 failed: EvaluationAborted" in failed.stderr
    assert not (tmp_path / "results.json").exists()
    done = _torchrun(tmp_path, {})
    assert done.returncode == 0, done.stderr[-3000:]
    assert _check_same_counts(tmp_path, single)["resumed_batches"] >= 1


def test_top5_counts_per_T():
    from signgd_lab.evaluation import _batch_counts

    y = torch.tensor([0, 1, 2])
    logits = torch.zeros(3, 12)
    logits[0, 0] = 1  # sample 0: top-1 right
    logits[1, 5:10] = 1  # sample 1: label 1 outside the top 5
    logits[2, 3:7] = 2
    logits[2, 2] = 1  # sample 2: label 2 fifth
    spiking = torch.stack([logits, -logits])  # T1: as the ANN; T2: reversed order
    counts = _batch_counts(logits, spiking, y, top5=True)
    expected_t2 = int((torch.topk(-logits, 5).indices == y[:, None]).any(-1).sum())
    assert counts.tolist() == [3, 1, 2, 1, int((-logits).argmax(-1).eq(y).sum()), 2, expected_t2]


def test_cli_evaluate_with_a_config_file(tmp_path, capsys):
    from signgd_lab.cli import main

    cfg = tmp_path / "eval.yaml"
    cfg.write_text("model: digits_cnn\ntimestamps: [4, 8]\nbatch_size: 16\nlimit: 33\n"
                   "calibration_samples: 32\n")
    assert main(["evaluate", "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-progress",
                 "--append", str(tmp_path / "all.jsonl")]) == 0
    result = json.loads((tmp_path / "o" / "results.json").read_text())
    assert result["samples"] == 33 and result["timestamps"] == [4, 8] and result["batches"] == 3
    assert json.loads((tmp_path / "all.jsonl").read_text())["snn_correct"] == result["snn_correct"]
    assert "| SNN T=8 |" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--model", "digits_cnn", "--data", "no/such/dir"], "data 'no/such/dir' does not exist"),
    (["--model", "timm:no_such_net"], "timm has no architecture 'no_such_net'"),
    (["--data", "digits"], "--model is required"),
])
def test_cli_evaluate_bad_specs_exit_2(tmp_path, capsys, argv, message):
    from signgd_lab.cli import main

    assert main(["evaluate", *argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_image_folder_with_loader_workers(tmp_path, zoo_cache):
    """An ImageNet-layout folder of digits PNGs, read by 2 DataLoader workers (the transforms
    pickle), gives the counts of the same images given as tensors (8-bit rounding aside: the
    ANN agrees on at least all but one image)."""
    from test_specs import write_digits_folder

    _, (x_tr, y_tr), (x_te, y_te) = zoo_cache("digits_cnn")
    write_digits_folder(tmp_path / "inet" / "train", x_tr, y_tr, per_class=4)
    write_digits_folder(tmp_path / "inet" / "val", x_te, y_te, per_class=3)
    args = {**ARGS, "limit": None, "calibration_samples": 40}
    result = evaluate(**{**args, "data": str(tmp_path / "inet")}, workers=2)
    assert result.samples == 30 and result.classes == 10 and result.batches == 1
    assert "calibrate on train/ (40 images)" in result.details["data_description"]
    index = [i for d in range(10) for i in (y_te == d).nonzero().flatten()[:3].tolist()]
    model = load_model("digits_cnn").model
    ann_tensors = int((model(x_te[index]).argmax(-1) == y_te[index]).sum())
    assert abs(result.ann_correct - ann_tensors) <= 1
