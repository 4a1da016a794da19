# Round-to-nearest W4A16 baseline: the GPTQ recipe with METHOD=rtn (no calibration data needed).
#   make -f pipelines/w4a16-rtn.mk MODEL=hf-dir OUT=out/dir [BITS=4 GROUP=128 FORMAT=gptq ...]
METHOD := rtn
OUT ?= out/w4a16-rtn
include $(dir $(lastword $(MAKEFILE_LIST)))w4a16-gptq.mk
