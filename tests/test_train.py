import json

import pytest
from tiny import write_cifar_tar

from edge_dm.data import load_images
from edge_dm.errors import ConfigError, DataError, ModelNotFoundError
from edge_dm.images import to_model_range, to_uint8
from edge_dm.jobs.training import TrainConfig, train


@pytest.fixture
def tiny_tar(tmp_path):
    return write_cifar_tar(tmp_path, {"cat": 6})


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
    for decay in cfg.ema_decays:
        assert (tmp_path / "run" / f"ema-{decay}" / "config.json").exists()


def test_fine_tune_starts_from_init_weights(tiny_tar, tmp_path):
    import torch
    from diffusers import UNet2DModel

    base = dict(data=str(tiny_tar), max_steps=1, batch_size=2, block_out_channels=(32, 32, 32, 32), warmup_steps=1)
    train(TrainConfig(output=str(tmp_path / "a"), **base), log=lambda s: None)
    # a near-zero learning rate: after one step the fine-tuned EMA must still be the init weights
    train(TrainConfig(output=str(tmp_path / "b"), init=str(tmp_path / "a" / "ema"), lr=1e-12, seed=1, **base),
          log=lambda s: None)
    a = UNet2DModel.from_pretrained(tmp_path / "a" / "ema").state_dict()
    b = UNet2DModel.from_pretrained(tmp_path / "b" / "ema").state_dict()
    fresh = UNet2DModel(**TrainConfig(output="x", seed=1, **base).unet_config()).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not all(torch.allclose(a[k], fresh[k]) for k in a)  # the check can fail: init != random
    with pytest.raises(ModelNotFoundError):
        train(TrainConfig(output=str(tmp_path / "c"), init=str(tmp_path / "nothing"), **base), log=lambda s: None)
    assert not (tmp_path / "c").exists()  # a bad --init fails before anything is written
    from click.testing import CliRunner

    from edge_dm.cli import main

    r = CliRunner().invoke(main, ["train", "--data", str(tiny_tar), "--output", str(tmp_path / "d"),
                                  "--init", str(tmp_path / "a" / "ema"), "--channels", "32,64,64,64"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "architecture differs" in r.output
    assert not (tmp_path / "d").exists()


def test_bad_train_options():
    with pytest.raises(ConfigError):
        TrainConfig(data="x", output="y", ema_decays=(0.9995, 1.5))


def test_fine_tune_emas_keep_their_full_decay_from_the_first_step(tiny_tar, tmp_path):
    """From --init the EMAs average from the init on (no warm-up): after one step each EMA is
    d * init + (1 - d) * weights, not the weights themselves as warm-up's decay of 0.18 would nearly give."""
    import torch
    from diffusers import UNet2DModel

    base = dict(data=str(tiny_tar), max_steps=1, batch_size=2, block_out_channels=(32, 32, 32, 32), warmup_steps=1)
    train(TrainConfig(output=str(tmp_path / "a"), **base), log=lambda s: None)
    cfg = TrainConfig(output=str(tmp_path / "b"), init=str(tmp_path / "a" / "ema"), lr=1e-2, seed=1,
                      ema_decays=(0.5, 0.9), **base)
    train(cfg, log=lambda s: None)
    init = UNet2DModel.from_pretrained(tmp_path / "a" / "ema").state_dict()
    weights = torch.load(tmp_path / "b" / "checkpoint.pt", map_location="cpu")["model"]
    moved = [k for k in init if init[k].is_floating_point() and not torch.allclose(init[k], weights[k])]
    assert moved  # the step changed the weights, so the check below can fail
    for d in cfg.ema_decays:
        ema = UNet2DModel.from_pretrained(tmp_path / "b" / f"ema-{d}").state_dict()
        for k in moved:
            torch.testing.assert_close(ema[k], d * init[k] + (1 - d) * weights[k], atol=1e-6, rtol=1e-5)


def test_distillation_regresses_onto_the_teacher(tiny_tar, tmp_path):
    """A student started at its teacher's weights has (almost) nothing to learn from it: its loss is
    rounding noise, against the drawn noise's loss of order one (distill 0)."""
    base = dict(data=str(tiny_tar), max_steps=1, batch_size=2, block_out_channels=(32, 32, 32, 32), warmup_steps=1)
    train(TrainConfig(output=str(tmp_path / "t"), **base), log=lambda s: None)
    teacher = str(tmp_path / "t" / "ema")
    loss, logs = {}, []
    for w in (1.0, 0.0):
        out = tmp_path / f"s{w}"
        train(TrainConfig(output=str(out), init=teacher, teacher=teacher, distill=w, seed=3, **base), log=logs.append)
        loss[w] = json.loads((out / "train_state.json").read_text())["loss"]
    assert loss[1.0] < 1e-9 and loss[0.0] > 0.1, loss
    assert any("distilling from" in line for line in logs)
    with pytest.raises(ConfigError):
        TrainConfig(data="x", output="y", teacher=teacher, distill=1.5)
    with pytest.raises(ModelNotFoundError):
        train(TrainConfig(output=str(tmp_path / "c"), teacher=str(tmp_path / "nothing"), **base), log=lambda s: None)
    assert not (tmp_path / "c").exists()


def test_a_shallower_student_takes_the_inits_blocks_by_position():
    """BK-SDM-style init: a student with fewer layers per block gets the teacher's first resnets of
    each down level and the first and last of each up level; attention moved to another level starts
    as the identity, so the student computes what the teacher would without the dropped blocks."""
    import torch
    from diffusers import UNet2DModel

    from edge_dm.jobs.training import init_weights

    def unet(layers, attention_level, seed):
        torch.manual_seed(seed)
        cfg = TrainConfig(data="x", output="y", block_out_channels=(32, 32, 32, 32), layers_per_block=layers,
                          attention_level=attention_level)
        return UNet2DModel(**cfg.unet_config()).eval()

    teacher = unet(2, 1, seed=0)
    moved, plain = unet(1, 2, seed=1), unet(1, None, seed=2)
    copied, total = init_weights(moved, teacher)
    assert init_weights(plain, teacher) == (len(plain.state_dict()),) * 2
    assert copied < total  # the attention at 8x8 has no source
    t, s = teacher.state_dict(), moved.state_dict()
    for key in ("down_blocks.0.resnets.0.conv1.weight", "up_blocks.3.resnets.0.conv2.weight", "conv_out.weight"):
        assert torch.equal(s[key], t[key])
    # an up block's last resnet takes the level's input skip: the teacher's third, not its second
    assert torch.equal(s["up_blocks.3.resnets.1.conv1.weight"], t["up_blocks.3.resnets.2.conv1.weight"])
    assert not torch.equal(s["up_blocks.3.resnets.1.conv1.weight"], t["up_blocks.3.resnets.1.conv1.weight"])
    x, step = torch.randn(2, 3, 32, 32), torch.tensor([10, 900])
    with torch.no_grad():
        torch.testing.assert_close(moved(x, step).sample, plain(x, step).sample)
        assert not torch.allclose(moved(x, step).sample, teacher(x, step).sample, atol=1e-3)
    with pytest.raises(ValueError):
        init_weights(unet(2, 1, seed=0), unet(1, 1, seed=0))  # deeper than the init
    with pytest.raises(ConfigError):
        TrainConfig(data="x", output="y", attention_level=4)


def test_cli_attention_level(tiny_tar, tmp_path):
    from click.testing import CliRunner
    from diffusers import UNet2DModel

    from edge_dm.cli import main

    base = ["train", "--data", str(tiny_tar), "--channels", "32,32,32,32", "--batch-size", "2", "--minutes", "0.001"]
    r = CliRunner().invoke(main, base + ["--output", str(tmp_path / "a"), "--attention-level", "none"])
    assert r.exit_code == 0, r.output
    config = UNet2DModel.load_config(tmp_path / "a" / "ema")
    assert "AttnDownBlock2D" not in config["down_block_types"]
    r = CliRunner().invoke(main, base + ["--output", str(tmp_path / "b"), "--attention-level", "4"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "attention_level" in r.output
    assert not (tmp_path / "b").exists()
    for bad in ("1,2", "top"):  # one level, or none: a list is not taken for its first number
        r = CliRunner().invoke(main, base + ["--output", str(tmp_path / "c"), "--attention-level", bad])
        assert r.exit_code == 1 and r.output.count("\n") == 1 and "--attention-level" in r.output
    assert not (tmp_path / "c").exists()
