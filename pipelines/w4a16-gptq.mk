# W4A16 GPTQ recipe: calibrate -> quantize per layer -> pack -> evaluate.
#
#   make -f pipelines/w4a16-gptq.mk MODEL=hf-dir DATA=calib-text OUT=out/dir [BITS=4 GROUP=128 ...]
#
# Every step writes its output under a temporary name and renames it when complete, so a killed
# run restarts from the last finished step (and, for quantization, the last finished layer):
# just run the same command again. `make -j N` quantizes N layers at once.
#   MODEL      Hugging Face checkpoint directory (dense)                      (required)
#   DATA       calibration text file or directory                            (required)
#   OUT        output directory (default out/w4a16-gptq)
#   EVAL_TEXT  evaluation text (default: no evaluation)
#   BITS GROUP quantizer: bits (2,3,4,8) and group size (-1 = per channel)   (4, 128)
#   METHOD     gptq | rtn | gptaq (gptaq implies SEQUENTIAL=1)                (gptq)
#   ACT_ORDER  1 = desc_act                                                    (0)
#   SEARCH     1 = per-group scale (and zero) search on GPTQ's weighted error  (0)
#   SYM        1 = symmetric, 0 = asymmetric                                   (1)
#   SEQUENTIAL 1 = true-sequential: as-calib drives as-gptq layer by layer     (0)
#   FORMAT     gptq | compressed-tensors | fakequant                          (gptq)
#   SAMPLES SEQLEN SEED   calibration windows                                (128, 512, 0)
#   EVAL_BYTES EVAL_CTX   evaluation: first N bytes, window length            (all, 512)
#   BIN        directory of the as-* programs (default: bin/ of this checkout)
#
# Targets for fan-out drivers (pipelines/parallel.sh, pipelines/slurm/, docs/cluster.md):
#   calib                 only the statistics stream $(OUT)/calib.stream
#   $(OUT)/layers/quant.N.stream   one layer (what each parallel job / Slurm array task runs)
#   quant                 all layers gathered into $(OUT)/quant.stream
#   print-VAR             the value of a variable (print-LAYERS, print-GPTQ_OPTS, print-OUT, print-BIN)

PIPE_DIR   := $(dir $(lastword $(MAKEFILE_LIST)))
BIN        ?= $(abspath $(PIPE_DIR)../bin)
OUT        ?= out/w4a16-gptq
BITS       ?= 4
GROUP      ?= 128
METHOD     ?= gptq
ACT_ORDER  ?= 0
SEARCH     ?= 0
SYM        ?= 1
SEQUENTIAL ?= 0
FORMAT     ?= gptq
SAMPLES    ?= 128
SEQLEN     ?= 512
SEED       ?= 0
EVAL_TEXT  ?=
EVAL_BYTES ?= 0
EVAL_CTX   ?= 512
THREADS    ?= 0

ifeq ($(MODEL),)
$(error MODEL is required: a Hugging Face checkpoint directory)
endif
ifneq ($(METHOD),rtn)
ifeq ($(DATA),)
$(error DATA is required: calibration text file or directory)
endif
endif
ifeq ($(METHOD),gptaq)
SEQUENTIAL := 1
endif

NLAYERS   := $(shell jq -r .num_hidden_layers $(MODEL)/config.json)
LAYERS    := $(shell seq 0 $$(( $(NLAYERS) - 1 )))
GPTQ_OPTS := -b $(BITS) -g $(GROUP) -m $(METHOD) $(if $(filter 1,$(ACT_ORDER)),--act-order) \
             $(if $(filter 0,$(SYM)),--asym,--sym) \
             $(if $(filter 1,$(SEARCH)),$(if $(filter rtn,$(METHOD)),,--scale-search))
CALIB_OPTS := -m $(MODEL) -d $(DATA) -n $(SAMPLES) -l $(SEQLEN) --seed $(SEED) --threads $(THREADS)

.PHONY: all checkpoint eval clean calib quant
.DELETE_ON_ERROR:
all: checkpoint $(if $(EVAL_TEXT),eval)
checkpoint: $(OUT)/checkpoint/config.json
eval: $(OUT)/eval.json
quant: $(OUT)/quant.stream
print-%:
	@echo $($*)

$(OUT)/.dir:
	mkdir -p $(OUT)/layers && touch $@

ifeq ($(SEQUENTIAL),1)
calib: $(OUT)/quant.stream
# True-sequential: one as-calib run drives the quantizer coprocess through all layers.
$(OUT)/quant.stream: | $(OUT)/.dir
	$(BIN)/as-calib $(CALIB_OPTS) $(if $(filter gptaq,$(METHOD)),--gptaq) \
	  --sequential "$(BIN)/as-gptq $(GPTQ_OPTS) --report $(OUT)/gptq-report.jsonl" > $@.tmp
	mv $@.tmp $@
else
# Statistics from the full-precision model: every layer is independent.
calib: $(OUT)/calib.stream
ifeq ($(METHOD),rtn)
$(OUT)/calib.stream: | $(OUT)/.dir
	$(BIN)/as-cat $(MODEL) > $@.tmp && mv $@.tmp $@
else
$(OUT)/calib.stream: | $(OUT)/.dir
	$(BIN)/as-calib $(CALIB_OPTS) > $@.tmp && mv $@.tmp $@
endif
$(OUT)/layers/quant.%.stream: $(OUT)/calib.stream
	$(BIN)/as-cat --layer $* $< | $(BIN)/as-gptq $(GPTQ_OPTS) \
	  --report $(OUT)/layers/report.$*.jsonl > $@.tmp && mv $@.tmp $@
# The report goes first: once quant.stream exists, a killed run must not miss it.
$(OUT)/quant.stream: $(foreach l,$(LAYERS),$(OUT)/layers/quant.$(l).stream)
	cat $(foreach l,$(LAYERS),$(OUT)/layers/report.$(l).jsonl) > $(OUT)/gptq-report.jsonl.tmp
	mv $(OUT)/gptq-report.jsonl.tmp $(OUT)/gptq-report.jsonl
	$(BIN)/as-cat $^ > $@.tmp && mv $@.tmp $@
endif

# as-pack stages the directory as checkpoint.tmp.<pid>: drop those of killed runs first.
$(OUT)/checkpoint/config.json: $(OUT)/quant.stream
	rm -rf $(OUT)/checkpoint.tmp.*
	$(BIN)/as-pack -m $(MODEL) -f $(FORMAT) -o $(OUT)/checkpoint < $<

$(OUT)/eval.json: $(OUT)/checkpoint/config.json
	$(BIN)/as-eval -m $(OUT)/checkpoint -b $(MODEL) -f $(EVAL_TEXT) --bytes $(EVAL_BYTES) \
	  --ctx $(EVAL_CTX) --threads $(THREADS) --json > $@.tmp && mv $@.tmp $@

clean:
	rm -rf $(OUT)
