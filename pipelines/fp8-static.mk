# FP8 W8A8 with static per-tensor input scales (absmax or METHOD=lepto); per-tensor FP8 weights (LEPTO_OPTS=--weights channel for per channel).
#
#   make -f pipelines/fp8-static.mk MODEL=hf-dir [DATA=calib-text] OUT=out/dir [EVAL_TEXT=...]
#
# Variables and targets: pipelines/fp-scheme.mk. docs/lepto.md describes the scheme and format.
SCHEME := fp8-static
OUT    ?= out/fp8-static
include $(dir $(lastword $(MAKEFILE_LIST)))fp-scheme.mk
