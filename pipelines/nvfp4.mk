# NVFP4 W4A4: FP4 blocks of 16 with E4M3 scales and a global scale shared by q/k/v and gate/up; static input global scales from DATA.
#
#   make -f pipelines/nvfp4.mk MODEL=hf-dir [DATA=calib-text] OUT=out/dir [EVAL_TEXT=...]
#
# Variables and targets: pipelines/fp-scheme.mk. docs/lepto.md describes the scheme and format.
SCHEME := nvfp4
OUT    ?= out/nvfp4
include $(dir $(lastword $(MAKEFILE_LIST)))fp-scheme.mk
