#!/usr/bin/env bash
# Issue [3/5]: the held-out screen of W-DRO TRADES on the bundled CIFAR-10 model, as the MNIST one in
# benchmarks/RESULTS.md: the inner maximiser (--w2-inner budget | knapsack) crossed with the init protocols of
# Bai et al. (--init continue | reinit-head | perturb:0.05), scored only on the last 500 held-out TRAINING images.
# Schedule: the CIFAR-10 W-DRO row's (300 steps of batch 128, SGD, cosine, beta 6, K = 10, delta 4/255, cap
# 8/255) at lr 0.001, the learning rate the earlier CIFAR-10 held-out screen chose over the leaderboard's 0.01.
#   PATH=.venv/bin:$PATH OMP_NUM_THREADS=1 bash benchmarks/screen_w2_cifar.sh RUNS_DIR [i/2 [NAMES]]  # shards 0/2, 1/2
#   (NAMES: a comma-separated subset of the runs below, e.g. knapsack,budget; default all)
#   python benchmarks/holdout_check.py RUNS_DIR/* --pretrained --n 500 --delta 1/510,1/255,2/255 \
#       --cache benchmarks/records_holdout [--reference NAME]
# Run again to continue: each run folder RUNS_DIR/NAME is resumed (a finished one is left as is).
set -euo pipefail
runs=${1:?usage: screen_w2_cifar.sh RUNS_DIR [i/n]}
shard=${2:-0/1}
only=${3:-}
common=(--model cifar10-resnet-small --dataset cifar10 --threat-model Linf --eps 8/255 --method trades --beta 6
        --inner-steps 10 --steps 300 --batch-size 128 --optimizer sgd --lr 0.001 --weight-decay 0.0005
        --schedule cosine --holdout 1000 --seed 0)
w2=(--threat w2 --delta 4/255 --w2-budget-cap 8/255)
names=(knapsack budget knapsack-reinit budget-reinit knapsack-perturb budget-perturb trades)
i=0
for name in "${names[@]}"; do
    if (( i++ % ${shard#*/} != ${shard%/*} )); then continue; fi
    if [[ -n $only && ,$only, != *,$name,* ]]; then continue; fi
    case $name in
        trades) extra=() ;;
        *) inner=${name%%-*}; extra=("${w2[@]}" --w2-inner "$inner") ;;
    esac
    case $name in
        *-reinit) extra+=(--init reinit-head) ;;
        *-perturb) extra+=(--init perturb:0.05) ;;
    esac
    resume=()
    if [[ -d $runs/$name ]]; then resume=(--resume); fi  # continues a killed run; a finished one is left as is
    wdro-finetune finetune "${common[@]}" "${extra[@]}" "${resume[@]}" --out "$runs/$name"
done
