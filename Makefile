# `make demo`: synthetic data → folds → train every fold → submission, on a CPU in minutes.
# `make test`: the test suite (`make test-fast` skips the slow ones: end-to-end runs, fresh-process reloads).
# Inside an active virtualenv/conda env that env is used; otherwise a local .venv is created.
ifneq ($(VIRTUAL_ENV)$(CONDA_PREFIX),)
PY := python
STAMP := .installed-env.stamp
else
PY := .venv/bin/python
STAMP := .venv/.installed.stamp
endif
export NO_ALBUMENTATIONS_UPDATE := 1
export TF_CPP_MIN_LOG_LEVEL := 2

DEMO_DATA ?= input/demo
DEMO_TRAIN ?= 1500
DEMO_TEST ?= 200

.PHONY: install demo test test-fast test-images images lint bench ablation transfer clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
ifeq ($(PY),.venv/bin/python)
	test -x .venv/bin/python || python3 -m venv .venv
endif
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev,jax,kaggle,tfhub]'
	touch $@

demo: install
	@start=$$(date +%s); set -e; \
	$(PY) -m lresizervit synth --out $(DEMO_DATA) --train $(DEMO_TRAIN) --test $(DEMO_TEST) --seed 0; \
	$(PY) -m lresizervit folds configs/demo.yaml --if-missing; \
	PYTHON=$(PY) bash train_folds.sh configs/demo.yaml; \
	$(PY) predict.py configs/demo.yaml; \
	$(PY) predict.py configs/demo.yaml --svr; \
	echo "make demo: $$(( $$(date +%s) - start )) s (not counting the install)"

# Test files spread over TEST_WORKERS processes (pytest-xdist; a file's tests stay together so its module
# fixtures are built once). Most tests use one core: on this 2-core machine 2 workers keep both ~92% busy
# (19 min of CPU in 10 min, 2026-12-07; 3 workers were slower). Each worker imports TensorFlow (~0.8 GB),
# so the default is not every core.
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not images" --durations=25

test-fast: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow and not images"

# Kaggle's GPU and TPU images as test environments (README: Runs on): virtualenvs rebuilt from PyPI with the
# images' versions (tests/images/*.txt; rebuilt when that file changes), and the wheels their tests install
# offline. `make test-images` then trains and predicts in them (tests/test_kaggle_images.py). The images are
# built with the machine's python3, not the one of an active virtualenv, as a fresh image would be.
IMAGES_DIR ?= .venv-images
BASE_PYTHON ?= $(shell command -v python3)

images: $(IMAGES_DIR)/kaggle-gpu/.stamp $(IMAGES_DIR)/kaggle-tpu/.stamp $(IMAGES_DIR)/wheels/.stamp

$(IMAGES_DIR)/%/.stamp: tests/images/%.txt
	rm -rf $(IMAGES_DIR)/$*
	env -u VIRTUAL_ENV $(BASE_PYTHON) -m venv $(IMAGES_DIR)/$*
	$(IMAGES_DIR)/$*/bin/python -m pip install -q --disable-pip-version-check -r $<
	touch $@

# keras-hub 0.29.1: what a keras_hub: experiment ships; 0.26.0: the GPU image's own, put back before each test.
$(IMAGES_DIR)/wheels/.stamp: pyproject.toml $(IMAGES_DIR)/kaggle-gpu/.stamp
	mkdir -p $(IMAGES_DIR)/wheels
	$(IMAGES_DIR)/kaggle-gpu/bin/python -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: -d $(IMAGES_DIR)/wheels keras-hub==0.29.1
	$(IMAGES_DIR)/kaggle-gpu/bin/python -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: -d $(IMAGES_DIR)/wheels keras-hub==0.26.0
	touch $@

test-images: install images
	LRESIZERVIT_IMAGES=$(IMAGES_DIR) $(PY) -m pytest -q -n 2 --dist loadgroup -m images tests/test_kaggle_images.py tests/test_train_kernel.py

lint: install
	$(PY) -m ruff check .

bench: install
	mkdir -p bench
	$(PY) -m lresizervit bench configs/demo.yaml --images 512 --repeats 5 --json bench/loader.json

# The resolution ablation (docs/BENCHMARKS.md): learned vs conv_after_resize vs bilinear, 3 folds each (~30 min).
ablation: install
	mkdir -p bench
	$(PY) -m lresizervit ablation configs/ablation.yaml --json bench/ablation.json --md bench/ablation.md

# Transfer evidence (docs/BENCHMARKS.md): a small keras-hub ViT pretrained on 3,000 synthetic photos, saved as a
# preset, fine-tuned on 400 others behind the learned resizer and bilinear, next to the same ViT from scratch.
transfer: install
	mkdir -p bench
	$(PY) -m lresizervit transfer configs/transfer.yaml --json bench/transfer.json --md bench/transfer.md

clean-demo:
	rm -rf $(DEMO_DATA) folds/demo_folds.csv folds/demo_folds.json folds/demo_folds.images.json models/demo submissions/demo.csv submissions/demo.json

# The reference pages docs/reference/config.md and cli.md, generated from the code (a test fails when stale).
.PHONY: docs
docs: install
	$(PY) -m lresizervit docs
