"""Model folders: safetensors weights + model.json, atomic writes, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import engine.model.checkpoint as checkpoint
from engine.errors import CheckpointError, FedSegError
from engine.model.checkpoint import (
    MODEL_CARD,
    ModelCard,
    atomic_write_json,
    load_model,
    load_tensors,
    read_card,
    save_model,
    save_tensors,
)
from engine.model.networks import build_network, network_args

TINY = {"channels": [4, 8], "strides": [2]}


def make_card(args=TINY, **changes) -> ModelCard:
    values = dict(
        network="unet",
        network_args=network_args("unet", args),
        target_spacing=[2.0, 2.0, 3.0],
        hu_window=[-160.0, 240.0],
        patch_size=[16, 16, 16],
        lesion_label=1,
        algorithm="auto-fedavg",
        round=7,
        selected_by="best mean validation Dice over sites",
    )
    values.update(changes)
    return ModelCard(**values)


def tiny_state(seed: int = 0, args=TINY) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in build_network("unet", args).state_dict().items()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith("."))


def test_save_and_load_model_round_trip(tmp_path):
    state = tiny_state(3)
    card = make_card()
    folder = save_model(tmp_path / "model", state, card)
    assert folder == tmp_path / "model"
    assert (folder / "global_model.safetensors").is_file()
    assert (folder / MODEL_CARD).is_file()
    assert leftovers(folder) == []

    network, loaded = load_model(folder)
    assert loaded == card
    assert loaded.round == 7 and loaded.algorithm == "auto-fedavg"
    assert loaded.network_args["channels"] == [4, 8]
    assert loaded.labels == {"0": "background", "1": "lesion"}
    assert not network.training  # eval mode
    got = network.state_dict()
    assert got.keys() == state.keys()
    for name, tensor in state.items():
        assert torch.equal(got[name], tensor), name
    # and a different seed really gives different weights (the check above is not vacuous)
    other = tiny_state(4)
    assert any(not torch.equal(other[k], state[k]) for k in state)


def test_model_json_is_plain_json(tmp_path):
    save_model(tmp_path, tiny_state(), make_card())
    values = json.loads((tmp_path / MODEL_CARD).read_text())
    assert values["network"] == "unet"
    assert values["weights"] == "global_model.safetensors"
    assert values["patch_size"] == [16, 16, 16]
    assert values["format_version"] == 1
    assert read_card(tmp_path) == make_card()


def test_load_model_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(CheckpointError, match="not found") as info:
        load_model(missing)
    assert str(missing) in str(info.value)


def test_load_model_without_model_json(tmp_path):
    save_tensors(tmp_path / "global_model.safetensors", tiny_state())
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert MODEL_CARD in str(info.value)


def test_load_model_with_invalid_json(tmp_path):
    (tmp_path / MODEL_CARD).write_text("{ not json")
    with pytest.raises(CheckpointError, match="not valid JSON") as info:
        load_model(tmp_path)
    assert str(tmp_path / MODEL_CARD) in str(info.value)


def test_load_model_with_incomplete_card(tmp_path):
    values = make_card().to_dict()
    del values["network"]
    (tmp_path / MODEL_CARD).write_text(json.dumps(values))
    with pytest.raises(CheckpointError, match="incomplete") as info:
        load_model(tmp_path)
    assert str(tmp_path / MODEL_CARD) in str(info.value)


def test_card_ignores_unknown_fields(tmp_path):
    values = make_card().to_dict() | {"future_field": 1}
    (tmp_path / MODEL_CARD).write_text(json.dumps(values))
    assert read_card(tmp_path) == make_card()


def test_load_model_with_corrupt_weights(tmp_path):
    save_model(tmp_path, tiny_state(), make_card())
    weights = tmp_path / "global_model.safetensors"
    weights.write_bytes(b"\x00\x01garbage, not a safetensors file" * 3)
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path)
    assert str(weights) in str(info.value)


def test_load_model_with_truncated_weights(tmp_path):
    save_model(tmp_path, tiny_state(), make_card())
    weights = tmp_path / "global_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path)
    assert str(weights) in str(info.value)


def test_load_model_with_missing_weights(tmp_path):
    save_model(tmp_path, tiny_state(), make_card())
    (tmp_path / "global_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="not found") as info:
        load_model(tmp_path)
    assert str(tmp_path / "global_model.safetensors") in str(info.value)


def test_load_model_with_weights_of_another_architecture(tmp_path):
    other = {"channels": [4, 16], "strides": [2]}
    save_model(tmp_path, tiny_state(args=other), make_card())  # card says channels (4, 8)
    with pytest.raises(CheckpointError, match="do not fit") as info:
        load_model(tmp_path)
    assert str(tmp_path / "global_model.safetensors") in str(info.value)
    assert "unet" in str(info.value)


def test_load_model_with_missing_tensor(tmp_path):
    state = tiny_state()
    state.pop(sorted(state)[0])
    save_model(tmp_path, state, make_card())
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path)


def test_load_model_with_unknown_network_names_the_file(tmp_path):
    save_model(tmp_path, tiny_state(), make_card())
    values = json.loads((tmp_path / MODEL_CARD).read_text())
    values["network"] = "unet3"
    (tmp_path / MODEL_CARD).write_text(json.dumps(values))
    with pytest.raises(FedSegError) as info:
        load_model(tmp_path)
    assert isinstance(info.value, CheckpointError)
    assert str(tmp_path) in str(info.value)


def test_interrupted_save_leaves_no_file_and_no_temp(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", boom)
    folder = tmp_path / "model"
    with pytest.raises(RuntimeError, match="disk full"):
        save_model(folder, tiny_state(), make_card())
    assert not (folder / "global_model.safetensors").exists()
    assert not (folder / MODEL_CARD).exists()
    assert list(folder.iterdir()) == []


def test_interrupted_save_keeps_the_previous_model(tmp_path, monkeypatch):
    old = tiny_state(1)
    save_model(tmp_path, old, make_card())
    before = (tmp_path / "global_model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_model(tmp_path, tiny_state(2), make_card(round=8))
    assert (tmp_path / "global_model.safetensors").read_bytes() == before
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    network, card = load_model(tmp_path)
    assert card.round == 7
    assert all(torch.equal(network.state_dict()[k], v) for k, v in old.items())


def test_save_and_load_tensors_round_trip(tmp_path):
    tensors = {
        "a": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),  # non-contiguous
        "n": torch.tensor(5),
        "h": torch.tensor([1.5], dtype=torch.float16),
    }
    path = tmp_path / "sub" / "t.safetensors"
    save_tensors(path, tensors, {"meta": "x"})
    got = load_tensors(path)
    assert got.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert got[name].dtype == tensor.dtype
        assert torch.equal(got[name], tensor)
    assert leftovers(path.parent) == []


def test_load_tensors_missing(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_tensors(tmp_path / "x.safetensors")


def test_atomic_write_json_rejects_nan_and_keeps_old_file(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1}
    assert leftovers(tmp_path) == []
