"""The training engine: named configs unchanged, run folders of the pre-engine trainers resume,
the loop's options (gradient accumulation, bf16 autocast), and ``imagetomesh train`` end to end."""

import io
import json
import os
import shutil
import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from imagetomesh import cli
from imagetomesh.errors import InputError
from imagetomesh.nn import precision
from imagetomesh.nn.precision import bf16_autocast, bf16_supported, cpu_has_bf16
from imagetomesh.preprocessing import GridSpec
from imagetomesh.training.batch_workers import WorkerBatches, batch_generator
from imagetomesh.training.engine import Run, Stopped, run_phase, train
from imagetomesh.training.tasks import TASKS, get_config
from imagetomesh.training.tasks.base import LoopSettings, Task

OLD = Path(__file__).parent / "data" / "pre_engine_runs"
sys.path.insert(0, str(OLD))
from make_fixtures import tiny_msd  # noqa: E402  (the MSD folder the old runs were made on)

GRID = GridSpec((16, 16, 16), (1.0, 1.0, 1.0))
NEW_FIELDS = ("accumulate_steps", "bf16_autocast", "channels_last", "batch_workers", "fit_steps_to_time")
#: TrainConfig fields added for several organs (issue 16), with the defaults that keep one object
NEW_IMAGE_FIELDS = {
    "organs": None,
    "patch": None,
    "foreground": 0.5,
    "time_limit_s": None,
    "balance_classes": False,
    "balanced_ce": False,
    "restart_classes": None,
    "partly_contoured": None,
    "pseudo_label_teachers": None,
    "pseudo_label_band": 0.1,
    "pseudo_label_min_fraction": 0.25,
    "freeze_unet": False,  # issue 15
    "deep_supervision": 0,  # issue 16
    "crop_jitter": 3.0,  # issue 16
    "scan_starts": None,  # issue 16
}
#: NUDFTrainConfig fields added for several organs (issue 16), and its model's, with the defaults of the old runs
#: AugmentConfig fields added since (issue 16: left-right mirroring of several-organ crops; blur)
NEW_AUGMENT_FIELDS = {"mirror": 0.0, "blur": 0.0, "blur_sigma": 0.75}
NEW_NUDF_FIELDS = {
    "organs": None,
    "partly_contoured": None,
    "crop_jitter": 3.0,
    "live_clamp": False,
    "val_mesh_cases": 0,
    "guide": "crop",
    "guide_ensemble": [],
}
NEW_NUDF_MODEL_FIELDS = {"unet": None, "organ_crops": None, "localiser_input": False, "surface_offsets": None}
NEW_LOSS_FIELDS = {
    "version": 1,
    "target": "faces",
    "target_points": 6000,
    "target_smoothing": 0.2,
    "raster": 0.0,
    "raster_margin": 0.5,
}  # issue 15; the defaults keep the old loss
#: ImplicitMeshNetTrainConfig fields of its cpu-v2 recipe (issue 15), with the defaults that keep the old runs
NEW_IMPLICITMESHNET_FIELDS = {
    "lr_unet": None,
    "seg_loss": "ce",
    "beta_anneal": 1.0,
    "fitted_shapes": 0.0,
    "fit_steps": 200,
    "fit_cases": 0,
}


def test_named_configs_are_the_ones_of_the_trainers_before_the_engine():
    from imagetomesh.training.tasks.dals import get_dals_config

    old = json.loads((OLD / "configs.json").read_text(encoding="utf-8"))
    for kind, named in old.items():
        for name, expected in named.items():
            config = get_dals_config(*name.split("/")) if kind == "dals" else get_config(kind, name)
            got = json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as the fixture was written
            for key in NEW_FIELDS + (("bf16",) if kind == "dals" else ()):
                got.pop(key)
            if kind in ("voxel2mesh", "pixel2mesh3d", "unet"):
                assert {k: got.pop(k) for k in NEW_IMAGE_FIELDS} == NEW_IMAGE_FIELDS, (kind, name)
            if kind == "nudf":
                assert {k: got.pop(k) for k in NEW_NUDF_FIELDS} == NEW_NUDF_FIELDS, (kind, name)
                assert {k: got["model"].pop(k) for k in NEW_NUDF_MODEL_FIELDS} == NEW_NUDF_MODEL_FIELDS, (kind, name)
            if kind == "implicitmeshnet":
                assert {k: got.pop(k) for k in NEW_IMPLICITMESHNET_FIELDS} == NEW_IMPLICITMESHNET_FIELDS, (kind, name)
            if kind != "dals":  # DALS augments points (WolfConfig), the others images (AugmentConfig)
                assert {k: got["augment"].pop(k) for k in NEW_AUGMENT_FIELDS} == NEW_AUGMENT_FIELDS, (kind, name)
            if "loss" in got and isinstance(got["loss"], dict) and "version" in got["loss"]:
                assert {k: got["loss"].pop(k) for k in NEW_LOSS_FIELDS} == NEW_LOSS_FIELDS, (kind, name)
            assert got == expected, (kind, name)
            assert config.accumulate_steps == 1 and config.bf16_autocast is False and config.channels_last is False
            assert config.batch_workers == 0
    assert set(TASKS) == set(old)


def _old_run_config(kind: str, steps: int):
    from imagetomesh.models.dals import DALSConfig
    from imagetomesh.training.configs import TrainConfig
    from imagetomesh.training.tasks.dals import DALSTrainConfig
    from imagetomesh.training.tasks.nudf import NUDFTrainConfig
    from imagetomesh.training.udf_points import UDFPointConfig

    unet = {"in_channels": 1, "num_classes": 2, "base": 4, "depth": 3, "norm": "batch"}
    if kind == "voxel2mesh":
        return TrainConfig(
            "voxel2mesh", {"unet": unet, "hidden": 8, "stages": 2}, grid=GRID, steps=steps, val_every=1, threads=1
        )
    if kind == "nudf":
        return NUDFTrainConfig(
            dict(channels=[2, 4], hidden=8),
            grid=GRID,
            steps=steps,
            val_every=1,
            points_per_case=200,
            val_points=100,
            points=UDFPointConfig(count=400),
        )
    return DALSTrainConfig(
        shapes="hippocampus",
        model=DALSConfig(latent_dim=4, hidden=(8, 8, 8), train_template_level=1, fit_template_level=1),
        steps=steps,
        batch_size=2,
        target_points=100,
        surface_samples=50,
        val_shapes=1,
        val_iterations=2,
        checkpoint_every=1,
        log_every=1,
        bf16=False,
    )


@pytest.mark.parametrize("kind", ["voxel2mesh", "nudf", "dals"])
def test_run_folders_of_the_trainers_before_the_engine_resume(kind, tmp_path):
    msd = tiny_msd(tmp_path / "msd")
    out = tmp_path / "run"
    shutil.copytree(OLD / kind, out)
    old = torch.load(out / "checkpoint.pt", weights_only=True)
    assert old["step"] == 2 and "generator" not in old or kind == "dals"
    options = {"split_path": out / "split.json"} if kind == "dals" else {}
    messages = []
    result = train(_old_run_config(kind, 3), msd, out, log=messages.append, **options)
    assert "resumed from step 2" in messages
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [3]
    new = torch.load(out / "checkpoint.pt", weights_only=True)
    assert new["step"] == 3 and set(old) <= set(new) and "generator" in new
    assert result == out / ("model" if kind == "dals" else "best")
    card = json.loads((out / ("model" if kind == "dals" else "final") / "card.json").read_text())
    assert card["kind"] == kind and (card["training"]["steps"] if kind == "dals" else card["steps"]) == 3


@pytest.mark.parametrize("kind", ["voxel2mesh", "nudf", "dals"])
def test_a_fresh_run_trains_as_the_trainers_before_the_engine(kind, tmp_path):
    """The same seed, data and config give the weights the pre-engine trainer saved at step 2."""
    msd = tiny_msd(tmp_path / "msd")
    out = tmp_path / "run"
    options = {"split_path": out / "split.json"} if kind == "dals" else {}
    train(_old_run_config(kind, 2), msd, out, log=lambda m: None, **options)
    from imagetomesh.weights import upgrade_state

    old = torch.load(OLD / kind / "checkpoint.pt", weights_only=True)
    new = torch.load(out / "checkpoint.pt", weights_only=True)
    model = "decoder" if kind == "dals" else "model"
    old[model] = upgrade_state(kind, old[model])  # saved before the graph layers moved to torch-geometric
    assert old[model].keys() == new[model].keys()
    for key, value in old[model].items():
        assert torch.allclose(new[model][key].float(), value.float(), atol=1e-5), key
    if kind == "dals":
        assert torch.allclose(new["latents"], old["latents"], atol=1e-5)


class _LineTask(Task):
    """A linear least-squares fit on fixed batches: the smallest task (and an example of one)."""

    final_folder = None
    result_folder = None

    def __init__(self, batches, accumulate_steps, bf16=False):
        super().__init__(None, None)
        self.batches, self.accumulate_steps, self.bf16 = list(batches), accumulate_steps, bf16

    def settings(self):
        return LoopSettings(steps=1, clip_norm=None, accumulate_steps=self.accumulate_steps, bf16_autocast=self.bf16)

    def setup(self):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def batch(self, generator):
        return self.batches.pop(0)

    def loss(self, batch, generator):
        x, y = batch
        loss = ((self.model(x).float() - y) ** 2).mean()
        return loss, {"loss": float(loss.detach())}


def _run_line_task(tmp_path, task):
    tmp_path.mkdir(exist_ok=True)
    run = Run(tmp_path, tmp_path, torch.device("cpu"), 0, "", lambda m: None)
    task.run = run
    run_phase(task, run)
    return task.model


def test_gradient_accumulation_equals_one_step_on_the_whole_batch(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)
    whole = _run_line_task(tmp_path / "a", _LineTask([(x, y)], 1))
    halves = _run_line_task(tmp_path / "b", _LineTask([(x[:4], y[:4]), (x[4:], y[4:])], 2))
    for a, b in zip(whole.parameters(), halves.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 1


class _DrawnLineTask(_LineTask):
    """The line task with batches drawn by the generator it is given, two per step, ``workers`` batch workers."""

    batches_in_workers = True

    def __init__(self, steps: int, workers: int) -> None:
        super().__init__([], 2)
        self.steps, self.workers = steps, workers

    def settings(self):
        return LoopSettings(steps=self.steps, clip_norm=None, accumulate_steps=2, batch_workers=self.workers)

    def batch(self, generator):
        x = torch.randn(4, 3, generator=generator)
        return x, x.sum(1, keepdim=True) + 0.1 * torch.randn(4, 1, generator=generator)


def test_each_batch_index_has_its_own_reproducible_stream():
    draws = [torch.rand(5, generator=batch_generator(7, i)) for i in range(4)]
    assert torch.equal(draws[2], torch.rand(5, generator=batch_generator(7, 2)))
    assert all(not torch.equal(draws[i], draws[j]) for i in range(4) for j in range(i))
    assert not torch.equal(draws[0], torch.rand(5, generator=batch_generator(8, 0)))


def test_workers_give_batches_in_order_as_drawn_in_the_training_process():
    task = _DrawnLineTask(1, 2)
    batches = WorkerBatches(task, 2, 5, 3)
    got = [next(batches) for _ in range(8)]
    batches.close()
    assert next(batches, None) is None
    expected = [task.batch(batch_generator(5, i)) for i in range(3, 11)]
    assert len(got) == len(expected) == 8
    for (x, y), (ex, ey) in zip(got, expected):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_a_run_with_workers_resumed_half_way_ends_with_the_weights_of_one_run(tmp_path):
    whole = _run_line_task(tmp_path / "whole", _DrawnLineTask(6, 2))
    _run_line_task(tmp_path / "halves", _DrawnLineTask(3, 2))
    assert torch.load(tmp_path / "halves" / "checkpoint.pt", weights_only=True)["step"] == 3
    resumed = _run_line_task(tmp_path / "halves", _DrawnLineTask(6, 1))  # the number of workers may change
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    in_loop = _run_line_task(tmp_path / "in-loop", _DrawnLineTask(6, 0))  # the engine's one generator: other batches
    assert not torch.equal(in_loop.weight, whole.weight)


def test_a_task_whose_batches_follow_the_training_refuses_workers_before_its_set_up(tmp_path):
    task = _DrawnLineTask(2, 1)
    task.batches_in_workers = False
    with pytest.raises(InputError, match="batch_workers to 0"):
        _run_line_task(tmp_path, task)
    assert not hasattr(task, "model")


def test_bf16_autocast_is_off_by_default_and_falls_back_to_float32(tmp_path):
    x = torch.randn(4, 3)
    layer = torch.nn.Linear(3, 2)
    with bf16_autocast(False, torch.device("cpu")):
        assert layer(x).dtype == torch.float32
    with bf16_autocast(True, torch.device("cpu")):
        expected = torch.bfloat16 if bf16_supported(torch.device("cpu")) else torch.float32
        assert layer(x).dtype == expected
    g = torch.Generator().manual_seed(0)
    model = _run_line_task(
        tmp_path, _LineTask([(torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g))], 1, bf16=True)
    )
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("variable", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
def test_bf16_is_off_when_onednn_is_capped_below_native_bf16(monkeypatch, variable):
    """Under an AVX2 cap oneDNN has no bf16 kernels (its reference code is many times slower than float32), so
    autocast must stay float32 there even on a CPU with AMX; an AMX or unset cap leaves the CPU's own answer."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(precision, "open", _cpuinfo("flags : avx2 avx512f avx512_bf16 amx_bf16"), raising=False)
    assert cpu_has_bf16()
    for cap, native in [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_AMX", True), ("ALL", True)]:
        monkeypatch.setenv(variable, cap)
        assert cpu_has_bf16() is native and bf16_supported(torch.device("cpu")) is native, cap
        with bf16_autocast(True, torch.device("cpu")):
            assert torch.nn.Linear(3, 2)(torch.randn(4, 3)).dtype == (torch.bfloat16 if native else torch.float32)
    monkeypatch.delenv(variable)
    monkeypatch.setattr(precision, "open", _cpuinfo("flags : avx2 fma"), raising=False)
    assert not cpu_has_bf16()


def _cpuinfo(text: str):
    """A stand-in for ``open`` in :mod:`imagetomesh.nn.precision` that reads ``text`` as ``/proc/cpuinfo``."""

    def fake_open(path, *args, **kwargs):
        assert str(path) == "/proc/cpuinfo"
        return io.StringIO(text)

    return fake_open


def test_train_options_come_from_the_task_registry(tmp_path, monkeypatch, capsys):
    import imagetomesh.training.engine as engine

    calls = []
    monkeypatch.setattr(
        engine, "train", lambda config, data, out, **kw: calls.append((config, kw)) or Path(out) / "best"
    )
    data = tmp_path
    code = cli.main(
        [
            "train",
            "implicitmeshnet",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "r"),
            "--time-limit",
            "2",
            "--pretrain-steps",
            "0",
            "--pretrain-time-limit",
            "1",
            "--sdf-from",
            "g.safetensors",
            "--init-from",
            "m",
            "--steps",
            "7",
            "--seed",
            "3",
        ]
    )
    config, kw = calls[-1]
    assert (
        code == 0 and config.time_limit_s == 120 and config.pretrain_steps == 0 and config.pretrain_time_limit_s == 60
    )
    assert config.steps == 7 and kw["seed"] == 3 and kw["config_name"] == "cpu"
    assert kw["sdf_from"] == Path("g.safetensors") and kw["init_from"] == Path("m")
    assert "best model:" in capsys.readouterr().out

    assert (
        cli.main(
            ["train", "dals", "--shapes", "kidney", "--data", str(data), "--out", str(tmp_path / "d"), "--steps", "5"]
        )
        == 0
    )
    config, kw = calls[-1]
    assert (
        config.shapes == "kidney" and config.steps == 5 and config.time_limit_s is None and kw["config_name"] == "cpu"
    )
    assert "DALS prior:" in capsys.readouterr().out

    assert (
        cli.main(["train", "voxel2mesh", "--data", str(data), "--out", str(tmp_path / "v"), "--config", "ps-umu"]) == 0
    )
    config, kw = calls[-1]
    assert config.model["sampling"] == "ps" and kw == {
        "device": "cpu",
        "seed": 0,
        "config_name": "ps-umu",
        "log": kw["log"],
    }

    assert cli.main(["train", "unet", "--data", str(data), "--out", str(tmp_path / "u"), "--config", "tpu"]) == 2
    assert "no config 'tpu' for unet" in capsys.readouterr().err


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_an_unknown_config_is_one_input_error_naming_the_known_ones(kind):
    from imagetomesh.errors import InputError

    known = ", ".join(TASKS[kind].load().configs(kind))
    with pytest.raises(InputError, match=f"^no config 'tpu' for {kind}; known: {known}$"):
        get_config(kind, "tpu")


def test_nudf_refuses_init_from_before_writing_anything(tmp_path, capsys):
    code = cli.main(
        ["train", "nudf", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--init-from", str(tmp_path)]
    )
    assert code == 2 and "trains from scratch" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_unet_on_the_command_line_resumes(tmp_path, capsys, monkeypatch):
    import imagetomesh.training.tasks.image_to_mesh as image_to_mesh
    from imagetomesh.training.configs import TrainConfig

    tiny = TrainConfig("unet", {"unet": {"base": 4, "depth": 3}}, grid=GRID, steps=5, val_every=1, threads=1)
    monkeypatch.setattr(image_to_mesh, "image_configs", lambda: {"unet": {"cpu": tiny}})
    msd = tiny_msd(tmp_path / "msd")
    argv = ["train", "unet", "--data", str(msd), "--out", str(tmp_path / "run"), "--steps", "1"]
    assert cli.main(argv) == 0
    assert cli.main(argv[:-1] + ["2"]) == 0
    captured = capsys.readouterr()
    assert "resumed from step 1" in captured.out and f"best model: {tmp_path / 'run' / 'best'}" in captured.out
    entries = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [1, 2] and "val_dice" in entries[0] and "seg" in entries[0]
    assert all(e["batch_s"] > 0 and e["val_s"] >= 0 for e in entries)  # where the time went
    card = json.loads((tmp_path / "run" / "final" / "card.json").read_text())
    assert card["kind"] == "unet" and card["train_config"] == "cpu" and card["steps"] == 2
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config_name"] == "cpu" and config["steps"] == 2 and config["accumulate_steps"] == 1


def test_data_licence_comes_from_the_datas_dataset_json_else_the_table(tmp_path):
    from imagetomesh.training.data_sources import DATA_SOURCES, data_description

    assert data_description("kidney", tmp_path) == DATA_SOURCES["kidney"]  # no dataset.json: the table
    (tmp_path / "dataset.json").write_text(json.dumps({"licence": "CC-BY-SA 4.0", "training": []}))
    assert data_description("hippocampus", tmp_path) == DATA_SOURCES["hippocampus"]
    (tmp_path / "dataset.json").write_text(json.dumps({"licence": "CC0", "training": []}))
    stated = data_description("hippocampus", tmp_path)
    assert (
        stated["licence"] == "CC0"
        and "CC0" in stated["terms"]
        and stated["name"] == DATA_SOURCES["hippocampus"]["name"]
    )


class _InterruptedTask(_LineTask):
    """The line task, interrupted (Ctrl-C) during its fourth step."""

    def settings(self):
        return LoopSettings(steps=10, clip_norm=None)

    def batch(self, generator):
        if len(self.batches) == 6:
            raise KeyboardInterrupt
        return self.batches.pop(0)


def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path):
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, generator=g), torch.randn(4, 1, generator=g)) for _ in range(10)]
    run = Run(tmp_path, tmp_path, torch.device("cpu"), 0, "", lambda m: None)
    task = _InterruptedTask(list(batches), 1)
    task.run = run
    with pytest.raises(KeyboardInterrupt):
        run_phase(task, run)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 4
    messages = []
    run = Run(tmp_path, tmp_path, torch.device("cpu"), 0, "", messages.append)
    task = _LineTask(batches[4:], 1)
    task.settings = lambda: LoopSettings(steps=10, clip_norm=None)
    task.run = run
    run_phase(task, run)
    assert "resumed from step 4" in messages
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 10


class _TerminatedTask(_LineTask):
    """The line task, sent SIGTERM (as ``kill PID`` or a batch scheduler does) during its fourth step."""

    def settings(self):
        return LoopSettings(steps=10, clip_norm=None)

    def batch(self, generator):
        if len(self.batches) == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.batches.pop(0)


def test_sigterm_saves_a_checkpoint_and_restores_the_handler(tmp_path):
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, generator=g), torch.randn(4, 1, generator=g)) for _ in range(10)]
    messages = []
    run = Run(tmp_path, tmp_path, torch.device("cpu"), 0, "", messages.append)
    task = _TerminatedTask(list(batches), 1)
    task.run = run
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as stopped:
        run_phase(task, run)
    assert stopped.value.exit_code == 143 and isinstance(stopped.value, KeyboardInterrupt)
    # the signal arrives inside batch(): the step it interrupted is not counted
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 4
    assert any("interrupted: checkpoint saved at step 4" in m for m in messages)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_run_folder_refuses_another_config_before_anything_is_written(tmp_path, capsys):
    msd = tiny_msd(tmp_path / "msd")
    out = tmp_path / "run"
    args = ["train", "unet", "--data", str(msd), "--out", str(out), "--steps", "1", "--time-limit", "5"]
    assert cli.main(args) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert cli.main(args[:-4] + ["--config", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "started with config 'cpu' and seed 0" in err and "differs in" in err and "model" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert cli.main(args[:-4] + ["--seed", "1"]) == 2 and "differs in seed" in capsys.readouterr().err
    # more steps and another time limit resume the same run
    assert cli.main(args[:-4] + ["--steps", "2", "--time-limit", "9"]) == 0
    assert "resumed from step 1" in capsys.readouterr().out


def test_a_model_option_added_after_a_run_started_resumes_only_while_unset(tmp_path):
    from imagetomesh.errors import InputError
    from imagetomesh.training.engine import check_resumable

    saved = {"seed": 0, "steps": 5, "model": {"hidden": 8, "unet": {"base": 4}}}
    (tmp_path / "config.json").write_text(json.dumps(saved))

    class Config:
        def __init__(self, model):
            self.model = model

        def to_dict(self):
            return {"steps": 9, "model": self.model}

    check_resumable(tmp_path, Config({"hidden": 8, "unet": {"base": 4}, "organ_arcs": None}), "c", 0)
    for changed in ({"hidden": 8, "unet": {"base": 4}, "organ_arcs": [None]}, {"hidden": 8, "unet": {"base": 8}}):
        with pytest.raises(InputError, match="differs in model"):
            check_resumable(tmp_path, Config(changed), "c", 0)


@pytest.mark.parametrize("option", ["loss", "augment"])
def test_a_loss_or_augment_field_added_after_a_run_started_resumes_only_at_its_default(option, tmp_path):
    import copy
    from dataclasses import asdict

    from imagetomesh.errors import InputError
    from imagetomesh.training.configs import image_configs
    from imagetomesh.training.engine import check_resumable
    from imagetomesh.training.losses import MeshLossWeights

    config = copy.deepcopy(image_configs()["unet"]["headneck-ct-cpu-wide"])
    saved = {"seed": 0, **json.loads(json.dumps(config.to_dict()))}
    for key in NEW_LOSS_FIELDS if option == "loss" else NEW_AUGMENT_FIELDS:  # a run saved before these fields
        saved[option].pop(key)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    check_resumable(tmp_path, config, "headneck-ct-cpu-wide", 0)
    changed = copy.deepcopy(config)
    if option == "loss":
        changed.loss = MeshLossWeights(**{**asdict(config.loss), "version": 2, "raster": 3.0})
    else:
        changed.augment = replace(config.augment, mirror=0.5)
    with pytest.raises(InputError, match=f"differs in {option}"):
        check_resumable(tmp_path, changed, "headneck-ct-cpu-wide", 0)
