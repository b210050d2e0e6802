"""Section sweep_efficiency: how much sooner the default search (its sampler and pruner) finds
what random search without pruning finds, per model of the default sweep, over several seeds.

For each model and seed, two arms run mfexp's own worker loop in fresh processes, side by side
with one core (one MXNet/OpenMP thread) each, so that both see the same machine, on u1 with the default sweep's space, epochs and early stopping, and no reference trial
(a tuned starting point would measure earlier tuning, not the search):

1. random search without pruning, for a wall-time budget B: R = the best val RMSE it reached, and
   t_random = when it first reached it;
2. the default sampler and pruner (conf/sweep/default.yaml), same space, data, seed and budget B:
   t_default = when it first reached val RMSE <= R (not reached within B: the ratio is at most
   t_random / B, and B stands in for t_default in the sums, so they are upper bounds).

ratio = t_random / t_default per model and seed; the section's figure is, per seed,
sum(t_random) / sum(t_default) over the models, and its median over the seeds. Also each arm's best
val RMSE at equal wall time (B), and the curves (best so far against seconds) as a PNG.
Every epoch's val RMSE is time-stamped as the objective reports it to Optuna; time counts from the
start of the worker loop (the data load and imports included, the same for both arms).

Budget 180 s: at 60 s random search's best came within its first few trials, and pruning's ceiling
(below) was 1.9x, so no pruner could reach the 3x target there; at 180 s it was 3.5x over the six
models before autorec, 2.8x with it (autorec's 180 s hold 4-5 trials, its best among the first).
The figures are also cut at shorter budgets from the same runs (`budget_ratios`).

    python -m bench.sweep_efficiency [--quick] [--models biased fm] [--seeds 0 1 2] [--budget 180]
    python -m bench.sweep_efficiency --child ARM --model M --seed S --budget B [overrides...]
    python -m bench.sweep_efficiency --noise RESULT_JSON [--train-seeds 1 2 3] [--out OUT_JSON]

--noise: how much of R is the training seed's luck (every trial of a sweep trains with train.seed 0):
random search's best trial of each model and seed, redrawn from its sampler and seed, trained again
with seeds 0 (the recorded run), 1, 2, 3.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Optional, Sequence, Union

from bench import common

SECTION = "sweep_efficiency"
# the default sweep's models (conf/sweep/default.yaml); autorec's 180 s arms hold 4-5 of its trials
MODELS = ("plain", "mlp", "dropout", "biased", "svdpp", "fm", "autorec")
ARMS = {"default": [], "random": ["sweep.sampler=random", "sweep.pruner=none", "sweep.start=sampler"]}
QUICK_OVERRIDES = ["train.epochs=2", "train.batch_size=choice(512)"]
PNG = "sweep_efficiency.png"
NEAR = 0.001  # the looser bar reported beside the target's: within this much val RMSE of R
# Levers measured with this whole section (all six models, seeds 0-2, 60 s), one at a time, against
# the default of their day; kept here so that every rendering of the section lists them.
LEVERS = [
    "Lever measured, not adopted: `sweep.start=center` (each study's first trial at the middle of its "
    "space, then TPE; `python -m bench --only sweep_efficiency` with it set in conf/sweep/default.yaml, "
    "2026-12-03, 60 s budget, 1210 s): median **0.801x** (per seed 0.612x / 1.694x / 0.801x, upper bounds), and the "
    "default's best at 60 s above random's for dropout and fm. The center was the fastest to R in 3 of 18 "
    "model-seeds (plain 1: 13.8x, biased 1: 17.1x, dropout 1: 4.5x) and slower in the rest: after a good "
    "first trial the median pruner stops most later ones by epoch 4 (plain 0: 32 of 35 pruned) and TPE, "
    "fed pruned trials, did not find random's best.",
    "Budget 60 s (2026-12-03, `python -m bench.sweep_efficiency --budget 60`, TPE + median, 1201 s): median "
    "**0.994x** (per seed 0.881x / 1.121x / 0.994x); pruning's ceiling 1.77x / 2.29x / 1.90x; random search with "
    "the median pruner, replayed, 0.88x / 1.10x / 1.00x. Every pruner tried on those curves by replay (median with "
    "1 or 3 startup trials and warmup 3-12, percentile 25 and 75, successive halving from epoch 1 or 2, hyperband) "
    "gave 0.69x-1.20x: at 60 s nothing on the pruner side can reach 3x, hence the 180 s budget.",
    "Budget 180 s, TPE + median (2026-12-03, `python -m bench.sweep_efficiency --budget 180`, 3372 s): median "
    "**0.978x** (per seed <= 0.801x / <= 1.069x / <= 0.978x); the default's best at 180 s above random's for plain "
    "and fm. plain seed 0: 98 trials, 92 pruned, best 0.9219 against random's 0.9063 (lr 1e-3, k 128, val 2.77 "
    "after one epoch, all 30 epochs): the median rule stops the slow starters that win here and TPE learns from "
    "the fast ones. Random search with the median pruner, replayed: 0.87x / 0.88x / 0.69x.",
    "Lever adopted: `sweep.pruner=forecast` (mfexp/sweep/pruners.py). At 180 s (the 2026-12-03 record: its default arms "
    "run against the random arms of the TPE + median run, `--random-from`, two default arms side by side as random "
    "and default ran before; merged with `--reanalyse`): median **1.053x** against 0.978x, and no model behind "
    "random at equal time against 2 (plain seed 0: 0.9041 against 0.9219). At 60 s (same way, against the 60 s "
    "run's random arms): median 0.964x against 0.994x, within the run-to-run noise (the same trials' times differ "
    "by up to 15% between runs), dropout behind random at 60 s (its seed 0 and 1 winners came at 59 s).",
    "Lever measured, not adopted (it needs an earlier sweep): `sweep.warm_start` from a sweep of the same budget "
    "on fold u2 (TPE + forecast, 180 s per model, no reference trial: `python -m mfexp.sweep sweep.name=u2a "
    "sweep.root=/tmp/s7/warm data.split=u2 'sweep.models=[plain,mlp,dropout]' sweep.n_trials=100000 "
    "sweep.timeout=540 sweep.enqueue_tutorial=false sweep.ensemble=false`, and u2b for biased, svdpp and fm, side by "
    "side, one thread each), its top 3 configurations per model enqueued first, then TPE + forecast on u1 against "
    "the same random arms (`--random-from`, `--default-arm sweep.root=/tmp/s7/warm --default-arm "
    "sweep.warm_start=u2a`, resp. u2b, two commands side by side, merged with `--reanalyse`, 2026-12-03): median "
    "**1.282x** (per seed <= 1.282x / <= 1.884x / <= 1.066x) against 1.053x cold; to within 0.001 of R, 2.465x "
    "(1.642x / 2.465x / 3.104x) against 1.051x cold. The warm-started search comes "
    "within 0.001 of random's 180 s best by 55 s for plain, dropout, biased, svdpp and fm in every seed (random "
    "search: 11-173 s; curves: docs/sweep_efficiency_warm.png), and exactly reaches it sooner for biased (2.6x / 40x / 23x) and fm (1.5x / "
    "4.1x / 2.9x); but plain seeds 0 and 2 stay at 0.90713 against 0.90628 and 0.90710 (with that early "
    "incumbent, 70 of their 72 trials were pruned), and mlp's u2 best is 0.010-0.015 worse "
    "on u1 than random's 180 s best. Behind random at 180 s: 5 model-seeds (plain 0 and 2, mlp 0 and 1, svdpp 2).",
    "Lever measured, not adopted: independent TPE (`--default-arm '+sweep.sampler_args={multivariate:false,"
    "group:false}'`, against the default's multivariate TPE with `group`; same random arms, `--random-from`, two "
    "commands side by side, merged with `--reanalyse`, 2026-12-03): median **1.079x** (per seed <= 0.956x / <= "
    "1.208x / <= 1.079x) against 1.053x, within the run-to-run noise; to within 0.001 of R 1.061x against 1.051x; "
    "but behind random at 180 s for plain and mlp (median over seeds), where multivariate TPE is behind for none.",
    "Seed luck in R (2026-12-03, `python -m bench.sweep_efficiency --noise <a result of this section> --train-seeds "
    "1 2 3`; the last table below is the 2026-12-06 record's): every trial of a sweep trains with train.seed 0, so R "
    "is one seed's draw. Random "
    "search's own best configuration, trained again with seeds 1-3, reaches R in 18 of 63 runs (seven models) and "
    "lands 0.0029 above it on average; the sd over seeds is about 0.001 for svdpp, fm, biased and autorec, 0.0016 for "
    "plain, 0.004 for dropout and 0.009 for mlp. Seed 0 repeats every recorded R exactly: training is deterministic. "
    "(mlp seeds 0 and 1 first seemed not to, 0.0030 apart: their best trials were the arms' last, cut by the budget "
    "at epochs 19 and 23, and the retrain ran on to 21 and 24; a trial the budget cut is now retrained for the "
    "epochs it had.) So reaching R exactly is partly a "
    "draw for a search that cannot propose random's very configuration, and so is the ceiling: a pruner that knew the "
    "future knew the seed's luck too. A looser bar barely changes the reading: 1.273x to within 0.001 of R, 1.279x to "
    "within one seed sd, against 1.213x at R. On spaces of 4-6 keys where most draws are good, with 4-46 trials per "
    "model in 180 s, TPE and pruning find random search's best little sooner than random search does.",
    "Lever adopted: plain MF's trials train for twice train.epochs (60; `sweep_epochs` in mfexp/models/dot.py), "
    "the forecast pruner's horizon with them (`python -m bench.sweep_efficiency --models plain train.epochs=60`, "
    "random and default arms side by side as in the main run, 2026-12-03; its rows replaced plain's 30-epoch rows in "
    "the 2026-12-03 record, merged with `--reanalyse`). At 30 epochs random search's top plain trials (Adam, lr ~1e-3, reg ~0.01) "
    "were still improving at their last epoch. Given 60, they stop on patience at epochs 31-44. For plain alone: "
    "ratio <= 0.785x / 1.44x / 1.82x against 1.00x / 2.32x / <= 0.85x at 30 epochs; random's best at 180 s "
    "0.9055 / 0.9129 / 0.9071 (was 0.9063 / 0.9167 / 0.9071); the default's 0.9059 / 0.9070 / 0.9049 (was 0.9041 / "
    "0.9086 / 0.9088); random search with the forecast pruner, replayed, 1.28x / 1.30x / 1.58x. Summed over the six "
    "models: median 1.233x against 1.053x.",
    "Lever measured, not adopted: svdpp and fm at 60 epochs too (`python -m bench.sweep_efficiency --models svdpp fm "
    "train.epochs=60`, 2026-12-03, 1132 s). Random search's best is the same to the fifth decimal in every seed "
    "(svdpp 0.90149 / 0.90111 / 0.90097, fm 0.88439 / 0.88452 / 0.88454). Those of their best trials that had run all "
    "30 epochs stop on patience at 32-33, best at 29-30. Ratio: svdpp 1.00x / <= 0.92x / 1.02x, fm 1.02x / 1.36x / "
    "1.01x, against 1.08x / <= 0.72x / 1.17x and 0.84x / 1.39x / 0.95x at 30 epochs, within the noise.",
    "Lever measured, not adopted: weight averaging over the last 3 epochs for the towers (`python -m "
    "bench.sweep_efficiency --models mlp dropout train.swa=3`, 2026-12-03, 1135 s), as svdpp and fm have it, against "
    "their large seed sd. Random search's best at 180 s got worse in 5 of 6 model-seeds: mlp 0.9371 / 0.9323 / 0.9370 "
    "against 0.9237 / 0.9282 / 0.9398, dropout 0.9431 / 0.9376 / 0.9391 against 0.9235 / 0.9249 / 0.9395. Ratio: mlp "
    "<= 0.56x / 0.99x / <= 0.67x, dropout 0.52x / 1.12x / <= 0.15x.",
    "Lever measured by replay, not adopted: epochs as the pruner's resource at 180 s (`python -m bench.sweep_efficiency "
    "--reanalyse <the 180 s results> --default-arm sweep.pruner=hyperband`, resp. `sweep.pruner=successive-halving`, "
    "with `'+sweep.pruner_args={min_resource:1}'` or 5 beside the default 2; 2026-12-03). Random search with that "
    "pruner, replayed on its recorded curves: hyperband 0.82x / 0.94x / 0.50x (min_resource 2), 1.08x / 0.95x / "
    "0.59x (1), 0.95x / 0.89x / 0.56x (5); successive halving 0.72x / 0.90x / 0.50x; against 1.15x / 1.03x / 1.24x "
    "with the forecast pruner. They stop the slow starters that win here, as the median rule did.",
    "Lever measured, kept as it was: TPE's `constant_liar` when two workers share a study (on by default with "
    "sweep.n_workers > 1; `python -m bench.sweep_efficiency --models biased plain --random-from <the 180 s results> "
    "--default-arm sweep.n_workers=2`, then the same with `--default-arm '+sweep.sampler_args={constant_liar:false}'`, "
    "2026-12-03, one arm at a time, two workers of one thread each; their epochs read from the MLflow store). Time to "
    "R summed over the two models: 314.6 s (R missed once) / 52.2 s / 133.6 s with it, 322.6 s (missed once) / 64.4 s "
    "/ 75.4 s without. Best at 180 s: plain 0.9040 / 0.9044 / 0.9047 with it against 0.9060 / 0.9044 / 0.9057, "
    "biased 0.9039 / 0.9039 / 0.9034 against 0.9031 / 0.9032 / 0.9033. Mixed, within the noise: it stays on, as "
    "Optuna advises for parallel workers. (Two workers use both cores where a random arm uses one: these runs "
    "compare the two settings, not the search against random.)",
    "Lever measured, not adopted: the regimes in biased's space (`python -m bench.sweep_efficiency --models biased "
    "'train.optimizer=choice(adam,sgd)' 'train.lr=tag(log,interval(5e-4,1e-1))' 'train.wd=choice(0.0,0.0001)' "
    "'train.sparse_grad=choice(true,false)' 'train.batch_size=choice(64,128,256,512)' train.epochs=60`, 2026-12-03, "
    "random and default side by side): the tutorial's SGD with dense wd at small batches beside Adam, sparse and "
    "dense updates, 60 epochs. Trials get slow (5-10 per arm in 180 s, against 24-44) and half the space's draws are "
    "poor: random's best at 180 s 0.9425 / 0.9094 / 0.9128 against 0.9035 / 0.9063 / 0.9080 in the default space, the "
    "default search's 0.9358 / 0.9363 / 0.9037 against 0.9042 / 0.9053 / 0.9045; ratio 0.95x / <= 0.76x / 2.66x. "
    "The tutorial's regime stays where it is, as biased's reference trial (twice train.epochs).",
    "Lever measured, not adopted: the forecast pruner with a decaying pace (`--default-arm "
    "'+sweep.pruner_args={decay:0.9}'`, against the same random arms, `--random-from`, plain and mlp beside biased and "
    "dropout, two default arms side by side, 2026-12-03), which replayed 0.05-0.1x better on random's curves. Time to "
    "R (s, seeds 0 / 1 / 2, '-' missed): plain - / 66 / - against - / 93 / 80, mlp - / 144 / 12 against - / 79 / 12, "
    "biased - / 49 / 30 against - / 56 / 36, dropout 66 / - / 44 against 71 / - / 54; summed over the four models "
    "606 / 439 / 266 s against 611 / 408 / 183 s: worse in two seeds of three.",
    "Lever measured, not adopted: TPE starting after 2 random trials instead of 5 (`--default-arm "
    "'+sweep.sampler_args={n_startup_trials:2}'`, svdpp, fm and dropout, whose 180 s hold 6-16 trials; random "
    "arms and the default's run again on another machine first, `python -m bench.sweep_efficiency --models svdpp "
    "fm dropout --seeds 0 1 2`, then the lever's default arms against them, `--random-from`, two commands side by "
    "side, 2026-12-06, Xeon @ 2.80GHz). It reached R in 1 of 9 model-seeds (fm seed 0, 60 s against 49 s) where "
    "the default reached it in 7; summed over the three models per seed <= 0.65x / <= 0.77x / <= 0.48x against "
    "1.02x / <= 0.93x / 1.04x; its best at 180 s above random's in 8 of 9 (svdpp 0.9027 / 0.9053 / 0.9011, "
    "dropout 0.9392 / 0.9332 / 0.9402). Random search's best so often lies among its first five draws, which the "
    "default shares, that leaving them early loses it.",
    "Lever measured, not adopted: Optuna's Gaussian-process sampler (`sweep.sampler=gp` with 5 startup trials, "
    "torch 2.14.1 beside the venv; biased and plain, whose 180 s hold 17-43 trials; `python -m "
    "bench.sweep_efficiency --models biased plain --default-arm sweep.sampler=gp --default-arm "
    "'+sweep.sampler_args={n_startup_trials:5}'`, random and GP arms side by side, then against the same random"
    " arms `--random-from` TPE + forecast (the default) and the GP without pruning (`--default-arm "
    "sweep.pruner=none`), two commands side by side, 2026-12-06, Xeon @ 2.80GHz). Time to R summed over the two"
    " models, seeds 0 / 1 / 2 (random 287.8 / 327.9 / 248.0 s): the default (TPE + forecast) <= 0.80x / 1.51x /"
    " 1.92x; GP + forecast 1.35x / 1.37x / 1.48x; GP without pruning <= 0.86x / <= 0.98x / <= 0.89x. GPSampler "
    "fits complete trials only: with the forecast pruner stopping 25-39 of 29-43 trials it had its 5 only at "
    "trials 20 and 23 in two model-seeds and never in the other four, and drew until then what random search "
    "drew (same seed, checked trial by trial), so that arm measures random search with the forecast pruner, "
    "live: 1.35x / 1.37x / 1.48x, where the replay on random search's recorded curves gives 1.34x / 1.33x / "
    "1.50x (the replay holds). Without pruning its picks were slow (14-22 trials in 180 s against 26-33) and "
    "reached R in 2 of 6 model-seeds. And its torch is a 5.4 GB install here (the registry holds the CUDA build"
    " only), too much for `make sweep`'s set-up.",
    "Lever measured, not adopted: the forecast pruner's pace over 5 epochs instead of 2, from epoch 2, with "
    "decay 0.9 (`--default-arm '+sweep.pruner_args={window:5,warmup:2,decay:0.9}'`), the best of 64 settings of"
    " window, warmup and decay that prunes none of random's winners, replayed (this module's `replay()`, each "
    "setting on the recorded random arms of the two runs below) on random search's curves of biased, plain, "
    "svdpp, fm and dropout (random search with it 1.26x / 1.25x / 1.27x against 1.17x / 1.10x / 1.22x with the "
    "default settings). Live, against the same random arms (`--random-from`, biased and plain beside svdpp, fm "
    "and dropout, two commands side by side, 2026-12-06, Xeon @ 2.80GHz), summed over the five models: <= 1.01x"
    " / <= 1.06x / 1.39x against the default's <= 0.89x / <= 1.12x / 1.34x (its arms from the same machine's "
    "runs of this session and the one before); per model it gained on biased (<= 0.88x / 2.41x / 2.16x against "
    "<= 0.88x / 2.31x / 1.87x) and svdpp (1.42x / <= 0.89x / 1.18x against 1.02x / <= 0.89x / 1.07x) and lost "
    "on plain (<= 0.72x / <= 1.00x / 1.85x against <= 0.72x / 1.18x / 1.95x; behind random at 180 s in seed 1, "
    "0.9105 against 0.9083). Within the run-to-run noise: the default's own dropout arms, run again beside it, "
    "took 89.5 s where they had taken 104.8 s (seed 0). The replay's gain did not survive the live search, as "
    "decay 0.9 alone had not before.",
    "Lever measured live, not adopted: epochs as the pruner's resource, Hyperband from epoch 1 (`--default-arm "
    "sweep.pruner=hyperband --default-arm '+sweep.pruner_args={min_resource:1}'`, reduction factor 3; the minimum "
    "that replayed best), against the same random arms as the line above (`--random-from`, biased and plain beside "
    "svdpp, fm and dropout, two commands side by side, 2026-12-06, Xeon @ 2.80GHz), summed over the five models: "
    "<= 0.74x / <= 1.09x / <= 1.07x against the default's <= 0.89x / <= 1.12x / 1.34x. It gained on biased (1.02x "
    "/ 2.80x / 1.93x against <= 0.88x / 2.31x / 1.87x; its best at 180 s 0.9031 / 0.9052 / 0.9030 against 0.9042 "
    "/ 0.9053 / 0.9045) and dropout (1.82x / 0.79x / 1.93x against 1.00x / <= 0.75x / 1.02x), and lost on svdpp "
    "(<= 0.64x / <= 0.89x / 0.87x against 1.02x / <= 0.89x / 1.07x) and fm (<= 0.28x / <= 0.67x / 0.96x against "
    "1.04x / 1.33x / 1.02x), where it stopped 16-22 of 22-27 trials, the slow starters among them: its best at "
    "180 s stayed above random's for fm (0.8872 / 0.8858 against 0.8844 / 0.8845, seeds 0 and 1), svdpp (0.9032 "
    "/ 0.9032 against 0.9015 / 0.9011) and plain (0.9056 / 0.9089 against 0.9055 / 0.9071, seeds 0 and 2). The "
    "replay on random search's curves had said as much (0.5x-1.1x).",
    "The record above (2026-12-06, Xeon @ 2.80GHz): every model again at this date's code, on one machine; the "
    "random arms of biased and plain ran beside GP arms and their default arms beside another default arm "
    "(`--random-from`), those of svdpp, fm, dropout, mlp and autorec side by side with their default arms; merged "
    "with `--reanalyse`, seed luck from `--noise <that result> --train-seeds 1 2 3`. It replaces the 2026-12-03 "
    "record (AMD EPYC; six models at 30 epochs, plain's rows at 60 epochs and autorec's added later): median "
    "1.213x (per seed <= 0.942x / <= 1.213x / 1.295x), pruning's ceiling 2.842x, 1.273x to within 0.001 of R, "
    "1.279x to within one seed sd, seed luck 18 of 63 runs. Now 1.101x (<= 0.916x / <= 1.101x / 1.287x): the same "
    "default search, within the run-to-run noise. mlp's R moved most (0.9381 / 0.9396 / 0.9398 against 0.9237 / "
    "0.9282 / 0.9398): its 180 s held 10-13 random trials here against 12-16 there, and that record's winners of "
    "seeds 0 and 1 came at 178 s, near the end of the budget.",
    "Hindsight (2026-12-06, `hindsight` in this module, from random search's recorded curves): had a search known "
    "random search's winner and tried it first, with nothing before it, it would have reached R **3.05x** sooner "
    "(median; 3.05x / 3.95x / 2.98x per seed). So the >= 3x target asks, in the median seed, for a search as good "
    "as that oracle: one whose first trial is a configuration that reaches R as fast as random search's winner "
    "does. Per model: autorec 1.0x (random's winner is its first draw, 65-88 s of training), mlp 1.0x-8.4x, dropout "
    "1.3x-2.8x, fm 1.9x-4.2x, svdpp 2.0x-21x; biased and plain carry the sum, their winners training in 1-25 s. "
    "A search without prior knowledge of good configurations cannot get there; with prior knowledge from a sweep on "
    "fold u2 (`sweep.warm_start`, above) it reached 1.28x (2.47x to within 0.001 of R).",
    "Reproduced on another machine (the same 2026-12-06 run): R is the same to the fifth decimal for all 9 "
    "model-seeds (svdpp 0.90149 / 0.90111 / 0.90097, fm 0.88439 / 0.88452 / 0.88454, dropout 0.92348 / 0.9249 / "
    "0.93951); the times move with the machine (svdpp random 115 / 161 / 96 s against 102 / 130 / 96 s), the "
    "ratios little (svdpp 1.02x / < 0.89x / 1.07x, fm 1.04x / 1.33x / 1.02x, dropout 1.00x / < 0.75x / 1.02x "
    "against the 2026-12-03 record's 1.08 / < 0.72 / 1.17, 0.84 / 1.39 / 0.95, 1.01 / < 0.60 / 0.85).",
]


def child(arm: str, model: str, seed: int, budget: float, extra: Sequence[str], epochs: Optional[int] = None) -> dict:
    import optuna

    import mfexp.sweep.objective as objective
    from mfexp.sweep.__main__ import build_plan
    from mfexp.sweep.runner import prepare, run_workers

    name = f"eff-{arm}-{model}-{seed}"
    os.environ["MLFLOW_TRACKING_URI"] = common.mlflow_store(name)
    plan = build_plan([*_arm_args(arm, model, seed, budget, extra), f"sweep.name={name}",
                       f"sweep.root={common.sweep_root(name)}"])
    import mfexp.sweep.runner as runner

    reports: list[tuple[float, int, int, float]] = []
    report = objective.Objective._report
    start = 0.0

    class Clock:  # the worker loop's clock: past its deadline once the budget is spent
        spent = False

        def __getattr__(self, name):
            return getattr(time, name)

        def time(self):
            return float("inf") if self.spent else time.time()

    clock = runner.time = Clock()

    def stamped(trial, tracker, epoch_report):
        now = time.perf_counter() - start
        if now > budget or (epochs is not None and len(reports) >= epochs):  # the budget is spent: the trial
            clock.spent = True  # running at its end stops there, and no other starts
            raise optuna.TrialPruned("the bench's budget is spent")
        reports.append((now, trial.number, epoch_report.epoch, epoch_report.val_rmse))
        report(trial, tracker, epoch_report)

    objective.Objective._report = staticmethod(stamped)
    studies = prepare(plan)
    start, started_at = time.perf_counter(), time.time()
    run_workers(plan, None)
    wall = time.perf_counter() - start
    if plan.sweep.n_workers > 1:  # the workers are processes of their own, which the stamps above do not reach
        reports = tracked_reports(plan.experiment, started_at, budget)
    trials = studies[model].get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    return {"arm": arm, "model": model, "seed": seed, "sampler": plan.sweep.sampler, "pruner": plan.sweep.pruner,
            "wall_s": round(wall, 2), "trials": len(trials), "pruned": states.count("PRUNED"),
            "failed": states.count("FAIL"), "epochs_trained": len(reports),
            "params": [t.params for t in sorted(trials, key=lambda t: t.number)],
            "reports": [[round(t, 2), n, e, round(v, 5)] for t, n, e, v in reports]}


def tracked_reports(experiment: str, started_at: float, budget: float) -> list[tuple[float, int, int, float]]:
    """Every trial's val RMSE per epoch from the MLflow store (the trial runs' metric history), stamped in
    seconds since `started_at`, those within `budget` only, in time order: an arm's reports when several
    workers ran it (each a process that logs its own epochs; the sweep's timeout stops new trials at the
    budget, and the epochs the last ones ran after it do not count)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=10_000) if exp else []
    reports = []
    for run in (r for r in runs if "optuna.trial_number" in r.data.tags):
        number = int(run.data.tags["optuna.trial_number"])
        for m in client.get_metric_history(run.info.run_id, "val_rmse"):
            t = m.timestamp / 1000.0 - started_at
            if t <= budget:
                reports.append((t, number, m.step, m.value))
    return sorted(reports)


def _arm_args(arm: str, model: str, seed: int, budget: float, extra: Sequence[str]) -> list[str]:
    """An arm's sweep overrides (its sweep.name and sweep.root aside)."""
    # sweep.population=1: both arms one trial at a time, as the recorded figures were measured (a population
    # changes how the default arm samples; re-measuring with populations is the search-efficiency issue's)
    return [f"sweep.models=[{model}]", "sweep.n_trials=100000", f"sweep.timeout={budget}", f"sweep.seed={seed}",
            "sweep.enqueue_tutorial=false", "sweep.ensemble=false", "sweep.population=1",
            f"sweep.model_trials={{{model}:100000}}",  # over the default sweep's own budget for the model
            *ARMS[arm], *extra]


def _random_plan(model: str, seed: int, extra: Sequence[str]):
    """The random arm's plan, to draw and train from (it opens no storage)."""
    from mfexp.sweep.__main__ import build_plan

    return build_plan(_arm_args("random", model, seed, 1, extra))


def random_draws(model: str, seed: int, n: int, extra: Sequence[str], plan=None) -> list[dict]:
    """The first `n` configurations the random arm drew for this model and seed. Random search's draws
    do not depend on how its trials went, so the same sampler, seed and space give them again without
    training anything."""
    import optuna

    from mfexp.sweep.storage import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan = plan or _random_plan(model, seed, extra)
    study = optuna.create_study(sampler=make_sampler(plan.sweep))
    drawn = []
    for _ in range(n):
        trial = study.ask()
        drawn.append(plan.spaces[model].suggest(trial))
        study.tell(trial, 0.0)
    return drawn


def retrain(model: str, seed: int, trial: int, train_seeds: Sequence[int], extra: Sequence[str],
            epochs: Optional[int] = None) -> dict:
    """Random search's trial `trial` of this model and seed, trained again, untracked, once per training
    seed (train.seed; every trial of a sweep trains with seed 0, so seed 0 repeats the recorded run).
    epochs: at most this many epochs, for a trial whose run the arm's budget cut short."""
    from mfexp.data import load_dataset
    from mfexp.run import build_net
    from mfexp.sweep.objective import apply_params
    from mfexp.train import fit, resolve_device

    plan = _random_plan(model, seed, extra)
    params = random_draws(model, seed, trial + 1, extra, plan)[trial]
    base = plan.bases[model]
    if epochs is not None and epochs < apply_params(base, params).train.epochs:
        params = {**params, "train.epochs": epochs}
    data = load_dataset(base.data)
    runs = []
    for train_seed in train_seeds:
        cfg = apply_params(base, {**params, "train.seed": train_seed})
        ctx, _ = resolve_device(cfg.train.device)
        started = time.perf_counter()
        result = fit(build_net(cfg, data, ctx), data, cfg.train, ctx, eval_test=False, final_test=False)
        runs.append({"train_seed": train_seed, "val_rmse": round(result.best_val_rmse, 5), "best_epoch": result.best_epoch,
                     "epochs": len(result.history), "seconds": round(time.perf_counter() - started, 2)})
    return {"model": model, "seed": seed, "trial": trial, "params": params, "epochs_cap": epochs, "runs": runs}


def _spawn(args: Sequence[str]) -> subprocess.Popen:
    """`python -m bench.sweep_efficiency ARGS` in the scratch folder, one MXNet/OpenMP thread."""
    return subprocess.Popen([sys.executable, "-m", "bench.sweep_efficiency", *args], env=common.child_env(threads=1),
                            cwd=common.scratch(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _collect(proc: subprocess.Popen, what: str) -> dict:
    """A child's result (its last JSON line); its output's tail in the error if it failed."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        tail = "\n".join((out + err).strip().splitlines()[-15:])
        raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
    return common.last_json_line(out)


def noise(path: str, out: Optional[str], train_seeds: Sequence[int], models: Sequence[str],
          seeds: Sequence[int]) -> int:
    """How much of R is its training seed's luck: random search's best trial of each model and seed
    (from an earlier result) trained again with train.seed 0 (the recorded run) and `train_seeds`, two
    at a time, one thread each. The figures go into that result (or --out) as `noise`; a later
    --reanalyse of it keeps them."""
    result = load_result(path)
    f = result["figures"]
    todo = []
    for r in f["rows"]:
        if r["R"] is None or r["model"] not in models or r["seed"] not in seeds:
            continue
        reports = f["curves"][r["model"]][f"random:{r['seed']}"]
        trial = next(n for _, n, _, v in reports if v <= r["R"] + 1e-12)
        todo.append((r["model"], r["seed"], trial, r["R"], budget_cut(reports, trial)))
    found = []
    for i in range(0, len(todo), 2):
        procs = [(job, _spawn(["--child", "retrain", "--model", job[0], "--seed", str(job[1]), "--trial", str(job[2]),
                               *(["--epochs-cap", str(job[4])] if job[4] else []),
                               "--train-seeds", "0", *map(str, train_seeds),
                               "--", *f.get("overrides", [])]))  # "--": the overrides are not more seeds
                 for job in todo[i:i + 2]]
        for (model, seed, trial, R, _), proc in procs:
            got = _collect(proc, f"retraining {model} seed {seed} trial {trial}")
            got["R"] = R
            found.append(got)
            common.say(SECTION, f"{model} seed {seed}: random's best (trial {trial}, R {R}) retrained: "
                                + ", ".join(f"seed {x['train_seed']} {x['val_rmse']}" for x in got["runs"]))
    redone = {(n["model"], n["seed"]) for n in found}  # rows of other models and seeds are kept
    order = {(r["model"], r["seed"]): i for i, r in enumerate(f["rows"])}  # the rows' order, as the table shows them
    f["noise"] = sorted([n for n in f.get("noise", []) if (n["model"], n["seed"]) not in redone] + found,
                        key=lambda n: order[(n["model"], n["seed"])])
    result["notes"] = [n for n in result.get("notes", []) if not n.startswith("Seed noise:")] + [
        f"Seed noise: `python -m bench.sweep_efficiency --noise {path} --train-seeds "
        f"{' '.join(map(str, train_seeds))}` ({time.strftime('%Y-%m-%d')})."]
    with open(out or path, "w") as fh:
        json.dump(result, fh, indent=1)
    common.say(SECTION, f"noise figures written to {out or path}")
    return 0


def budget_cut(reports: list, trial: int) -> Optional[int]:
    """The epochs `trial` ran if the arm's budget may have cut it short (it is the arm's last trial):
    retrained with more, it would reach what the recorded run never had the time to. None otherwise."""
    last = max(n for _, n, _, _ in reports)
    return max(e for _, n, e, _ in reports if n == trial) if trial == last else None


def seed_sd(noise_rows: list[dict]) -> dict[str, float]:
    """Per model, the median over its retrained trials of the val RMSE's sd over the training seeds."""
    out = {}
    for model in dict.fromkeys(n["model"] for n in noise_rows):
        sd = noise_summary([n for n in noise_rows if n["model"] == model])["median_sd"]
        if sd is not None:
            out[model] = sd
    return out


def noise_summary(noise_rows: list[dict], tol: float = NEAR) -> dict:
    """What the retrained best trials say: whether seed 0 repeated the recorded R, and how often
    another training seed of random's own best configuration reaches R (and R + tol)."""
    others = [(n["R"], x["val_rmse"]) for n in noise_rows for x in n["runs"] if x["train_seed"] != 0]
    repeats = [abs(x["val_rmse"] - n["R"]) for n in noise_rows for x in n["runs"] if x["train_seed"] == 0]
    spreads = [statistics.stdev(x["val_rmse"] for x in n["runs"]) for n in noise_rows if len(n["runs"]) > 1]
    return {"retrained": len(others), "reach_R": sum(v <= R + 1e-12 for R, v in others),
            "reach_near": sum(v <= R + tol + 1e-12 for R, v in others),
            "mean_above_R": round(sum(v - R for R, v in others) / len(others), 5) if others else None,
            "median_sd": round(common.median(spreads), 5) if spreads else None,
            "max_repeat_diff": round(max(repeats), 5) if repeats else None}


def first_reach(reports: list, target: float) -> Optional[float]:
    """Seconds at which val RMSE first came to `target` or below (None: never)."""
    return next((t for t, _, _, v in reports if v <= target + 1e-12), None)


def best_by(reports: list, seconds: float) -> Optional[float]:
    return min((v for t, _, _, v in reports if t <= seconds), default=None)


def compare(rnd: dict, dft: dict, budget: float) -> dict:
    """The figures of one model and seed from its two arms' reports."""
    R = best_by(rnd["reports"], float("inf"))
    t_random = first_reach(rnd["reports"], R) if R is not None else None
    t_default = first_reach(dft["reports"], R) if R is not None else None
    # the same in epochs trained (a load-independent check of the seconds)
    e_random = next((i + 1 for i, r in enumerate(rnd["reports"]) if r[3] <= R + 1e-12), None) if R else None
    e_default = next((i + 1 for i, r in enumerate(dft["reports"]) if r[3] <= R + 1e-12), None) if R else None
    ratio = bound = None
    if t_random is not None:
        if t_default is not None:
            ratio = t_random / max(t_default, 1e-9)
        else:
            bound = t_random / budget  # the default would need more than the budget: the ratio is below this
    return {"model": rnd["model"], "seed": rnd["seed"], "R": R, "t_random_s": t_random, "t_default_s": t_default,
            "epochs_random": e_random, "epochs_default": e_default,
            "ratio": None if ratio is None else round(ratio, 3), "ratio_below": None if bound is None else round(bound, 3),
            "best_random_at_budget": best_by(rnd["reports"], budget),
            "best_default_at_budget": best_by(dft["reports"], budget),
            "random": {k: v for k, v in rnd.items() if k != "reports"},
            "default": {k: v for k, v in dft.items() if k != "reports"}}


def trial_spans(reports: list) -> list[list[tuple[float, int, float]]]:
    """Per trial, in the order they ran: [(seconds since the trial started, epoch, val RMSE)]. One worker
    runs its trials one after another, so a trial starts when the one before it last reported (its
    start-up, and the end of the trial before, count as its own)."""
    by_trial: dict[int, list] = {}
    for t, n, e, v in reports:
        by_trial.setdefault(n, []).append((t, e, v))
    spans, end = [], 0.0
    for n in sorted(by_trial):
        spans.append([(t - end, e, v) for t, e, v in by_trial[n]])
        end = by_trial[n][-1][0]
    return spans


def pruning_ceiling(reports: list, target: float) -> Optional[float]:
    """Seconds to `target` had every trial that never reaches it stopped at its first epoch report:
    what a pruner that knew the future would make of these trials. No pruner can do better on the
    same draws, and TPE's first trials are random search's own draws (same seed)."""
    clock = 0.0
    for span in trial_spans(reports):
        reach = next((dt for dt, _, v in span if v <= target + 1e-12), None)
        if reach is not None:
            return clock + reach
        clock += span[0][0]
    return None


def hindsight(reports: list, target: float) -> Optional[float]:
    """Seconds to `target` for a search that knew random search's winner (the first of its trials to
    reach `target`) and tried it first, alone: that trial's own time to `target`. A bound on the
    sampler's side beside pruning_ceiling's: a search gets past it only with a configuration that
    reaches R sooner than random search's winner does."""
    return next((dt for span in trial_spans(reports) for dt, _, v in span if v <= target + 1e-12), None)


def replay(reports: list, target: float, make_pruner) -> Optional[float]:
    """Seconds to `target` had the pruner `make_pruner()` judged these trials, epoch by epoch, as
    Optuna does. Exact for random search's trials (its draws do not depend on which trials were
    pruned), up to the machine's noise: random search with that pruner. None: it pruned the trial
    that reaches `target`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(pruner=make_pruner())
    clock = 0.0
    for span in trial_spans(reports):
        trial, pruned = study.ask(), False
        for dt, epoch, v in span:
            if v <= target + 1e-12:
                return clock + dt
            trial.report(v, epoch)
            if trial.should_prune():
                clock, pruned = clock + dt, True
                break
        else:
            clock += span[-1][0]
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, min(v for _, _, v in span))
    return None


def near_ratios(rows: list[dict], curves: dict, budget: float,
                tol: Union[float, dict[str, float]] = NEAR) -> dict[int, Optional[float]]:
    """Per seed, the section's ratio with the bar at R + `tol` instead of R: random's time to come
    within `tol` of its own best over the default's, summed over the models. A looser reading beside
    the target's: an arm that stops 0.0001 short of R counts as the whole budget there. `tol` may be
    per model ({model: tol}; models without one are left out)."""
    bar = (lambda m: tol.get(m)) if isinstance(tol, dict) else (lambda m: tol)
    derived = [{"seed": r["seed"],
                "t_random_s": first_reach(curves[r["model"]][("random", r["seed"])], r["R"] + bar(r["model"])),
                "t_default_s": first_reach(curves[r["model"]][("default", r["seed"])], r["R"] + bar(r["model"]))}
               for r in rows if r["R"] is not None and bar(r["model"]) is not None]
    return {seed: v["ratio"] for seed, v in summed(derived, budget).items()}


def budget_ratios(rows: list[dict], curves: dict, budget: float, steps: int = 6) -> dict[float, dict[int, dict]]:
    """Per shorter budget b = B/steps, 2B/steps, ..., B: the section's ratio per seed had both arms been
    stopped at b, from the same runs (R_b = random's best within b). Says whether the default search
    gains on random search as the budget grows, without running again."""
    out = {}
    for i in range(1, steps + 1):
        b = round(budget * i / steps, 2)
        derived = []
        for r in rows:
            R = best_by(curves[r["model"]][("random", r["seed"])], b)
            if R is not None:
                t_default = first_reach(curves[r["model"]][("default", r["seed"])], R)
                derived.append({"seed": r["seed"], "t_random_s": first_reach(curves[r["model"]][("random", r["seed"])], R),
                                "t_default_s": t_default if t_default is not None and t_default <= b else None})
        out[b] = {seed: {"ratio": v["ratio"], "upper_bound": v["upper_bound"]} for seed, v in summed(derived, b).items()}
    return out


def default_pruner(overrides: Sequence[str], model: str):
    """The default arm's pruner for `model`, as the sweep would make it (conf/sweep/default.yaml +
    overrides; its horizon is the model's epoch budget)."""
    from mfexp.sweep.__main__ import build_plan
    from mfexp.sweep.runner import epoch_budget
    from mfexp.sweep.storage import make_pruner

    plan = build_plan([f"sweep.models=[{model}]", *overrides])
    return lambda: make_pruner(plan.sweep, epoch_budget(plan, model))


def _ratios_as_if(rows: list[dict], key: str, budget: float, seeds) -> dict[int, Optional[float]]:
    """Per seed, the section's ratio had the default arm taken each row's `key` seconds (a bound or
    a replay derived from random search's curves; rows without R have none and are left out)."""
    per = summed([{**r, "t_default_s": r[key]} for r in rows if key in r], budget)
    return {seed: per.get(seed, {}).get("ratio") for seed in seeds}


def summed(rows: list[dict], budget: float) -> dict[int, dict]:
    """Per seed: sum of t_random over the models / sum of t_default (the budget where not reached)."""
    out = {}
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed and r["t_random_s"] is not None]
        t_r = sum(r["t_random_s"] for r in mine)
        t_d = sum(r["t_default_s"] if r["t_default_s"] is not None else budget for r in mine)
        out[seed] = {"t_random_s": round(t_r, 2), "t_default_s": round(t_d, 2),
                     "ratio": round(t_r / t_d, 3) if t_d > 0 else None,
                     "upper_bound": any(r["t_default_s"] is None for r in mine)}
    return out


def plot(curves: dict, budget: float, path) -> None:
    """Best val RMSE so far against seconds, one panel per model, one line per arm and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(curves)
    cols = min(3, len(models))
    rows = (len(models) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colors = {"random": "tab:blue", "default": "tab:orange"}
    for ax, model in zip(axes.flat, models):
        lows = []
        for (arm, seed), reports in sorted(curves[model].items()):
            xs, ys, best = [], [], float("inf")
            for t, _, _, v in reports:
                if v < best:
                    best = v
                    xs.append(t)
                    ys.append(v)
            if xs:
                xs.append(budget), ys.append(best)
                lows.append(best)
                ax.step(xs, ys, where="post", color=colors[arm], alpha=0.8, lw=1.2,
                        label=f"{arm}" if seed == min(s for a, s in curves[model] if a == arm) else None)
        if lows:
            ax.set_ylim(min(lows) - 0.005, min(lows) + 0.06)
        ax.set_title(model)
        ax.set_xlabel("seconds")
        ax.set_ylabel("best val RMSE so far")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    fig.suptitle("default search (orange) vs random search without pruning (blue), one line per seed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--child", choices=[*ARMS, "retrain"])
    parser.add_argument("--model", default="biased")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=180.0, help="wall seconds per arm, model and seed")
    parser.add_argument("--budget-epochs", type=int, help="development: a budget of epochs trained per arm "
                                                           "(load-independent) on top of --budget")
    parser.add_argument("--default-arm", action="append", default=[],
                        help="development: an override for the default arm only (a lever to try)")
    parser.add_argument("--random-from", help="an earlier result JSON of this section: reuse its random arms "
                                                "(same models, seeds and budget) and run only the default arms")
    parser.add_argument("--reanalyse", metavar="RESULT_JSON", nargs="+",
                        help="run nothing: re-derive the figures of earlier results of this section (their rows "
                             "and curves; several with the same budget are merged) with this version's analysis, "
                             "into --out or bench/results")
    parser.add_argument("--noise", metavar="RESULT_JSON",
                        help="run no arms: train random search's best trial of each model and seed of that result "
                             "again with train.seed 0 and --train-seeds; the figures go into it (or --out)")
    parser.add_argument("--train-seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--trial", type=int, help="(--child retrain) the random arm's trial number")
    parser.add_argument("--epochs-cap", type=int, help="(--child retrain) train at most this many epochs")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    common.quiet_logs()
    if args.child == "retrain":
        print(json.dumps(retrain(args.model, args.seed, args.trial, args.train_seeds, args.overrides, args.epochs_cap)))
        return 0
    if args.noise:
        return noise(args.noise, args.out, args.train_seeds, args.models, args.seeds)
    if args.child:
        print(json.dumps(child(args.child, args.model, args.seed, args.budget, args.overrides, args.budget_epochs)))
        return 0
    started = time.perf_counter()
    if args.reanalyse:
        return reanalyse(args.reanalyse, args.out, args.default_arm, started)
    models, seeds, budget, extra = ((["biased"], [0], 15.0, QUICK_OVERRIDES) if args.quick else
                                    (args.models, args.seeds, args.budget, args.overrides))
    common.scratch()
    common.mlflow_store("ready")  # the migrated template, made once here: two children at once would race
    rows, curves = [], {}
    earlier = {}
    if args.random_from:
        old = json.loads(open(args.random_from).read())["figures"]
        earlier = {(r["model"], r["seed"]): {**r["random"], "reports": old["curves"][r["model"]][f"random:{r['seed']}"]}
                   for r in old["rows"] if old["budget_s"] == budget}
    for model in models:
        for seed in seeds:
            arms = {}
            if (model, seed) in earlier:
                arms["random"] = earlier[(model, seed)]
                curves.setdefault(model, {})[("random", seed)] = arms["random"]["reports"]
            todo = [a for a in ("random", "default") if a not in arms]
            # side by side, one core each: both arms see the same machine, whatever else runs on it
            procs = {arm: _spawn(["--child", arm, "--model", model, "--seed", str(seed), "--budget", str(budget),
                                  *extra, *(args.default_arm if arm == "default" else []),
                                  *(["--budget-epochs", str(args.budget_epochs)] if args.budget_epochs else [])])
                     for arm in todo}
            for arm, proc in procs.items():
                arms[arm] = _collect(proc, f"{arm} arm of {model} seed {seed}")
                curves.setdefault(model, {})[(arm, seed)] = arms[arm]["reports"]
            row = compare(arms["random"], arms["default"], budget)
            rows.append(row)
            reached = (f"default reached it after {row['t_default_s']:.1f}s: {row['ratio']:.2f}x"
                       if row["t_default_s"] is not None else
                       f"default never reached it in {budget:.0f}s (ratio < {row['ratio_below']})")
            common.say(SECTION, f"{model} seed {seed}: random best {row['R']} after {row['t_random_s']}s "
                                f"({arms['random']['trials']} trials); {reached}; at {budget:.0f}s random "
                                f"{row['best_random_at_budget']}, default {row['best_default_at_budget']} "
                                f"({arms['default']['trials']} trials, {arms['default']['pruned']} pruned)")
    return finish(rows, curves, models, seeds, budget, extra, args.default_arm, started, args.quick, args.out,
                  argv=list(sys.argv[1:] if argv is None else argv))


def finish(rows: list[dict], curves: dict, models: Sequence[str], seeds: Sequence[int], budget: float,
           extra: Sequence[str], default_arm: Sequence[str], started: float, quick: bool, out,
           reanalysed: Optional[dict] = None, argv: Optional[Sequence[str]] = None,
           noise_rows: Optional[list] = None) -> int:
    """The section's figures from its rows and curves: ratios per seed, what pruning alone could
    gain on random search's own draws, the PNG, the targets; the result file."""
    per_seed = summed(rows, budget)
    ratios = [s["ratio"] for s in per_seed.values() if s["ratio"] is not None]
    ratio = common.median(ratios)
    # what pruning alone can do with random search's draws (TPE's first trials are those same draws)
    pruners = {m: default_pruner([*extra, *default_arm], m) for m in dict.fromkeys(r["model"] for r in rows)}
    for row in rows:
        reports = curves[row["model"]][("random", row["seed"])]
        if row["R"] is not None:
            row["t_ceiling_s"] = _round(pruning_ceiling(reports, row["R"]))
            row["t_hindsight_s"] = _round(hindsight(reports, row["R"]))
            row["t_random_default_pruner_s"] = _round(replay(reports, row["R"], pruners[row["model"]]))
    ceiling, known, pruned_random = (_ratios_as_if(rows, key, budget, per_seed)
                                     for key in ("t_ceiling_s", "t_hindsight_s", "t_random_default_pruner_s"))
    near = near_ratios(rows, curves, budget)
    for seed, s in per_seed.items():
        s["ceiling_ratio"] = ceiling[seed]
        s["hindsight_ratio"] = known[seed]
        s["random_with_default_pruner_ratio"] = pruned_random[seed]
        s["near_ratio"] = near.get(seed)
    near_median = common.median([v for v in near.values() if v is not None])
    by_budget = budget_ratios(rows, curves, budget)
    budget_medians = {b: common.median([v["ratio"] for v in per.values() if v["ratio"] is not None])
                      for b, per in by_budget.items()}
    half = min(budget_medians, key=lambda b: abs(b - budget / 2))
    png = (common.RESULTS / PNG) if not out else (os.path.dirname(os.path.abspath(out)) + "/" + PNG)
    os.makedirs(os.path.dirname(str(png)), exist_ok=True)
    plot(curves, budget, png)
    if not quick and not out:  # the figure BENCHMARKS.md shows, kept in git (bench/results is not)
        import shutil

        shutil.copyfile(png, common.REPO / "docs" / PNG)
    worse = [m for m in models
             if (common.median([r["best_default_at_budget"] - r["best_random_at_budget"] for r in rows
                                if r["model"] == m and None not in (r["best_default_at_budget"],
                                                                    r["best_random_at_budget"])]) or 0) > 0]
    bounded = any(s["upper_bound"] for s in per_seed.values())
    ceiling_median = common.median([c for c in ceiling.values() if c is not None])
    known_median = common.median([c for c in known.values() if c is not None])
    targets = [
        common.target("time to random search's best: random, no pruning / default search, summed over the models, "
                      "median over seeds", ">= 3x", ratio, "x", common.at_least(ratio, 3.0),
                      "per seed: " + ", ".join(f"{s}: {v['ratio']}x" for s, v in per_seed.items())
                      + (" (upper bounds: the default missed R in some model)" if bounded else "")
                      + f"; the most any pruner could make of random's draws: {ceiling_median}x"),
        common.target("models where the default search's best val RMSE at equal wall time is above random's "
                      "(median over seeds)", "0", len(worse), "models", len(worse) == 0,
                      ", ".join(worse) if worse else ""),
        common.target("pruning's ceiling: the same ratio had every trial of random search that misses R stopped at its "
                      "first epoch (a pruner that knew the future), median over seeds", "report", ceiling_median, "x",
                      None, "per seed: " + ", ".join(f"{s}: {c}x" for s, c in ceiling.items())
                      + "; random search with the default pruner (replayed): "
                      + ", ".join(f"{s}: {v['random_with_default_pruner_ratio']}x" for s, v in per_seed.items())),
        common.target("hindsight: the same ratio for a search that knew random search's winner and tried it first "
                      "(its own time to R, nothing before it), median over seeds", "report", known_median, "x", None,
                      "per seed: " + ", ".join(f"{s}: {c}x" for s, c in known.items())
                      + "; beyond it only a configuration that reaches R sooner than random's winner"),
        common.target(f"the same ratio to within {NEAR} of R (a looser bar, beside the target's), median over seeds",
                      "report", near_median, "x", None,
                      "per seed: " + ", ".join(f"{s}: {v}x" for s, v in near.items())),
        common.target(f"the same ratio had both arms stopped at {half:g} s (cut from the same runs), median over seeds",
                      "report", budget_medians[half], "x", None,
                      "at each budget: " + ", ".join(f"{b:g} s: {m}x" for b, m in budget_medians.items()))]
    if noise_rows:
        ns, sd = noise_summary(noise_rows), seed_sd(noise_rows)
        by_sd = near_ratios(rows, curves, budget, tol=sd)
        targets.append(common.target(
            "seed luck in R: random search's own best configuration, trained again with another train.seed, "
            "reaches R", "report", ns["reach_R"], f"of {ns['retrained']} runs", None,
            f"within {NEAR} of R: {ns['reach_near']}; on average {ns['mean_above_R']} above R; median sd over "
            f"the seeds {ns['median_sd']}; seed 0 repeats the recorded run to {ns['max_repeat_diff']}"))
        targets.append(common.target(
            "the same ratio to within one seed sd of R (each model's median sd over the training seeds), median "
            "over seeds", "report", common.median([v for v in by_sd.values() if v is not None]), "x", None,
            "per seed: " + ", ".join(f"{s}: {v}x" for s, v in by_sd.items()) + "; sd per model: "
            + ", ".join(f"{m} {v}" for m, v in sd.items())))
    default_sampler = rows[0]["default"] if rows else {}
    notes = [f"Budget B = {budget:.0f} s of wall time per arm, model and seed; seeds {list(seeds)}; the two arms run side "
             "by side, one process and one thread each; MLflow "
             "tracking on (a ready sqlite store); the default sweep's space, train.epochs and patience; no "
             "reference trial in either arm.",
             f"The default arm: sampler {default_sampler.get('sampler')}, pruner {default_sampler.get('pruner')} "
             "(conf/sweep/default.yaml, mfexp/sweep/storage.py).",
             "Pruning's ceiling and the replay come from random search's recorded curves (bench/sweep_efficiency.py "
             "pruning_ceiling, replay): its trials in the order they ran, each epoch's duration as measured. TPE's "
             "first 5 trials are random search's own draws (same seed); pruning alone, on random's draws, cannot take "
             "the ratio past the ceiling: beyond it only a sampler that proposes better than random can go.",
             f"Curves: bench/results/{PNG}; every epoch's report is in the JSON (`curves`)."] + \
        ([f"Run as `python -m bench.sweep_efficiency {' '.join(argv)}`" + (
            " (the random arms reused from that earlier run, so each default arm ran beside another default arm or "
            "alone, not beside its random arm)" if "--random-from" in argv else "") + "."] if argv else []) + LEVERS + \
        ([f"quick overrides: {' '.join(extra)}"] if quick else []) + \
        ([f"Figures re-derived (`--reanalyse`) from the run(s) `{reanalysed['command']}` (finished "
          f"{reanalysed['finished']}, {reanalysed['wall_s']:.0f} s of wall time summed over them), whose rows and "
          "curves are kept as they were."] if reanalysed else [])
    common.write_result(out or common.RESULTS / f"{SECTION}.json", SECTION, quick, started,
                        {"models": list(models), "seeds": list(seeds), "budget_s": budget,
                         "overrides": list(extra), "argv": list(argv or []), "rows": rows,
                         "per_seed": {str(k): v for k, v in per_seed.items()}, "ratio": ratio,
                         "ceiling_ratio": ceiling_median, "hindsight_ratio": known_median, "near": NEAR, "near_ratio": near_median,
                         "budget_ratios": {f"{b:g}": {str(s): v for s, v in per.items()} for b, per in by_budget.items()},
                         "png": PNG, **({"noise": noise_rows} if noise_rows else {}),
                         "curves": {m: {f"{a}:{s}": r for (a, s), r in c.items()}
                                    for m, c in curves.items()}},
                        targets, notes, run=reanalysed)
    return 0


def reanalyse(paths: Sequence[str], out, default_arm: Sequence[str], started: float) -> int:
    """Re-derive the figures of earlier results (several: runs of other models or seeds, same budget,
    merged) with this version's analysis."""
    olds = [load_result(path) for path in paths]
    if len({old["figures"]["budget_s"] for old in olds}) > 1:
        raise SystemExit(f"{', '.join(paths)}: their budgets differ; only runs with the same budget merge")
    rows, curves, models, seeds, noise_rows = [], {}, [], [], []
    for old in olds:
        f = old["figures"]
        noise_rows += f.get("noise", [])
        for m, c in f["curves"].items():
            curves.setdefault(m, {}).update({(k.split(":")[0], int(k.split(":")[1])): r for k, r in c.items()})
        rows += [compare({**r["random"], "reports": curves[r["model"]][("random", r["seed"])]},
                         {**r["default"], "reports": curves[r["model"]][("default", r["seed"])]}, f["budget_s"])
                 for r in f["rows"]]
        models += [m for m in f["models"] if m not in models]
        seeds += [s for s in f["seeds"] if s not in seeds]
    pairs = [(r["model"], r["seed"]) for r in rows]
    if len(set(pairs)) < len(pairs):
        raise SystemExit(f"{', '.join(paths)}: a model and seed appear in more than one of them")
    first = olds[0]
    commands = [old["command"] + (" " + " ".join(old["figures"]["argv"]) if old["figures"].get("argv") else "")
                for old in olds]
    run = {**first, "command": "; ".join(dict.fromkeys(commands)),
           "finished": max(old["finished"] for old in olds), "wall_s": sum(old["wall_s"] for old in olds)}
    return finish(rows, curves, models, sorted(seeds), first["figures"]["budget_s"],
                  first["figures"].get("overrides", []), default_arm, started, first.get("quick", False), out,
                  reanalysed=run, noise_rows=noise_rows)


def load_result(path: str) -> dict:
    """An earlier result of this section with rows and curves; a clear exit for anything else."""
    try:
        result = json.loads(open(path).read())
    except (OSError, ValueError) as err:
        raise SystemExit(f"{path}: cannot read it as a result of the {SECTION} section ({err})") from None
    if not isinstance(result, dict) or result.get("section") != SECTION or "rows" not in result.get("figures", {}):
        raise SystemExit(f"{path}: not a result of the {SECTION} section with rows and curves")
    return result


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 2)


def _s(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _v(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def render(result: dict) -> list[str]:
    f = result["figures"]
    if "rows" not in f:  # a result of the earlier, one-model form of this section
        return ["(an earlier form of this section's result: re-run python -m bench.sweep_efficiency)"]
    lines = [f"Budget {f['budget_s']:.0f} s per arm, model and seed; R = random search's best val RMSE "
             "within it; t = seconds until an arm first reached R; ceiling = the same for random search's trials "
             "had each one that misses R stopped at its first epoch (no pruner does better on those draws); "
             "hindsight = random's winner tried first, alone (its own time to R).", "",
             "| model | seed | R (random's best) | t random (s) | t default (s) | ratio | t ceiling (s) | t hindsight (s) | "
             "best at B: random | best at B: default | default trials (pruned) | random trials |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in f["rows"]:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else (
            f"< {r['ratio_below']:.2f}x" if r["ratio_below"] is not None else "-")
        lines.append(f"| {r['model']} | {r['seed']} | {_v(r['R'])} | {_s(r['t_random_s'])} | "
                     f"{_s(r['t_default_s']) if r['t_default_s'] is not None else 'not reached'} | {ratio} | "
                     f"{_s(r.get('t_ceiling_s'))} | {_s(r.get('t_hindsight_s'))} | "
                     f"{_v(r['best_random_at_budget'])} | {_v(r['best_default_at_budget'])} | "
                     f"{r['default']['trials']} ({r['default']['pruned']}) | {r['random']['trials']} |")
    near = f.get("near", NEAR)
    lines += ["", "| seed | sum t random (s) | sum t default (s) | ratio | pruning's ceiling | hindsight | "
              f"random + default pruner (replayed) | ratio to within {near} of R |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for seed, s in f["per_seed"].items():
        ceiling, replayed, loose = s.get("ceiling_ratio"), s.get("random_with_default_pruner_ratio"), s.get("near_ratio")
        known = s.get("hindsight_ratio")
        lines.append(f"| {seed} | {s['t_random_s']:.1f} | {s['t_default_s']:.1f} | "
                     f"{'<= ' if s['upper_bound'] else ''}{s['ratio']}x | "
                     f"{'-' if ceiling is None else f'{ceiling}x'} | {'-' if known is None else f'{known}x'} | "
                     f"{'-' if replayed is None else f'{replayed}x'} | "
                     f"{'-' if loose is None else f'{loose}x'} |")
    lines += ["", f"Median over seeds: **{f['ratio']}x**."]
    if f.get("budget_ratios"):
        seeds = sorted({s for per in f["budget_ratios"].values() for s in per}, key=int)
        lines += ["", "The same ratio had both arms been stopped sooner (cut from the same runs: R is random's best "
                  "within that budget):", "", "| budget (s) | " + " | ".join(f"seed {s}" for s in seeds) + " | median |",
                  "|---:|" + "---:|" * (len(seeds) + 1)]
        for b, per in f["budget_ratios"].items():
            cells = [("<= " if per[s]["upper_bound"] else "") + f"{per[s]['ratio']}x" if s in per and per[s]["ratio"]
                     is not None else "-" for s in seeds]
            lines.append(f"| {b} | " + " | ".join(cells) + " | "
                         + f"{common.median([v['ratio'] for v in per.values() if v['ratio'] is not None])}x |")
    lines += ["", f"![best val RMSE so far](docs/{f['png']})"]
    if f.get("noise"):
        seeds = sorted({x["train_seed"] for n in f["noise"] for x in n["runs"]})
        lines += ["", "Seed luck in R: random search's best trial of each model and seed trained again, untracked, with "
                  "each train.seed (every trial of a sweep trains with seed 0: seed 0 repeats it; a trial the arm's "
                  "budget cut is retrained for the epochs it had):", "",
                  "| model | seed | trial | R | " + " | ".join(f"train.seed {s}" for s in seeds)
                  + " | other seeds at or below R |",
                  "|---|---:|---:|---:|" + "---:|" * len(seeds) + "---:|"]
        for n in f["noise"]:
            by = {x["train_seed"]: x["val_rmse"] for x in n["runs"]}
            others = [v for s, v in by.items() if s != 0]
            trial = f"{n['trial']}" + (f" (cut at epoch {n['epochs_cap']})" if n.get("epochs_cap") else "")
            lines.append(f"| {n['model']} | {n['seed']} | {trial} | {_v(n['R'])} | "
                         + " | ".join(_v(by.get(s)) for s in seeds)
                         + f" | {sum(v <= n['R'] + 1e-12 for v in others)} of {len(others)} |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
