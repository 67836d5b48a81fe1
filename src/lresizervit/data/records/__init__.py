"""TFRecord shards of pre-resized JPEGs: the input format for TPUs, and a faster loader on any machine.

Why: decoding a 400-1280 px photo is the loose-file loader's main cost. Each record holds the photo already
resized by ``decode.load_image`` (shorter side == ``image_size``, aspect kept, NOT cropped, so the train-time
random crop still sees the whole photo) and re-encoded as a 4:4:4 JPEG, so reading it costs one small decode.

One split per directory::

    train-00000-of-00002.tfrec, train-00001-of-00002.tfrec   (test-... when the frame has no target)
    manifest.json   written last: a directory without it is half-written and every reader refuses it

Record features: ``image`` (JPEG bytes), ``metadata`` (float32, the task's metadata columns in order, listed in the manifest), ``target``
(float32; absent for test), ``id`` (bytes), ``fold`` (int64; -1 for test), ``height`` / ``width`` (int64).

Row order: rows are stored sorted by fold (stably), so an unshuffled read returns the folds in ascending order
and each fold's rows in the frame's order (an eval dataset of fold k lines up with ``df[df.kfold == k]``); the
manifest's per-shard fold counts let a reader skip shards that hold none of the folds it wants.

Modules: ``rows`` (a frame's columns as records hold them, and their fingerprint), ``manifest`` (the
directory's format, checks and paths), ``writer`` (``write_tfrecords``), ``reader`` (``read_tfrecords``,
``make_tfrecord_dataset``).
"""
