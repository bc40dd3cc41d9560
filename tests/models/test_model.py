import json
import shutil

import numpy as np
import pytest
import torch

from osteo_batch.models.backbones import UnknownBackboneError, get_backbone, resolve_weights
from osteo_batch.models.model import ModelDirError, load_model_dir, normalise


def test_model_dir_has_weights_config_and_card(tiny_model):
    d = tiny_model.model_dir
    for f in ("model.safetensors", "config.json", "card.json", "card.html"):
        assert (d / f).is_file(), f
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["backbone"] == "dinov2_tiny_demo" and cfg["img_size"] == 168 and len(cfg["mean"]) == 3
    assert 0 < cfg["threshold"] < 1
    card = json.loads((d / "card.json").read_text())
    v = card["validation"]
    assert 0 <= v["auc_ci95"][0] <= v["auc"] <= v["auc_ci95"][1] <= 1
    assert 0 <= v["sensitivity"] <= 1 and 0 <= v["specificity"] <= 1
    assert card["random_init"] is True and "random" in card["weights"]
    assert card["ceiling"]["auc_validation"] is not None
    assert card["merge_max_abs_diff"] < 1e-4, "merged LoRA must give the same outputs"
    bone = card["bone"]
    assert bone["images"] > 0 and 0 <= bone["iou_bone"] <= 1 and 0 <= bone["iou_bone_random"] <= 1
    assert 0 < bone["bone_area_share"] < 0.5 and abs(bone["nonbone_area_share"] - bone["bone_area_share"]) < 0.02
    assert 0 <= card["calibration"]["ece"] <= 1
    assert sum(b["n"] for b in card["calibration"]["bins"]) == card["data"]["val_images"]
    assert set(card["subgroups"]) == {"age_band", "view", "modality", "manufacturer"}
    html = (d / "card.html").read_text()
    assert "random weights" in html and "DXA confirms" in html
    assert html.count('src="data:image/png;base64,') == 2, "ROC and reliability plots, inlined"
    assert v["macro_auc_ci95"][0] <= v["macro_auc"] <= v["macro_auc_ci95"][1]
    assert 0 <= v["accuracy_3class"] <= 1 and 0 <= v["accuracy_at_threshold"] <= 1
    assert v["roc"]["fpr"][0] == 0 and v["roc"]["tpr"][-1] == 1


def test_model_id_is_a_content_hash(tiny_model, tmp_path):
    m = load_model_dir(tiny_model.model_dir)
    assert m.model_id == tiny_model.model_id
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model.model_dir, copy)
    assert load_model_dir(copy).model_id == m.model_id, "same content, same ID wherever it lives"
    cfg = json.loads((copy / "config.json").read_text())
    cfg["threshold"] = 0.123
    (copy / "config.json").write_text(json.dumps(cfg))
    assert load_model_dir(copy).model_id != m.model_id


def test_loaded_model_scores_a_batch(tiny_model):
    m = load_model_dir(tiny_model.model_dir)
    x = torch.rand(2, 1, m.config.img_size, m.config.img_size)
    with torch.inference_mode():
        p = torch.softmax(m.module(normalise(x, m.config)), 1)
    assert p.shape == (2, 3) and torch.allclose(p.sum(1), torch.ones(2))


def test_broken_model_dirs_say_what_is_wrong(tiny_model, tmp_path):
    with pytest.raises(ModelDirError, match="not a directory"):
        load_model_dir(tmp_path / "nothing")
    d = tmp_path / "m"
    shutil.copytree(tiny_model.model_dir, d)
    (d / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelDirError, match="cannot be read"):
        load_model_dir(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelDirError, match="model.safetensors is missing"):
        load_model_dir(d)


def test_weights_are_safetensors_only(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="only .safetensors"):
        resolve_weights(tmp_path / "w.pth")
    with pytest.raises(FileNotFoundError):
        resolve_weights(tmp_path / "folder-without-weights")


def test_unknown_backbone_suggests_names():
    with pytest.raises(UnknownBackboneError, match="did you mean dinov2_small"):
        get_backbone("dinov2_smal")


def test_pretrained_backbone_loads_from_a_local_file(tmp_path):
    """The path a site takes with real DINOv2 weights, with a random stand-in file."""
    import timm
    from safetensors.torch import save_file

    from osteo_batch.models.backbones import build, load_backbone_weights

    spec = get_backbone("dinov2_tiny_demo")
    donor = timm.create_model(spec.timm_arch, pretrained=False, img_size=spec.img_size, num_classes=0, **spec.kwargs)
    save_file(donor.state_dict(), str(tmp_path / "model.safetensors"))
    model = build(spec.name, spec.timm_arch, spec.img_size, spec.kwargs, 3)
    info = load_backbone_weights(model, tmp_path)
    assert len(info["sha256"]) == 64
    assert torch.equal(model.blocks[0].attn.qkv.weight, donor.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("backbone", ["dinov2_hf_tiny_demo", "clip_tiny_demo"])
def test_other_families_train_merge_and_explain(backbone, tmp_path, cohort_dir):
    """A Hugging Face Dinov2 folder and a CLIP ViT file, saved as a site would bring them,
    loaded through --weights, trained with LoRA, merged, and explained with Grad-CAM."""
    from safetensors.torch import save_file

    from osteo_batch import pipeline
    from osteo_batch.models.backbones import get_backbone
    from osteo_batch.models.gradcam import cam_maps
    from osteo_batch.models.train import TrainConfig, train

    spec = get_backbone(backbone)
    torch.manual_seed(1)
    if spec.family == "hf":
        from transformers import Dinov2Config, Dinov2Model

        weights = tmp_path / "hf-checkpoint"
        donor = Dinov2Model(Dinov2Config(**{k: v for k, v in spec.hf_defaults.items() if k != "model_type"}))
        donor.save_pretrained(weights, safe_serialization=True)
        probe = lambda m: m.backbone.embeddings.patch_embeddings.projection.weight  # noqa: E731
        donor_w = donor.embeddings.patch_embeddings.projection.weight
    else:
        import timm

        donor = timm.create_model(spec.timm_arch, pretrained=False, img_size=spec.img_size, num_classes=0, **spec.kwargs)
        weights = tmp_path / "clip.safetensors"
        save_file(donor.state_dict(), str(weights))
        probe = lambda m: m.patch_embed.proj.weight  # noqa: E731
        donor_w = donor.patch_embed.proj.weight

    work = tmp_path / "work"
    s = pipeline.load_settings(None, workdir=work, archive=cohort_dir.archive, dxa_csv=cohort_dir.dxa_csv)
    pipeline.load_dxa_stage(pipeline.RunContext.for_index(s, "t"))
    pipeline.sweep_stage(pipeline.RunContext.for_index(s, "t"))
    with pipeline.open_store(s) as st:
        res = train(st, work / "m", TrainConfig(backbone=backbone, weights=str(weights), epochs=1, workers=0))
    assert res.card["merge_max_abs_diff"] < 1e-4
    assert res.card["weights_sha256"] and not res.card["random_init"]
    m = load_model_dir(work / "m")
    assert m.config.family == spec.family
    # LoRA was merged into the pretrained weights: the patch embedding (not adapted) is the donor's
    assert torch.equal(probe(m.module), donor_w)
    x = torch.rand(2, 1, m.config.img_size, m.config.img_size)
    maps = cam_maps(m.module, m.config, x)
    assert maps.shape == (2, m.config.img_size, m.config.img_size) and np.isfinite(maps).all()


def test_register_tokens_are_dropped_before_the_heat_map():
    """DINOv2 with 4 register tokens: 5 prefix tokens come off before tokens fold into the patch grid."""
    import timm

    from osteo_batch.models.gradcam import cam_maps
    from osteo_batch.models.model import ModelConfig

    m = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=56, embed_dim=48, depth=2,
                          num_heads=2, num_classes=3, init_values=1.0)
    assert m.num_prefix_tokens == 5
    cfg = ModelConfig.for_backbone("dinov2_small_reg4")
    cfg.img_size = 56
    maps = cam_maps(m, cfg, torch.rand(2, 1, 56, 56))
    assert maps.shape == (2, 56, 56) and np.isfinite(maps).all()
