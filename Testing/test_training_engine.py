"""The shared training loop on tiny synthetic data: it learns, checkpoints, resumes, cancels, reports, survives OOM."""

import io
import json

import numpy as np
import pytest
import torch
from conftest import make_ellipsoid
from scipy import ndimage as ndi

from ExtremeSegLib.errors import CancelledError, InputError
from ExtremeSegLib.metrics import dice
from ExtremeSegLib.progress import Progress
from ExtremeSegLib.training.data import Normalisation, TrainingVolume
from ExtremeSegLib.training.engine import TrainingSettings, fit, load_checkpoint, select_device, shrink_for_memory
from ExtremeSegLib.training.inference import predict_probabilities
from ExtremeSegLib.training.networks import build_network, plan_network, total_stride

PATCH = (16, 16, 16)
CPU = torch.device("cpu")


def ellipsoid_volume(seed: int):
    """A noisy bright ellipsoid and a blurred (soft) version of its mask as the pseudo-label."""
    rng = np.random.default_rng(seed)
    image, label = make_ellipsoid(shape=(20, 20, 20), radii_mm=tuple(rng.uniform(4.0, 7.0, 3)),
                                  spacing=(1.0, 1.0, 1.0), noise=0.2, seed=seed)
    soft = ndi.gaussian_filter(label.array.astype(np.float32), 0.7)
    inputs = Normalisation().apply(image.array)[None]
    return TrainingVolume(inputs, np.stack([1.0 - soft, soft]), np.ones(soft.shape, np.float32)), label.array


def tiny_network(seed: int = 0):
    kernels, strides = plan_network((1.0, 1.0, 1.0), PATCH, min_feature_size=2, max_levels=3)
    torch.manual_seed(seed)
    return build_network(1, 2, kernels, strides, [8, 16, 32]), total_stride(strides)


def train(network, multiple, checkpoint, progress=None, epochs=4, evaluate=None, evaluate_every=1, **settings):
    volumes = [ellipsoid_volume(seed)[0] for seed in range(4)]
    settings = TrainingSettings(epochs=epochs, steps_per_epoch=2, batch_size=2, **settings)
    return fit(network, volumes, settings, spacing_mm=(1.0, 1.0, 1.0), patch_size=PATCH, multiple=multiple,
               device=CPU, checkpoint=checkpoint, progress=progress, evaluate=evaluate,
               evaluate_every=evaluate_every)


def test_training_lowers_the_loss_reaches_a_dice_and_reports_json_lines(tmp_path):
    network, multiple = tiny_network()
    stream = io.StringIO()
    result = train(network, multiple, tmp_path / "ck.pt", Progress(jsonl=True, stream=stream), epochs=12,
                   learning_rate=3e-3)
    assert result.losses[-1] < 0.5 * result.losses[0]
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, 13))
    assert all(e["round"] == 0 and e["epochs"] == 12 and isinstance(e["loss"], float) for e in epochs)
    assert epochs[-1]["dice"] > epochs[0]["dice"]

    held_out, truth = ellipsoid_volume(seed=99)
    probabilities = predict_probabilities(network, held_out.inputs, PATCH, CPU)
    assert probabilities.shape == (2,) + truth.shape
    assert np.allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert dice(probabilities[1] >= 0.5, truth) > 0.85


class CancelAfter(Progress):
    """Creates the CANCEL file once a given epoch has been reported (as the Slicer module would)."""

    def __init__(self, cancel_file, epoch):
        super().__init__(jsonl=True, stream=io.StringIO(), cancel_file=cancel_file)
        self.after = epoch

    def emit(self, event, **fields):
        super().emit(event, **fields)
        if event == "epoch" and fields["epoch"] == self.after:
            self.cancel_file.write_text("cancel")


def test_cancel_keeps_a_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path):
    straight, multiple = tiny_network()
    reference = train(straight, multiple, tmp_path / "straight.pt")

    interrupted, _ = tiny_network()
    cancel_file = tmp_path / "CANCEL"
    with pytest.raises(CancelledError):
        train(interrupted, multiple, tmp_path / "resumed.pt", CancelAfter(cancel_file, epoch=2))
    saved = load_checkpoint(tmp_path / "resumed.pt")
    assert saved["epoch"] == 2 and saved["round"] == 0 and len(saved["losses"]) == 2
    assert {"model", "optimizer", "scheduler", "scaler", "numpy_rng", "torch_rng"} <= set(saved)

    cancel_file.unlink()
    fresh, _ = tiny_network(seed=123)  # other initial weights: everything must come from the checkpoint
    stream = io.StringIO()
    resumed = train(fresh, multiple, tmp_path / "resumed.pt", Progress(jsonl=True, stream=stream))
    epochs = [json.loads(line)["epoch"] for line in stream.getvalue().splitlines() if '"epoch"' in line]
    assert epochs == [3, 4]
    assert resumed.losses == reference.losses
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name


class OutOfMemoryAbove(torch.nn.Module):
    """Stands in for a GPU that holds at most ``limit`` input voxels per batch (CPU builds cannot run out)."""

    def __init__(self, network, limit):
        super().__init__()
        self.network, self.limit, self.calls = network, limit, []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        if x[:, 0].numel() > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.network(x)


def test_out_of_memory_halves_batch_then_patch_and_says_so(tmp_path):
    network, multiple = tiny_network()
    limited = OutOfMemoryAbove(network, limit=16 * 16 * 8)
    stream = io.StringIO()
    result = train(limited, multiple, tmp_path / "ck.pt", Progress(jsonl=True, stream=stream), epochs=1)
    assert result.batch_size == 1 and np.prod(result.patch_size) * result.batch_size <= 16 * 16 * 8
    warnings = [json.loads(line)["text"] for line in stream.getvalue().splitlines() if '"warning"' in line]
    assert len(warnings) == 2 and "batch size 1" in warnings[0] and "patch" in warnings[1]
    assert limited.calls[0] == (2, 1, 16, 16, 16) and limited.calls[-1][0] == 1

    hopeless = OutOfMemoryAbove(tiny_network()[0], limit=1)
    with pytest.raises(InputError, match="ran out of memory even with batch size 1"):
        train(hopeless, multiple, tmp_path / "ck2.pt", epochs=1)


def test_shrinking_order_and_floor():
    assert shrink_for_memory((32, 32, 16), 4, (8, 8, 4)) == ((32, 32, 16), 2)
    assert shrink_for_memory((32, 32, 16), 1, (8, 8, 4)) == ((16, 32, 16), 1)
    assert shrink_for_memory((8, 8, 4), 1, (8, 8, 4)) is None


def test_settings_and_device_are_checked():
    with pytest.raises(InputError, match="epochs"):
        TrainingSettings(epochs=0)
    with pytest.raises(InputError, match="unknown loss"):
        TrainingSettings(loss="focal")
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            select_device("cuda")


def test_an_objective_with_its_own_parameters_is_trained_and_checkpointed(tmp_path):
    """A recipe's Objective (its own parameter here: a learnt logit scale) is optimised with the network."""
    from ExtremeSegLib.training.engine import Objective
    from ExtremeSegLib.training.losses import SoftDiceLoss

    class ScaledDice(Objective):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(1.0))
            self.dice = SoftDiceLoss()

        def forward(self, network, x, target, weight):
            logits = network(x) * self.scale
            return self.dice(logits.float(), target[:, :2], weight), logits

    network, multiple = tiny_network()
    objective = ScaledDice()
    volumes = [ellipsoid_volume(seed)[0] for seed in range(4)]
    # an extra target channel (the objective's own) must not disturb the engine's Dice meter
    volumes = [TrainingVolume(v.inputs, np.concatenate([v.target, v.target[1:]]), v.weight) for v in volumes]
    settings = TrainingSettings(epochs=3, steps_per_epoch=2, batch_size=2)
    result = fit(network, volumes, settings, spacing_mm=(1.0, 1.0, 1.0), patch_size=PATCH, multiple=multiple,
                 device=CPU, checkpoint=tmp_path / "ck.pt", loss_fn=objective)
    assert len(result.losses) == 3
    assert float(objective.scale.detach()) != 1.0
    state = load_checkpoint(tmp_path / "ck.pt")
    assert float(state["objective"]["scale"]) == pytest.approx(float(objective.scale.detach()))


def test_every_epoch_is_logged_with_its_time_and_evaluated_where_asked_also_across_a_resume(tmp_path):
    network, multiple = tiny_network()
    held_out, truth = ellipsoid_volume(seed=99)
    evaluated = []

    def evaluate(epoch):  # what a recipe does: predict held-out data with the network as it stands
        assert not network.training
        evaluated.append(epoch)
        probabilities = predict_probabilities(network, held_out.inputs, PATCH, CPU)
        return {"validation_dice": dice(probabilities[1] >= 0.5, truth)}

    cancel_file = tmp_path / "CANCEL"
    with pytest.raises(CancelledError):
        fit(network, [ellipsoid_volume(seed)[0] for seed in range(4)],
            TrainingSettings(epochs=5, steps_per_epoch=2, batch_size=2), spacing_mm=(1.0, 1.0, 1.0),
            patch_size=PATCH, multiple=multiple, device=CPU, checkpoint=tmp_path / "ck.pt",
            progress=CancelAfter(cancel_file, epoch=2), evaluate=evaluate, evaluate_every=2)
    cancel_file.unlink()
    stream = io.StringIO()
    result = train(network, multiple, tmp_path / "ck.pt", Progress(jsonl=True, stream=stream), epochs=5,
                   evaluate=evaluate, evaluate_every=2)
    assert evaluated == [2, 4, 5]  # every 2nd epoch and the last; the resumed run kept epoch 2's figure
    assert [r["epoch"] for r in result.epochs] == [1, 2, 3, 4, 5]
    assert all(r["seconds"] > 0 and r["loss"] == loss for r, loss in zip(result.epochs, result.losses))
    assert [("validation_dice" in r) for r in result.epochs] == [False, True, False, True, True]
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert epochs[-1]["seconds"] == pytest.approx(sum(r["seconds"] for r in result.epochs))
    assert epochs[-1]["validation_dice"] == result.epochs[-1]["validation_dice"]


def test_compile_setting_is_checked_and_auto_compiles_only_long_runs():
    from ExtremeSegLib.training.engine import COMPILE_MIN_STEPS, compiled

    network, _ = tiny_network()
    assert compiled(network, "auto", COMPILE_MIN_STEPS - 1) is network
    assert compiled(network, "off", 10 * COMPILE_MIN_STEPS) is network
    assert compiled(network, "auto", COMPILE_MIN_STEPS) is not network
    with pytest.raises(InputError, match="training.compile"):
        TrainingSettings(compile="yes")


def test_a_compiled_run_trains_like_an_eager_one(tmp_path):
    # the compiled step computes the same function: same data, same initial weights -> close losses
    eager, multiple = tiny_network()
    reference = train(eager, multiple, tmp_path / "eager.pt", epochs=2, compile="off")
    network, _ = tiny_network()
    stream = io.StringIO()
    result = train(network, multiple, tmp_path / "compiled.pt", Progress(jsonl=True, stream=stream), epochs=2,
                   compile="on")
    assert "torch.compile cannot" not in stream.getvalue()  # it compiled here (gcc is present)
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-3)
    saved = load_checkpoint(tmp_path / "compiled.pt")
    assert set(saved["model"]) == set(eager.state_dict())  # the plain network's weights, not the wrapper's


def test_sgd_optimizer_is_nesterov_at_its_default_rate_and_lowers_the_loss(tmp_path):
    network, multiple = tiny_network()
    result = train(network, multiple, tmp_path / "sgd.pt", epochs=10, optimizer="sgd")
    saved = load_checkpoint(tmp_path / "sgd.pt")
    group = saved["optimizer"]["param_groups"][0]
    assert saved["optimizer_name"] == "sgd"
    assert group["nesterov"] and group["momentum"] == 0.99 and group["initial_lr"] == pytest.approx(1e-2)
    assert "momentum_buffer" in next(iter(saved["optimizer"]["state"].values()))  # SGD's state, not AdamW's
    assert result.losses[-1] < 0.7 * result.losses[0]
    assert TrainingSettings().lr == pytest.approx(2e-3)
    assert TrainingSettings(optimizer="sgd", learning_rate=0.1).lr == 0.1  # a rate the job sets wins
    with pytest.raises(InputError, match="unknown training.optimizer 'adam'; choose one of"):
        TrainingSettings(optimizer="adam")


def test_resuming_with_another_optimizer_restarts_the_round_and_says_so(tmp_path):
    interrupted, multiple = tiny_network()
    cancel_file = tmp_path / "CANCEL"
    with pytest.raises(CancelledError):
        train(interrupted, multiple, tmp_path / "ck.pt", CancelAfter(cancel_file, epoch=2))
    assert load_checkpoint(tmp_path / "ck.pt")["optimizer_name"] == "adamw"
    cancel_file.unlink()

    restarted, _ = tiny_network()  # the round's starting weights
    stream = io.StringIO()
    result = train(restarted, multiple, tmp_path / "ck.pt", Progress(jsonl=True, stream=stream), optimizer="sgd")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any("trained with adamw, this run uses sgd" in e.get("text", "") for e in events)
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2, 3, 4]
    fresh = train(tiny_network()[0], multiple, tmp_path / "fresh.pt", optimizer="sgd")
    assert result.losses == fresh.losses  # a clean restart is a fresh SGD run
    assert load_checkpoint(tmp_path / "ck.pt")["optimizer_name"] == "sgd"
