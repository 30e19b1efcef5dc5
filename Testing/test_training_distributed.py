"""Distributed training with 2 gloo processes under the real torchrun (``torch.distributed.run``): the same global
batch as one process gives the same training; a killed rank stops the group and ``resume`` continues every rank
exactly; a cancel on one rank stops all after the same step; the launcher's options and messages."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.training import distributed
from ExtremeSegLib.training.engine import load_checkpoint

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
    assert code != 0 and log.count("exitcode  : 130") == 2, log[-3000:]  # both ranks, not one killed by torchrun
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
