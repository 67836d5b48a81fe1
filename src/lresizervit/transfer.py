"""`python -m lresizervit transfer`: are a pretrained backbone's weights loaded and used, and does the
learned resizer still pay off in front of one?

The real-competition recipe fine-tunes a keras-hub preset behind the resizer. This runs that path end to end
on the synthetic data, small enough for a CPU, every step resumable:

1. *Scratch preset*: a small keras-hub ViT (`ARCHITECTURE`, at `model.resizer.target_size`), randomly
   initialised, saved with `save_to_preset` and a ViT image converter (scale 1/127.5, offset -1).
2. *Pretraining*: that preset is the backbone of the project's own regressor, trained with the real trainer
   (`train_folds.sh`, fold 0 of `PRETRAIN_FOLDS`) on a large synthetic set of its own seed, behind a plain
   bilinear resize, as ImageNet backbones are pretrained on plainly resized photos. The backbone alone is
   then saved as the *pretrained* preset, and loaded back through `keras_hub:<folder>` to check that its
   weights are the trained ones.
3. *Fine-tuning*: every arm (`ARMS`: pretrained or scratch preset x learned or bilinear resizer) trains
   every fold of a small synthetic set of another seed with `train_folds.sh`. The pretrained arms use the
   config's fine-tuning recipe (`train.backbone_learning_rate`, `freeze_backbone_epochs`,
   `model.resizer.zero_init_output`); the scratch arms `SCRATCH_RECIPE`, one learning rate for every layer
   from the first step, as the demo and the ablation train.

The table gives each arm's CV RMSE next to the constant baseline, the detail-blind floor and the noise floor,
how far fine-tuning moved the backbone from the preset it started from, and how much of the stripes each
arm's trained resizer passes on to the backbone.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from types import MappingProxyType

import numpy as np

from lresizervit.bench.machine import machine_description, measure_matmul_flops
from lresizervit.comparison import arm_result, detail_survival, ensure_synth_data, train_arm
from lresizervit.config import Config
from lresizervit.data.synth import SynthParams
from lresizervit.io_utils import atomic_write_folder, atomic_write_json
from lresizervit.run import MODEL_FILE, fold_file, fold_is_complete, read_metrics

# The ViT every arm uses (the demo's tiny ViT in keras-hub form): ~140k parameters, so pretraining on a few
# thousand photos takes minutes on 2 CPU cores.
ARCHITECTURE = MappingProxyType({"patch_size": 4, "num_layers": 4, "num_heads": 4, "hidden_dim": 64, "mlp_dim": 128})
# Photos smaller than the generator's default (256-1,024 px): a few thousand render in well under a minute on 2
# cores. The stripes' period is a fraction of the shorter side, so loaded at 96 px they still have 3 px.
PHOTO_SIDES = MappingProxyType({"min_side": 128, "max_side": 256, "max_long_side": 384})
# arm -> (which preset, model.resizer.mode)
ARMS = MappingProxyType({
    "pretrained_learned": ("pretrained", "learned"),
    "pretrained_bilinear": ("pretrained", "bilinear"),
    "scratch_learned": ("scratch", "learned"),
    "scratch_bilinear": ("scratch", "bilinear"),
})
# A backbone from random weights learns with the new layers from the first step (the ablation's recipe).
SCRATCH_RECIPE = ("train.backbone_learning_rate=null", "train.layer_decay=1.0", "train.freeze_backbone_epochs=0",
                  "model.resizer.zero_init_output=false")
# Pretraining trains fold 0 of this many: 90 % of the large set, the rest picks its best epoch.
PRETRAIN_FOLDS = 10
PRESET_INFO = "transfer.json"


def presets_dir(cfg: Config) -> Path:
    """Where the scratch and pretrained presets live, relative to the repository like output_dir."""
    return Path(cfg.output_dir) / f"{cfg.name}_presets"


def photo_params(seed: int) -> SynthParams:
    return SynthParams(seed=seed, **PHOTO_SIDES)


# ----------------------------------------------------------------------------------------------- presets

def _write_preset(folder: Path, backbone, image_size: int, info: dict) -> None:
    """`backbone` + the [-1, 1] ViT image converter + `info` into `folder`, atomically (a temp folder, then
    a rename), so a killed run never leaves a half-written preset that a rerun would take as done."""
    import keras_hub

    def fill(tmp: Path) -> None:
        backbone.save_to_preset(str(tmp))
        converter = keras_hub.layers.ViTImageConverter(image_size=(image_size, image_size), scale=1 / 127.5,
                                                       offset=-1.0)
        converter.save_to_preset(str(tmp))
        atomic_write_json(tmp / PRESET_INFO, info)

    atomic_write_folder(folder, fill)


def _check_info(folder: Path, want: dict, what: str) -> bool:
    """True when `folder` holds the preset `want` describes, False when there is none; an error otherwise."""
    path = folder / PRESET_INFO
    if not path.is_file():
        if folder.exists():
            raise ValueError(f"{folder}: exists but holds no {PRESET_INFO}; delete it and rerun")
        return False
    have = json.loads(path.read_text())
    if have != want:
        raise ValueError(f"{folder}: the {what} preset there was made differently ({have} != {want}); delete "
                         f"it and every experiment fine-tuned from it, then rerun")
    return True


def write_scratch_preset(folder: Path, image_size: int, seed: int) -> bool:
    """The randomly initialised ViT preset (deterministic for `seed`) unless `folder` already holds it;
    returns whether it was written."""
    import keras
    import keras_hub

    info = {"what": "scratch", "architecture": dict(ARCHITECTURE), "image_size": image_size, "seed": seed}
    if _check_info(folder, info, "scratch"):
        return False
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ViTBackbone(image_shape=(image_size, image_size, 3), **ARCHITECTURE)
    _write_preset(folder, backbone, image_size, info)
    return True


def hub_backbone(model):
    """The keras-hub Backbone inside a regressor built with a `keras_hub:` backbone."""
    import keras_hub

    wrapper = model.get_layer("keras_hub_backbone")
    found = [layer for layer in wrapper.layers if isinstance(layer, keras_hub.models.Backbone)]
    if len(found) != 1:
        raise ValueError(f"model {model.name!r}: expected one keras-hub backbone, found {len(found)}")
    return found[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_pretrained_preset(model_path: Path, folder: Path, image_size: int) -> bool:
    """Save the backbone of the trained regressor `model_path` as a preset in `folder` (the backbone only:
    the resizer, metadata branch and head stay behind), unless `folder` already holds this export; returns
    whether it was written. A preset exported from another model file is refused, not replaced: the arms
    fine-tuned from it would no longer match it."""
    from lresizervit.models.fold_model import load_fold_model

    info = {"what": "pretrained", "architecture": dict(ARCHITECTURE), "image_size": image_size,
            "exported_from": str(model_path), "model_sha256": _sha256(model_path)}
    if _check_info(folder, info, "pretrained"):
        return False
    _write_preset(folder, hub_backbone(load_fold_model(model_path)), image_size, info)
    return True


def preset_weights(folder: Path, image_size: int) -> list[np.ndarray]:
    """The backbone weights `keras_hub:<folder>` gives, built the way the trainer builds it."""
    from keras import ops

    from lresizervit.models.backbones import build_backbone

    backbone = build_backbone(f"keras_hub:{folder}", image_size)
    return [ops.convert_to_numpy(w) for w in backbone.weights]


def _backbone_weights(model) -> list[np.ndarray]:
    from keras import ops

    return [ops.convert_to_numpy(w) for w in model.get_layer("keras_hub_backbone").weights]


def weight_gap(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """The largest absolute difference between two lists of weights of the same shapes."""
    if [x.shape for x in a] != [y.shape for y in b]:
        raise ValueError("the two backbones have different weight shapes")
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


def relative_change(start: list[np.ndarray], end: list[np.ndarray]) -> float:
    """||end - start|| / ||start|| over all weights: how far training moved a backbone from its preset."""
    num = sum(float(np.sum((e - s) ** 2)) for s, e in zip(start, end, strict=True))
    return float(np.sqrt(num / sum(float(np.sum(s ** 2)) for s in start)))


# ------------------------------------------------------------------------------------------------ the run

def check_transfer_args(cfg: Config, arms: tuple[str, ...], n_train: int, seed: int, pretrain_train: int,
                        pretrain_seed: int, pretrain_epochs: int) -> None:
    """Every argument error, before anything is generated or trained."""
    unknown = [a for a in arms if a not in ARMS]
    if not arms or unknown:
        raise ValueError(f"--arms: unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
    if len(set(arms)) != len(arms):
        raise ValueError(f"--arms: an arm is named twice ({', '.join(arms)})")
    if seed == pretrain_seed:
        raise ValueError(f"--seed and --pretrain-seed are both {seed}: pretraining must see other photos than "
                         "the fine-tuning set")
    if n_train < 4 * cfg.data.n_folds:
        raise ValueError(f"--train {n_train}: too few photos for data.n_folds {cfg.data.n_folds} "
                         f"(need at least {4 * cfg.data.n_folds})")
    if pretrain_train < 4 * PRETRAIN_FOLDS:
        raise ValueError(f"--pretrain-train {pretrain_train}: need at least {4 * PRETRAIN_FOLDS} photos "
                         f"(pretraining holds out 1 of {PRETRAIN_FOLDS} folds)")
    if pretrain_epochs < 1:
        raise ValueError(f"--pretrain-epochs must be >= 1, got {pretrain_epochs}")
    size = cfg.model.resizer.target_size
    if size % ARCHITECTURE["patch_size"]:
        raise ValueError(f"model.resizer.target_size {size} is not divisible by the transfer ViT's patch size "
                         f"{ARCHITECTURE['patch_size']}")


def pretrain_overrides(cfg: Config, scratch_spec: str, epochs: int) -> tuple[str, ...]:
    """The config keys that turn the fine-tuning config into the pretraining run."""
    folds = Path(cfg.data.folds_csv)
    return (f"name={cfg.name}_pretrain", f"data.dir={cfg.data.dir}_pretrain",
            f"data.folds_csv={folds.with_name(f'{folds.stem}_pretrain{folds.suffix}')}",
            f"data.n_folds={PRETRAIN_FOLDS}", "model.resizer.mode=bilinear",
            f"model.backbone.name={scratch_spec}", f"train.epochs={epochs}", *SCRATCH_RECIPE)


def _calibration() -> dict:
    """This machine's speed now: its dense math and its load (the CPU is shared; its speed also jumps)."""
    matmul = measure_matmul_flops("float32")
    return {"matmul_gflops": matmul["flops_per_second"] / 1e9, "matmul_n": matmul["n"],
            "load_average": list(os.getloadavg())}


def run_transfer(config: str, cfg: Config, sets: tuple[str, ...] = (), arms: tuple[str, ...] = tuple(ARMS),
                 n_train: int = 400, seed: int = 3, pretrain_train: int = 3000, pretrain_seed: int = 2,
                 pretrain_epochs: int = 15, repo: str | os.PathLike = ".") -> dict:
    """Pretrain (once), fine-tune each arm, and collect the evidence into one result."""
    from lresizervit.models.fold_model import load_fold_model

    check_transfer_args(cfg, arms, n_train, seed, pretrain_train, pretrain_seed, pretrain_epochs)
    repo = Path(repo)
    t_start = time.perf_counter()
    calibration_before = _calibration()
    size = cfg.model.resizer.target_size
    rel = presets_dir(cfg)  # as the configs name it; files are read and written under the repository
    specs = {which: f"keras_hub:{rel / which}" for which in ("scratch", "pretrained")}

    # 1. the scratch preset
    write_scratch_preset(repo / rel / "scratch", size, cfg.train.seed)

    # 2. pretraining on the large set, then its backbone alone as the pretrained preset
    t0 = time.perf_counter()
    pre_params = photo_params(pretrain_seed)
    pre_info = ensure_synth_data(repo / f"{cfg.data.dir}_pretrain", pretrain_train, 10, pre_params)
    pre_sets = (*sets, *pretrain_overrides(cfg, specs["scratch"], pretrain_epochs))
    pre_dir = repo / cfg.output_dir / f"{cfg.name}_pretrain"
    if not fold_is_complete(pre_dir, 0):
        train_arm(config, "pretraining", pre_sets, repo, folds=(0,))
    pre_model = fold_file(pre_dir, 0, MODEL_FILE)
    export_pretrained_preset(pre_model, repo / rel / "pretrained", size)
    loaded_gap = weight_gap(preset_weights(repo / rel / "pretrained", size), _backbone_weights(load_fold_model(pre_model)))
    if loaded_gap != 0.0:
        raise ValueError(f"{repo / rel / 'pretrained'}: keras_hub: loads weights that differ from the pretrained "
                         f"backbone's in {pre_model} by up to {loaded_gap:g}")
    scratch_vs_pretrained = relative_change(preset_weights(repo / rel / "scratch", size),
                                            preset_weights(repo / rel / "pretrained", size))
    pre_metrics = read_metrics(pre_dir, 0)
    pretraining = {
        "run_dir": str(pre_dir), "n_train": pretrain_train, "params": asdict(pre_params),
        "epochs": pretrain_epochs, "val_rmse": pre_metrics["val_rmse"], "best_epoch": pre_metrics["best_epoch"],
        "train_seconds": pre_metrics["seconds"], "wall_seconds": time.perf_counter() - t0,
        "constant_baseline_rmse": pre_info["constant_baseline_rmse"],
        "detail_blind_rmse": pre_info["detail_blind_rmse"], "noise_floor_rmse": pre_info["noise_floor_rmse"],
        "preset_weight_gap": loaded_gap, "change_from_scratch": scratch_vs_pretrained,
    }

    # 3. fine-tuning: every arm on the small set
    params = photo_params(seed)
    info = ensure_synth_data(repo / cfg.data.dir, n_train, 50, params)
    plain_kept = detail_survival(cfg.data.image_size, size, params)
    start_weights = {which: preset_weights(repo / rel / which, size) for which in ("scratch", "pretrained")}
    rows = {}
    for arm in arms:
        which, mode = ARMS[arm]
        name = f"{cfg.name}_{arm}"
        arm_sets = (*sets, f"name={name}", f"model.resizer.mode={mode}", f"model.backbone.name={specs[which]}",
                    *(SCRATCH_RECIPE if which == "scratch" else ()))
        seconds = train_arm(config, arm, arm_sets, repo)
        run_dir = repo / cfg.output_dir / name
        row = arm_result(run_dir, arm)
        changes, kept = [], []
        for k in range(len(row["fold_rmse"])):
            model = load_fold_model(fold_file(run_dir, k, MODEL_FILE))
            changes.append(relative_change(start_weights[which], _backbone_weights(model)))
            if mode == "learned":
                kept.append(detail_survival(cfg.data.image_size, size, params, resizer=model.get_layer("resizer")))
        rows[arm] = {**row, "weights": which, "mode": mode, "wall_seconds": seconds,
                     "backbone_change": float(np.mean(changes)),
                     "stripes_kept": float(np.mean(kept)) if kept else plain_kept}
    first = rows[arms[0]]
    recipe = {k: getattr(cfg.train, k) for k in ("learning_rate", "backbone_learning_rate", "layer_decay",
                                                 "freeze_backbone_epochs")}
    recipe["zero_init_output"] = cfg.model.resizer.zero_init_output
    return {
        "what": "transfer",
        "config": config,
        "overrides": list(sets),
        "architecture": dict(ARCHITECTURE),
        "image_size": cfg.data.image_size,
        "target_size": size,
        "epochs": cfg.train.epochs,
        "finetune_recipe": recipe,
        "synth": {"n_train": n_train, "params": asdict(params)},
        "detail_survival": plain_kept,
        "pretraining": pretraining,
        "constant_baseline_rmse": first["constant_baseline_rmse"],
        "detail_blind_rmse": info["detail_blind_rmse"],
        "noise_floor_rmse": first["noise_floor_rmse"],
        "arms": rows,
        "total_seconds": time.perf_counter() - t_start,
        "machine": machine_description(),
        "calibration": {"before": calibration_before, "after": _calibration()},
    }


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "–"


def _percent(fraction: float) -> str:
    return f"{100 * fraction:,.0f} %" if fraction >= 1 else f"{100 * fraction:.3g} %"


def format_transfer(result: dict) -> str:
    """The markdown: what was pretrained and how, one row per arm, the reference scores, the calibration."""
    pre, rows = result["pretraining"], result["arms"]
    cal = result["calibration"]
    n_folds = len(next(iter(rows.values()))["fold_rmse"])
    arch = result["architecture"]
    lines = [
        f"ViT (keras-hub ViTBackbone: patch {arch['patch_size']}, {arch['num_layers']} layers, width "
        f"{arch['hidden_dim']}, {arch['num_heads']} heads, MLP {arch['mlp_dim']}) seeing {result['target_size']} px "
        f"of photos loaded at {result['image_size']} px; a plain resize keeps {100 * result['detail_survival']:.1f} % "
        f"of the stripes' amplitude.",
        "",
        f"Pretraining: {pre['n_train']} synthetic photos (seed {pre['params']['seed']}), bilinear resizer, fold 0 of "
        f"{PRETRAIN_FOLDS}, {pre['epochs']} epochs: val RMSE {pre['val_rmse']:.3f} at epoch {pre['best_epoch']} "
        f"(that set's constant baseline {pre['constant_baseline_rmse']:.3f}, detail-blind floor "
        f"{pre['detail_blind_rmse']:.3f}), {pre['wall_seconds']:.0f} s. The pretrained preset loads through "
        f"keras_hub: with weights equal to the trained backbone's (largest difference {pre['preset_weight_gap']:g}); "
        f"pretraining moved the backbone by {_percent(pre['change_from_scratch'])} of the scratch preset's norm.",
        "",
        f"Fine-tuning: {result['synth']['n_train']} synthetic photos (seed {result['synth']['params']['seed']}), "
        f"{n_folds} folds x {result['epochs']} epochs per arm ({result['machine']})",
        "",
        "| arm | CV RMSE | folds mean ± std | vs scratch, same resizer | vs bilinear, same weights | "
        "backbone moved | stripes kept | best epochs | train s (all folds) | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows.values():
        other_weights = rows.get(f"{'scratch' if r['weights'] == 'pretrained' else 'pretrained'}_{r['mode']}")
        bilinear = rows.get(f"{r['weights']}_bilinear")
        vs_scratch = _ratio(r["cv_rmse"], other_weights["cv_rmse"]) if r["weights"] == "pretrained" and \
            other_weights else "–"
        vs_bilinear = _ratio(r["cv_rmse"], bilinear["cv_rmse"]) if r["mode"] != "bilinear" and bilinear else "–"
        lines.append(
            f"| {r['weights']} + {r['mode']} | {r['cv_rmse']:.3f} | {r['fold_rmse_mean']:.3f} ± "
            f"{r['fold_rmse_std']:.3f} | {vs_scratch} | {vs_bilinear} | "
            f"{_percent(r['backbone_change'])} | {_percent(r['stripes_kept'])} | {', '.join(map(str, r['best_epochs']))} | "
            f"{r['train_seconds']:.0f} | {r['wall_seconds']:.0f} |")
    for label, key in (("constant baseline (each fold predicts its training mean)", "constant_baseline_rmse"),
                       ("detail-blind floor (a perfect model without the stripes)", "detail_blind_rmse"),
                       ("noise floor (a perfect model)", "noise_floor_rmse")):
        if result.get(key) is not None:
            lines.append(f"| {label} | {result[key]:.3f} | | | | | | | | |")
    lines += [
        "",
        "backbone moved: ||fine-tuned - preset|| / ||preset|| over the backbone's weights, mean of the folds. "
        f"stripes kept: their amplitude in what the backbone sees ({result['target_size']} px) as a fraction of "
        f"that at {result['image_size']} px, through each fold's trained resizer (mean of the folds; above "
        "100 % it amplifies them), or through the plain resize.",
        "",
        f"Calibration, same run: {cal['before']['matmul_n']}³ float32 matmul {cal['before']['matmul_gflops']:.0f} "
        f"GFLOP/s before, {cal['after']['matmul_gflops']:.0f} after; load average (1 min) "
        f"{cal['before']['load_average'][0]:.1f} before, {cal['after']['load_average'][0]:.1f} after.",
        "",
        f"total: {result['total_seconds'] / 60:.1f} min",
    ]
    return "\n".join(lines)
