"""The training engine: one loop for every model kind, resumable, logged, optionally distributed.

``train(config, data_dir, out, ...)`` looks up the task of ``config.kind``
(:mod:`imagetomesh.training.tasks`) and runs its phases. Everything that is not about the
model kind happens here, once:

- the run folder ``out`` and its ``config.json`` (``config_name``, ``seed`` and the config);
- the device (on a GPU, cuDNN's autotuner), CPU threads (``config.threads``), ``torch.manual_seed(seed + rank)`` and the batch
  generator (``seed + task.seed_offset + 1000 rank``, re-seeded ``+ step`` on resuming a file
  without a saved generator);
- the loop: ``accumulate_steps`` mini-batches (losses under optional bf16 autocast, each
  divided by their number; the model optionally in channels-last memory order) -> gradient clipping -> optimiser step -> scheduler step;
  the mini-batches drawn in the loop, or ahead of it by ``batch_workers`` processes (:mod:`~imagetomesh.training.batch_workers`);
- validation every ``val_every`` steps and at the last one, the ``best/`` model by the task's
  score, the ``final/`` model, their cards (safetensors + card.json);
- the checkpoint (:class:`~imagetomesh.training.checkpoint.RunCheckpoint`, resumed by running
  the same command again), the time limit counted over resumptions (optionally with the steps fitted to it:
  :mod:`~imagetomesh.training.time_budget`), and ``log.jsonl`` (with ``batch_s``, the mean seconds a step spent
  drawing or waiting for its batches, ``val_s``, a validation's seconds, and ``fitted_steps`` where they were fitted).

Under ``torchrun --nproc_per_node N`` a task may wrap its model with :meth:`Run.wrap`
(DistributedDataParallel: each rank draws its own cases; rank 0 validates and writes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from imagetomesh.errors import InputError
from imagetomesh.io.atomic import atomic_write, sigterm_raises
from imagetomesh.nn.precision import bf16_autocast, to_channels_last
from imagetomesh.training.batch_workers import WorkerBatches, check_batch_workers
from imagetomesh.training.checkpoint import GeneratorState, RunCheckpoint
from imagetomesh.training.tasks.base import LoopSettings, RunState, Task
from imagetomesh.training.time_budget import MIN_TIMED_STEPS, UNTIMED_STEPS, FittedSteps, steps_that_fit
from imagetomesh.weights import save_weights


def hardware(device: torch.device) -> str:
    """``"NVIDIA H100 ..."`` or ``"CPU x86_64, 2 threads"``: what a model card says the run used."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


@dataclass
class Run:
    """One training run: its folder, data, device, seed and process rank; what every task may use."""

    out: Path
    data_dir: Path
    device: torch.device
    seed: int
    config_name: str
    log: Callable[[str], None]
    rank: int = 0
    world_size: int = 1
    hardware: str = field(default="")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def writer(self) -> bool:
        """Whether this process writes logs, checkpoints and models (rank 0)."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` for the forward pass: DistributedDataParallel when distributed, else itself."""
        if self.distributed:
            return torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        return model

    def append_log(self, entry: dict) -> None:
        """Append ``entry`` to ``log.jsonl`` and report it."""
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.log(json.dumps(entry))

    def save_model(self, model: torch.nn.Module, folder: str, card: dict) -> Path:
        """Write ``out/folder`` (safetensors + card)."""
        return save_weights(model, self.out / folder, card)


def start_run(config, data_dir, out, device: str, seed: int, config_name: str, log) -> Run:
    """Set up the process (distributed group, device, threads, global seed) and the run folder with ``config.json``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    if world_size > 1:
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        rank = dist.get_rank()
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dev = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device("cpu")
    if dev.type == "cpu":
        torch.set_num_threads(max(1, int(config.threads)))
    else:
        # cuDNN times its convolution algorithms once per input shape and keeps the fastest: training crops have one
        # shape (the session-24 probe, tuned, ran a step in 44 ms; the run, untuned, averaged 103 ms with its
        # validations: not separated), and each validation scan's shape is tuned once
        torch.backends.cudnn.benchmark = True
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed + rank)
    run = Run(out, Path(data_dir), dev, seed, config_name, log, rank, world_size, hardware(dev))
    if run.writer:
        with atomic_write(out / "config.json") as tmp:
            Path(tmp).write_text(json.dumps({"config_name": config_name, "seed": seed, **config.to_dict()}, indent=1))
    return run


def train(
    config,
    data_dir: str | Path,
    out: str | Path,
    device: str = "cpu",
    seed: int = 0,
    config_name: str = "",
    log: Callable[[str], None] = print,
    **options,
) -> Optional[Path]:
    """Train (or resume) a model of ``config.kind``; returns the task's result folder (the best model,
    or the DALS prior's folder).

    ``options`` go to the task (e.g. ``init_from`` a model folder, ImplicitMeshNet's ``sdf_from``,
    DALS's ``split_path`` and ``cache_dir``).
    """
    from imagetomesh.training.tasks import task_class

    task = task_class(config.kind)(config, None, **options)  # checks the options before anything is written
    check_resumable(out, config, config_name, seed)
    existed = set(Path(out).rglob("*")) if Path(out).is_dir() else None
    run = start_run(config, data_dir, out, device, seed, config_name, log)
    task.run = run
    try:
        result = None
        for phase in task.phases():
            phase.run = run
            result = run_phase(phase, run)
        return result
    except InputError:
        if run.writer:
            _undo_start(run.out, existed)
        raise
    finally:
        if run.distributed:
            dist.destroy_process_group()


#: Config fields a resumed run may change: how long it runs and on how many threads and batch workers.
RESUMABLE_CHANGES = frozenset(
    {"steps", "time_limit_s", "pretrain_time_limit_s", "threads", "batch_workers", "fit_steps_to_time"}
)


def check_resumable(out, config, config_name: str, seed: int) -> None:
    """:class:`InputError` when ``out`` holds a run started with another config or seed (every field but
    :data:`RESUMABLE_CHANGES`; fields, and keys of its dictionaries, that the saved ``config.json`` predates
    are not compared), before
    anything is written: resuming it would mix two trainings, or fail half-way on mismatched weights."""
    path = Path(out) / "config.json"
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise InputError(f"{path} is not a readable run config ({err}); give a new --out for a new run") from None
    if not isinstance(saved, dict):
        raise InputError(f"{path} is not a run config; give a new --out for a new run")
    new = json.loads(json.dumps({"seed": seed, **config.to_dict()}))
    saved = _with_defaults(saved, config)
    differ = sorted(k for k in saved if k in new and k not in RESUMABLE_CHANGES and _differs(saved[k], new[k]))
    if differ:
        raise InputError(
            f"{out} holds a run started with config {saved.get('config_name', '?')!r} and seed {saved.get('seed', '?')}; "
            f"this command's config {config_name!r} differs in {', '.join(differ[:6])}: resume with the run's "
            "--config and --seed (only --steps and time limits may change), or give a new --out"
        )


def _with_defaults(saved: dict, config) -> dict:
    """``saved`` with the fields of the config's dataclass options (its ``loss``, e.g. ``MeshLossWeights``, and
    its ``augment``) that it predates at their defaults: a field is added with the default that keeps the older
    behaviour, so a run saved before it resumes while the field keeps that default, and not once it is changed."""
    filled = dict(saved)
    for name in ("loss", "augment"):
        option = getattr(config, name, None)
        if isinstance(saved.get(name), dict) and dataclasses.is_dataclass(option):
            defaults = {f.name: f.default for f in dataclasses.fields(option) if f.default is not dataclasses.MISSING}
            filled[name] = {**json.loads(json.dumps(defaults)), **saved[name]}
    return filled


def _differs(saved, new) -> bool:
    """Whether a saved config value differs from the new one. In dictionaries (a model's architecture) a key
    the saved one predates counts only when the new value is set (not None): a later version's option left
    unset keeps the saved architecture, one that is set changes it."""
    if isinstance(saved, dict) and isinstance(new, dict):
        added = any(v is not None for k, v in new.items() if k not in saved)
        return added or any(k not in new or _differs(v, new[k]) for k, v in saved.items())
    return saved != new


def _undo_start(out: Path, existed: Optional[set]) -> None:
    """Bad input found before this call saved any progress: remove what it wrote (the run folder
    if it made it, else the files it added, such as ``config.json``), so a failed command leaves nothing."""
    new = [p for p in out.rglob("*") if existed is None or p not in existed]
    if any(p.suffix in (".pt", ".safetensors") for p in new):
        return  # progress was saved: keep it, the run can resume
    if existed is None:
        shutil.rmtree(out, ignore_errors=True)
        return
    for path in sorted(new, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() else path.unlink()


def run_phase(task: Task, run: Run) -> Optional[Path]:
    """Run one phase to its end (steps or time limit), resuming from its checkpoint; returns its result folder.

    A progress bar (on a terminal) shows the step and the loss; the checkpoint is saved at every
    validation, every ``checkpoint_every`` steps, every :data:`CHECKPOINT_EVERY_S` seconds and on
    Ctrl-C or SIGTERM (:class:`Stopped`; so an interruption loses at most a few minutes)."""
    s = task.settings()
    check_batch_workers(task, s.batch_workers)
    check_fit_steps_to_time(s, run)
    setup_phase(task, s)
    fitted = FittedSteps(task, s) if s.fit_steps_to_time else None
    if fitted is not None:
        task.set_steps(s.steps)  # refuses, before any step, a phase that cannot end elsewhere
    batch_seed = run.seed + task.seed_offset + 1000 * run.rank
    generator = torch.Generator().manual_seed(batch_seed)
    parts = {"fitted_steps": fitted} if fitted is not None else {}  # first: the scheduler is rescaled to it
    parts.update(task.checkpoint_parts())
    saved_generator = GeneratorState(generator)
    if not run.distributed:  # each rank has its own generator; only rank 0 writes
        parts["generator"] = saved_generator
    checkpoint = RunCheckpoint(
        run.out / task.checkpoint_name, task.on_load(), optional=("generator", "fitted_steps"), **parts
    )
    state = RunState()
    resumed = checkpoint.load(run.device)
    if resumed:
        state.step, state.best, state.elapsed_s = resumed
        if not saved_generator.loaded:
            generator.manual_seed(batch_seed + state.step)
        run.log(f"{task.name + ' ' if task.name else ''}resumed from step {state.step}")
    batches = None
    if s.batch_workers:
        per_step = s.accumulate_steps
        batches = WorkerBatches(task, s.batch_workers, batch_seed, state.step * per_step, run.device.type == "cuda")

    started, window = time.time(), []
    saved_at = started
    session_first, timed_from, paused = state.step, 0.0, 0.0  # the step time of fit_steps_to_time

    def fit_now(step_ended: float, val_s: float) -> Optional[int]:
        """The fitted number of steps, once this session has timed enough steps (else None); ``step_ended``: when
        the last step's training ended, ``val_s``: a validation's seconds."""
        timed = state.step - session_first - UNTIMED_STEPS
        if fitted is None or fitted.steps or timed < MIN_TIMED_STEPS:
            return None
        step_s = (step_ended - timed_from - paused) / timed
        steps = steps_that_fit(state.step, s.time_limit_s - now(), step_s, val_s, s.val_every)
        fitted.fit(steps)
        bar.total = steps
        run.log(
            f"{task.name + ' ' if task.name else ''}steps fitted to the time limit: {steps} "
            f"({step_s * 1000:.0f} ms a step, {val_s:.1f} s a validation, {s.time_limit_s - now():.0f} s left)"
        )
        return steps

    def now() -> float:
        return state.elapsed_s + time.time() - started

    def out_of_time() -> bool:
        return bool(s.time_limit_s) and now() >= s.time_limit_s

    def save_checkpoint() -> None:
        nonlocal saved_at
        checkpoint.save(state.step, state.best, now())
        saved_at = time.time()

    task.model.train()
    bar = progress_bar(state.step, s.steps, task.name or "training", run.writer)
    with sigterm_raises(Stopped, replace=True):
        try:
            while state.step < s.steps:
                if out_of_time():
                    run.log(
                        f"{task.name + ' ' if task.name else ''}time limit of {s.time_limit_s:.0f} s reached at step {state.step}"
                    )
                    state.stopped_by_time_limit = True
                    break
                task.before_step(max(state.step / s.steps, now() / s.time_limit_s if s.time_limit_s else 0.0))
                window.append(optimiser_step(task, s, generator, run.device, batches))
                state.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{window[-1].get('loss', float('nan')):.4g}", refresh=False)
                if not run.writer:
                    continue
                if state.step - session_first == UNTIMED_STEPS:
                    timed_from = time.time()
                last = state.step >= s.steps or out_of_time()
                validating = s.val_every and (state.step % s.val_every == 0 or last)
                step_ended = time.time()
                if not s.val_every and fit_now(step_ended, 0.0):
                    last = state.step >= s.steps or out_of_time()
                if validating or (s.log_every and (state.step % s.log_every == 0 or last)):
                    metrics = validated(task) if validating else {}
                    timing = {"val_s": round(time.time() - step_ended, 1)} if validating else {}
                    if validating and (steps := fit_now(step_ended, time.time() - step_ended)):
                        timing["fitted_steps"] = steps
                    entry = {
                        **task.log_fields,
                        "step": state.step,
                        "time_s": round(now(), 1),
                        "lr": task.optimizer.param_groups[0]["lr"],
                        **mean_terms(window),
                        **metrics,
                        **timing,
                    }
                    window = []
                    run.append_log(entry)
                    if validating:
                        score = task.score(metrics)
                        if state.best is None or score < state.best:
                            state.best = score
                            run.save_model(task.model, "best", task.card(dict(metrics, step=state.step), state))
                        task.after_validation()
                if (
                    validating
                    or (s.checkpoint_every and state.step % s.checkpoint_every == 0)
                    or time.time() - saved_at >= CHECKPOINT_EVERY_S
                ):
                    save_checkpoint()
                if timed_from:
                    paused += time.time() - step_ended  # validations and checkpoints are not step time
        except KeyboardInterrupt:
            if run.writer and state.step > 0:
                save_checkpoint()
                run.log(f"interrupted: checkpoint saved at step {state.step}; run the same command to resume")
            raise
        finally:
            bar.close()
            if batches is not None:
                batches.close()
    if not run.writer:
        return None
    state.elapsed_s, started = now(), time.time()
    save_checkpoint()
    task.finish(state)
    if task.final_folder:
        run.save_model(task.model, task.final_folder, task.card(validated(task, state), state))
    return run.out / task.result_folder if task.result_folder else None


class Stopped(KeyboardInterrupt):
    """SIGTERM asked a training run to stop (a scheduler, ``kill PID``): handled as Ctrl-C is, with the
    shell's exit status for SIGTERM. Needed because a run started in the background (``nohup ... &``)
    ignores SIGINT, and batch schedulers stop jobs with SIGTERM."""

    exit_code = 128 + signal.SIGTERM


#: Seconds of training between checkpoints at most (besides validations and ``checkpoint_every``).
CHECKPOINT_EVERY_S = 300.0


def check_fit_steps_to_time(s: LoopSettings, run: Run) -> None:
    """:class:`InputError` where a phase cannot fit its steps to a time limit (none given; several processes)."""
    if not s.fit_steps_to_time:
        return
    if not s.time_limit_s:
        raise InputError("fitting the steps to the time limit needs one: give --time-limit MINUTES")
    if run.distributed:
        raise InputError("steps cannot be fitted to the time limit under torchrun: drop --fit-steps-to-time")


def progress_bar(done: int, total: int, name: str, shown: bool):
    """A tqdm bar of steps on stdout (shown on a terminal only, and only by the writing process)."""
    import sys

    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=done,
        desc=name,
        unit="step",
        file=sys.stdout,
        disable=None if shown else True,
        dynamic_ncols=True,
        leave=False,
    )


def setup_phase(task: Task, s: LoopSettings) -> None:
    """``task.setup()``, then its model in channels-last memory order if ``s.channels_last``."""
    task.setup()
    if s.channels_last:
        to_channels_last(task.model)


def optimiser_step(
    task: Task,
    s: LoopSettings,
    generator: torch.Generator,
    device: torch.device,
    batches: Optional[Iterator] = None,
) -> dict[str, float]:
    """One optimiser step of ``task``: ``s.accumulate_steps`` mini-batches (losses under the bf16 hook,
    each divided by their number) -> clipping -> optimiser and scheduler steps -> ``task.after_step``.
    The mini-batches come from ``batches`` (drawn ahead by workers), else ``task.batch(generator)``;
    ``generator`` also serves the loss. Returns the loss terms (means over the mini-batches) and ``batch_s``, the
    seconds the step spent drawing (or waiting for) its batches."""
    task.optimizer.zero_grad(set_to_none=True)
    micro, waited = [], 0.0
    for _ in range(s.accumulate_steps):
        drawn = time.perf_counter()
        batch = next(batches) if batches is not None else task.batch(generator)
        waited += time.perf_counter() - drawn
        with bf16_autocast(s.bf16_autocast, device):
            loss, terms = task.loss(batch, generator)
        (loss / s.accumulate_steps if s.accumulate_steps > 1 else loss).backward()
        micro.append(terms)
    terms = mean_terms(micro)
    terms["batch_s"] = waited
    if s.clip_norm:
        torch.nn.utils.clip_grad_norm_(task.clip_parameters(), s.clip_norm)
    task.optimizer.step()
    if task.scheduler is not None:
        task.scheduler.step()
    task.after_step(terms)
    return terms


def validated(task: Task, final: Optional[RunState] = None) -> dict[str, float]:
    """The task's validation metrics (its final ones when ``final`` is given), the model back in train mode after."""
    try:
        return task.final_metrics(final) if final is not None else task.validate()
    finally:
        task.model.train()


def mean_terms(terms: list[dict[str, float]]) -> dict[str, float]:
    """``{term: mean over the list}`` of loss-term dicts with the same keys (the first one's)."""
    if len(terms) == 1:
        return dict(terms[0])
    return {k: float(np.mean([t[k] for t in terms])) for k in terms[0]}
