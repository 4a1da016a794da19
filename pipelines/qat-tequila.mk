# QAT recipe, Tequila ternary, groups of 128, dead-zone bias lambda 1e-3 (codes stream: PREFIX.bias).
#   make -f pipelines/qat-tequila.mk MODEL=hf-dir DATA=train.txt [OUT=... STEPS=... EVAL_TEXT=...]
# Options: pipelines/qat-common.mk.
SCHEME := tequila
include $(dir $(lastword $(MAKEFILE_LIST)))qat-common.mk
