"""The CPU-vs-GPU table of issue 7 from benchmarks.throughput's JSON files, with the targets checked.

    python benchmarks/gpu_summary.py OUT/throughput-cuda.json [OUT/throughput-cpu-A.json]

Targets (one H100): training throughput of nets A and D at least 0.5x PyTorch eager CUDA at batch 128 and at
least 0.8x at batch 1024; minidl on the GPU at least 20x minidl on the CPU for net A at batch 128.
"""
from __future__ import annotations

import json
import sys

TARGETS = {("A", 128): 0.5, ("D", 128): 0.5, ("A", 1024): 0.8, ("D", 1024): 0.8}
GPU_OVER_CPU = ("A", 128, 20.0)


def _fmt(v, digits=0):
    return "-" if v is None else f"{v:,.{digits}f}"


def summary(gpu: dict, cpu: dict | None = None) -> str:
    lines = [f"# minidl on {gpu.get('machine', {}).get('gpu', gpu.get('device'))}, {gpu.get('date', '?')}",
             f"command: `{gpu.get('command', '?')}`", "",
             "| net | what | minidl GPU img/s | PyTorch CUDA img/s | minidl/PyTorch | target | met |",
             "|---|---|---:|---:|---:|---:|---|"]
    for net, entry in gpu.get("nets", {}).items():
        for what, row in entry.items():
            if not isinstance(row, dict) or "minidl_img_s" not in row:
                continue
            batch = int(what.split("_")[1]) if what.startswith("train_") else None
            target = TARGETS.get((net, batch))
            ratio = row.get("ratio")
            met = "-" if target is None or ratio is None else ("yes" if ratio >= target else "NO")
            lines.append(f"| {net} | {what.replace('_', ' b')} | {_fmt(row['minidl_img_s'])} | "
                         f"{_fmt(row.get('torch_img_s'))} | {_fmt(ratio, 2)} | "
                         f"{'-' if target is None else f'>= {target}'} | {met} |")
    if cpu is not None:
        net, batch, want = GPU_OVER_CPU
        key = f"train_{batch}"
        g = gpu.get("nets", {}).get(net, {}).get(key, {}).get("minidl_img_s")
        c = cpu.get("nets", {}).get(net, {}).get(key, {}).get("minidl_img_s")
        ratio = g / c if g and c else None
        lines += ["", "| net | what | minidl CPU img/s | minidl GPU img/s | GPU/CPU | target | met |",
                  "|---|---|---:|---:|---:|---:|---|",
                  f"| {net} | train b{batch} | {_fmt(c)} | {_fmt(g)} | {_fmt(ratio, 1)} | >= {want:g} | "
                  f"{'-' if ratio is None else ('yes' if ratio >= want else 'NO')} |",
                  f"CPU: {cpu.get('machine', {}).get('cpu', '?')}, {cpu.get('machine', {}).get('cpus', '?')} CPUs; "
                  f"command: `{cpu.get('command', '?')}`"]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.exit(__doc__)
    try:
        with open(argv[0]) as f:
            gpu = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"no GPU figures to summarise ({e}): did the cuda benchmark run to its end?")
    cpu = None
    if len(argv) > 1:
        try:
            with open(argv[1]) as f:
                cpu = json.load(f)
        except OSError as e:
            print(f"(no CPU figures: {e})")
    print(summary(gpu, cpu))


if __name__ == "__main__":
    main()
