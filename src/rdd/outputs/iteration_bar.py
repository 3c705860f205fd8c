"""The distillation's progress bar over the run's iterations (a Lightning callback).

Lightning's bar counts the batches of the current fit as "Epoch 0: 3/6"; a distillation's
batches are its outer iterations, and a resumed run fits only the remaining ones, so the bar
would restart at 0. This one counts the iterations of the whole run.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar


class IterationBar(TQDMProgressBar):
    """Lightning's training bar over the run's iterations: ``distilling: 26/1000`` for a run
    resumed at iteration 25, not ``Epoch 0: 1/975``."""

    @property
    def train_description(self) -> str:
        return "distilling"

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        # Lightning's own start, without its "Epoch 0" description.
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        bar = self.train_progress_bar
        # Not bar.reset(), which would show 0/N first; tqdm rates count from `initial`.
        bar.total = pl_module.matcher.iterations
        bar.n = bar.initial = bar.last_print_n = pl_module.start_iteration
        bar.refresh()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        done = pl_module.start_iteration + batch_idx + 1
        if bar is not None and self._should_update(done, bar.total) and not bar.disable:
            bar.n = done
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()
