"""The InstaNAS search after pre-training: alternating controller/supernet epochs, then fine-tuning.

    python examples/search.py --out runs/search                       # bundled Fashion-MNIST
    python examples/search.py --out runs/search --resume              # continue a killed search
    python examples/search.py --upper-end-frac 0.8 --out runs/search_B   # another latency target
    python examples/search.py --dataset cifar10 --data-root ~/data --supernet runs/c10/last.pt \\
        --latency-table runs/c10/latency.json --epochs 100 --controller-images 50000 \\
        --supernet-images 50000 --finetune-images 5000000 --out runs/search_c10   # the paper's scale

The defaults are the paper's (alpha 0.8, lr 1e-3, UB to 0.5 x MobileNetV2). On the bundled
default's small budget the best search used `--split train --alpha 0.95 --lr 0.001
--controller-images 24000 --finetune-images 32000` (benchmarks/README.md has the why and the result).

The paper's scale is about 5 million supernet training images in phase 2 and as many in phase 3 on
a width-1.0 CIFAR supernet. Its time on a GPU was not measured (no GPU here); an estimate from the
arithmetic: at width 1.0 on 32 x 32 inputs the MobileNetV2 path is 98 MMACs, a Bernoulli(0.5) mask
219 and all ops 430 (`SearchSpace(1.0, 32, 3, 10).macs`). Phase 2 trains on about 5M sampled masks
(~3 x 219 MMACs each) and runs the supernet forward twice per controller image (sampled and greedy
mask, 5M images); phase 3 trains about 5M images on near-MobileNetV2-sized masks. That is about
1.4e16 FLOPs, so 1-4 GPU-hours at an effective 1-5 TFLOP/s (depthwise convolutions keep real
MobileNet training well below a GPU's peak); masked execution, as in the paper's code, always pays
for all ops, roughly twice that. On this project's 2 CPU
cores the bundled-scale searches in benchmarks/README.md (width 0.25, 48,000 supernet and 64,000
controller images) took 13 minutes each while three of them shared the cores, 1 thread each.

Writes OUT/search.pt (resumable), and at the end OUT/supernet.pt, OUT/controller.pt and the logs;
then `python examples/evaluate_search.py OUT` judges the result on the test split.
"""

from __future__ import annotations

from rich.console import Console

from agents.search import SearchConfig, search
from instanas_gym.cli import parse_dataclass

if __name__ == "__main__":
    console = Console()
    out = search(parse_dataclass(SearchConfig, __doc__), console)
    console.print(f"search done: {out}/supernet.pt, {out}/controller.pt; "
                  f"evaluate with `python examples/evaluate_search.py {out}`")
