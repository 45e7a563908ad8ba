"""edge_dm.Pipeline, the Python API: same seed, same image, however the run is batched."""
import numpy as np

from edge_dm import DeviceConfig, Pipeline, SamplingConfig


def test_call_returns_pil_images_and_their_seeds(tiny_bundle):
    out = Pipeline.from_pretrained(str(tiny_bundle.path))(num_images=3, steps=3, seed=7)
    assert out.seeds == [7, 8, 9] and out.images[0].size == (8, 8)
    arrays = Pipeline.from_pretrained(str(tiny_bundle.path))(num_images=3, steps=3, seed=7, output_type="np").images
    np.testing.assert_array_equal(np.asarray(out.images[2]), arrays[2])


def test_later_calls_reuse_the_compiled_unet(tiny_bundle):
    pipe = Pipeline(tiny_bundle, DeviceConfig(batch_size=2, parallel=1))
    first = pipe.sample(4, SamplingConfig(steps=3, seed=0))
    net = pipe.last_denoiser.net
    assert net.compile_seconds > 0 and net.calls == 6  # 2 batches x 3 steps
    again = pipe.sample(4, SamplingConfig(steps=3, seed=0))
    assert pipe.last_denoiser.net is net and net.compile_seconds == 0 and net.calls == 6  # this call's own
    np.testing.assert_array_equal(again, first)
    pipe.sample(4, SamplingConfig(steps=3, seed=0, cache_interval=2))  # other compile options: another net
    assert pipe.last_denoiser.net is not net
