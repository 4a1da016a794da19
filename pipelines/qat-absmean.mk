# QAT recipe, absmean ternary (BitNet b1.58), per-tensor scale.
#   make -f pipelines/qat-absmean.mk MODEL=hf-dir DATA=train.txt [OUT=... STEPS=... EVAL_TEXT=...]
# Options: pipelines/qat-common.mk.
SCHEME := absmean
include $(dir $(lastword $(MAKEFILE_LIST)))qat-common.mk
