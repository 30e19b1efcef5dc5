"""Distributed training with 2 gloo processes under the real torchrun (``torch.distributed.run``): the same global
batch as one process gives the same training; a killed rank stops the group and ``resume`` continues every rank
exactly; a cancel on one rank stops all after the same step; the launcher's options; a whole job from
``extremeseg train --nproc-per-node 2`` (Ctrl-C or CANCEL file, resume, files and progress written once)."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_recipe_jobs import write_case

from ExtremeSegLib.cli import main
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.training import distributed
from ExtremeSegLib.training.engine import load_checkpoint, select_device

WORKER = str(Path(__file__).with_name("distributed_fit_worker.py"))


def run_worker(out, batch, epochs, *fault, processes=2):
    out.mkdir(exist_ok=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    command = (launcher if processes > 1 else [sys.executable]) + [WORKER, str(out), str(batch), str(epochs)]
    done = subprocess.run(command + [str(f) for f in fault], capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """An uninterrupted run of 2 processes of batch 1, 4 epochs."""
    out = tmp_path_factory.mktemp("two")
    code, log = run_worker(out, 1, 4)
    assert code == 0, log[-3000:]
    return torch.load(out / "result.pt"), out


def test_two_processes_of_batch_1_match_one_process_of_batch_2(tmp_path, two_processes):
    code, log = run_worker(tmp_path, 2, 4, processes=1)
    assert code == 0, log[-3000:]
    single, (double, folder) = torch.load(tmp_path / "result.pt"), two_processes
    # stated tolerance: float rounding of the all-reduced gradients, amplified by Adam over 8 steps
    assert single["losses"] == pytest.approx(double["losses"], abs=1e-4)
    assert double["losses"][-1] < 0.6 * double["losses"][0]  # it trained
    for name, weight in single["weights"].items():
        assert torch.allclose(weight, double["weights"][name], atol=5e-3), name
    ranks = load_checkpoint(folder / "checkpoint.pt")["rank_rngs"]
    assert len(ranks) == 2 and ranks[0][0] != ranks[1][0]  # each rank its own patch sampling


def test_a_killed_rank_stops_the_group_and_resume_continues_exactly(tmp_path, two_processes):
    code, log = run_worker(tmp_path, 1, 4, "kill", 2)
    assert code != 0 and "SIGKILL" in log
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2  # the last checkpoint is usable
    code, log = run_worker(tmp_path, 1, 4)
    assert code == 0, log[-3000:]
    resumed, (uninterrupted, _) = torch.load(tmp_path / "result.pt"), two_processes
    assert resumed["losses"] == uninterrupted["losses"]
    assert all(torch.equal(w, uninterrupted["weights"][k]) for k, w in resumed["weights"].items())


def test_a_cancel_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    code, log = run_worker(tmp_path, 1, 4, "cancel", 2)
    assert code != 0
    # both ranks stopped themselves after epoch 2 (rank 0 was not merely killed by torchrun)
    assert [(tmp_path / f"cancelled_rank{r}.txt").read_text() for r in (0, 1)] == ["2", "2"], log[-3000:]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2
    assert not (tmp_path / "result.pt").exists()


def test_torchrun_options_and_single_process_default():
    assert distributed.torchrun_arguments(2) == ["--nproc-per-node", "2", "--nnodes", "1", "--max-restarts", "0",
                                                 "--standalone"]
    assert distributed.torchrun_arguments(4, "2", 1, "node0:29400", "job7") == [
        "--nproc-per-node", "4", "--nnodes", "2", "--max-restarts", "0", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", "node0:29400", "--rdzv-id", "job7", "--node-rank", "1"]
    with pytest.raises(InputError, match="rdzv-endpoint"):
        distributed.torchrun_arguments(4, "2")
    with pytest.raises(InputError, match="at least 1"):
        distributed.torchrun_arguments(0)
    assert not distributed.active() and distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    assert distributed.backend_for(torch.device("cuda", 0)) == "nccl"
    if not torch.cuda.is_available():  # "all GPUs" is a job device; without a GPU it is refused clearly
        with pytest.raises(InputError, match="sees no CUDA GPU"):
            select_device("cuda:all")


@pytest.mark.parametrize("how", ["ctrl-c", "cancel-file"])
def test_two_process_job_from_the_cli_cancels_as_a_group_resumes_and_writes_once(tmp_path, how):
    rng = np.random.default_rng(0)
    cases = [write_case(tmp_path, n, rng) for n in range(4)]
    job = {"recipe": "extreme_points", "output": "run", "cases": cases[:3], "validation": cases[3:],
           "classes": [{"name": "object", "label_values": [3]}], "inputs": {"pad_mm": 4.0},
           "network": {"filters": [8, 16, 32]}, "rounds": {"max_rounds": 2, "agreement": 1.0}, "device": "cpu",
           "training": {"epochs": 3, "steps_per_epoch": 3, "batch_size": 1, "learning_rate": 0.005}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    command = [sys.executable, "-m", "ExtremeSegLib.cli", "train", "--config", str(tmp_path / "job.json"),
               "--nproc-per-node", "2", "--progress-jsonl"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in child.stdout:  # cancel once the first epoch is reported
        if json.loads(line)["event"] == "epoch":
            if how == "ctrl-c":
                child.send_signal(signal.SIGINT)
            else:
                (tmp_path / "run" / "CANCEL").write_text("")
            break
    rest, errors = child.communicate(timeout=300)
    assert child.returncode == 130, errors[-3000:]
    assert "cancelled" in errors and not (tmp_path / "run" / "model.pt").exists()
    assert load_checkpoint(tmp_path / "run" / "state" / "checkpoint.pt")["epoch"] >= 1
    if how == "cancel-file":  # the resume after it is the same whichever way the run was cancelled
        return

    done = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["event"] for e in events].count("start") == 1 and events[-1]["event"] == "done"  # rank 0 alone
    assert any("resuming round 0" in e.get("text", "") for e in events)
    assert [e["epoch"] for e in events if e["event"] == "epoch"][-1] == 3
    history = json.loads((tmp_path / "run" / "rounds.json").read_text())
    assert len(history) == 2 and history[0]["agreement"] is not None  # the between-round work was gathered
    assert history[1]["validation_dice"] > 0.5
    assert len(list((tmp_path / "run" / "segmentations").glob("*.seg.nrrd"))) == 3


def test_a_failing_worker_is_named_by_the_launcher(tmp_path, capsys):
    job = {"recipe": "fully_supervised", "output": "run", "classes": [{"name": "object", "label_values": [1]}],
           "cases": [{"image": "gone_image.nii.gz", "label": "gone_label.nii.gz"}], "device": "cpu"}
    (tmp_path / "job.json").write_text(json.dumps(job))  # readable by the launcher; the workers miss the images
    code = main(["train", "--config", str(tmp_path / "job.json"), "--nproc-per-node", "2"])
    errors = capsys.readouterr().err
    assert code == 2 and "rank " in errors and "failed (exit status 2)" in errors and "--resume" in errors
