"""Candidate-evaluation throughput of the proxy trainer vs two hand-written loops.

Same student, data (mnist5k-cluttered, 4,000 training images), batch size, epochs
and optimiser for all three:
  * student-only: cross-entropy, no teacher (the ceiling);
  * KD, teacher every step: a minimal hand-written KD loop that runs the teacher
    forward on every batch (what most KD code does);
  * searchkd proxy: `train_proxy` with the teacher's logits cached once.
Prints a table of samples/s and the ratio to the student-only loop.

    python benchmarks/proxy_throughput.py [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from search_spaces import get_space
from searchkd.config import ProxyConfig
from searchkd.cost import count_macs
from searchkd.data import load_dataset
from searchkd.engine import batch_indices, steps_per_epoch
from searchkd.proxy import compute_teacher_outputs, train_proxy
from searchkd.recipe import Recipe, make_optimizer, make_scheduler

BATCH = 128


def student_arch() -> dict:
    """A fixed 2.56M-MAC student from the mobilenet space (mixed block types), in the
    range the default budget (3.96M MACs) admits."""
    space = get_space("mobilenet")
    decisions = {n: d.choices[0] for n, d in space.decisions().items()}
    decisions.update(
        s1_block="conv",
        s2_block="mbconv",
        s2_expansion=3,
        s2_width=1.0,
        s3_block="conv",
        s3_width=1.0,
        s4_block="mbconv",
        s4_expansion=6,
        s4_layers=3,
        s5_width=1.0,
        s5_block="mbconv",
        s5_expansion=3,
        s6_block="mbconv",
        s6_expansion=3,
        head_width=0.5,
    )
    return space.from_decisions(decisions)


def hand_loop(student, data, epochs, teacher=None, temperature=4.0, channels_last=False):
    """The minimal loop: CE (+ KD against a teacher run every step when given)."""
    n = len(data.train_x)
    train_x = data.train_x
    if channels_last:
        student = student.to(memory_format=torch.channels_last)
        train_x = train_x.contiguous(memory_format=torch.channels_last)
    recipe = Recipe(epochs=epochs, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=BATCH)
    opt = make_optimizer(recipe, list(student.parameters()))
    sched = make_scheduler(recipe, opt, epochs * steps_per_epoch(n, BATCH))
    gen = torch.Generator().manual_seed(0)
    ce = nn.CrossEntropyLoss()
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        student.train()
        for idx in batch_indices(n, BATCH, gen):
            x, y = train_x[idx], data.train_y[idx]
            logits = student(x)
            loss = ce(logits, y)
            if teacher is not None:
                with torch.no_grad():
                    t = teacher(x)
                kd = nn.functional.kl_div(
                    nn.functional.log_softmax(logits / temperature, 1),
                    nn.functional.softmax(t / temperature, 1),
                    reduction="batchmean",
                )
                loss = 0.1 * loss + 0.9 * kd * temperature**2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_dataset("mnist5k-cluttered", seed=0)
    resnet = get_space("resnet")
    teacher = resnet.build(resnet.canonical()["resnet20_w16s2"], 1, 40, 10).eval()
    space = get_space("mobilenet")
    arch = student_arch()
    build = lambda: space.build(arch, 1, 40, 10)  # noqa: E731
    cache_start = time.perf_counter()
    cached = compute_teacher_outputs(teacher, data.train_x, [])
    cache_seconds = time.perf_counter() - cache_start
    config = ProxyConfig(epochs=args.epochs, batch_size=BATCH)
    results: dict[str, list[float]] = {
        "student-only CE": [],
        "student-only CE, channels-last": [],
        "KD, teacher every step": [],
        "KD, teacher every step, channels-last": [],
        "searchkd proxy (cached teacher, channels-last)": [],
    }
    for repeat in range(args.repeats):  # interleaved, so drift hits all three alike
        torch.manual_seed(repeat)
        results["student-only CE"].append(hand_loop(build(), data, args.epochs))
        torch.manual_seed(repeat)
        results["student-only CE, channels-last"].append(
            hand_loop(build(), data, args.epochs, channels_last=True)
        )
        torch.manual_seed(repeat)
        results["KD, teacher every step"].append(hand_loop(build(), data, args.epochs, teacher))
        torch.manual_seed(repeat)
        results["KD, teacher every step, channels-last"].append(
            hand_loop(build(), data, args.epochs, teacher, channels_last=True)
        )
        torch.manual_seed(repeat)
        result = train_proxy(
            build(),
            data,
            cached,
            [],
            {"ce": 0.1, "kd": 0.9},
            {"kd": {"temperature": 4.0}},
            config,
            seed=repeat,
        )
        results["searchkd proxy (cached teacher, channels-last)"].append(result.samples_per_second)
    base = statistics.median(results["student-only CE"])
    base_cl = statistics.median(results["student-only CE, channels-last"])
    print(
        f"student {space.macs(arch, 40, 1, 10) / 1e6:.2f}M MACs; teacher resnet20_w16s2 "
        f"{count_macs(teacher, (1, 40, 40)) / 1e6:.2f}M MACs; {args.epochs} epochs x 4000 "
        f"images, batch {BATCH}, {torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(f"one-off teacher pass to cache logits: {cache_seconds:.2f}s")
    print(
        "| loop | samples/s (median) | min-max | vs student-only CE | vs student-only CE, "
        "same layout |"
    )
    print("|---|---|---|---|---|")
    for name, values in results.items():
        med = statistics.median(values)
        same = base_cl if "channels-last" in name else base
        print(
            f"| {name} | {med:.0f} | {min(values):.0f}-{max(values):.0f} | {med / base:.2f}x "
            f"| {med / same:.2f}x |"
        )


if __name__ == "__main__":
    main()
