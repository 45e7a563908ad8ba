"""`edge-dm sweep SPEC`: quantize a model over a grid of quantize options and calibration seeds,
score each cell's images (on a Ray cluster with `cluster`), and tabulate each metric's mean and
spread over the seeds.

SPEC is a JSON file (YAML too where PyYAML is installed):

    {"model": "edm-cifar10-ddpm",
     "grid": {"preset": ["mixed", "performance"], "range_estimator": ["minmax", "mean-minmax"]},
     "seeds": [0, 1, 2],
     "images": 1000,
     "metrics": ["fid", "sfid"],
     "reference": "cifar10-train",
     "sampling": {"steps": 100},
     "calibration": {"num_samples": 32},
     "quantization": {"target": "vnni"}}

`grid` takes QuantizeConfig's fields; `seeds` are calibration seeds; `sampling` applies to the
calibration and to the images (whose seeds start at sampling's `seed`); `calibration`,
`quantization` and `runtime` hold the options every cell shares. Metrics (METRICS): fid and sfid
against `reference`, psnr and ssim of the drift from the fp32 model's images on the same seeds, and
held_out_error (quantize's mean relative L2 error on held-out trajectories).

The output folder holds `sweep.json` (the sweep's config), one folder per finished cell under
`cells/` (its bundle's recipe.json and its result.json, each written atomically), the fp32 images
where drift is asked for, and the results: results.json, results.md and plot.png, rewritten after
each cell. A sweep that stops resumes where it stopped: a cell whose folder exists is not run again
(a cell is named by its options and a hash of everything that decides its result).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from edge_dm.bundle import RECIPE, Bundle
from edge_dm.configs import (
    DEFAULT_MODEL,
    CalibrationConfig,
    ClusterConfig,
    Config,
    DeviceConfig,
    EvaluateConfig,
    ExportConfig,
    GenerateConfig,
    QuantizeConfig,
    QuantizeJobConfig,
    SamplingConfig,
)
from edge_dm.data import read_prompts
from edge_dm.errors import BundleError, ConfigError, DataError, OutputExistsError
from edge_dm.jobs.cluster import connect
from edge_dm.jobs.conversion import export
from edge_dm.jobs.evaluation import evaluate
from edge_dm.jobs.generation import generate
from edge_dm.jobs.quantization import quantize
from edge_dm.outputs import ScratchDir, atomic_output, slug, write_atomic

METRICS = {  # metric -> what it is
    "fid": "FID against `reference`",
    "sfid": "sFID against `reference`",
    "psnr": "PSNR (dB) of the images against the fp32 model's on the same seeds",
    "ssim": "SSIM of the images against the fp32 model's on the same seeds",
    "held_out_error": "quantize's mean relative L2 error of the noise prediction on held-out trajectories",
}
SPEC_KEYS = ("model", "grid", "seeds", "images", "metrics", "reference", "prompts", "sampling", "calibration",
             "quantization", "runtime")
SPEC_FILE = "sweep.json"


@dataclass(frozen=True)
class SweepConfig(Config):
    """A sweep: its SPEC's options (SPEC_KEYS) and where it runs and writes."""
    model: str = DEFAULT_MODEL
    grid: tuple = ()  # ((QuantizeConfig field, (value, ...)), ...): every combination is a cell, per seed
    seeds: tuple = (0,)  # calibration seeds
    images: int = 1000  # images each cell is scored on
    metrics: tuple = ("fid", "sfid")  # of METRICS
    reference: str | None = None  # FID statistics or images (fid, sfid)
    prompts: str | None = None  # text-to-image: a prompt file, for calibration and the images
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # calibration's and the images' sampler
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)  # shared by every cell
    quantization: QuantizeConfig = field(default_factory=QuantizeConfig)  # shared; `grid` sets the rest
    runtime: DeviceConfig = field(default_factory=DeviceConfig)
    output: str = "sweep"
    overwrite: bool = False
    cluster: ClusterConfig | None = None
    _nested = {"sampling": SamplingConfig, "calibration": CalibrationConfig, "quantization": QuantizeConfig,
               "runtime": DeviceConfig, "cluster": ClusterConfig}

    def __post_init__(self):
        check_grid(self.grid)
        if not isinstance(self.images, int) or isinstance(self.images, bool) or self.images < 1:
            raise ConfigError(f"`images` must be a positive integer, got {self.images!r}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ConfigError(f"unknown metric {unknown[0] if unknown else 'none given'!r} in `metrics`; "
                              f"choose from {', '.join(METRICS)}")
        if {"fid", "sfid"} & set(self.metrics) and not self.reference:
            raise ConfigError("`metrics` fid and sfid need `reference`: FID statistics or an image folder")
        if {"fid", "sfid"} & set(self.metrics) and self.images < 2:
            raise ConfigError(f"FID needs at least 2 `images` a cell, got {self.images}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2 ** 63 for s in self.seeds):
            raise ConfigError(f"`seeds` must be distinct integers in [0, 2**63), got {list(self.seeds)}")

    @classmethod
    def from_spec(cls, spec: dict, **job) -> "SweepConfig":
        """The config of a SPEC's dict; `job`: output, overwrite, cluster. ConfigError naming any
        unknown key (and the keys allowed) before any work."""
        if not isinstance(spec, dict):
            raise ConfigError(f"a sweep SPEC is a mapping of {', '.join(SPEC_KEYS)}")
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise ConfigError(f"unknown key `{unknown[0]}` in the sweep SPEC; allowed: {', '.join(SPEC_KEYS)}")
        nested = {"sampling": SamplingConfig, "calibration": CalibrationConfig, "quantization": QuantizeConfig,
                  "runtime": DeviceConfig}
        kwargs = dict(spec)
        for key, cls_ in nested.items():
            if key in kwargs:
                kwargs[key] = _nested_config(cls_, key, kwargs[key])
        grid = kwargs.get("grid", {})
        if not isinstance(grid, dict):
            raise ConfigError("`grid` maps quantize options to the values each cell takes")
        kwargs["grid"] = tuple((name, _frozen(v if isinstance(v, list) else [v])) for name, v in grid.items())
        for key in ("seeds", "metrics"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key]) if isinstance(kwargs[key], list) else (kwargs[key],)
        return cls(**kwargs, **job)


def check_grid(grid: tuple) -> None:
    """ConfigError naming a grid option that is not a QuantizeConfig field (and the allowed ones),
    or one without values."""
    allowed = [f.name for f in dataclasses.fields(QuantizeConfig)]
    for name, values in grid:
        if name not in allowed:
            raise ConfigError(f"unknown quantize option `{name}` in `grid`; allowed: {', '.join(allowed)}")
        if not values:
            raise ConfigError(f"`grid` gives {name} no values")


def _nested_config(cls, key: str, value):
    if not isinstance(value, dict):
        raise ConfigError(f"`{key}` in the sweep SPEC maps {cls.__name__} options to values")
    allowed = [f.name for f in dataclasses.fields(cls) if key != "calibration" or f.name != "sampling"]
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown option `{unknown[0]}` in `{key}`; allowed: {', '.join(allowed)}")
    return cls(**{k: _frozen(v) for k, v in value.items()})


def _frozen(value):
    """JSON/YAML lists as tuples (configs are frozen and hold tuples)."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def load_spec(path: str | Path) -> dict:
    """A SPEC file's mapping: JSON, or YAML (.yaml, .yml) where PyYAML is installed. DataError with
    the parser's reason."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"cannot read the sweep SPEC {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise DataError(f"{path} is YAML, and reading YAML needs PyYAML (pip install pyyaml); or write the "
                            "SPEC as JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DataError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); a SPEC is JSON, or YAML named .yaml") from None


# --- cells ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One point of the grid at one calibration seed: the quantize job that makes its bundle and
    how its images are scored."""
    options: tuple  # ((option, value), ...) of the grid
    seed: int
    job: QuantizeJobConfig  # its output set when run
    evaluate: EvaluateConfig  # its samples set when run

    @property
    def name(self) -> str:
        """Its folder's name: its options and seed, and a hash of everything that decides its result."""
        score = self.evaluate and self.evaluate.replace(cluster=None, compare=self.evaluate.compare and "fp32")
        what = json.dumps(dict(job=self.job.to_dict(), evaluate=score and score.to_dict()), sort_keys=True, default=str)
        readable = "_".join(f"{k}-{slug(_text(v))}" for k, v in (*self.options, ("seed", self.seed)))
        return readable[:150] + "_" + hashlib.sha1(what.encode()).hexdigest()[:10]


def _text(value) -> str:
    return "+".join(map(str, value)) if isinstance(value, tuple) else str(value)


def cells(cfg: SweepConfig, fp32_images: str | None) -> list[Cell]:
    """Every cell of the sweep, each config built (so checked) before any work: grid points in the
    order of the grid, seeds within each."""
    names = [name for name, _ in cfg.grid]
    prompts = tuple(read_prompts(cfg.prompts)) if cfg.prompts else ()
    score = EvaluateConfig(samples="<bundle>", reference=cfg.reference if {"fid", "sfid"} & set(cfg.metrics) else None,
                           compare=fp32_images, num_images=cfg.images, prompts=prompts, sampling=cfg.sampling,
                           runtime=cfg.runtime, cluster=cfg.cluster) \
        if set(cfg.metrics) - {"held_out_error"} else None
    out = []
    for values in itertools.product(*(v for _, v in cfg.grid)):
        options = tuple(zip(names, values))
        quantization = cfg.quantization.replace(**dict(options))
        for seed in cfg.seeds:
            calibration = cfg.calibration.replace(sampling=cfg.sampling.replace(seed=seed),
                                                  prompts=cfg.calibration.prompts or cfg.prompts)
            job = QuantizeJobConfig(model=cfg.model, calibration=calibration, quantization=quantization)
            out.append(Cell(options, seed, job, score))
    return out


def run_cell(cell: Cell, out: Path, metrics: tuple, progress: bool) -> dict:
    """Quantize the cell's bundle (in this process, into a temporary folder), score it (on the
    cluster its evaluate config names), and write its folder in `out`/cells atomically: its bundle's
    recipe.json and result.json (options, seed, metrics). Returns the result."""
    with ScratchDir() as scratch:
        bundle, summary = quantize(cell.job.replace(output=str(scratch.path / "int8")), progress=progress)
        values = {"held_out_error": summary["mean_rel_l2"]}
        scored = {}
        if cell.evaluate is not None:
            scored = evaluate(cell.evaluate.replace(samples=str(bundle.path)), progress=progress)
            values.update(fid=scored.get("fid"), sfid=scored.get("sfid"))
            if "drift" in scored:
                values.update(psnr=scored["drift"]["psnr_db"], ssim=scored["drift"]["ssim"])
        record = dict(cell=cell.name, options=dict(cell.options), seed=cell.seed,
                      metrics={m: values.get(m) for m in metrics}, timings=scored.get("timings"),
                      caveat=scored.get("caveat"))
        with atomic_output(out / "cells" / cell.name) as tmp:
            shutil.copy(bundle.path / RECIPE, tmp / RECIPE)
            (tmp / "result.json").write_text(json.dumps(record, indent=2, default=str))
    return record


# --- results --------------------------------------------------------------------------------------

def summarize(records: list[dict], grid_names: list[str], metrics: list[str]) -> list[dict]:
    """One row per grid point: its options, the seeds, and per metric the mean, the standard deviation
    over seeds (sample; 0 for one seed), min and max."""
    groups: dict = {}
    for r in records:
        groups.setdefault(tuple(json.dumps(r["options"][n], default=str) for n in grid_names), []).append(r)
    rows = []
    for rs in groups.values():
        row = dict(options=rs[0]["options"], seeds=[r["seed"] for r in rs])
        for m in metrics:
            vals = [r["metrics"][m] for r in rs if r["metrics"].get(m) is not None]
            if vals:
                mean = sum(vals) / len(vals)
                std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
                row[m] = dict(mean=mean, std=std, min=min(vals), max=max(vals), n=len(vals))
            else:
                row[m] = None
        rows.append(row)
    return rows


def markdown(rows: list[dict], grid_names: list[str], metrics: list[str]) -> str:
    """The table as Markdown: the options, then each metric as mean ± std (min-max) over the seeds."""
    head = [*grid_names, "seeds", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells_ = [_text(_frozen(row["options"][n])) for n in grid_names] + [",".join(map(str, row["seeds"]))]
        for m in metrics:
            s = row[m]
            cells_.append("n/a" if s is None else f"{s['mean']:.4g} ± {s['std']:.2g} ({s['min']:.4g}-{s['max']:.4g})")
        lines.append("| " + " | ".join(cells_) + " |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], grid_names: list[str], metrics: list[str], path: Path) -> None:
    """plot.png (Pillow): a panel per metric (rows) and grid option (columns), the option's values
    along x; a grey dot for every cell, a black bar at the mean of the cells with that value and
    a line from their min to their max."""
    from PIL import Image, ImageDraw, ImageFont

    options = grid_names or ["(defaults)"]
    w, h, pad = 360, 240, 44
    img = Image.new("RGB", (w * len(options), h * len(metrics)), "white")
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    for row, metric in enumerate(metrics):
        for col, option in enumerate(options):
            x0, y0 = col * w, row * h
            points = [(_text(_frozen(r["options"].get(option, ""))), r["metrics"].get(metric)) for r in records]
            points = [(x, v) for x, v in points if v is not None]
            draw.text((x0 + pad, y0 + 6), f"{metric} vs {option}", fill="black", font=font)
            draw.rectangle((x0 + pad, y0 + 24, x0 + w - 12, y0 + h - pad + 4), outline="#999999")
            if not points:
                continue
            xs = list(dict.fromkeys(x for x, _ in points))
            lo, hi = min(v for _, v in points), max(v for _, v in points)
            hi = hi if hi > lo else lo + 1
            ys = lambda v: y0 + h - pad - (v - lo) / (hi - lo) * (h - pad - 32)  # noqa: E731
            draw.text((x0 + 2, y0 + 24), f"{hi:.3g}", fill="black", font=font)
            draw.text((x0 + 2, y0 + h - pad - 8), f"{lo:.3g}", fill="black", font=font)
            for i, x in enumerate(xs):
                cx = x0 + pad + (i + 0.5) * (w - pad - 12) / len(xs)
                vals = [v for px, v in points if px == x]
                for v in vals:
                    draw.ellipse((cx - 3, ys(v) - 3, cx + 3, ys(v) + 3), fill="#aaaaaa")
                draw.line((cx, ys(min(vals)), cx, ys(max(vals))), fill="black")
                mean = sum(vals) / len(vals)
                draw.line((cx - 10, ys(mean), cx + 10, ys(mean)), fill="black", width=3)
                draw.text((cx - 3 * len(x[:16]), y0 + h - pad + 10), x[:16], fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_atomic(path, buf.getvalue())


def write_results(out: Path, cfg: SweepConfig, records: list[dict]) -> dict:
    """results.json, results.md and plot.png of the cells finished so far, each written atomically."""
    names, metrics = [n for n, _ in cfg.grid], list(cfg.metrics)
    rows = summarize(records, names, metrics)
    result = dict(output=str(out), model=cfg.model, metrics=metrics, grid=names, cells=records, table=rows)
    write_atomic(out / "results.json", json.dumps(result, indent=2, default=str))
    write_atomic(out / "results.md", markdown(rows, names, metrics))
    plot(records, names, metrics, out / "plot.png")
    return result


# --- the sweep ------------------------------------------------------------------------------------

def check_sweep_output(cfg: SweepConfig) -> Path:
    """The output folder, checked: new, empty, or a sweep's (resumed; with `overwrite` started afresh)."""
    out = Path(cfg.output).resolve()
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output {out} is a file; a sweep writes a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / SPEC_FILE).is_file():
        raise OutputExistsError(f"output folder {out} exists and holds no sweep ({SPEC_FILE}); choose another")
    return out


def fp32_images(cfg: SweepConfig, out: Path, progress: bool) -> str:
    """The fp32 model's images on the sweep's seeds (for psnr and ssim), made once into out/fp32-images."""
    folder = out / "fp32-images"
    if not (folder / "generate.json").is_file():
        try:
            fp32 = Bundle.from_pretrained(cfg.model, "fp32")
        except BundleError:
            fp32 = export(ExportConfig(model=cfg.model))
        prompts = tuple(read_prompts(cfg.prompts)) if cfg.prompts else ()
        generate(GenerateConfig(model=str(fp32.path), output=str(folder), overwrite=True, num_images=cfg.images,
                                prompts=prompts, sampling=cfg.sampling, runtime=cfg.runtime, cluster=cfg.cluster),
                 progress)
    return str(folder)


def sweep(cfg: SweepConfig, progress: bool = True, log=None) -> dict:
    """Run every cell of the sweep not yet in cfg.output (quantize, generate, score), writing each
    as it finishes and the results after each; returns the results (results.json's content).
    `log`: a callable given a line per cell."""
    log = log or (lambda line: None)
    out = check_sweep_output(cfg)
    drift = bool({"psnr", "ssim"} & set(cfg.metrics))
    planned = cells(cfg, str(out / "fp32-images") if drift else None)  # every config checked here
    with connect(cfg.cluster) if cfg.cluster else contextlib.nullcontext():  # checked before any work
        if cfg.overwrite and (out / SPEC_FILE).is_file():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / SPEC_FILE, cfg.to_json())
        if drift:
            fp32_images(cfg, out, progress)
        records, resumed = [], 0
        for i, cell in enumerate(planned, 1):
            folder = out / "cells" / cell.name
            if (folder / "result.json").is_file():
                records.append(json.loads((folder / "result.json").read_text()))
                resumed += 1
                continue
            records.append(run_cell(cell, out, cfg.metrics, progress))
            write_results(out, cfg, records)
            log(f"cell {i}/{len(planned)} {cell.name}: " + ", ".join(
                f"{m} {v:.4g}" for m, v in records[-1]["metrics"].items() if v is not None))
        result = write_results(out, cfg, records)
    result["resumed_cells"] = resumed
    return result

