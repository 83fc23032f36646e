"""The site half over Flower: a ``ClientApp`` whose handlers are the strategies' own.

Every ``on_<kind>`` handler of every registered strategy's :class:`SiteLogic` becomes a
Flower handler (``train``, ``evaluate``, ``query.<action>``), so a strategy runs over
Flower with no change to its module. One :class:`SiteService` lives as long as the
site's process (see :mod:`engine.federation.executor`): the site's data, torch, the
network and the strategy's site state stay loaded between messages.

The SuperNode's ``--node-config`` tells the service where things are::

    data-path = "/data/site-a"       # MSD site folder (never leaves the site)
    work-dir = "/var/fedseg/site-a"  # site state: best local model, cached peer models
    progress-file = ".../progress.jsonl"
    allow-model-sharing = false      # accept runs that send this site other sites' models
"""

from __future__ import annotations

import json
import time
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message as FlowerMessage, RecordDict
from flwr.clientapp import ClientApp

from engine.config import RunConfig, from_dict
from engine.data.loader import SiteData
from engine.data.site import SiteDataset
from engine.errors import FederationError
from engine.events import JsonlEventLog
from engine.federation.records import META, RUN_CONFIG_KEY, RUN_KEY, SITE_INFO, content_to_message, reply_to_content
from engine.fl import STRATEGIES
from engine.fl.base import SiteLogic
from engine.fl.site import SiteRuntime
from engine.training.device import resolve_device

log = logging.getLogger(__name__)

OUTBOX = "outbox.jsonl"



@dataclass(frozen=True)
class NodeSettings:
    """A site's ``--node-config``, validated."""

    data_path: Path
    work_dir: Path
    progress_file: Path | None
    allow_model_sharing: bool
    name: str | None = None

    @classmethod
    def from_node_config(cls, node_config: dict[str, Any]) -> NodeSettings:
        if "data-path" not in node_config or "work-dir" not in node_config:
            raise FederationError("the SuperNode was started without data-path/work-dir in --node-config (use `fedseg site`)")
        progress = node_config.get("progress-file")
        return cls(
            data_path=Path(str(node_config["data-path"])),
            work_dir=Path(str(node_config["work-dir"])),
            progress_file=Path(str(progress)) if progress else None,
            allow_model_sharing=bool(node_config.get("allow-model-sharing", False)),
            name=str(node_config["site-name"]) if node_config.get("site-name") else None,
        )


def message_kinds() -> list[str]:
    """Every message kind some registered strategy's site logic can answer."""
    kinds = {SITE_INFO}
    for name in STRATEGIES.names():
        logic = STRATEGIES.get(name).site_logic
        for attr in dir(logic):
            if attr.startswith("on_") and callable(getattr(logic, attr)):
                category, _, action = attr[3:].partition("_")
                kinds.add(f"{category}.{action}" if action else category)
    return sorted(kinds)


class SiteService:
    """Answers every message of every run for one site, keeping what is expensive loaded."""

    def __init__(self) -> None:
        self._data: tuple[tuple[Path, Any], SiteData] | None = None
        self._logic: tuple[tuple[str, int], SiteLogic] | None = None
        self._progress: tuple[Path, JsonlEventLog] | None = None

    # -- cached pieces ----------------------------------------------------------------------
    def _site_data(self, settings: NodeSettings, config: RunConfig) -> SiteData:
        key = (settings.data_path, config.data)
        if self._data is None or self._data[0] != key:
            d = config.data
            dataset = SiteDataset.open(settings.data_path, split_seed=d.split_seed, val_fraction=d.val_fraction, test_fraction=d.test_fraction)
            self._data = (key, SiteData(dataset, d))  # preprocessing happens once, here
        return self._data[1]

    def _emit(self, settings: NodeSettings):
        if settings.progress_file is None:
            return None
        if self._progress is None or self._progress[0] != settings.progress_file:
            if self._progress is not None:
                self._progress[1].close()
            self._progress = (settings.progress_file, JsonlEventLog(settings.progress_file))
        return self._progress[1]

    def _site_logic(self, settings: NodeSettings, context: Context, index: int) -> SiteLogic:
        config = _run_config(context)
        run_key = str(context.run_config.get(RUN_KEY, context.run_id))
        key = (run_key, index)
        if self._logic is None or self._logic[0] != key:
            strategy_cls = STRATEGIES.get(config.strategy.name)
            if strategy_cls.shares_models and not settings.allow_model_sharing:
                raise FederationError(_refusal(strategy_cls.name))
            data = self._site_data(settings, config)
            runtime = SiteRuntime(
                index, data, config, settings.work_dir / "runs" / run_key, resolve_device(config.train.device), emit=self._emit(settings)
            )
            self._logic = (key, strategy_cls.site_logic(strategy_cls.params_from(config.strategy.params), runtime))
        return self._logic[1]

    # -- one message ----------------------------------------------------------------------------
    def handle(self, message: FlowerMessage, context: Context) -> FlowerMessage:
        settings = NodeSettings.from_node_config(dict(context.node_config))
        kind = message.metadata.message_type
        started = time.perf_counter()
        if kind == SITE_INFO:
            content = self._site_info(settings, context)
        else:
            meta = message.content.config_records[META]
            logic = self._site_logic(settings, context, int(meta["site"]))
            content = reply_to_content(logic.handle(content_to_message(kind, message.content)))
        _append_outbox(settings.work_dir / OUTBOX, kind, content, seconds=time.perf_counter() - started, group=message.metadata.group_id)
        return FlowerMessage(content, reply_to=message)

    def _site_info(self, settings: NodeSettings, context: Context) -> RecordDict:
        config = _run_config(context)
        data = self._site_data(settings, config)
        info = {"name": settings.name or data.name, "num_train": data.num_train, "allow_model_sharing": settings.allow_model_sharing}
        return RecordDict({META: ConfigRecord({"json": json.dumps(info), "num_examples": data.num_train})})


def describe(kind: str, content: RecordDict) -> dict[str, Any]:
    """What a reply carries, without the numbers: array names, shapes and dtypes, and
    the JSON metadata (metrics and counts)."""
    arrays = {
        key: {name: {"shape": list(array.shape), "dtype": str(array.dtype)} for name, array in record.items()}
        for key, record in content.array_records.items()
    }
    meta = {key: dict(record) for key, record in content.config_records.items()}
    for record in meta.values():
        if "json" in record:
            record["json"] = json.loads(str(record["json"]))
    return {"type": kind, "arrays": arrays, "meta": meta, "bytes": sum(r.count_bytes() for r in content.array_records.values())}


def _append_outbox(path: Path, kind: str, content: RecordDict, *, seconds: float, group: str) -> None:
    """Every reply this site sends, described in ``outbox.jsonl`` of its work dir: the
    site operator can audit exactly what left the site (and when, and how long the
    site computed on it: ``benchmarks/federation.py`` separates compute from transport)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = describe(kind, content) | {"round": group, "seconds": round(seconds, 4), "at": round(time.time(), 3)}
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def _run_config(context: Context) -> RunConfig:
    raw = context.run_config.get(RUN_CONFIG_KEY)
    if raw is None:
        raise FederationError("this Flower run was not started by `fedseg server` (no fedseg-config in its run config)")
    return from_dict(RunConfig, json.loads(str(raw)))


def _refusal(strategy: str) -> str:
    return (
        f"this site does not accept model sharing: {strategy} sends each site the other sites' models; "
        "restart the site with --allow-model-sharing to accept it"
    )


SERVICE = SiteService()
app = ClientApp()


def _dispatch(message: FlowerMessage, context: Context) -> FlowerMessage:
    return SERVICE.handle(message, context)


for _kind in message_kinds():
    _category, _, _action = _kind.partition(".")
    if _action:
        getattr(app, _category)(_action)(_dispatch)
    else:
        getattr(app, _category)()(_dispatch)
