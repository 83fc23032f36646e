"""Our messages as Flower ``RecordDict`` contents, and back.

Layout of a ``RecordDict``:

* ``"arrays:<group>"`` -> ``ArrayRecord`` of named tensors (``"arrays:global"``,
  ``"arrays:site.2"``, ``"arrays:beta"``, ...);
* ``"fedseg"`` -> ``ConfigRecord`` with ``round``, ``num_examples`` and ``json`` (the
  config or metrics dict as JSON: Flower's ConfigRecord holds scalars and flat lists
  only, and our metrics carry per-case lists).

Nothing here is pickled: ArrayRecord stores raw tensor bytes with dtype and shape, and
JSON is parsed with ``json.loads``.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from engine.fl.protocol import ArrayDict, Message, Reply

ARRAYS = "arrays:"
META = "fedseg"

# Keys of the Flower run config set by ``fedseg server``.
RUN_CONFIG_KEY = "fedseg-config"  # JSON of the RunConfig
RUN_KEY = "fedseg-run-key"  # stable across coordinator restarts (names the sites' state folders)
OUT_KEY = "fedseg-out"  # the coordinator's output folder

SITE_INFO = "query.site_info"  # the handshake: name, number of training cases, consent


def _arrays_to_record(tensors: ArrayDict) -> ArrayRecord:
    return ArrayRecord({name: t.detach().cpu().contiguous() for name, t in tensors.items()})


def _record_to_arrays(record: ArrayRecord) -> ArrayDict:
    return {name: torch.from_numpy(array.numpy().copy()) for name, array in record.items()}


def _content(arrays: dict[str, ArrayDict], meta: dict[str, Any]) -> RecordDict:
    content = RecordDict({ARRAYS + group: _arrays_to_record(tensors) for group, tensors in arrays.items()})
    content[META] = ConfigRecord(meta)
    return content


def _unpack(content: RecordDict) -> tuple[dict[str, ArrayDict], dict[str, Any]]:
    arrays = {key[len(ARRAYS):]: _record_to_arrays(rec) for key, rec in content.array_records.items() if key.startswith(ARRAYS)}
    if META not in content.config_records:
        raise ValueError("message has no 'fedseg' record")
    return arrays, dict(content.config_records[META])


def message_to_content(message: Message) -> RecordDict:
    return _content(message.arrays, {"round": message.round, "json": json.dumps(message.config)})


def content_to_message(kind: str, content: RecordDict) -> Message:
    arrays, meta = _unpack(content)
    return Message(kind, int(meta["round"]), arrays, json.loads(str(meta["json"])))


def reply_to_content(reply: Reply) -> RecordDict:
    return _content(reply.arrays, {"num_examples": int(reply.num_examples), "json": json.dumps(reply.metrics)})


def content_to_reply(content: RecordDict) -> Reply:
    arrays, meta = _unpack(content)
    return Reply(arrays, json.loads(str(meta["json"])), int(meta["num_examples"]))
