"""The Kaggle round trip with the real `kaggle` client, one command per module: `download` (the
competition data), `package` (an experiment as a Kaggle dataset: fold models + a wheel of this package, for
an internet-off notebook), `submit` (a checked submission); `client` fences the client they share and
`commands` is their `python -m lresizervit kaggle ...` subcommands.

The client is fenced, because it was not written to be called from another program: `import kaggle`
prints an auth help text and runs `authenticate()`, which may call the network; `authenticate()` ends
with `exit(1)` when it finds no credentials; its HTTP calls have no timeout. So the credentials are
looked for locally first, the network is probed with a timeout, the client is imported lazily with its
stdout captured, and every failure becomes one `KaggleError` (a ValueError: the CLI prints one
`error: ...` line and exits 2). The API key is read by the client only: nothing here prints, logs or
copies it.

The CLI parser imports `commands`, so every module here imports only the standard library (and `net`) at
module level (io_utils brings pandas); the rest is imported where it is used.
"""
