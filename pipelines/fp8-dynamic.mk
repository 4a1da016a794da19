# FP8 per-channel weights, dynamic per-token FP8 activations; no calibration data.
#
#   make -f pipelines/fp8-dynamic.mk MODEL=hf-dir [DATA=calib-text] OUT=out/dir [EVAL_TEXT=...]
#
# Variables and targets: pipelines/fp-scheme.mk. docs/lepto.md describes the scheme and format.
SCHEME := fp8-dynamic
OUT    ?= out/fp8-dynamic
include $(dir $(lastword $(MAKEFILE_LIST)))fp-scheme.mk
