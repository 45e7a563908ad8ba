"""How `edge-dm benchmark` summarises a run: its Markdown tables, its PNG charts and the line logged
as each row is measured."""
from __future__ import annotations

from pathlib import Path


def measured(row: dict) -> str:
    """One line of a benchmark row's main numbers, logged as each is measured (a run stopped before
    its files are written still told what it found)."""
    said = [f"UNet at batch 1 {row['latency_b1']['median_ms']} ms"] if "latency_b1" in row else []
    said.append(f"{row['end_to_end_s_per_image']} s an image end to end")
    if "image" in row:
        said.append(f"{row['image']['seconds']} s for one image alone ({row['image']['unet_calls']} UNet calls)")
    if row.get("speedup_vs_float_baseline"):
        said.append(f"{row['speedup_vs_float_baseline']}x the float baseline's image")
    return "  " + "; ".join(said)


def s_per_image(row: dict) -> float:
    """A row's seconds per image: one text-to-image image alone (its breakdown), else the end-to-end run's."""
    return row["image"]["seconds"] if "image" in row else row["end_to_end_s_per_image"]


def markdown(result: dict) -> str:
    bs = result["config"]["batch_sizes"]
    head = ["variant", "precision in effect", "b1 median ms", "b1 p90 ms", *[f"img/s b{b}" for b in bs],
            "e2e img/s", "compile s", "mem MB", "size MB", "x OV fp32", "x torch fp32"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = [r["variant"], r["effective_precision"], r["latency_b1"]["median_ms"], r["latency_b1"]["p90_ms"],
                 *[r["throughput"][str(b)] for b in bs], r["end_to_end_images_per_s"], r["compile_s"],
                 r["memory_mb"], r["size_mb"], r.get("speedup_vs_ov_fp32", ""), r.get("speedup_vs_torch_fp32", "")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    images = [r for r in result["rows"] if "image" in r]
    if images:
        parts = sorted({k for r in images for k in r["image"]["parts_s"]})
        head = ["variant", "s per image", *[f"{p} s" for p in parts], "rest s", "UNet calls", "UNet ms/call",
                f"img/s, {result['config']['images']} in flight"]
        lines += ["", "Where one image's time goes:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in images:
            im = r["image"]
            cells = [r["variant"], im["seconds"], *[im["parts_s"].get(p, "") for p in parts], im["rest_s"],
                     im["unet_calls"], im["unet_ms_per_call"], _blank(im["images_per_s_throughput"])]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += _deepcache_table(result)
    m = result["machine"]
    isa = f" ({' '.join(m['isa'])})" if m.get("isa") else ""
    device = result["config"]["device"]
    lines.append(f"\n{m['cpu']}{isa}, {m['cores']} cores, OpenVINO {m['openvino']}, device {device}; "
                 f"latency over {result['config']['iterations']} calls after warm-up; e2e = "
                 f"{result['sampling']['steps']} steps of the model's {result['sampling']['scheduler']}, "
                 f"{result['config']['images']} image(s).")
    return "\n".join(lines)


def _blank(value):
    return "" if value is None else value


def _deepcache_table(result: dict) -> list[str]:
    """The Markdown lines of the DeepCache section: per variant and interval, seconds per image (one
    text-to-image image alone, else the end-to-end run's), UNet calls (text-to-image), images/s and the
    speed-up on the float baseline without DeepCache; none without DeepCache rows."""
    rows = result.get("deepcache") or []
    if not rows:
        return []
    t2i = "image" in rows[0]
    head = ["variant", "interval", "s per image", *(["UNet calls", "of them whole"] if t2i else []),
            f"img/s, {result['config']['images']} in flight" if t2i else "e2e img/s", "x float baseline"]
    lines = ["", f"DeepCache: whole images (branch {rows[0]['cache_branch']})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        im = r.get("image", {})
        cells = [r["variant"], r["cache_interval"], s_per_image(r),
                 *([im["unet_calls"], im["unet_full_calls"]] if t2i else []),
                 _blank(im["images_per_s_throughput"]) if t2i else r["end_to_end_images_per_s"],
                 _blank(r["speedup_vs_float_baseline"])]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def chart(result: dict, path: Path) -> None:
    """A bar chart of batch-1 latency per variant (PNG, drawn with Pillow)."""
    from PIL import Image, ImageDraw

    rows = result["rows"]
    w, bar, pad = 640, 28, 10
    img = Image.new("RGB", (w, pad * 2 + len(rows) * (bar + pad) + 20), "white")
    d = ImageDraw.Draw(img)
    top = max(r["latency_b1"]["median_ms"] for r in rows)
    d.text((pad, 2), "UNet latency at batch 1, median ms (shorter is faster)", fill="black")
    for i, r in enumerate(rows):
        y = 20 + pad + i * (bar + pad)
        length = int((w - 260) * r["latency_b1"]["median_ms"] / top)
        d.rectangle([200, y, 200 + length, y + bar], fill=(0, 113, 197) if "int8" in r["variant"] else (150, 150, 150))
        d.text((pad, y + 8), r["variant"][:30], fill="black")
        d.text((205 + length, y + 8), f"{r['latency_b1']['median_ms']:.1f}", fill="black")
    img.save(path)


def image_chart(result: dict, path: Path) -> None:
    """A stacked bar per variant of where one text-to-image image's time goes (PNG, drawn with Pillow)."""
    from PIL import Image, ImageDraw

    rows = [r for r in result["rows"] if "image" in r]
    parts = sorted({k for r in rows for k in r["image"]["parts_s"]}) + ["rest"]
    colours = [(0, 113, 197), (237, 125, 49), (112, 173, 71), (255, 192, 0), (150, 150, 150)]
    w, bar, pad = 720, 28, 10
    img = Image.new("RGB", (w, pad * 3 + len(rows) * (bar + pad) + 40), "white")
    d = ImageDraw.Draw(img)
    top = max(r["image"]["seconds"] for r in rows)
    d.text((pad, 2), "seconds per image, by component (shorter is faster)", fill="black")
    for i, r in enumerate(rows):
        y, x = 20 + pad + i * (bar + pad), 200
        for part, colour in zip(parts, colours * 2):
            value = r["image"]["rest_s"] if part == "rest" else r["image"]["parts_s"].get(part, 0)
            length = int((w - 280) * value / top)
            d.rectangle([x, y, x + length, y + bar], fill=colour)
            x += length
        d.text((pad, y + 8), r["variant"][:30], fill="black")
        d.text((x + 5, y + 8), f"{r['image']['seconds']:.2f}", fill="black")
    y = 30 + pad + len(rows) * (bar + pad)
    for j, (part, colour) in enumerate(zip(parts, colours * 2)):
        d.rectangle([pad + 130 * j, y, pad + 130 * j + 12, y + 12], fill=colour)
        d.text((pad + 130 * j + 16, y), part, fill="black")
    img.save(path)
