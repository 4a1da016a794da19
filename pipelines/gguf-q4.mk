# GGUF recipe for llama.cpp: calibrate -> GPTQ (or AWQ, or round-to-nearest) at group 32 ->
# pack to one FILE.gguf with Q4_0 / Q4_1 / Q8_0 blocks (no re-rounding) -> evaluate.
#
#   make -f pipelines/gguf-q4.mk MODEL=hf-dir DATA=calib-text OUT=out/dir [TYPE=q4_0 METHOD=gptq]
#
# Steps write under temporary names and rename when complete: a killed run resumes from the last
# finished step (and layer). `make -j N` quantizes N layers at once (METHOD gptq / rtn).
#   MODEL      Hugging Face Llama checkpoint directory (dense)                (required)
#   DATA       calibration text file or directory (not needed for rtn)        (required)
#   OUT        output directory; the model is $(OUT)/model.gguf               (out/gguf-q4)
#   TYPE       q4_0 (4-bit symmetric), q4_1 (4-bit asymmetric), q8_0          (q4_0)
#   METHOD     gptq | gptaq (true-sequential: as-calib drives as-gptq layer by layer on
#              the quantized model's inputs) | awq | rtn                     (gptq)
#   ACT_ORDER  1 = GPTQ desc_act with static groups (blocks stay contiguous)  (0)
#   DAMP       GPTQ relative damping (as-gptq --damp)                         (0.01)
#   SEARCH     1 = per-group scale search inside GPTQ (--scale-search, and --signed-scale
#              for Q4_0): the best blocks the format can hold (docs/gguf.md)              (1)
#   FLOAT_MIN  1 = Q4_1 with a free fp16 minimum per block (as-gptq --float-min: x = d*q + m,
#              m not tied to an integer zero); gptq, gptaq, rtn  (1 for q4_1, else 0)
#   FLOAT      f32 | f16 | bf16: embeddings and layers no block type holds    (f32)
#   FALLBACK   dequant (the quantizer's W_hat) | original (llama.cpp's choice) for layers whose
#              input width is not a multiple of 32                            (dequant)
#   SAMPLES SEQLEN SEED   calibration windows                                 (128, 256, 0)
#   EVAL_TEXT  evaluation text (default: none); EVAL_BYTES, EVAL_CTX          (all, 256)
#   BIN        directory of the as-* programs (default: bin/ of this checkout)

PIPE_DIR   := $(dir $(lastword $(MAKEFILE_LIST)))
BIN        ?= $(abspath $(PIPE_DIR)../bin)
OUT        ?= out/gguf-q4
TYPE       ?= q4_0
METHOD     ?= gptq
ACT_ORDER  ?= 0
DAMP       ?= 0.01
SEARCH     ?= 1
FLOAT_MIN  ?= $(if $(filter q4_1,$(TYPE)),1,0)
FLOAT      ?= f32
FALLBACK   ?= dequant
SAMPLES    ?= 128
SEQLEN     ?= 256
SEED       ?= 0
EVAL_TEXT  ?=
EVAL_BYTES ?= 0
EVAL_CTX   ?= 256
THREADS    ?= 0

ifeq ($(MODEL),)
$(error MODEL is required: a Hugging Face checkpoint directory)
endif
ifneq ($(METHOD),rtn)
ifeq ($(DATA),)
$(error DATA is required: calibration text file or directory)
endif
endif
ifeq ($(TYPE),q4_0)
QOPTS := -b 4 -g 32 --sym
else ifeq ($(TYPE),q4_1)
QOPTS := -b 4 -g 32 --asym
else ifeq ($(TYPE),q8_0)
QOPTS := -b 8 -g 32 --sym
else
$(error TYPE must be q4_0, q4_1 or q8_0)
endif
ifeq ($(FLOAT_MIN)$(TYPE),1q4_0)
$(error FLOAT_MIN=1 needs TYPE=q4_1: a float minimum is Q4_1's m)
endif
ifeq ($(FLOAT_MIN)$(TYPE),1q8_0)
$(error FLOAT_MIN=1 needs TYPE=q4_1: a float minimum is Q4_1's m)
endif

NLAYERS    := $(shell jq -r .num_hidden_layers $(MODEL)/config.json)
LAYERS     := $(shell seq 0 $$(( $(NLAYERS) - 1 )))
CALIB_OPTS := -m $(MODEL) -d $(DATA) -n $(SAMPLES) -l $(SEQLEN) --seed $(SEED) --threads $(THREADS)
GPTQ_OPTS  := $(QOPTS) -m $(METHOD) $(if $(filter 1,$(ACT_ORDER)),--act-order --static-groups) \
              $(if $(filter rtn awq,$(METHOD)),,--damp $(DAMP)) \
              $(if $(filter 1,$(SEARCH)),$(if $(filter rtn,$(METHOD)),,--scale-search \
                $(if $(filter --sym,$(QOPTS)),--signed-scale))) \
              $(if $(filter 1,$(FLOAT_MIN)),--float-min)
PACK_OPTS  := --gguf-float $(FLOAT) --gguf-fallback $(FALLBACK)

.PHONY: all model eval clean
.DELETE_ON_ERROR:
all: model $(if $(EVAL_TEXT),eval)
model: $(OUT)/model.gguf
eval: $(OUT)/eval.json

$(OUT)/.dir:
	mkdir -p $(OUT)/layers && touch $@

ifeq ($(METHOD),gptaq)
# GPTAQ is true-sequential: one as-calib run quantizes layer after layer, each calibrated on the
# outputs of the layers already quantized (with the fp-vs-quantized input term dXXᵀ).
$(OUT)/quant.stream: | $(OUT)/.dir
	$(BIN)/as-calib $(CALIB_OPTS) --gptaq \
	  --sequential "$(BIN)/as-gptq $(GPTQ_OPTS) --report $(OUT)/gptq-report.jsonl" > $@.tmp
	mv $@.tmp $@
else ifeq ($(METHOD),awq)
# AWQ searches per layer on kept calibration sequences and emits integer codes directly.
$(OUT)/quant.stream: | $(OUT)/.dir
	$(BIN)/as-calib $(CALIB_OPTS) --keep-seqs $(SAMPLES) | \
	  $(BIN)/as-awq -m $(MODEL) $(QOPTS) -e quantized --report $(OUT)/awq-report.jsonl > $@.tmp
	mv $@.tmp $@
else
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
$(OUT)/quant.stream: $(foreach l,$(LAYERS),$(OUT)/layers/quant.$(l).stream)
	$(BIN)/as-cat $^ > $@.tmp && mv $@.tmp $@
endif

# as-pack writes the file under a temporary name, verifies it and renames it.
$(OUT)/model.gguf: $(OUT)/quant.stream
	$(BIN)/as-pack -m $(MODEL) -f gguf -o $@ $(PACK_OPTS) < $<

$(OUT)/eval.json: $(OUT)/model.gguf
	$(BIN)/as-eval -m $< -b $(MODEL) -f $(EVAL_TEXT) --bytes $(EVAL_BYTES) \
	  --ctx $(EVAL_CTX) --threads $(THREADS) --json > $@.tmp && mv $@.tmp $@

clean:
	rm -rf $(OUT)

print-%:
	@echo $($*)
