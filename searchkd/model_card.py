"""Model cards: what a deployed student is, how it was made and how well it does.

One JSON file for tools and one Markdown file for people, written from the same dict, so
the two never disagree. Every number says what it is: accuracy is the LAST epoch's
validation accuracy (the shipped weights) with the best epoch beside it; latency names its
meter; seeds and the recipe are there to reproduce the run.
"""

from __future__ import annotations

import json
from typing import Any

FORMAT = "searchkd-model-card"


def card_markdown(card: dict[str, Any]) -> str:
    """Render a card as Markdown."""
    acc = card["accuracy"]
    lines = [
        f"# {card['name']}",
        "",
        f"Student network for **{card.get('dataset')}** "
        f"(input {'x'.join(map(str, card['input_shape']))}, {card['num_classes']} classes), "
        f"trained with the **{card['schedule']['name']}** schedule by searchkd "
        f"{card['searchkd_version']}.",
        "",
        "| | |",
        "|---|---|",
        f"| Architecture | `{_cell(card['architecture']['summary'])}` "
        f"({card['architecture']['space']} space) |",
        f"| Parameters | {card['params']:,} |",
        f"| MACs (one image) | {card['macs']:,} |",
    ]
    for meter in card["latency"]:
        precision = f", {meter['precision']}" if meter.get("precision") else ""
        lines.append(
            f"| Latency ({meter['meter']}{precision}, batch 1) | {meter['median_ms']:.3f} ms "
            f"(median of {meter['runs']}) |"
        )
    lines += [
        f"| Accuracy ({acc['split']}, {acc['kind'].replace('_', ' ')}) | {acc['value']:.4f} |",
        f"| Best epoch accuracy | {acc['best_epoch_accuracy']:.4f} (epoch {acc['best_epoch']} "
        f"of {acc['epochs']}) |",
    ]
    if acc.get("ensemble_accuracy") is not None:
        lines.append(f"| Ensemble of generations | {acc['ensemble_accuracy']:.4f} |")
    if card.get("selection"):
        lines.append(f"| Selected as | {_cell(card['selection'])} |")
    teacher = card["teacher"]
    lines += [
        f"| Teacher | {teacher.get('name')} ({_cell(teacher.get('summary') or 'user model')}; "
        f"val accuracy {_fmt(teacher.get('val_accuracy'))}) |",
        f"| Seeds | {', '.join(f'{k} {v}' for k, v in card['seeds'].items())} |",
        f"| Trained on | {card.get('train_device', 'cpu')}, {card.get('train_seconds', 0):.0f} s |",
        f"| ONNX | `{card['onnx']['path']}`, opset {card['onnx']['opset']}, max abs diff vs "
        f"PyTorch {card['onnx']['max_abs_diff']:.1e} (ONNX Runtime) |",
        *_quantization_rows(card),
        "",
        "## Schedule",
        "",
        "```json",
        json.dumps(card["schedule"], indent=2, sort_keys=True),
        "```",
        "",
        "## Recipe",
        "",
        "```json",
        json.dumps(card["recipe"], indent=2, sort_keys=True),
        "```",
        "",
        "## Architecture",
        "",
        "```json",
        json.dumps(card["architecture"]["arch"], indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def _quantization_rows(card: dict[str, Any]) -> list[str]:
    """A quantised student's precision, calibration and int8 check; nothing for a float one."""
    quantization = card.get("quantization")
    if not quantization:
        return []
    check = card["onnx"]
    rows = [
        f"| Precision | {_cell(quantization['precision'])} |",
        f"| Quantised by | {_cell(quantization['method'])} |",
        f"| Calibration | {_cell(quantization['calibration'])} |",
        f"| int8 vs fake-quantised PyTorch | top-1 agreement {check['top1_agreement']:.1%} on "
        f"{check['batch']} images; largest logit difference {check['max_abs_diff']:.2g} of "
        f"largest logit {check['max_abs_logit']:.2g} (bound "
        f"{check['bound']['max_abs_diff_relative']:.0%}) |",
    ]
    ptq = quantization.get("post_training")
    if ptq:
        static = ptq["onnxruntime_static"]
        rows.append(
            f"| Post-training quantisation | fp32 {ptq['fp32']:.4f}; int8 "
            f"{ptq['fake_quantized']:.4f} (PyTorch), {ptq['int8_onnx']:.4f} (int8 ONNX), "
            f"{'n/a' if static is None else f'{static:.4f}'} (ONNX Runtime's static "
            "quantisation) |"
        )
    return rows


def _cell(text: str) -> str:
    """Table-safe text: a bare ``|`` would end the Markdown cell."""
    return text.replace("|", "\\|")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "unknown"
