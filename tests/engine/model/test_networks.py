"""Network factory: every registered network runs, arguments are validated."""

from __future__ import annotations

import pytest
import torch

from engine.config import DataConfig, ModelConfig, RunConfig
from engine.errors import ConfigError
from engine.model.networks import NETWORKS, build_network, network_args, total_stride
from engine.simulation.runner import _check_patch




def run(network: torch.nn.Module, side: int) -> torch.Tensor:
    network.eval()
    with torch.no_grad():
        return network(torch.randn(1, 1, side, side, side))


def test_registered_networks():
    assert set(NETWORKS.names()) == {"unet", "basicunet", "segresnet"}


@pytest.mark.parametrize("name", ["unet", "segresnet"])
def test_default_network_output_shape_16(name):
    # basicunet cannot run a 16^3 cube (1x1x1 bottleneck): see the patch-check test below,
    # and it is checked at 32^3 in test_network_output_shape_with_working_arguments
    torch.manual_seed(0)
    out = run(build_network(name), 16)
    assert out.shape == (1, 2, 16, 16, 16)


@pytest.mark.parametrize(
    ("name", "args", "side"),
    [
        ("unet", {"channels": [4, 8], "strides": [2]}, 16),
        ("basicunet", {}, 32),
        ("segresnet", {"blocks_down": [1, 2, 2, 4]}, 16),  # 4 stages: MONAI's up-path fits
    ],
)
def test_network_output_shape_with_working_arguments(name, args, side):
    torch.manual_seed(0)
    out = run(build_network(name, args), side)
    assert out.shape == (1, 2, side, side, side)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("name", "args"),
    [("unet", {}), ("basicunet", {}), ("segresnet", {"blocks_down": [1, 2, 2, 4]})],
)
def test_cube_accepted_by_the_patch_check_runs(name, args):
    # the contract: a patch the runner's check accepts must train; either the check
    # rejects a cube of one total stride, or the network runs on it
    side = total_stride(name, args)
    assert side >= 8
    config = RunConfig(data=DataConfig(patch_size=(side, side, side)), model=ModelConfig(network=name, args=args))
    try:
        _check_patch(config)
    except ConfigError:
        return
    torch.manual_seed(0)
    net = build_network(name, args).train()
    out = net(torch.randn(1, 1, side, side, side))
    assert out.shape == (1, 2, side, side, side)


@pytest.mark.parametrize(
    ("name", "args"),
    [("unet", {}), ("basicunet", {}), ("segresnet", {"blocks_down": [1, 2, 2, 4]})],
)
def test_patch_of_one_and_two_strides_runs(name, args):
    # one side of two strides gives a 1x1x2 bottleneck, which InstanceNorm accepts
    stride = total_stride(name, args)
    torch.manual_seed(0)
    net = build_network(name, args).train()
    out = net(torch.randn(1, 1, stride, stride, 2 * stride))
    assert out.shape == (1, 2, stride, stride, 2 * stride)


def test_total_stride():
    assert total_stride("unet") == 8
    assert total_stride("unet", {"channels": [4, 8], "strides": [2]}) == 2
    assert total_stride("unet", {"channels": [4, 8, 16], "strides": [2, 3]}) == 6
    assert total_stride("segresnet") == 4
    assert total_stride("basicunet") == 16


def test_unknown_network_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean 'unet'") as info:
        build_network("unte")
    assert "unknown network 'unte'" in str(info.value)


def test_unknown_argument_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean 'channels'") as info:
        build_network("unet", {"chanels": [4, 8]})
    assert "model.args.chanels" in str(info.value)


def test_inconsistent_strides():
    with pytest.raises(ConfigError, match="model.args.strides"):
        build_network("unet", {"channels": [4, 8, 16], "strides": [2]})


def test_rejected_argument_value_is_config_error():
    with pytest.raises(ConfigError, match="rejects its arguments"):
        build_network("unet", {"norm": "no-such-norm"})


def test_network_args_fill_defaults_as_lists():
    full = network_args("unet", {"channels": (4, 8), "strides": [2]})
    assert full == {"channels": [4, 8], "strides": [2], "num_res_units": 1, "norm": "instance", "dropout": 0.0}
    assert network_args("basicunet", {})["features"] == [8, 8, 16, 32, 64, 8]


def test_build_network_is_seeded():
    torch.manual_seed(5)
    a = build_network("unet", {"channels": [4, 8], "strides": [2]}).state_dict()
    torch.manual_seed(5)
    b = build_network("unet", {"channels": [4, 8], "strides": [2]}).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
