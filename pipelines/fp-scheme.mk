# Shared recipe of the FP8 / INT8 / FP4 pipelines (fp8-static.mk, fp8-dynamic.mk, w8a8-int8.mk,
# nvfp4.mk set SCHEME and their defaults, then include this file): calibrate -> as-lepto per
# layer -> as-pack -> evaluate. Each step writes under a temporary name and renames when done, so
# a killed run resumes from the last finished step or layer; `make -j N` runs N layers at once.
#   MODEL      Hugging Face checkpoint directory (dense)                           (required)
#   DATA       calibration text file or directory (schemes with static scales)    (required then)
#   OUT        output directory
#   SCHEME     fp8-static | fp8-dynamic | fp8-block | int8-dynamic | nvfp4 | mxfp4 | w4a8-fp8
#   METHOD     absmax | lepto (static FP8 input scales)                            (absmax)
#   LEPTO_OPTS / LEPTO_EXTRA  extra as-lepto options (e.g. --weights channel, --smooth 0.5)
#   KEEP_SEQS  whole calibration windows kept for LeptoQuant (as-calib --keep-seqs) (16)
#   FORMAT     ct-fp (the compressed-tensors format the scheme implies) | fp8 | fakequant-fp
#   SAMPLES SEQLEN SEED   calibration windows                                     (128, 512, 0)
#   EVAL_TEXT EVAL_BYTES EVAL_CTX   evaluation (none by default)
#   BIN        directory of the as-* programs (default: bin/ of this checkout)

PIPE_DIR   := $(dir $(lastword $(MAKEFILE_LIST)))
BIN        ?= $(abspath $(PIPE_DIR)../bin)
METHOD     ?= absmax
KEEP_SEQS  ?= 16
FORMAT     ?= ct-fp
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
NEEDS_DATA := $(if $(filter fp8-static w4a8-fp8 nvfp4,$(SCHEME)),1,$(if $(findstring --smooth,$(LEPTO_OPTS) $(LEPTO_EXTRA)),1))
ifeq ($(NEEDS_DATA),1)
ifeq ($(DATA),)
$(error DATA is required for $(SCHEME): calibration text file or directory)
endif
endif

NLAYERS    := $(shell jq -r .num_hidden_layers $(MODEL)/config.json)
LAYERS     := $(shell seq 0 $$(( $(NLAYERS) - 1 )))
LEPTO      := $(BIN)/as-lepto -m $(MODEL) -s $(SCHEME) --method $(METHOD) --threads $(THREADS) \
              $(LEPTO_OPTS) $(LEPTO_EXTRA)
CALIB_OPTS := -m $(MODEL) -d $(DATA) -n $(SAMPLES) -l $(SEQLEN) --seed $(SEED) --threads $(THREADS) \
              --no-weights $(if $(filter lepto,$(METHOD)),--keep-seqs $(KEEP_SEQS))

.PHONY: all checkpoint eval clean calib scales
.DELETE_ON_ERROR:
all: checkpoint $(if $(EVAL_TEXT),eval)
checkpoint: $(OUT)/checkpoint/config.json
eval: $(OUT)/eval.json
calib: $(OUT)/calib.stream
scales: $(OUT)/scales.stream
print-%:
	@echo $($*)

$(OUT)/.dir:
	mkdir -p $(OUT)/layers && touch $@

ifeq ($(NEEDS_DATA),1)
$(OUT)/calib.stream: | $(OUT)/.dir
	$(BIN)/as-calib $(CALIB_OPTS) > $@.tmp && mv $@.tmp $@
$(OUT)/layers/scales.%.stream: $(OUT)/calib.stream
	$(BIN)/as-cat --layer $* $< | $(LEPTO) --layers $* \
	  --report $(OUT)/layers/report.$*.jsonl > $@.tmp && mv $@.tmp $@
else
# Data-free schemes: no calibration.
$(OUT)/calib.stream: | $(OUT)/.dir
	touch $@
$(OUT)/layers/scales.%.stream: | $(OUT)/.dir
	$(LEPTO) --layers $* > $@.tmp && mv $@.tmp $@
endif

$(OUT)/scales.stream: $(foreach l,$(LAYERS),$(OUT)/layers/scales.$(l).stream)
	cat $(wildcard $(OUT)/layers/report.*.jsonl) /dev/null > $(OUT)/lepto-report.jsonl.tmp
	mv $(OUT)/lepto-report.jsonl.tmp $(OUT)/lepto-report.jsonl
	$(BIN)/as-cat $^ > $@.tmp && mv $@.tmp $@

# as-pack stages the directory as checkpoint.tmp.<pid>: drop those of killed runs first.
$(OUT)/checkpoint/config.json: $(OUT)/scales.stream
	rm -rf $(OUT)/checkpoint.tmp.*
	$(BIN)/as-pack -m $(MODEL) -f $(FORMAT) -o $(OUT)/checkpoint < $<

$(OUT)/eval.json: $(OUT)/checkpoint/config.json
	$(BIN)/as-eval -m $(OUT)/checkpoint -b $(MODEL) -f $(EVAL_TEXT) --bytes $(EVAL_BYTES) \
	  --ctx $(EVAL_CTX) --threads $(THREADS) --json > $@.tmp && mv $@.tmp $@

clean:
	rm -rf $(OUT)
