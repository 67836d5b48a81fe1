"""Evidence commands: `bench` (speed and memory), `ablation` (resizer modes), `transfer` (pretraining)."""

from __future__ import annotations

from lresizervit.commands.common import config, emit, with_config


def cmd_bench(args) -> None:
    from lresizervit.bench.command import check_args, run_bench

    check_args(args)  # a bad flag is named before the config is read, let alone anything measured
    result, table = run_bench(config(args), args)
    emit(args, result, table)


def cmd_ablation(args) -> None:
    from lresizervit.ablation import format_ablation, run_ablation

    args.config = args.config or "configs/ablation.yaml"
    cfg = config(args)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    result = run_ablation(args.config, cfg, tuple(args.set or ()), modes=modes,
                          n_train=args.train, seed=args.seed)
    emit(args, result, format_ablation(result))


def cmd_transfer(args) -> None:
    from lresizervit.transfer import format_transfer, run_transfer

    args.config = args.config or "configs/transfer.yaml"
    cfg = config(args)
    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    result = run_transfer(args.config, cfg, tuple(args.set or ()), arms=arms, n_train=args.train, seed=args.seed,
                          pretrain_train=args.pretrain_train, pretrain_seed=args.pretrain_seed,
                          pretrain_epochs=args.pretrain_epochs)
    emit(args, result, format_transfer(result))


def register(sub) -> None:
    sp = with_config(sub.add_parser("bench", help="loader images/s, train-step time/memory/FLOP/s, predict images/s"))
    sp.add_argument("--what", choices=("loader", "step", "efficiency", "predict", "replicas"), default="loader")
    sp.add_argument("--variants", default=None,
                    help="step/efficiency: MODE[@SIZE],... e.g. learned@512,none@512 (default: learned, bilinear, "
                         "none at data.image_size, learned at 768 and 1024, bilinear at 1024; efficiency: learned)")
    sp.add_argument("--precisions", default=None, help="step/efficiency: comma-separated train.precision values "
                    "(default: the config's; efficiency: float32,mixed_bfloat16)")
    sp.add_argument("--backends", default=None, help="step/efficiency: comma-separated Keras backends to "
                    "measure side by side, each variant in its own process, e.g. tensorflow,jax (default: the "
                    "one Keras starts with)")
    sp.add_argument("--rounds", type=int, default=1, help="step/efficiency: run every variant this many times, "
                    "interleaved (median over all)")
    sp.add_argument("--matmul-size", type=int, default=None, help="step/efficiency: n of the n x n x n reference "
                    "matmul (default: 2048 on CPU, 8192 on GPU)")
    sp.add_argument("--batch", type=int, default=4, help="step/replicas: (global) batch size")
    sp.add_argument("--steps", type=int, default=3, help="step: timed steps per variant; replicas: steps per pass")
    sp.add_argument("--images", type=int, default=256, help="loader: images to read per pass")
    sp.add_argument("--repeats", type=int, default=3, help="loader/predict: passes per pipeline (median reported)")
    sp.add_argument("--test-images", default=None, metavar="N,N,...",
                    help="predict: instead, peak memory and s per 1,000 photos of the whole predict command on "
                         "the first N test photos, each N in its own process (e.g. 1000,10000)")
    sp.add_argument("--json", default=None, help="also write the raw figures to this JSON file")
    sp.add_argument("--md", default=None, help="also write the markdown table to this file")
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("ablation", help="train each resizer mode on a resolution benchmark, one table")
    sp.add_argument("config", nargs="?", help="experiment YAML (default: configs/ablation.yaml)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (every mode)")
    sp.add_argument("--modes", default="learned,conv_after_resize,bilinear",
                    help="comma-separated model.resizer.mode values (none is costly: ~13x a learned epoch)")
    sp.add_argument("--train", type=int, default=1500, help="synthetic train images")
    sp.add_argument("--seed", type=int, default=1, help="seed of the synthetic data set")
    sp.add_argument("--json", default=None, help="also write the figures to this JSON file")
    sp.add_argument("--md", default=None, help="also write the markdown table to this file")
    sp.set_defaults(func=cmd_ablation)

    sp = sub.add_parser("transfer", help="pretrain a small keras-hub ViT on a large synthetic set, fine-tune it "
                        "(learned and bilinear resizer) next to the same ViT from scratch, one table")
    sp.add_argument("config", nargs="?", help="the fine-tuning experiment YAML (default: configs/transfer.yaml)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config key (pretraining and every arm, before the arm's own keys)")
    sp.add_argument("--arms", default="pretrained_learned,pretrained_bilinear,scratch_learned,scratch_bilinear",
                    help="comma-separated arms: {pretrained,scratch}_{learned,bilinear}")
    sp.add_argument("--train", type=int, default=400, help="synthetic photos to fine-tune on")
    sp.add_argument("--seed", type=int, default=3, help="seed of the fine-tuning set")
    sp.add_argument("--pretrain-train", type=int, default=3000, help="synthetic photos to pretrain on")
    sp.add_argument("--pretrain-seed", type=int, default=2, help="seed of the pretraining set (not --seed)")
    sp.add_argument("--pretrain-epochs", type=int, default=15, help="epochs of pretraining")
    sp.add_argument("--json", default=None, help="also write the figures to this JSON file")
    sp.add_argument("--md", default=None, help="also write the markdown table to this file")
    sp.set_defaults(func=cmd_transfer)
