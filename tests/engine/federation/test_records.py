"""Strategy messages survive the trip through Flower records exactly, without pickle."""

from __future__ import annotations

import math

import torch

from engine.federation.client_app import describe, message_kinds
from engine.federation.records import content_to_message, content_to_reply, message_to_content, reply_to_content
from engine.fl.protocol import Message, Reply


def test_message_round_trip_is_exact():
    g = torch.Generator().manual_seed(0)
    arrays = {"global": {"w": torch.randn(3, 4, generator=g), "n": torch.tensor([7], dtype=torch.int64)}, "site.2": {"b": torch.randn(5, generator=g).double()}}
    message = Message("query.learn_beta_setup", 4, arrays, {"sites": [0, 2], "split": "val"})
    back = content_to_message(message.kind, message_to_content(message))
    assert (back.kind, back.round, back.config) == (message.kind, 4, {"sites": [0, 2], "split": "val"})
    for group, tensors in arrays.items():
        for name, tensor in tensors.items():
            assert back.arrays[group][name].dtype == tensor.dtype
            assert torch.equal(back.arrays[group][name], tensor)


def test_reply_round_trip_keeps_nested_metrics_and_nan():
    reply = Reply({"beta": {"grad": torch.tensor([0.5, -1.0, 2.0])}}, {"cases": [{"case_id": "test-000", "dice": 0.5}], "loss": float("nan")}, 12)
    back = content_to_reply(reply_to_content(reply))
    assert back.num_examples == 12
    assert back.metrics["cases"] == [{"case_id": "test-000", "dice": 0.5}]
    assert math.isnan(back.metrics["loss"])
    assert torch.equal(back.arrays["beta"]["grad"], reply.arrays["beta"]["grad"])


def test_describe_lists_names_shapes_and_metadata_only():
    content = reply_to_content(Reply({"local": {"w": torch.zeros(2, 3)}}, {"train_loss": 0.25}, 5))
    seen = describe("train", content)
    assert seen["arrays"] == {"arrays:local": {"w": {"shape": [2, 3], "dtype": "float32"}}}
    assert seen["meta"]["fedseg"]["json"] == {"train_loss": 0.25}
    assert seen["bytes"] >= 2 * 3 * 4


def test_every_site_handler_is_a_valid_flower_message_type():
    kinds = message_kinds()
    assert {"train", "evaluate", "query.best_local", "query.learn_beta_setup", "query.learn_beta_step", "query.site_info"} <= set(kinds)
    assert all(k.count(".") <= 1 for k in kinds)  # Flower: "<category>" or "<category>.<action>"
