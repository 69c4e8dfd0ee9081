"""One attention GEMM of a long video as the fused CPU path runs it: ``p (rows, s) @ v (s, c)`` as a oneDNN
1x1 convolution whose weight is the whole value operand, with the time the kernel spends (page faults of
the buffers oneDNN reorders the weight into) reported beside the wall time.

    python benchmarks/onednn_reorder.py                       # 512 rows (a tile at 32,768 snippets)
    python benchmarks/onednn_reorder.py --rows 2048
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 python benchmarks/onednn_reorder.py

See docs/benchmarks.md ("Time grows no faster than the FLOPs").
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=512, help="query rows of the tile")
    parser.add_argument("--keys", type=int, default=32768, help="keys s (the video length)")
    parser.add_argument("--channels", type=int, default=1024, help="value channels c")
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    p = torch.randn(args.rows, args.keys)
    v_t = torch.randn(args.channels, args.keys)  # the weight: (c, s)

    def gemm() -> torch.Tensor:  # the channel-last view of p is an NHWC image, as in dmf_fusion._cpu.gemm_nt
        return F.conv2d(p.unsqueeze(0).transpose(1, 2).unsqueeze(2), v_t[:, :, None, None])

    gemm()
    before, start = os.times(), time.perf_counter()
    for _ in range(args.calls):
        gemm()
    seconds, after = (time.perf_counter() - start) / args.calls, os.times()
    kernel = (after.system - before.system) / args.calls
    flops = 2.0 * args.rows * args.keys * args.channels
    print(
        f"{args.rows} x {args.keys} x {args.channels}, {torch.get_num_threads()} threads: {seconds * 1e3:.0f} ms per call, "
        f"{kernel * 1e3:.0f} ms of it in the kernel, {flops / seconds / 1e9:.0f} GFLOP/s"
    )


if __name__ == "__main__":
    main()
