"""`kaggle train`: an experiment's folds trained on Kaggle's GPU T4 x2 or TPU v5e-8, from this machine.

    models/<exp>/kaggle/code/          the private code dataset <you>/lresizervit-<exp>-code: this code as a
                                       wheel, keras-hub's wheel for a keras_hub: backbone, the config, the
                                       folds file, train_folds.sh and the bootstrap (kaggle_io/kernel.py)
    models/<exp>/kaggle/kernel_<i>/    one training kernel each: its script (kaggle/train_kernel.py with its
                                       job) and kernel-metadata.json
    models/<exp>/kaggle/checkpoint/    --resume: the interrupted folds' backups, published as
                                       <you>/lresizervit-<exp>-ckpt and attached to the next session
    models/<exp>/kaggle/pushed.json    what was pushed last (kernels, versions, folds): --wait and --collect
    models/<exp>/kaggle/output/<k>/    a kernel's /kaggle/working as downloaded

The kernels train with the experiment's own config: only keys that do not change the model differ
(where the data and the experiment live, the backend and precision of the accelerator; run.py), so folds
trained on Kaggle, by several kernels or over several sessions, form one experiment with one CV.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from lresizervit.kaggle_io.client import KaggleError, connect, kaggle_username
from lresizervit.kaggle_io.kernels import (
    MACHINE_SHAPES,
    KernelSpec,
    download_output,
    publish_dataset,
    push_kernel,
    quota_left,
    slugify,
    wait_for_kernel,
    write_dataset_metadata,
)

# How long a session may run (Kaggle ends a GPU session at 12 h; TPU sessions have been shorter), and what
# the kernel keeps back from it for installing, the last fold's OOF and saving /kaggle/working.
SESSION_HOURS = {"gpu": 12.0, "tpu": 9.0}
MARGIN_HOURS = 0.75
ACCELERATOR_NAMES = {"gpu": "GPU T4 x2", "tpu": "TPU v5e-8"}
TRAIN_SCRIPT = "train_kernel.py"
PUSHED = "pushed.json"


@dataclass
class TrainPlan:
    cfg: object  # the experiment's Config
    accelerator: str
    user: str
    root: Path  # models/<exp>/kaggle
    code_ref: str
    model_handle: str | None
    folds: list[int]
    folds_file: Path | None  # the local folds file, shipped so the kernels split the rows as here
    time_budget_h: float
    checkpoint_ref: str | None = None
    kernels: list[tuple[KernelSpec, dict]] = field(default_factory=list)


def kaggle_model(cfg) -> str | None:
    """The Kaggle Model handle (owner/model/framework/variation/version) the kernel attaches for the
    config's backbone; None for a native one. A local preset folder cannot be seen from Kaggle."""
    from lresizervit.models.preset_files import KERAS_HUB_PREFIX

    name = cfg.model.backbone.name
    if name.startswith(("savedmodel:", "hub:")):
        raise KaggleError(f"model.backbone.name {name!r}: a TF SavedModel backbone cannot be attached from here "
                          f"(and does not run on JAX / TPU); use a keras_hub: preset")
    if not name.startswith(KERAS_HUB_PREFIX):
        return None
    preset = name[len(KERAS_HUB_PREFIX):]
    if preset.startswith("kaggle://"):
        handle = preset[len("kaggle://"):].strip("/")
    elif os.sep in preset or preset.startswith(".") or os.path.isdir(os.path.expanduser(preset)):
        raise KaggleError(
            f"model.backbone.name {name!r} is a local preset folder, which a Kaggle kernel cannot see: name the "
            f"preset instead (e.g. keras_hub:swin_base_patch4_window7_224, whose Kaggle Model the kernel "
            f"attaches), or upload the folder as a Kaggle Model and use keras_hub:kaggle://<owner>/<model>/keras/"
            f"<variation>/<version>")
    else:
        import keras_hub

        known = keras_hub.models.Backbone.presets.get(preset, {}).get("kaggle_handle", "")
        if not known.startswith("kaggle://"):
            raise KaggleError(f"model.backbone.name {name!r}: {preset!r} is not a keras-hub preset name "
                              f"(keras_hub.models.Backbone.presets lists them)")
        handle = known[len("kaggle://"):]
    if handle.count("/") != 4:
        raise KaggleError(f"model.backbone.name {name!r}: a kernel attaches a Kaggle Model by owner/model/"
                          f"framework/variation/version; add the version to {handle!r}")
    return handle


def _fold_numbers(cfg) -> tuple[list[int], Path | None]:
    """The experiment's folds: from the local folds file when there is one (it is shipped), else
    `data.n_folds` (the kernels write the same file, deterministically, from the competition's data)."""
    path = Path(cfg.data.folds_csv)
    if path.is_file():
        from lresizervit.data.folds import read_folds

        _, n = read_folds(path, cfg.task)
        return list(range(n)), path
    return list(range(cfg.data.n_folds)), None


def plan_training(cfg, accelerator: str, folds: list[int] | None = None, kernels: int = 1,
                  time_budget_h: float | None = None, user: str | None = None) -> TrainPlan:
    """Which kernels train which folds with what attached; checks everything that needs no network."""
    from lresizervit.run import fold_is_complete

    if accelerator not in MACHINE_SHAPES:
        raise KaggleError(f"--accelerator {accelerator!r}: choose one of {', '.join(MACHINE_SHAPES)}")
    if not cfg.task.competition:
        raise KaggleError("task.competition is empty: the kernels attach the competition's data by its slug")
    limit = SESSION_HOURS[accelerator]
    budget = limit - MARGIN_HOURS if time_budget_h is None else float(time_budget_h)
    if not 0 < budget <= limit - 0.25:
        raise KaggleError(f"--time-budget {time_budget_h}: a {ACCELERATOR_NAMES[accelerator]} session ends at "
                          f"{limit:g} h; give at most {limit - 0.25:g} h (the kernel needs time to install and "
                          f"to save its output)")
    handle = kaggle_model(cfg)
    all_folds, folds_file = _fold_numbers(cfg)
    wanted = sorted(set(folds)) if folds else all_folds
    unknown = [k for k in wanted if k not in all_folds]
    if unknown:
        raise KaggleError(f"--folds {unknown}: the experiment has folds {all_folds[0]}..{all_folds[-1]}")
    todo = [k for k in wanted if not fold_is_complete(cfg.run_dir, k)]
    if not todo:
        raise KaggleError(f"{cfg.run_dir}: folds {wanted} are trained already (delete a fold's folder to train it "
                          f"again)")
    if not 1 <= kernels <= len(todo):
        raise KaggleError(f"--kernels {kernels}: between 1 and the {len(todo)} folds to train")
    user = user or kaggle_username() or "your-kaggle-name"
    exp = slugify(cfg.name, 30)
    plan = TrainPlan(cfg, accelerator, user, cfg.run_dir / "kaggle", f"{user}/lresizervit-{exp}-code", handle,
                     todo, folds_file, budget)
    size, extra = divmod(len(todo), kernels)
    start = 0
    for i in range(kernels):
        part = todo[start:start + size + (i < extra)]
        start += len(part)
        suffix = f"-{i + 1}" if kernels > 1 else ""
        title = f"lresizervit {exp} train{suffix}"
        spec = KernelSpec(f"{user}/{slugify(title)}", title, plan.root / f"kernel_{i + 1}", TRAIN_SCRIPT,
                          accelerator, internet=True, datasets=(plan.code_ref,),
                          competitions=(cfg.task.competition,), models=(handle,) if handle else ())
        plan.kernels.append((spec, _job(plan, part)))
    return plan


def _job(plan: TrainPlan, folds: list[int]) -> dict:
    from lresizervit.kaggle_io import kernel

    return {"experiment": plan.cfg.name, "folds": folds, "accelerator": plan.accelerator,
            # T4 x2: two folds at once, one per GPU (kaggle/train_kernel.py says why).
            "parallel": min(2, len(folds)) if plan.accelerator == "gpu" else 1,
            "time_budget_s": int(plan.time_budget_h * 3600), "competition": plan.cfg.task.competition,
            "model_handle": plan.model_handle, "code_marker": kernel.CODE_MARKER,
            "checkpoint_marker": kernel.CHECKPOINT_MARKER}


def write_plan(plan: TrainPlan, wheel_dirs: tuple = ()) -> None:
    """The code dataset's folder and each kernel's folder under models/<exp>/kaggle/, written afresh."""
    from lresizervit.kaggle_io import kernel

    code = plan.root / "code"
    if code.exists():
        shutil.rmtree(code)
    # The accelerator's backend, precision and strategy (keys that may differ between the folds of one
    # experiment): a T4 trains in float16, the TPU on JAX in bfloat16.
    shipped = kernel.kernel_config(plan.cfg, plan.accelerator)
    manifest = kernel.write_code_dataset(shipped, code, folds_csv=plan.folds_file, wheel_dirs=wheel_dirs)
    write_dataset_metadata(code, plan.code_ref, f"LResizerViT code {plan.cfg.name}"[:50],
                           f"lresizervit {manifest.get('lresizervit', '')}: the code and config that train the "
                           f"experiment {plan.cfg.name} in Kaggle kernels")
    for spec, job in plan.kernels:
        if spec.folder.exists():
            shutil.rmtree(spec.folder)
        spec.write(kernel.render_train_script(job))


def describe(plan: TrainPlan) -> list[str]:
    from lresizervit.kaggle_io.kernel import ACCELERATOR_SETTINGS

    settings = ", ".join(f"train.{k}={v}" for k, v in ACCELERATOR_SETTINGS[plan.accelerator].items())
    lines = [f"dataset {plan.code_ref}: {plan.root / 'code'} (private; created, or a new version)"]
    if plan.checkpoint_ref:
        lines.append(f"dataset {plan.checkpoint_ref}: {plan.root / 'checkpoint'} (the interrupted folds' backups)")
    for spec, job in plan.kernels:
        sources = [f"competition {c}" for c in spec.competitions] + [f"dataset {d}" for d in spec.datasets]
        sources += [f"model {m}" for m in spec.models]
        lines.append(f"kernel {spec.ref}: folds {' '.join(map(str, job['folds']))} on {ACCELERATOR_NAMES[plan.accelerator]}"
                     f" ({MACHINE_SHAPES[plan.accelerator]}), {job['parallel']} at once, {settings}, internet on, "
                     f"stops by {job['time_budget_s'] / 3600:.2f} h; {', '.join(sources)}; {spec.folder}")
    return lines


# ---------------------------------------------------------------------------------------- on Kaggle

def _record(plan: TrainPlan, pushed: list[dict]) -> None:
    from lresizervit.io_utils import atomic_write_json

    atomic_write_json(plan.root / PUSHED, {"experiment": plan.cfg.name, "accelerator": plan.accelerator,
                                           "code_dataset": plan.code_ref, "checkpoint": plan.checkpoint_ref,
                                           "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                           "kernels": pushed})


def read_pushed(root: Path) -> dict:
    path = root / PUSHED
    try:
        pushed = json.loads(path.read_text())
    except FileNotFoundError:
        raise KaggleError(f"{path}: nothing was pushed for this experiment yet (run kaggle train CONFIG)") from None
    except (OSError, ValueError) as exc:
        raise KaggleError(f"{path}: unreadable ({exc}); push again") from None
    if not isinstance(pushed, dict) or not isinstance(pushed.get("kernels"), list):
        raise KaggleError(f"{path}: not a record of pushed kernels; push again")
    return pushed


def push_plan(api, plan: TrainPlan, sleep=time.sleep, poll_s: float = 10.0) -> list[dict]:
    """Publish the code (and checkpoint) dataset, wait until ready, push every kernel; returns the record."""
    left, total = quota_left(api, plan.accelerator)
    need = plan.time_budget_h + MARGIN_HOURS
    print(f"{ACCELERATOR_NAMES[plan.accelerator]} quota: {left:.1f} h left of {total:.0f} h this week", flush=True)
    if left <= 0:
        raise KaggleError(f"no {ACCELERATOR_NAMES[plan.accelerator]} quota left this week ({total:.0f} h used); wait "
                          f"for it to refresh (kaggle quota), or train on the other accelerator")
    if left < need * len(plan.kernels):
        print(f"warning: {len(plan.kernels)} kernel(s) may use up to {need * len(plan.kernels):.1f} h, more than the "
              f"{left:.1f} h left: a kernel stopped by the quota keeps its last epoch's backup (--resume)",
              flush=True)
    notes = f"lresizervit for {plan.cfg.name}, folds {plan.folds}"
    print(f"dataset {plan.code_ref}: {publish_dataset(api, plan.root / 'code', plan.code_ref, notes, sleep, poll_s)}",
          flush=True)
    if plan.checkpoint_ref:
        done = publish_dataset(api, plan.root / "checkpoint", plan.checkpoint_ref, "backups to resume", sleep,
                               poll_s)
        print(f"dataset {plan.checkpoint_ref}: {done}", flush=True)
    pushed = []
    for spec, job in plan.kernels:
        version, url = push_kernel(api, spec)
        print(f"pushed {spec.ref} version {version}: folds {' '.join(map(str, job['folds']))}; {url}", flush=True)
        pushed.append({"ref": spec.ref, "version": version, "url": url, "folds": job["folds"]})
        _record(plan, pushed)
    return pushed


def collect(api, cfg, root: Path, sleep=time.sleep, poll_s: float = 60.0) -> dict:
    """Wait for the kernels pushed last, download each one's output, merge its complete folds into the
    experiment; returns {"complete": [...], "interrupted": [...]}."""
    from lresizervit.kaggle_io.merge import merge_output

    pushed = read_pushed(root)
    complete, interrupted = [], []
    for entry in pushed["kernels"]:
        ref, version = entry["ref"], entry.get("version")
        wait_for_kernel(api, ref, version, root / "logs", sleep=sleep, poll_s=poll_s)
        out = root / "output" / ref.split("/")[-1]
        if out.exists():
            shutil.rmtree(out)
        download_output(api, ref, out)
        merged = merge_output(cfg, out)
        complete += merged["complete"]
        interrupted += merged["interrupted"]
    return {"complete": sorted(complete), "interrupted": sorted(interrupted)}


def prepare_resume(plan: TrainPlan) -> None:
    """Gather the interrupted folds' backups from the last session's outputs into the checkpoint dataset's
    folder; the plan's kernels then attach it."""
    from lresizervit.kaggle_io.merge import gather_checkpoint

    found = gather_checkpoint(plan.cfg, plan.root / "output", plan.root / "checkpoint")
    if not found:
        raise KaggleError(f"{plan.root / 'output'}: no interrupted fold to resume (collect the last session first: "
                          f"kaggle train CONFIG --collect); push without --resume to train the remaining folds")
    from dataclasses import replace

    exp = slugify(plan.cfg.name, 30)
    plan.checkpoint_ref = f"{plan.user}/lresizervit-{exp}-ckpt"
    plan.kernels = [(replace(spec, datasets=(*spec.datasets, plan.checkpoint_ref)), job) for spec, job in plan.kernels]
    write_dataset_metadata(plan.root / "checkpoint", plan.checkpoint_ref, f"LResizerViT ckpt {plan.cfg.name}"[:50],
                           f"backups of the interrupted folds {found} of {plan.cfg.name}")
    print(f"resuming folds {found} from their backups", flush=True)


def _whoami(api) -> str:
    user = (getattr(api, "config_values", {}) or {}).get("username") or getattr(api, "username", None)
    if not user:
        raise KaggleError("cannot tell your Kaggle user name (the datasets and kernels are named after it): set "
                          "KAGGLE_USERNAME")
    return str(user)


def run_train(cfg, accelerator: str, folds=None, kernels: int = 1, time_budget_h=None, dry_run: bool = False,
              wait: bool = False, resume: bool = False, wheel_dirs: tuple = (), poll_s: float = 60.0) -> dict:
    """The `kaggle train` command, printing as it goes; returns what it did."""
    if dry_run:
        plan = plan_training(cfg, accelerator, folds, kernels, time_budget_h)
        if resume:
            prepare_resume(plan)
        write_plan(plan, wheel_dirs)
        for line in describe(plan):
            print(f"would push {line}")
        return {"plan": plan}
    # The config's own mistakes first, before any network (a local preset folder, a bad --folds).
    plan = plan_training(cfg, accelerator, folds, kernels, time_budget_h, user=kaggle_username())
    api = connect()
    if plan.user == "your-kaggle-name":  # an access token names no user locally: ask the service
        plan = plan_training(cfg, accelerator, folds, kernels, time_budget_h, user=_whoami(api))
    if resume:
        prepare_resume(plan)
    write_plan(plan, wheel_dirs)
    pushed = push_plan(api, plan, poll_s=min(poll_s, 10.0))
    result = {"plan": plan, "pushed": pushed}
    if wait:
        result["collected"] = collect(api, cfg, plan.root, poll_s=poll_s)
    return result
