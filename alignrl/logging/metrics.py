"""Per-step metrics: ``metrics.jsonl`` always, TensorBoard and Weights & Biases through ``report_to``.

A resumed run continues the same W&B run: its id is kept in ``run_dir/wandb_run_id.txt``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

WANDB_ID_FILE = "wandb_run_id.txt"
# report_to name -> the modules it imports (see alignrl.requirements.KNOWN); checked before a run folder is claimed
LOGGER_REQUIREMENTS: dict[str, tuple[str, ...]] = {"tensorboard": ("tensorboard",), "wandb": ("wandb",)}


class MetricsLogger:
    """Writes one JSON object per step. Only the main process should construct one with ``enabled=True``."""

    def __init__(self, run_dir: Path, report_to: list[str], run_name: str | None, config: dict[str, Any],
                 enabled: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.completions_path = run_dir / "completions.jsonl"
        self._tb = self._wandb = None
        if not enabled:
            return
        if resume_step is not None:  # drop lines logged after the checkpoint we resume from
            for path in (self.path, self.completions_path):
                _truncate_after(path, resume_step)
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if "wandb" in report_to:
            import wandb

            run_id, resume = wandb_run_id(run_dir, resuming=resume_step is not None)
            self._wandb = wandb.init(id=run_id, resume=resume, name=run_name, config=config, dir=str(run_dir))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(record, step=step)

    def log_completions(self, step: int, samples: list[dict[str, Any]]) -> None:
        if not self.enabled or not samples:
            return
        with self.completions_path.open("a") as handle:
            for sample in samples:
                handle.write(json.dumps({"step": step, **sample}, default=str) + "\n")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def wandb_run_id(run_dir: Path, resuming: bool) -> tuple[str, str]:
    """The W&B run id and ``resume`` mode: a resumed run reuses the id stored in ``run_dir/wandb_run_id.txt``
    (``"must"``: continue that very run); otherwise a new id is generated and stored (``"allow"``)."""
    import wandb

    path = run_dir / WANDB_ID_FILE
    if resuming and path.is_file() and path.read_text().strip():
        return path.read_text().strip(), "must"
    run_id = wandb.util.generate_id()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(run_id + "\n")
    os.replace(tmp, path)
    return run_id, "allow"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_after(path: Path, step: int) -> None:
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return round(value, 6) if isinstance(value, float) else value
