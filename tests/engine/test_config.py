"""Run configuration: from_dict / load_config validation and the to_dict round trip."""

from __future__ import annotations

import json
import textwrap

import pytest

from engine.config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
    from_dict,
    load_config,
)
from engine.errors import ConfigError, FedSegError


def write(tmp_path, text: str):
    path = tmp_path / "run.toml"
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------------------
# defaults and a valid file


def test_empty_dict_gives_the_defaults():
    cfg = from_dict(RunConfig, {})
    assert cfg == RunConfig()
    # paper defaults
    assert cfg.train.lr == 1e-4 and cfg.train.betas == (0.5, 0.99) and cfg.train.loss == "dice"
    assert cfg.strategy.name == "auto-fedavg"


def test_load_config_reads_every_section(tmp_path):
    path = write(
        tmp_path,
        """
        rounds = 12
        seed = 3

        [data]
        patch_size = [32, 32, 16]
        target_spacing = [1.5, 1.5, 3]
        batch_size = 4

        [model]
        network = "unet"
        [model.args]
        channels = [4, 8]
        strides = [2]

        [train]
        lr = 1          # an integer where a float is expected is fine
        local_steps = 7
        device = "cpu"
        amp = false

        [eval]
        sw_overlap = 0.5

        [strategy]
        name = "auto-fedavg"
        [strategy.params]
        t0 = 10
        weights = "softmax"
        beta_init = 0.0
        """,
    )
    cfg = load_config(path)
    assert cfg.rounds == 12 and cfg.seed == 3
    assert cfg.data.patch_size == (32, 32, 16)
    assert cfg.data.target_spacing == (1.5, 1.5, 3.0)
    assert isinstance(cfg.data.target_spacing[2], float)
    assert cfg.data.batch_size == 4
    assert dict(cfg.model.args) == {"channels": [4, 8], "strides": [2]}
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.local_steps == 7 and cfg.train.device == "cpu" and cfg.train.amp is False
    assert cfg.eval.sw_overlap == 0.5
    assert cfg.strategy.name == "auto-fedavg"
    assert dict(cfg.strategy.params) == {"t0": 10, "weights": "softmax", "beta_init": 0.0}
    # untouched sections keep their defaults
    assert cfg.data.hu_window == DataConfig().hu_window


# --------------------------------------------------------------------------------------
# unknown keys


def test_unknown_top_level_key():
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, {"roundz": 3})
    msg = str(info.value)
    assert msg.startswith("roundz:")
    assert "did you mean 'rounds'" in msg


def test_unknown_nested_key_names_the_dotted_field():
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, {"train": {"lrr": 0.1}})
    msg = str(info.value)
    assert msg.startswith("train.lrr:")
    assert "did you mean 'lr'" in msg


def test_unknown_strategy_param_names_the_dotted_field():
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, {"strategy": {"name": "auto-fedavg", "params": {"t00": 2}}})
    msg = str(info.value)
    assert "strategy.params.t00" in msg
    assert "did you mean 't0'" in msg


def test_param_of_another_strategy_is_unknown():
    with pytest.raises(ConfigError, match="strategy.params.mu"):
        from_dict(RunConfig, {"strategy": {"name": "fedavg", "params": {"mu": 0.1}}})
    # the same key is fine for FedProx
    cfg = from_dict(RunConfig, {"strategy": {"name": "fedprox", "params": {"mu": 0.1}}})
    assert cfg.strategy.params == {"mu": 0.1}


def test_load_config_prefixes_the_file(tmp_path):
    path = write(tmp_path, "[data]\npatch_sise = [32, 32, 16]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: data.patch_sise:")
    assert "did you mean 'patch_size'" in msg


# --------------------------------------------------------------------------------------
# wrong types


@pytest.mark.parametrize(
    ("values", "field", "expected"),
    [
        ({"rounds": "five"}, "rounds", "expected an integer"),
        ({"rounds": 5.0}, "rounds", "expected an integer"),
        ({"rounds": True}, "rounds", "expected an integer"),
        ({"train": {"lr": "fast"}}, "train.lr", "expected a number"),
        ({"train": {"lr": False}}, "train.lr", "expected a number"),
        ({"train": {"amp": "yes"}}, "train.amp", "expected true or false"),
        ({"train": {"amp": 1}}, "train.amp", "expected true or false"),
        ({"train": {"device": 0}}, "train.device", "expected a string"),
        ({"data": {"patch_size": [48, 48]}}, "data.patch_size", "expected a list of 3 values"),
        ({"data": {"patch_size": 48}}, "data.patch_size", "expected a list of 3 values"),
        ({"data": {"patch_size": [48, 48, "24"]}}, "data.patch_size", "expected an integer"),
        ({"model": {"args": [1, 2]}}, "model.args", "expected a table"),
        ({"strategy": {"params": {"t0": "ten"}}}, "strategy.params.t0", "expected an integer"),
    ],
)
def test_wrong_types(values, field, expected):
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, values)
    msg = str(info.value)
    assert msg.startswith(f"{field}:"), msg
    assert expected in msg


def test_section_that_is_not_a_table_names_the_field():
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, {"train": 5})
    assert str(info.value).startswith("train: expected a table"), str(info.value)


def test_section_that_is_not_a_table_is_a_config_error():
    with pytest.raises(ConfigError, match="expected a table"):
        from_dict(RunConfig, {"train": 5})


def test_wrong_type_in_toml(tmp_path):
    path = write(tmp_path, 'rounds = "five"\n')
    with pytest.raises(ConfigError, match="rounds: expected an integer"):
        load_config(path)


# --------------------------------------------------------------------------------------
# invalid values


@pytest.mark.parametrize("lr", [0.0, -1e-4])
def test_learning_rate_must_be_positive(lr):
    with pytest.raises(ConfigError, match="train.lr: must be > 0"):
        from_dict(RunConfig, {"train": {"lr": lr}})


def test_device_gpu_suggests_cpu():
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, {"train": {"device": "gpu"}})
    msg = str(info.value)
    assert msg.startswith("train.device:")
    assert "did you mean 'cpu'" in msg
    assert "auto" in msg and "cuda" in msg  # the allowed values are listed


def test_unknown_algorithm_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean 'fedavg'") as info:
        from_dict(RunConfig, {"strategy": {"name": "fedavgg"}})
    assert "unknown algorithm 'fedavgg'" in str(info.value)


def test_strategy_param_value_validation():
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, {"strategy": {"name": "auto-fedavg", "params": {"weights": "dirichlet2"}}})
    msg = str(info.value)
    assert "strategy.params.weights" in msg
    assert "did you mean 'dirichlet'" in msg
    with pytest.raises(ConfigError, match="strategy.params.t0"):
        from_dict(RunConfig, {"strategy": {"params": {"t0": 0}}})
    with pytest.raises(ConfigError, match="strategy.params.mu"):
        from_dict(RunConfig, {"strategy": {"name": "fedprox", "params": {"mu": -1.0}}})


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"rounds": 0}, "rounds"),
        ({"data": {"lesion_label": 0}}, "data.lesion_label"),
        ({"data": {"target_spacing": [2.0, 0.0, 3.0]}}, "data.target_spacing"),
        ({"data": {"hu_window": [240.0, -160.0]}}, "data.hu_window"),
        ({"data": {"patch_size": [48, 48, 4]}}, "data.patch_size"),
        ({"data": {"batch_size": 0}}, "data.batch_size"),
        ({"data": {"pos_fraction": 1.5}}, "data.pos_fraction"),
        ({"data": {"val_fraction": 1.0}}, "data.val_fraction"),
        ({"train": {"betas": [0.5, 1.0]}}, "train.betas"),
        ({"train": {"weight_decay": -0.1}}, "train.weight_decay"),
        ({"train": {"local_steps": 0}}, "train.local_steps"),
        ({"train": {"loss": "dise"}}, "loss"),
        ({"eval": {"sw_overlap": 1.0}}, "eval.sw_overlap"),
        ({"eval": {"sw_batch_size": 0}}, "eval.sw_batch_size"),
        ({"eval": {"small_lesion_ratio": 0}}, "eval.small_lesion_ratio"),
        ({"model": {"network": "unte"}}, "network"),
    ],
)
def test_invalid_values(values, field):
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, values)
    assert field in str(info.value)


def test_zero_weight_decay_is_allowed():
    assert from_dict(RunConfig, {"train": {"weight_decay": 0.0}}).train.weight_decay == 0.0


def test_config_error_is_a_fedseg_error_and_value_error():
    with pytest.raises(FedSegError):
        from_dict(RunConfig, {"rounds": 0})
    with pytest.raises(ValueError):
        from_dict(RunConfig, {"rounds": 0})


def test_from_dict_requires_a_table():
    with pytest.raises(ConfigError, match="config: expected a table"):
        from_dict(RunConfig, [1, 2])


def test_load_config_missing_and_invalid_files(tmp_path):
    missing = tmp_path / "none.toml"
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config(missing)
    assert str(missing) in str(info.value)
    bad = write(tmp_path, "rounds = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(bad)
    assert str(bad) in str(info.value)


# --------------------------------------------------------------------------------------
# round trip


def test_to_dict_from_dict_round_trip_defaults():
    cfg = RunConfig()
    assert from_dict(RunConfig, cfg.to_dict()) == cfg


def test_to_dict_from_dict_round_trip_non_defaults():
    cfg = RunConfig(
        rounds=9,
        seed=42,
        data=DataConfig(patch_size=(32, 32, 16), target_spacing=(1.0, 1.5, 2.5), hu_window=(-100.0, 200.0), batch_size=3),
        model=ModelConfig(network="unet", args={"channels": [4, 8], "strides": [2]}),
        train=TrainConfig(lr=3e-4, betas=(0.9, 0.999), local_steps=5, device="cpu", amp=False, loss="dicece"),
        eval=EvalConfig(sw_overlap=0.5, small_lesion_ratio=100.0),
        strategy=StrategyConfig(name="auto-fedavg", params={"t0": 5, "aggregation": "layer", "beta_lr": 0.1}),
    )
    plain = cfg.to_dict()
    # plain JSON data: lists, not tuples
    assert plain["data"]["patch_size"] == [32, 32, 16]
    assert json.loads(json.dumps(plain)) == plain
    back = from_dict(RunConfig, json.loads(json.dumps(plain)))
    assert back == cfg
    assert back.data.patch_size == (32, 32, 16)
    assert back.train.betas == (0.9, 0.999)
    assert back != RunConfig()


def test_replace():
    cfg = RunConfig().replace(rounds=2)
    assert cfg.rounds == 2 and cfg.train == TrainConfig()
    with pytest.raises(ConfigError):
        RunConfig().replace(rounds=0)


# --------------------------------------------------------------------------------------
# init_model: the round-0 global model from a model folder (checked where the server builds it)

INIT_NET = {"channels": [4, 8], "strides": [2]}


def _model_folder(tmp_path, args=INIT_NET):
    import torch

    from engine.model.checkpoint import ModelCard, save_model
    from engine.model.networks import build_network, network_args

    torch.manual_seed(5)
    card = ModelCard("unet", network_args("unet", args), [2.0, 2.0, 3.0], [-160.0, 240.0], [48, 48, 24], 1)
    return save_model(tmp_path / "model", build_network("unet", args).state_dict(), card)


def test_init_model_is_a_path_or_none(tmp_path):
    assert RunConfig().init_model is None
    path = write(tmp_path, 'init_model = "runs/fedavg-1"\n')
    cfg = load_config(path)
    assert cfg.init_model == "runs/fedavg-1"
    assert from_dict(RunConfig, json.loads(json.dumps(cfg.to_dict()))) == cfg
    for bad in ("", "  "):
        with pytest.raises(ConfigError, match="init_model: expected the path of a model folder"):
            RunConfig(init_model=bad)
    with pytest.raises(ConfigError, match="init_model: expected the path of a model folder, got 3"):
        from_dict(RunConfig, {"init_model": 3})


def test_initial_global_state_loads_the_init_model(tmp_path):
    import torch
    from safetensors.torch import load_file

    from engine.fl.coordinator import initial_global_state

    folder = _model_folder(tmp_path)
    cfg = RunConfig(model=ModelConfig("unet", INIT_NET))
    random_init = initial_global_state(cfg)
    loaded = initial_global_state(cfg.replace(init_model=str(folder)))
    saved = load_file(str(folder / "global_model.safetensors"))
    assert loaded.keys() == saved.keys() == random_init.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert any(not torch.equal(loaded[k], random_init[k]) for k in saved)


def test_a_wrong_init_model_is_one_config_error(tmp_path):
    from engine.fl.coordinator import initial_global_state

    folder = _model_folder(tmp_path)
    other_net = ModelConfig("unet", {"channels": [4, 8, 16], "strides": [2, 2]})
    cases = [
        (RunConfig(model=ModelConfig("unet", INIT_NET), init_model=str(tmp_path / "nope")), "model folder not found"),
        (RunConfig(model=other_net, init_model=str(folder)), "this run's model is 'unet'"),
    ]
    (folder / "global_model.safetensors").rename(tmp_path / "moved")
    cases.append((RunConfig(model=ModelConfig("unet", INIT_NET), init_model=str(folder)), "weights file not found"))
    for cfg, phrase in cases:
        with pytest.raises(ConfigError, match="^init_model: ") as info:
            initial_global_state(cfg)
        assert phrase in str(info.value) and "\n" not in str(info.value)
