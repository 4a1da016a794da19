# QAT recipe, Sherry 3:4 sparse ternary (1.25 bit), groups of 128; QAT_OPTS=--arenas 1 for Arenas.
#   make -f pipelines/qat-sherry.mk MODEL=hf-dir DATA=train.txt [OUT=... STEPS=... EVAL_TEXT=...]
# Options: pipelines/qat-common.mk.
SCHEME := sherry
include $(dir $(lastword $(MAKEFILE_LIST)))qat-common.mk
