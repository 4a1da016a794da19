# QAT recipe (docs/qat.md): as-qat (resumable) -> fakequant checkpoint + codes stream -> evaluate.
#
#   make -f pipelines/qat-seq2.mk MODEL=hf-dir DATA=train.txt OUT=out/dir [STEPS=1200 ...]
#
# The training state is saved every SAVE_EVERY steps; a killed run (or STOP_AFTER=N, a time
# slice) continues where it stopped when the same command runs again, and ends bit-identical to
# an uninterrupted run. Per-scheme files set SCHEME (and its defaults) and include this one.
#   MODEL      student checkpoint (dense)                                    (required)
#   TEACHER    full-precision teacher (default: MODEL); TEACHER= for CE only
#   DATA       training text                                                 (required)
#   OUT        output directory (default out/qat-$(SCHEME))
#   EVAL_TEXT  evaluation text (default: no evaluation); EVAL_BYTES EVAL_CTX (all, 256)
#   STEPS SEQ BATCH LR SCHED WARMUP CLIP W_CE W_KD KD SEED GROUP   as-qat options; the default
#              loss is KL to the teacher only (W_CE=0): the lowest KLD on stories260K (docs/qat.md)
#   INIT_CODES start from a PTQ codes stream (as-gptq's; docs/qat.md), e.g. for seq2:
#              as-cat MODEL | as-gptq -m rtn --ternary seq2 > seq2.astr
#   QAT_OPTS   more as-qat options (e.g. --arenas 1, --lambda 1e-3, --threads 2)
#   SAVE_EVERY STOP_AFTER                                                    (100, none)
#   BIN        directory of the as-* programs (default: bin/ of this checkout)

PIPE_DIR   := $(dir $(lastword $(MAKEFILE_LIST)))
BIN        ?= $(abspath $(PIPE_DIR)../bin)
OUT        ?= out/qat-$(SCHEME)
TEACHER    ?= $(MODEL)
STEPS      ?= 1200
SEQ        ?= 256
BATCH      ?= 8
LR         ?= 1e-3
SCHED      ?= cosine
WARMUP     ?= 0.05
CLIP       ?= 1
W_CE       ?= $(if $(TEACHER),0,1)
W_KD       ?= $(if $(TEACHER),1,0)
KD         ?= kl
SEED       ?= 1
SAVE_EVERY ?= 100
EVAL_BYTES ?=
EVAL_CTX   ?= 256

ifndef MODEL
$(error MODEL=hf-dir is required)
endif
ifndef DATA
$(error DATA=train.txt is required)
endif

QAT_ARGS := -m $(MODEL) -d $(DATA) --scheme $(SCHEME) --steps $(STEPS) --seq $(SEQ) \
            --batch $(BATCH) --lr $(LR) --sched $(SCHED) --warmup $(WARMUP) --clip $(CLIP) \
            --w-ce $(W_CE) --w-kd $(W_KD) --kd $(KD) --seed $(SEED) \
            $(if $(TEACHER),-t $(TEACHER)) $(if $(GROUP),--group $(GROUP)) \
            $(if $(INIT_CODES),--init-codes $(INIT_CODES)) $(QAT_OPTS)

.PHONY: all eval
all: $(OUT)/model/config.json $(if $(EVAL_TEXT),$(OUT)/eval.json)

# as-qat writes model/ and codes.astr only when the last step is done (atomically); the state
# and the log carry a run across kills.
$(OUT)/model/config.json:
	@mkdir -p $(OUT)
	$(BIN)/as-qat $(QAT_ARGS) --state $(OUT)/train.state --save-every $(SAVE_EVERY) --resume \
	    $(if $(STOP_AFTER),--stop-after $(STOP_AFTER)) --log $(OUT)/train.jsonl \
	    --svg $(OUT)/train.svg --codes $(OUT)/codes.astr -o $(OUT)/model
	@test -e $@ || { echo "qat: stopped before step $(STEPS) (STOP_AFTER); run again to continue"; exit 1; }

eval: $(OUT)/eval.json
$(OUT)/eval.json: $(OUT)/model/config.json
	$(BIN)/as-eval -m $(OUT)/model -b $(TEACHER) -f $(EVAL_TEXT) --ctx $(EVAL_CTX) \
	    $(if $(EVAL_BYTES),--bytes $(EVAL_BYTES)) --json > $@.tmp && mv $@.tmp $@
