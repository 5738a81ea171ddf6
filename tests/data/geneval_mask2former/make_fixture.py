"""Make the GenEval-detector fixture from mmdetection's own code (run once; the tests only read its output).

GenEval scores images with mmdet 2.x's Mask2Former, config `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py`.
This script builds that very config with mmdet 2.28.2 and mmcv 1.7.2, shrinks its widths and depths (every module
type and state-dict key pattern stays), gives it seeded random weights, and runs mmdet's `inference_detector` on
three images (its own test pipeline, forward and instance post-processing). It writes, next to itself:

- tiny_mmdet.pth: an mmdet-style checkpoint {"meta": {"config": <config text>, "CLASSES": ...}, "state_dict"}, as
  mmdet's tools/train.py and publish_model.py save it; rewards/convert_mask2former.py reads the architecture from
  `meta`;
- tiny_io.npz: per image i, `image{i}` (H, W, 3 RGB uint8, GenEval reads PNGs as BGR: the BGR array is what mmdet
  gets), `pixels{i}` (the model's input after mmdet's resize / pad 128 / normalise), `cls{i}` and `masks{i}` (the
  last decoder layer's class and mask logits), and the final instances `labels{i}`, `boxes{i}` (x0, y0, x1, y1,
  score, as mmdet's bbox results) and `inst_masks{i}` (np.packbits of the binary masks at the image's size);
- swin_s_keys.txt and swin_s_config.txt: every state-dict key and shape of the REAL config (Swin-S, full widths,
  649 entries) and its config text as a checkpoint's `meta` holds it, for the completeness test.

The test pipeline's scale is shrunk from 1333x800 to 200x128 and Swin's window from 7 to 3 so that the fixture stays
small: transformers' Swin changes the window when a feature map is not larger than it, which mmdet does not, so
every stage here is kept larger than the window (GenEval's 1333x800 inputs are, with window 7).

Re-run (CPU only, about a minute): a Python 3.11 virtual environment with
    pip install torch==2.13.0 numpy 'opencv-python-headless<5' yapf==0.40.1 importlib_metadata==6.8.0 \
        pycocotools addict terminaltables scipy matplotlib six shapely 'setuptools<70'
    pip download mmcv==1.7.2 --no-deps --no-binary :all: --no-build-isolation
    MMCV_WITH_OPS=0 pip install --no-build-isolation --no-deps mmcv-1.7.2.tar.gz mmdet==2.28.2
then `python tests/data/geneval_mask2former/make_fixture.py`. mmcv without ops lacks its compiled `mmcv._ext`; off
CUDA mmcv's deformable attention takes its pure-PyTorch path, so a placeholder module that only satisfies the import
is enough. mmcv's checkpoint module imports torchvision, which is not used here: an empty placeholder stands in.
"""
import os
import sys
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py"  # GenEval's evaluation/evaluate_images.py default
SEED = 0


def _import_stubs():
    def missing(name):
        if name.startswith("__"):
            raise AttributeError(name)

        def op(*args, **kwargs):
            raise RuntimeError(f"mmcv was built without its compiled op {name}")
        return op

    ext = types.ModuleType("mmcv._ext")
    ext.__getattr__ = missing
    sys.modules["mmcv._ext"] = ext
    sys.modules["torchvision"] = types.ModuleType("torchvision")


def geneval_config():
    import mmcv
    import mmdet

    cfg = mmcv.Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs", "mask2former", CONFIG))
    cfg.model.backbone.init_cfg = None  # no download of ImageNet Swin weights
    return cfg


def shrink(cfg):
    """Small widths and depths, same module types; test scale 200x128 (see the docstring)."""
    bb = cfg.model.backbone
    bb.embed_dims, bb.depths, bb.num_heads, bb.window_size, bb.mlp_ratio = 8, [2, 2, 2, 2], [2, 2, 4, 4], 3, 2
    head = cfg.model.panoptic_head
    head.in_channels = [8, 16, 32, 64]
    head.feat_channels = head.out_channels = 32
    head.num_queries = 10
    pd = head.pixel_decoder
    pd.encoder.num_layers = 2
    pd.encoder.transformerlayers.attn_cfgs.update(embed_dims=32, num_heads=4)
    pd.encoder.transformerlayers.ffn_cfgs.update(embed_dims=32, feedforward_channels=64)
    pd.positional_encoding.num_feats = 16
    head.positional_encoding.num_feats = 16
    dec = head.transformer_decoder
    dec.num_layers = 3
    dec.transformerlayers.attn_cfgs.update(embed_dims=32, num_heads=4)
    dec.transformerlayers.ffn_cfgs.update(embed_dims=32, feedforward_channels=64)
    dec.transformerlayers.feedforward_channels = 64
    for pipeline in (cfg.test_pipeline, cfg.data.val.pipeline, cfg.data.test.pipeline):
        pipeline[1].img_scale = (200, 128)
    return cfg


@torch.no_grad()
def randomize(model, gen):
    """Seeded random weights that exercise every tensor: no zero, identity or uniform initialisation left, and
    peaked class logits so that some instances pass GenEval's 0.3 and 0.9 thresholds."""
    for name, p in model.named_parameters():
        if name.endswith("cls_embed.weight"):
            p.copy_(torch.randn(p.shape, generator=gen) * 3.0)
        elif p.dim() >= 2:
            p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
        elif name.endswith(".weight"):  # norms
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    for name, p in model.named_parameters():  # embeddings and position tables at unit scale
        if any(s in name for s in ("relative_position_bias_table", "query_embed", "query_feat", "level_embed",
                                   "level_encoding")):
            p.copy_(torch.randn(p.shape, generator=gen))


def images(gen):
    """A square image scaled up, a non-square one (padded strip at the bottom and right), one scaled down."""
    out = []
    for h, w in ((40, 40), (36, 60), (150, 170)):
        base = torch.randint(0, 256, (3, 6, 6), generator=gen).float()[None]  # smooth blobs, not pure noise
        img = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)[0]
        img = (img + 20 * torch.randn(img.shape, generator=gen)).clamp(0, 255).round().to(torch.uint8)
        out.append(img.permute(1, 2, 0).contiguous().numpy())
    return out


def real_keys():
    from mmdet.apis import init_detector

    cfg = geneval_config()
    model = init_detector(cfg, None, "cpu")
    lines = [f"{k} {','.join(map(str, v.shape))}" for k, v in model.state_dict().items()]
    with open(os.path.join(HERE, "swin_s_keys.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(HERE, "swin_s_config.txt"), "w") as f:
        f.write(cfg.pretty_text)
    print(f"swin_s_keys.txt: {len(lines)} entries of {CONFIG}")


def main():
    _import_stubs()
    import mmdet
    from mmdet.apis import inference_detector, init_detector

    assert mmdet.__version__ == "2.28.2", mmdet.__version__
    real_keys()
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    cfg = shrink(geneval_config())
    model = init_detector(cfg, None, "cpu")
    randomize(model, gen)
    model.eval()

    from mmdet.datasets import CocoDataset

    model.CLASSES = CocoDataset.CLASSES  # what mmdet's training saves in meta, as a trained checkpoint holds it
    meta = {"config": cfg.pretty_text, "CLASSES": tuple(model.CLASSES), "mmdet_version": mmdet.__version__,
            "epoch": 50, "iter": 368750}
    # saved as mmdet's tools/model_converters/publish_model.py saves its released checkpoints (the legacy format)
    torch.save({"meta": meta, "state_dict": model.state_dict()}, os.path.join(HERE, "tiny_mmdet.pth"),
               _use_new_zipfile_serialization=False)

    captured = {}
    model.backbone.register_forward_pre_hook(lambda m, args: captured.update(pixels=args[0].clone()))
    model.panoptic_head.register_forward_hook(
        lambda m, args, out: captured.update(cls=out[0][-1].clone(), masks=out[1][-1].clone()))
    arrays = {}
    for i, img in enumerate(images(gen)):
        bboxes, masks = inference_detector(model, np.ascontiguousarray(img[..., ::-1]))  # BGR, as cv2 reads a PNG
        labels = np.concatenate([np.full(len(b), c) for c, b in enumerate(bboxes)])
        boxes = np.concatenate(bboxes).astype(np.float32)
        inst = np.stack([m for per_class in masks for m in per_class])
        arrays.update({f"image{i}": img, f"pixels{i}": captured["pixels"][0].numpy(),
                       f"cls{i}": captured["cls"][0].numpy(), f"masks{i}": captured["masks"][0].numpy(),
                       f"labels{i}": labels, f"boxes{i}": boxes, f"inst_masks{i}": np.packbits(inst, axis=-1)})
        print(f"image {i} {img.shape[:2]} -> input {tuple(captured['pixels'].shape[-2:])}, {len(labels)} instances, "
              f"{(boxes[:, 4] > 0.3).sum()} over 0.3, {(boxes[:, 4] > 0.9).sum()} over 0.9")
    np.savez_compressed(os.path.join(HERE, "tiny_io.npz"), **arrays)


if __name__ == "__main__":
    main()
