# QAT recipe, SEQ 2-bit (ParetoQ): {±0.25, ±0.75}·alpha, learnable per-row alpha.
#   make -f pipelines/qat-seq2.mk MODEL=hf-dir DATA=train.txt [OUT=... STEPS=... EVAL_TEXT=...]
# Options: pipelines/qat-common.mk.
SCHEME := seq2
include $(dir $(lastword $(MAKEFILE_LIST)))qat-common.mk
