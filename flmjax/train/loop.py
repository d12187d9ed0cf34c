"""The training loop of one stage: step, log, evaluate, checkpoint; SIGTERM saves and stops."""

from __future__ import annotations

import dataclasses
import signal
import threading

import jax

from flmjax.train.config import TrainConfig
from flmjax.train.data import StageData
from flmjax.train.metrics import MetricsLogger, Throughput, device_peak_flops, model_flops_per_step
from flmjax.train.setup import Stage, global_batch, learning_rate, setup_stage
from flmjax.train.step import finalize_eval, model_params


@dataclasses.dataclass
class StageResult:
    run_dir: str
    step: int  # optimizer steps done
    total_steps: int
    preempted: bool  # stopped by SIGTERM (a checkpoint of `step` was saved)
    source: str  # where the stage's state came from
    last: dict[str, float]  # the last logged training metrics
    eval: dict[str, float]  # the last evaluation's metrics


class _Preemption:
    """Turns SIGTERM into a flag the loop checks between steps (a step is never cut in half)."""

    def __init__(self):
        self.requested = threading.Event()
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda *_: self.requested.set())
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def evaluate(stage: Stage) -> dict[str, float]:
    """Loss terms and accuracies over `log.eval_batches` held-out batches (normalised over all of them)."""
    if stage.data.eval is None:  # no held-out data
        return {}
    terms = []
    for i, host_batch in enumerate(stage.data.eval()):
        if i == stage.config.log.eval_batches:
            break
        terms.append(stage.eval_step(model_params(stage.state), global_batch(stage, host_batch)))
    return {k: float(v) for k, v in finalize_eval(terms, stage.objective).items()} if terms else {}


def _progress(stage: Stage, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=stage.total_steps, initial=stage.start_step, desc=stage.config.stage, unit="step", dynamic_ncols=True
    )


def run_stage(stage: Stage) -> StageResult:
    """Train from `stage.start_step` to `stage.total_steps`, saving every `checkpoint.every_steps`,
    at the end, and on SIGTERM (then stopping early)."""
    config, log_cfg = stage.config, stage.config.log
    logger = MetricsLogger(config.resolved_run_dir, log_cfg.tensorboard)
    batches = stage.data.train
    bar = _progress(stage, log_cfg.progress and jax.process_index() == 0)
    can_eval = stage.data.eval is not None and log_cfg.eval_batches > 0
    last: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    eval_step = None
    throughput = None
    step = stage.start_step
    preempted = False
    with _Preemption() as preemption:
        while step < stage.total_steps and not preempted:
            batch = global_batch(stage, next(batches))
            if throughput is None:
                b, columns = batch["tokens"].shape[0], batch["tokens"].shape[1] - 1
                flops = model_flops_per_step(stage.model, b, columns)
                throughput = Throughput(flops, b * columns, device_peak_flops(), jax.device_count())
            stage.state, metrics = stage.train_step(stage.state, batch, learning_rate(stage, step))
            step += 1
            throughput.step()
            if step % log_cfg.every_steps == 0 or step == stage.total_steps or step == stage.start_step + 1:
                host_metrics = jax.device_get(metrics)  # waits for the step: the time below covers it
                last = logger.log(step, {**host_metrics, **throughput.report()})
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.2e}", tok_s=f"{last.get('tokens_per_s', 0):.0f}"
                    )
            if bar is not None:
                bar.update(1)
            if can_eval and log_cfg.eval_every_steps and step % log_cfg.eval_every_steps == 0:
                eval_metrics, eval_step = logger.log(step, evaluate(stage), split="eval"), step
            preempted = preemption.requested.is_set()
            if step % config.checkpoint.every_steps == 0 or step == stage.total_steps or preempted:
                stage.checkpoints.save(step, stage.state, batches)
                logger.sync()  # a bucket's metrics.jsonl: at least up to the checkpoint
    if can_eval and not preempted and eval_step != step:
        eval_metrics = logger.log(step, evaluate(stage), split="eval")
    if bar is not None:
        bar.close()
    stage.checkpoints.wait()
    stage.checkpoints.close()
    logger.close()
    return StageResult(config.resolved_run_dir, step, stage.total_steps, preempted, stage.source, last, eval_metrics)


def train(config: TrainConfig, data: StageData | None = None) -> StageResult:
    """Set up and run one stage (`data` overrides the configured pipeline, e.g. in tests)."""
    return run_stage(setup_stage(config, data))
