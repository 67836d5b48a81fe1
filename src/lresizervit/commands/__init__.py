"""The commands of `python -m lresizervit`, one module per group: each module's `register(subparsers)` adds
its parsers beside the functions they call (`func`), and `lresizervit.cli` lists the groups in order.

Importing a module here must stay cheap (standard library only): the parser is built before every
command, and `kaggle download` must fail fast without loading TensorFlow. Commands import what they
need inside their function.
"""
