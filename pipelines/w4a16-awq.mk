# W4A16 AWQ recipe: calibrate (keeping whole windows) -> AWQ per layer -> pack -> evaluate.
#
#   make -f pipelines/w4a16-awq.mk MODEL=hf-dir DATA=calib-text OUT=out/dir [BITS=4 GROUP=128 ...]
#
# Every step writes under a temporary name and renames when complete, so a killed run restarts
# from the last finished step and layer: run the same command again. Layers are independent (each
# one's inputs come from the full-precision model, docs/awq.md), so `make -j N` runs N at once;
# each job loads the model once.
#   MODEL      Hugging Face checkpoint directory (dense)                          (required)
#   DATA       calibration text file or directory                                (required)
#   OUT        output directory (default out/w4a16-awq)
#   EVAL_TEXT  evaluation text (default: no evaluation)
#   BITS GROUP quantizer: bits and group size (AWQ GEMM stores 4-bit groups)      (4, 128)
#   SYM        0 = zero point (AWQ default), 1 = symmetric                         (0)
#   GPTQ       0 = AWQ's rounding; 1 = AWQ scales + GPTQ rounding (as-gptq)        (0)
#   DUO CLIP   duo scaling, clipping search                                       (1, 1)
#   KEEP_SEQS  calibration windows kept whole for AWQ's losses     (32, at most SAMPLES)
#   FORMAT     awq | compressed-tensors | gptq | fakequant                        (awq)
#   SAMPLES SEQLEN SEED   calibration windows                                    (128, 512, 0)
#   EVAL_BYTES EVAL_CTX   evaluation: first N bytes, window length                (all, 512)
#   BIN        directory of the as-* programs (default: bin/ of this checkout)

PIPE_DIR   := $(dir $(lastword $(MAKEFILE_LIST)))
BIN        ?= $(abspath $(PIPE_DIR)../bin)
OUT        ?= out/w4a16-awq
BITS       ?= 4
GROUP      ?= 128
SYM        ?= 0
GPTQ       ?= 0
DUO        ?= 1
CLIP       ?= 1
FORMAT     ?= awq
SAMPLES    ?= 128
SEQLEN     ?= 512
SEED       ?= 0
EVAL_TEXT  ?=
EVAL_BYTES ?= 0
EVAL_CTX   ?= 512
THREADS    ?= 0
# as-calib refuses more kept windows than windows: a small SAMPLES caps the default.
KEEP_SEQS  ?= $(shell echo $$(( $(SAMPLES) < 32 ? $(SAMPLES) : 32 )))

ifeq ($(MODEL),)
$(error MODEL is required: a Hugging Face checkpoint directory)
endif
ifeq ($(DATA),)
$(error DATA is required: calibration text file or directory)
endif

NLAYERS    := $(shell jq -r .num_hidden_layers $(MODEL)/config.json)
LAYERS     := $(shell seq 0 $$(( $(NLAYERS) - 1 )))
SYM_OPT    := $(if $(filter 1,$(SYM)),--sym,--asym)
AWQ_OPTS   := -m $(MODEL) -b $(BITS) -g $(GROUP) $(SYM_OPT) --threads $(THREADS) \
              $(if $(filter 0,$(DUO)),--no-duo-scaling) $(if $(filter 0,$(CLIP)),--no-clip)
CALIB_OPTS := -m $(MODEL) -d $(DATA) -n $(SAMPLES) -l $(SEQLEN) --seed $(SEED) \
              --keep-seqs $(KEEP_SEQS) --threads $(THREADS)

.PHONY: all checkpoint eval clean
.DELETE_ON_ERROR:
all: checkpoint $(if $(EVAL_TEXT),eval)
checkpoint: $(OUT)/checkpoint/config.json
eval: $(OUT)/eval.json

$(OUT)/.dir:
	mkdir -p $(OUT)/layers && touch $@

$(OUT)/calib.stream: | $(OUT)/.dir
	$(BIN)/as-calib $(CALIB_OPTS) > $@.tmp && mv $@.tmp $@

ifeq ($(GPTQ),1)
# AWQ's scaled weights and transformed Hessians go through as-gptq, which passes the rescaled
# norms (and any other non-linear weight record) through unchanged: taking them again from the
# scaled stream would name them twice, which as-pack refuses.
$(OUT)/layers/quant.%.stream: $(OUT)/calib.stream
	$(BIN)/as-cat --layer $* $< | $(BIN)/as-awq $(AWQ_OPTS) -e scaled \
	  --report $(OUT)/layers/report.$*.jsonl > $(OUT)/layers/scaled.$*.tmp
	$(BIN)/as-gptq -b $(BITS) -g $(GROUP) $(SYM_OPT) < $(OUT)/layers/scaled.$*.tmp > $@.tmp && mv $@.tmp $@
	rm -f $(OUT)/layers/scaled.$*.tmp
else
$(OUT)/layers/quant.%.stream: $(OUT)/calib.stream
	$(BIN)/as-cat --layer $* $< | $(BIN)/as-awq $(AWQ_OPTS) -e quantized \
	  --report $(OUT)/layers/report.$*.jsonl > $@.tmp && mv $@.tmp $@
endif

$(OUT)/quant.stream: $(foreach l,$(LAYERS),$(OUT)/layers/quant.$(l).stream)
	$(BIN)/as-cat $^ > $@.tmp && mv $@.tmp $@
	cat $(foreach l,$(LAYERS),$(OUT)/layers/report.$(l).jsonl) > $(OUT)/awq-report.jsonl

$(OUT)/checkpoint/config.json: $(OUT)/quant.stream
	$(BIN)/as-pack -m $(MODEL) -f $(FORMAT) -o $(OUT)/checkpoint < $<

$(OUT)/eval.json: $(OUT)/checkpoint/config.json
	$(BIN)/as-eval -m $(OUT)/checkpoint -b $(MODEL) -f $(EVAL_TEXT) --bytes $(EVAL_BYTES) \
	  --ctx $(EVAL_CTX) --threads $(THREADS) --json > $@.tmp && mv $@.tmp $@

clean:
	rm -rf $(OUT)
