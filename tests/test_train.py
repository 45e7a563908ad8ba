import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from edge_dm.data import load_images, to_model_range, to_uint8
from edge_dm.errors import ConfigError, DataError
from edge_dm.train import TrainConfig, train


@pytest.fixture
def tiny_tar(tmp_path):
    folder = tmp_path / "cifar10" / "train" / "cat"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    path = tmp_path / "cifar.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tmp_path / "cifar10", arcname="cifar10")
    return path


def test_images_from_tar_and_folder_agree(tiny_tar, tmp_path):
    a = load_images(tiny_tar)
    b = load_images(tmp_path / "cifar10")
    assert a.shape == (6, 32, 32, 3) and (a == b).all()
    assert (to_uint8(to_model_range(a)) == a).all()
    with pytest.raises(DataError):
        load_images(tmp_path / "nothing-here")


def test_train_checkpoints_and_resumes(tiny_tar, tmp_path):
    cfg = TrainConfig(data=str(tiny_tar), output=str(tmp_path / "run"), max_steps=2, batch_size=2,
                      block_out_channels=(32, 32, 32, 32), warmup_steps=1)
    train(cfg, log=lambda s: None)
    assert json.loads((tmp_path / "run" / "train_state.json").read_text())["step"] == 2
    train(TrainConfig(**dict(cfg.__dict__, max_steps=3)), log=lambda s: None)  # resumes at step 2
    assert json.loads((tmp_path / "run" / "train_state.json").read_text())["step"] == 3
    from diffusers import UNet2DModel

    ema = UNet2DModel.from_pretrained(tmp_path / "run" / "ema")
    assert tuple(ema.config.block_out_channels) == (32, 32, 32, 32)


def test_bad_train_options():
    with pytest.raises(ConfigError):
        TrainConfig(data="x", output="y", ema_decay=1.5)
