"""`weights fetch|blank|check`: pretrained backbone weights as a preset folder, or where a config's come from."""

from __future__ import annotations

from lresizervit.commands.common import config, with_config


def cmd_weights(args) -> None:
    from lresizervit.weights import (
        BLANK_MARKER,
        cache_preset,
        check_backbone,
        fetch_preset,
        write_blank_preset,
    )

    if args.weights_command == "fetch":
        out = fetch_preset(args.preset, args.out, force=args.force)
        print(f"wrote {out}: point model.backbone.name at it as keras_hub:{out}, or upload it as a Kaggle dataset "
              f"(kaggle datasets create -p {out}) and attach it to the notebook")
    elif args.weights_command == "blank":
        out = write_blank_preset(args.preset, args.out, force=args.force)
        print(f"wrote {out}: the architecture of {args.preset} with RANDOM weights (see {out / BLANK_MARKER}), "
              f"for timing only (bench --set model.backbone.name=keras_hub:{out}); NOT pretrained weights")
    elif args.weights_command == "cache":
        print(f"{cache_preset(args.handle, args.folder)} -> {args.folder}: keras_hub:<the preset of {args.handle}> "
              f"now loads it offline")
    else:
        cfg = config(args)
        print(f"model.backbone.name {cfg.model.backbone.name!r}: {check_backbone(cfg)}")


def register(sub) -> None:
    wp = sub.add_parser("weights", help="pretrained backbone weights: fetch a keras-hub preset into a folder, or "
                        "check that a config's backbone can be found")
    wsub = wp.add_subparsers(dest="weights_command", required=True)
    sp = wsub.add_parser("fetch", help="download a keras-hub preset (needs the internet) into --out")
    sp.add_argument("preset", help="a keras-hub preset name (e.g. swin_base_patch4_window7_224), a kaggle:// "
                    "handle or a preset folder")
    sp.add_argument("--out", required=True, help="the folder to write (a Kaggle dataset, or model.backbone.name)")
    sp.add_argument("--force", action="store_true", help="replace a non-empty --out")
    sp.set_defaults(func=cmd_weights)
    sp = wsub.add_parser("blank", help="write a preset folder with a known preset's architecture and RANDOM "
                         "weights, for timing the train step offline (never for training)")
    # Not imported here to list the names: that module loads Keras, and building the parser must stay instant
    # (kaggle download/submit fail fast without a network). An unknown name's error lists them.
    sp.add_argument("preset", help="a known preset name, e.g. swin_base_patch4_window7_224 (README: weights blank)")
    sp.add_argument("--out", required=True, help="the folder to write")
    sp.add_argument("--force", action="store_true", help="replace a non-empty --out")
    sp.set_defaults(func=cmd_weights)
    sp = wsub.add_parser("cache", help="make a preset folder (an attached Kaggle Model, a copy) kagglehub's cached "
                         "copy of its handle, so a preset name resolves to it offline")
    sp.add_argument("handle", help="owner/model/framework/variation/version, e.g. keras/swin-transformer/keras/"
                    "swin_base_patch4_window7_224/1")
    sp.add_argument("folder", help="the preset folder (holding config.json)")
    sp.set_defaults(func=cmd_weights)
    with_config(wsub.add_parser("check", help="say where the config's backbone weights come from, or fail "
                                "with what to attach")).set_defaults(func=cmd_weights)
