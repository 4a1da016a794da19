# QAT recipe, SEQ ternary (k=1.5): {0, ±2/3}·alpha, learnable per-row alpha.
#   make -f pipelines/qat-seq3.mk MODEL=hf-dir DATA=train.txt [OUT=... STEPS=... EVAL_TEXT=...]
# Options: pipelines/qat-common.mk.
SCHEME := seq3
include $(dir $(lastword $(MAKEFILE_LIST)))qat-common.mk
