"""What every model family must do, on a tiny seeded model of each (tests/families.py): a new family
gets these tests by adding its case there.

- edge-dm's loop gives diffusers' own pipeline's images for the same seeds and prompts;
- an image depends on its seed only, however the run is batched or spread over requests;
- each DNTC record is exactly the UNet's input at its step of the full-precision pipeline;
- the int8 bundle holds int8 weights in every weighted operation it does not keep float, and only there;
- bad input is one `Error:` line and writes nothing.
"""
import numpy as np
import pytest
from click.testing import CliRunner
from families import CASES, reference_images, reference_unet_inputs

from edge_dm.cli import main
from edge_dm.configs import DeviceConfig, SamplingConfig
from edge_dm.pipeline import Pipeline

FAMILIES = list(CASES)


@pytest.fixture(scope="session", params=FAMILIES)
def case(request):
    return CASES[request.param]


@pytest.fixture(scope="session")
def models(case, request, tmp_path_factory):
    """(model folder, fp32 bundle, int8 bundle) of the case's tiny model: conftest's for the families
    other tests use too, else made here (the fp32 export where `edge-dm quantize` reuses it)."""
    from conftest import quantize_job

    from edge_dm.configs import CalibrationConfig, ExportConfig
    from edge_dm.jobs import export, quantize

    if case.family == "unet2d":
        return tuple(request.getfixturevalue(f) for f in ("tiny_model_dir", "tiny_bundle")) + \
            (request.getfixturevalue("tiny_int8")[0],)
    if case.family == "stable-diffusion":
        return request.getfixturevalue("sd_dir"), request.getfixturevalue("sd_fp32"), \
            request.getfixturevalue("sd_int8")[0]
    root = tmp_path_factory.mktemp(case.family)
    folder = case.build(root / "model")
    fp32 = export(ExportConfig(model=str(folder)))
    prompts = root / "prompts.txt"  # lane j of the calibration trajectories takes prompt j of the file
    prompts.write_text("\n".join(case.prompts) + "\n")
    cal = CalibrationConfig(num_samples=6, samples_per_trajectory=3, sampling=sampling(case, fp32),
                            prompts=str(prompts))
    int8, _ = quantize(quantize_job(folder, root / "int8", cal), progress=False)
    return folder, fp32, int8


def sampling(case, bundle, **more) -> SamplingConfig:
    """The case's sampling options, with the model's defaults for the rest."""
    return bundle.sampling(SamplingConfig(steps=case.steps, guidance_scale=case.guidance, **case.sampling, **more))


def prompts_of(case, n: int) -> list:
    return [case.prompts[i % len(case.prompts)] for i in range(n)] if case.prompts else []


F32 = dict(precision_hint="f32")


def test_loop_equals_the_diffusers_pipeline(case, models):
    folder, fp32, _ = models
    s = sampling(case, fp32, seed=3)
    ours = Pipeline(fp32, DeviceConfig(batch_size=3, **F32)).sample(3, s, prompts_of(case, 3))
    ref = reference_images(case, folder, [3, 4, 5], prompts_of(case, 3), s)
    assert ours.shape == ref.shape
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1  # uint8 pixels, OpenVINO f32 against torch


@pytest.mark.parametrize("runtime", [dict(batch_size=2), dict(batch_size=3, parallel=2)])
def test_same_seed_same_bytes_however_batched(case, models, runtime):
    """fp32 at f32: the same bytes whatever the batch size, the number of images and the requests in
    flight. int8: the same for a given batch size (the shape of a UNet request; int8 kernels of another
    shape may round differently)."""
    _, fp32, int8 = models
    prompts = prompts_of(case, 5)
    s = sampling(case, fp32, seed=10)
    one = Pipeline(fp32, DeviceConfig(batch_size=1, **F32)).sample(5, s, prompts)
    np.testing.assert_array_equal(Pipeline(fp32, DeviceConfig(**runtime, **F32)).sample(5, s, prompts), one)
    tail = Pipeline(fp32, DeviceConfig(**runtime, **F32)).sample(2, s.replace(seed=13), prompts[3:])
    np.testing.assert_array_equal(tail, one[3:])  # seeds 13 and 14 alone give the same images
    s = sampling(case, int8, seed=10)
    one = Pipeline(int8, DeviceConfig(batch_size=runtime["batch_size"], parallel=1, **F32)).sample(5, s, prompts)
    np.testing.assert_array_equal(Pipeline(int8, DeviceConfig(**runtime, **F32)).sample(5, s, prompts), one)
    tail = Pipeline(int8, DeviceConfig(**runtime, **F32)).sample(2, s.replace(seed=13), prompts[3:])
    np.testing.assert_array_equal(tail, one[3:])


def test_each_dntc_record_is_the_unets_input_at_its_step(case, models):
    from edge_dm.calibration import CalibrationSet, assign_lanes

    folder, fp32, int8 = models
    cal = CalibrationSet.load(int8.path / "calibration.npz")
    s = SamplingConfig.from_dict(cal.recipe["sampling"])  # what the calibration sampled at
    assert set(cal.inputs) == set(fp32.family.conditioning.net_inputs_names)
    checked = 0
    for lane, members in enumerate(assign_lanes(cal.step, cal.recipe["samples_per_trajectory"])):
        prompt = case.prompts[lane % len(case.prompts)] if case.prompts else None
        seen = reference_unet_inputs(case, folder, s.seed + lane, prompt, s)
        for k in members:
            ref, rec = seen[int(cal.step[k])], cal.record(k)
            for name, value in rec.items():
                want = np.broadcast_to(ref[name], value.shape) if name == "timestep" else ref[name]
                np.testing.assert_allclose(value, want, atol=1e-4, err_msg=f"{case.family} {name}")
                checked += 1
    assert checked >= len(cal) * 2


def _weighted_ops(model) -> dict:
    """{op name: element type of its weight constant} of every Convolution and MatMul with a constant weight."""
    out = {}
    for op in model.get_ops():
        if op.get_type_name() not in ("Convolution", "MatMul"):
            continue
        node = op.input_value(1).get_node()
        while node.get_type_name() in ("Convert", "Multiply", "Subtract", "Reshape", "FakeQuantize", "Transpose") \
                and node.get_type_name() != "Constant":
            node = node.input_value(0).get_node()
        if node.get_type_name() == "Constant":
            out[op.get_friendly_name()] = node.get_element_type().get_type_name()
    return out


def test_int8_weights_exactly_where_not_kept_float(case, models):
    import re

    from edge_dm.quantize import int8_ops, op_counts

    _, fp32, int8 = models
    kept = int8.recipe["kept_float"]
    pattern = [re.compile(rf".*[./]{re.escape(k)}[^/]*/.*") for k in kept]
    weights = _weighted_ops(int8.read_model())
    floats = {n for n in weights if any(p.fullmatch(n) for p in pattern)}
    assert {n for n, t in weights.items() if t == "i8"} == set(weights) - floats
    counts = op_counts(int8.read_model())
    assert counts["int8_constants"] == len(weights) - len(floats) > 0
    assert set(weights) - floats <= int8_ops(int8.read_model())  # each reads a quantized activation too
    for component in int8.family.layout.components:
        if component != "unet":  # the other components stay float by default
            assert op_counts(int8.read_model(component)) == op_counts(fp32.read_model(component))


@pytest.mark.parametrize("which", [0, 1, 2])
def test_bad_input_is_one_line_and_writes_nothing(case, models, tmp_path, which):
    if which >= len(case.bad):
        pytest.skip(f"{case.family} has {len(case.bad)} bad-input cases")
    _, _, int8 = models
    args, message = case.bad[which]
    r = CliRunner().invoke(main, ["generate", "--model", str(int8.path), *args, "--output", str(tmp_path / "out")])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error:"), r.output
    assert message in lines[0], r.output
    assert not (tmp_path / "out").exists()


def test_int8_folder_runs_in_optimum_intel_and_openvino_genai(case, models):
    if not case.prompts:
        pytest.skip("an unconditional bundle has no optimum-intel or OpenVINO GenAI pipeline")
    generates_in_optimum_intel_and_genai(models[2], case.prompts[0])


def generates_in_optimum_intel_and_genai(int8, prompt: str) -> None:
    """The folder of `int8` makes a 32x32 image in its optimum-intel pipeline class and in OpenVINO GenAI."""
    import openvino_genai
    import optimum.intel

    size = dict(height=32, width=32)
    pipe = getattr(optimum.intel, int8.family.optimum_class).from_pretrained(str(int8.path))
    image = pipe(prompt, num_inference_steps=2, output_type="np", **size).images[0]
    assert image.shape == (32, 32, 3) and np.isfinite(image).all()
    out = openvino_genai.Text2ImagePipeline(str(int8.path), "CPU").generate(prompt, num_inference_steps=2, **size)
    assert out.data.shape == (1, 32, 32, 3)


def test_int8_components_are_what_quantize_was_asked_and_run_in_optimum_intel_and_genai(case, models, tmp_path):
    """`--vae int8` and `--text-encoder`: each component quantized as asked (W8A8: FakeQuantize; weights
    only: int8 constants and no FakeQuantize), the rest as exported, and the folder still runs in
    optimum-intel's pipeline class and OpenVINO GenAI. W8A8 text encoders on Stable Diffusion,
    weights-only on SDXL's two (the same component code for all families)."""
    if case.family not in ("stable-diffusion", "sdxl"):
        pytest.skip("one layout of each kind is enough: lcm's components are stable-diffusion's")
    modes = dict(vae="int8", text_encoder="int8" if case.family == "stable-diffusion" else "int8-weights")
    from conftest import quantize_job

    from edge_dm.configs import CalibrationConfig
    from edge_dm.jobs import quantize
    from edge_dm.jobs.quantization import component_option
    from edge_dm.quantize import op_counts

    folder, fp32, _ = models
    (tmp_path / "p.txt").write_text("\n".join(case.prompts) + "\n")
    cal = CalibrationConfig(num_samples=4, samples_per_trajectory=2, sampling=sampling(case, fp32),
                            prompts=str(tmp_path / "p.txt"))
    int8, summary = quantize(quantize_job(folder, tmp_path / "int8", cal, **modes), progress=False)
    for component in int8.family.layout.components:
        if component == "unet":
            continue
        ops, exported = op_counts(int8.read_model(component)), op_counts(fp32.read_model(component))
        mode = modes.get(component_option(component), "float")
        if mode == "float":
            assert ops == exported, component
        else:
            assert (ops["fake_quantize"] > 0) == (mode == "int8") and ops["int8_constants"] > 0, component
            assert summary["component_ops"][component] == ops
    assert {k: int8.recipe["config"][k] for k in modes} == modes
    generates_in_optimum_intel_and_genai(int8, case.prompts[0])
