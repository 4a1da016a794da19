# INT8 W8A8: per-channel INT8 weights, dynamic per-token INT8 activations; SMOOTH=0.5 adds SmoothQuant (needs DATA).
#
#   make -f pipelines/w8a8-int8.mk MODEL=hf-dir [DATA=calib-text] OUT=out/dir [EVAL_TEXT=...]
#
# Variables and targets: pipelines/fp-scheme.mk. docs/lepto.md describes the scheme and format.
SCHEME := int8-dynamic
OUT    ?= out/w8a8-int8
SMOOTH ?=
LEPTO_EXTRA := $(if $(SMOOTH),--smooth $(SMOOTH))
include $(dir $(lastword $(MAKEFILE_LIST)))fp-scheme.mk
