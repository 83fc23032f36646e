"""Local-only training: every site trains its own model, nothing is aggregated.

The baseline of the Auto-FedAvg paper's "Local only" rows. Round 1 sends the common
initial model; afterwards each site continues from its own last local model, kept in
its store. Its run metrics come from the K x K matrix of best local models (local avg,
local gen); there is no global model.
"""

from __future__ import annotations

from engine.fl.base import RoundOutcome, SiteLogic, Strategy
from engine.fl.protocol import TRAIN, ArrayDict, Exchange, Message, Reply
from engine.fl.registry import register


class LocalOnlySite(SiteLogic):
    def start_weights(self, message: Message) -> ArrayDict:
        saved = self.runtime.store.load("local", before=message.round)
        return saved[0] if saved else message.arrays["global"]

    def after_train(self, message: Message, local: ArrayDict) -> None:
        self.runtime.store.save("local", message.round, local)

    def on_train(self, message: Message) -> Reply:
        reply = super().on_train(message)
        reply.arrays = {}  # the model stays at the site
        return reply


@register
class LocalOnly(Strategy):
    name = "local-only"
    summary = "Local only: each site trains alone (baseline; no aggregation, no global model)"
    site_logic = LocalOnlySite
    has_global_model = False

    def round(self, rnd: int, global_state: ArrayDict) -> Exchange:
        messages = {
            s.index: Message(TRAIN, rnd, arrays={"global": global_state} if rnd == 1 else {}) for s in self.sites
        }
        replies = yield messages
        self.alpha = []
        return RoundOutcome.from_replies(global_state, [], replies)
