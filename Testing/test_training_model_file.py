"""Model files: round trip, and refusal of tampered, inconsistent, foreign or code-carrying files."""

import json

import pytest
import torch

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.training.data import InputSpec
from ExtremeSegLib.training.model_file import description_digest, load_model, read_description, save_model
from ExtremeSegLib.training.networks import build_network, plan_network

KERNELS, STRIDES = plan_network((1.0, 1.0, 2.0), (16, 16, 8), min_feature_size=2, max_levels=3)
PARAMS = dict(in_channels=2, out_channels=2, kernels=KERNELS, strides=STRIDES, filters=[4, 8, 16], dropout=0.0,
              dropout_levels=None, norm="instance")


def description():
    inputs = InputSpec(cues=("heatmap",)).resolved("mri", (1.0, 1.0, 2.0))
    return {"recipe": "extreme_points", "network": PARAMS, "inputs": inputs.to_dict(), "patch_size": [16, 16, 8],
            "classes": [{"name": "hippocampus", "label_values": [1, 2]}]}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    network = build_network(**PARAMS)
    return network, save_model(tmp_path / "model.pt", network, description())


def test_round_trip(saved, tmp_path):
    network, path = saved
    model = load_model(path)
    x = torch.randn(1, 2, 16, 16, 8)
    network.eval()
    with torch.no_grad():
        assert torch.equal(model.network(x), network(x))
    assert model.class_names == ["hippocampus"] and model.patch_size == (16, 16, 8)
    assert model.inputs.channels == ["image", "heatmap"] and model.inputs.spacing_mm == (1.0, 1.0, 2.0)
    info = read_description(path)
    assert info["format"] == "extremeseg-model" and {"torch", "monai", "extremeseg"} <= set(info["versions"])
    with pytest.raises(InputError, match="already exists"):
        save_model(path, network, description())


def rewrite(path, change):
    content = torch.load(path, weights_only=True)
    change(content)
    torch.save(content, path)


def rewrite_description(path, change, reseal=True):
    """Edit the model file's JSON description in place (``change`` mutates the parsed dict); ``reseal``: update its
    checksum too, as a writer that made an inconsistent file would (so that the checks behind the checksum run)."""
    def edit(content):
        description = json.loads(content["description"])
        change(description)
        if reseal and "description_sha256" in description:
            description["description_sha256"] = description_digest(description)
        content["description"] = json.dumps(description)
    rewrite(path, edit)


def test_edited_description_is_refused(saved):
    _, path = saved
    rewrite_description(path, lambda d: d["classes"][0].update(name="amygdala"), reseal=False)  # loads fine otherwise
    with pytest.raises(InputError, match="description does not match its checksum"):
        load_model(path)


def test_format_1_files_without_a_description_checksum_stay_readable(saved):
    _, path = saved
    rewrite_description(path, lambda d: (d.update(format_version=1), d.pop("description_sha256")), reseal=False)
    assert load_model(path).description["format_version"] == 1


def test_modified_weights_are_refused(saved):
    _, path = saved
    rewrite(path, lambda c: c["weights"][next(iter(c["weights"]))].add_(0.01))
    with pytest.raises(InputError, match="modified or damaged"):
        load_model(path)


def test_description_that_does_not_fit_the_weights_is_refused(saved):
    _, path = saved
    rewrite_description(path, lambda d: d["network"].update(filters=[8, 16, 32]))
    with pytest.raises(InputError, match="do not fit the network"):
        load_model(path)


def test_channel_mismatch_is_refused(saved):
    _, path = saved
    rewrite_description(path, lambda d: d["inputs"].update(cues=[]))
    with pytest.raises(InputError, match="input channels"):
        load_model(path)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_and_foreign_files_are_refused(saved, tmp_path):
    _, path = saved
    content = torch.load(path, weights_only=True)
    content["extra"] = Payload()
    evil = tmp_path / "evil.pt"
    torch.save(content, evil)
    with pytest.raises(InputError, match="never code"):
        load_model(evil)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(InputError, match="not an ExtremeSeg model"):
        load_model(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": {}}, plain)
    with pytest.raises(InputError, match="not an ExtremeSeg model"):
        load_model(plain)
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(InputError, match=r"is a folder, not a model file; give .*, e\.g\. .*/model\.pt"):
        load_model(path.parent)


def test_newer_format_is_refused(saved):
    _, path = saved
    rewrite_description(path, lambda d: d.update(format_version=99))
    with pytest.raises(InputError, match="newer ExtremeSeg"):
        load_model(path)
