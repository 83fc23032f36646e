"""The site half shared by personalised strategies (FedBN, Ditto, ...).

A personalised site keeps something of its model to itself. Its *personal model* in
round t is built from the shared (global) model it received plus what it kept up to
round t; a strategy says how by overriding :meth:`PersonalisedSite.personal_weights`.

Model selection follows FL-MedSegBench (ALGORITHMS.md 13.4): every round each site
validates its own personal model (``config["model"] == PERSONAL``; that Dice is the
round's ``val_dice``), and keeps it in its store as ``best_personal`` whenever its own
validation Dice improves. The final test (``BEST_PERSONAL``) makes each site test that
model; its reply says the round it came from. An evaluation without ``config["model"]``
scores the received model as it is (the K x K matrix of best local models). Choices [I]:

- selection runs from round 1 (the benchmark starts recording after T/2 rounds; our runs
  are short and the best-so-far rule already ignores worse later rounds);
- a site that never validated a personal model (no validation cases) tests the personal
  model built from the model in the test message (the best shared model);
- everything a site keeps lives in its :class:`~engine.fl.site.SiteStore`, versioned by
  round and read with ``before=`` so that a round redone after a crash sees exactly the
  state the first attempt saw (the same rule as ``track_best_local``), and a restarted
  Flower site process loses nothing.
"""

from __future__ import annotations

from engine.fl.base import BEST_PERSONAL, PERSONAL, SiteLogic
from engine.fl.protocol import ArrayDict, Message, Reply


class PersonalisedSite(SiteLogic):
    """Validates and tests the site's personal model; subclasses build it."""

    def personal_weights(self, shared: ArrayDict, upto: int) -> ArrayDict:
        """The personal model made of ``shared`` and what this site kept in rounds <= ``upto``.

        Local training of round t starts from ``personal_weights(global, t - 1)`` where the
        strategy trains the personal model; validation after round t uses ``upto = t``.
        """
        raise NotImplementedError

    def kept(self, key: str, upto: int) -> ArrayDict | None:
        """The newest ``key`` tensors this site saved in a round <= ``upto`` (None before any)."""
        saved = self.runtime.store.load(key, before=upto + 1)
        return None if saved is None else saved[0]

    def on_evaluate(self, message: Message) -> Reply:
        use = message.config.get("model")
        if use == PERSONAL:
            return self.evaluate_personal(message)
        if use == BEST_PERSONAL:
            return self.evaluate_best_personal(message)
        return super().on_evaluate(message)  # the received model as it is (K x K matrix)

    def evaluate_personal(self, message: Message) -> Reply:
        """Score the personal model of ``message.round``; on validation, keep it if it is the best."""
        split = message.config["split"]
        state = self.personal_weights(message.arrays["model"], message.round)
        reply = self.evaluate_reply(split, state)
        if split == "val":
            self._keep_if_best(message.round, state, reply.metrics["dice"])
        return reply

    def evaluate_best_personal(self, message: Message) -> Reply:
        """Score the personal model of this site's best validation round, and say which."""
        saved = self.runtime.store.load(BEST_PERSONAL, before=message.round)
        if saved is None:  # never validated: the personal model built on the received shared one
            state, meta = self.personal_weights(message.arrays["model"], message.round), {}
        else:
            state, meta, _ = saved
        reply = self.evaluate_reply(message.config["split"], state)
        reply.metrics.update(personal_round=meta.get("round"), personal_val_dice=meta.get("val_dice"))
        return reply

    def _keep_if_best(self, rnd: int, state: ArrayDict, dice: float | None) -> None:
        previous = self.runtime.store.load(BEST_PERSONAL, before=rnd)
        best = previous[1]["val_dice"] if previous else -1.0
        if dice is not None and dice > best:
            self.runtime.store.save(BEST_PERSONAL, rnd, state, {"val_dice": dice, "round": rnd})
