#!/bin/bash
START=$SECONDS
source .bundle/install.sh
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
date -u; lscpu | grep -E "Model name|^CPU\(s\)|NUMA node" ; nvidia-smi topo -m 2>/dev/null | head -4
P=bench/results/util-shapes-h200x2-2026-11-30/probe.py; N=25
run() { # tag, then gpus
  tag=$1; shift; T0=$(python -c "import time; print(time.time() + 22)")
  for g in "$@"; do PROBE_TAG=$tag python $P $g $N $T0 >> $OUT/probe.jsonl 2>$OUT/probe-$tag-$g.err & done; wait
  echo "$tag done at $((SECONDS-START)) s"
}
run alone 0
run pair 0 1
OMP_NUM_THREADS=1 PROBE_THREADS=1 run pair-1thread 0 1
run alone-again 1
cat $OUT/probe.jsonl
