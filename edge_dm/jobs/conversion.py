"""`edge-dm export`: a model as an OpenVINO IR bundle (fp32 or fp16 weights)."""
from __future__ import annotations

import time

from edge_dm.bundle import Bundle, default_bundle_path, open_bundle, recipe_of, write_recipe
from edge_dm.configs import ExportConfig
from edge_dm.models import load_model
from edge_dm.outputs import atomic_output, check_output


def export(cfg: ExportConfig) -> Bundle:
    """Convert cfg.model to an OpenVINO IR bundle at cfg.output (default: the bundle cache)."""
    out = check_output(cfg.output or default_bundle_path(cfg.model, cfg.precision), cfg.overwrite,
                       inputs=[cfg.model])
    m = load_model(cfg.model)
    with atomic_output(out, cfg.overwrite, inputs=[m.source]) as tmp:
        t0 = time.perf_counter()
        fields, _ = m.family.export(m, tmp, cfg.precision)
        write_recipe(tmp, recipe_of("export", m, cfg.precision, cfg, **fields,
                                    export_s=round(time.perf_counter() - t0, 2)))
    return open_bundle(out)
