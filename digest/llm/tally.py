"""A classification's progress: its answers counted and priced, for whoever shows them."""

from __future__ import annotations

from digest.config import LLMConfig
from digest.llm.prices import charges_nothing, estimate_cost
from digest.models import OnProgress, Progress, Usage


class Tally:
    """A classification's answers counted into Progress figures for `on_progress`, priced as `config`'s server."""

    def __init__(self, total: int, config: LLMConfig, on_progress: OnProgress | None) -> None:
        self._total = total
        self._config = config
        self._free = charges_nothing(config)
        self._on_progress = on_progress
        self._done = 0

    def __call__(self, usage: Usage) -> None:
        self._done += 1
        self._tell(usage, finished=False)

    def finish(self, usage: Usage) -> None:
        self._tell(usage, finished=True)

    def _tell(self, usage: Usage, *, finished: bool) -> None:
        if self._on_progress is not None:
            cost = estimate_cost(usage, self._config)
            figures = Progress(done=self._done, total=self._total, usage=usage, cost=cost, free=self._free)
            self._on_progress(figures.model_copy(update={"finished": finished}))
