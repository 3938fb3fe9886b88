#!/bin/bash
# call A: utilisation on 2 GPUs beside 1, util-shapes grid (2 first, so a cut takes the 1-GPU run)
START=$SECONDS
source .bundle/install.sh
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
# Warm the file cache and bytecode once, outside both runs (a fresh host's first process
# imports ~2x slower; bench_load.py measured that): both runs then start the same way.
python -c "import torch, transformers, diffusers, ray, ray.tune, sweep.worker, sweep.driver" 2>&1 | tail -2
cat datasets/models/shapes/*/* datasets/models/shapes-judge/* > /dev/null 2>&1
echo "warm at $((SECONDS-START)) s"
LIMIT=582
(sleep $((LIMIT - (SECONDS-START) + 3)); cp /tmp/ut/bench_sweep.json $OUT/snap-bench_sweep.json 2>/dev/null; tar czf $OUT/snap-lakes.tgz -C /tmp/ut lakes) &
SNAP=$!
timeout -s INT $((LIMIT - (SECONDS-START))) python bench/bench_sweep.py --spec datasets/sweeps/util-shapes.yaml --gpus 2,1 --policy-gpus 0 --out /tmp/ut > $OUT/util.log 2>&1
echo "bench rc $? at $((SECONDS-START)) s"
kill $SNAP 2>/dev/null
cp /tmp/ut/bench_sweep.json /tmp/ut/bench_sweep.md $OUT/ 2>/dev/null
tar czf $OUT/lakes.tgz -C /tmp/ut lakes
echo "done at $((SECONDS-START)) s"
grep -v '^\[sweep\]' $OUT/util.log | tail -30
