"""GenEval's own detector through transformers, checked against mmdetection's code: rewards/convert_mask2former.py
and rewards/mask2former.py against a fixture that mmdet 2.28.2 made from GenEval's config with small random weights
(tests/data/geneval_mask2former/make_fixture.py: the model input after mmdet's test pipeline, the last decoder
layer's class and mask logits, the final instances), and the converter's key map against the real Swin-S config."""
import json
import os

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from rewards import convert_mask2former as conv  # noqa: E402
from rewards.mask2former import Mask2FormerDetector, load_mask2former, resize_u8  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "geneval_mask2former")
CKPT = os.path.join(DATA, "tiny_mmdet.pth")
SLOW = pytest.mark.slow  # the first test to build a Mask2Former imports transformers' modeling code: ~9 s on 2 cores


@pytest.fixture(scope="module")
def io():
    with np.load(os.path.join(DATA, "tiny_io.npz")) as f:
        arrays = dict(f)
    images = []
    for i in range(sum(k.startswith("image") for k in arrays)):
        img = arrays[f"image{i}"]
        masks = np.unpackbits(arrays[f"inst_masks{i}"], axis=-1, count=img.shape[1]).astype(bool)
        images.append({"image": torch.from_numpy(img).permute(2, 0, 1)[None],
                       "pixels": torch.from_numpy(arrays[f"pixels{i}"]), "cls": torch.from_numpy(arrays[f"cls{i}"]),
                       "masks": torch.from_numpy(arrays[f"masks{i}"]), "labels": arrays[f"labels{i}"],
                       "boxes": arrays[f"boxes{i}"], "inst_masks": masks})
    return images


@pytest.fixture(scope="module")
def converted():
    sd, cfg, classes = conv.read_checkpoint(CKPT)
    model, pipe = conv.convert(sd, cfg, classes)
    return model, pipe, classes


def mmdet_instances(ref, classes, min_score):
    """mmdet's final instances over min_score, best first: [(class, score, box, mask)]."""
    order = [j for j in np.argsort(-ref["boxes"][:, 4], kind="stable") if ref["boxes"][j, 4] > min_score]
    return [(classes[ref["labels"][j]], float(ref["boxes"][j, 4]), tuple(ref["boxes"][j, :4].tolist()),
             ref["inst_masks"][j]) for j in order]


def assert_same_instances(ours, ref, classes, min_score=0.05):
    """Same classes, scores, boxes and masks, best first (mmdet's topk is unsorted: compare sorted by score)."""
    theirs = mmdet_instances(ref, classes, min_score)
    mine = sorted((d for d in ours if d["score"] > min_score), key=lambda d: -d["score"])
    assert len(theirs) >= 5 and len(mine) == len(theirs)
    for d, (cls, score, box, mask) in zip(mine, theirs):
        assert d["class"] == cls and d["score"] == pytest.approx(score, abs=1e-5) and d["box"] == box
        assert torch.equal(d["mask"], torch.from_numpy(mask))


@SLOW
def test_fixture_is_geneval_config_shrunk(converted, io):
    model, pipe, classes = converted
    cfg, bb = model.config, model.config.backbone_config
    assert (bb.embed_dim, bb.depths, bb.num_heads, bb.window_size, bb.mlp_ratio) == (8, [2] * 4, [2, 2, 4, 4], 3, 2)
    assert (cfg.hidden_dim, cfg.encoder_layers, cfg.decoder_layers, cfg.num_queries) == (32, 2, 4, 10)
    assert (cfg.num_labels, cfg.num_attention_heads, cfg.encoder_feedforward_dim, cfg.dim_feedforward) == \
           (80, 4, 64, 64)
    assert pipe == {"scale": [200, 128], "size_divisor": 32, "pad_value": 128.0, "mean": [123.675, 116.28, 103.53],
                    "std": [58.395, 57.12, 57.375], "to_rgb": True, "max_per_image": 100}
    assert classes[0] == "person" and len(classes) == 80
    # a non-square image padded at the bottom and right, an enlarged and a reduced one; instances over 0.3 in each
    assert [tuple(r["image"].shape[-2:]) for r in io] == [(40, 40), (36, 60), (150, 170)]
    assert [tuple(r["pixels"].shape[-2:]) for r in io] == [(128, 128), (128, 224), (128, 160)]
    assert all((r["boxes"][:, 4] > 0.3).sum() >= 5 for r in io)


@SLOW
def test_preprocessing_is_mmdets_test_pipeline(converted, io):
    """Resize to fit (OpenCV's 8-bit bilinear, bit for bit), pad with 128, normalise: mmdet's model input exactly."""
    det = Mask2FormerDetector(converted[0], **converted[1])
    for ref in io:
        pixels, _ = det.preprocess(ref["image"])
        torch.testing.assert_close(pixels[0], ref["pixels"], rtol=0, atol=1e-6)


@SLOW
def test_forward_matches_mmdet(converted, io):
    """The converted weights in transformers reproduce mmdet's class and mask logits on mmdet's own input."""
    model = converted[0]
    for ref in io:
        with torch.no_grad():
            out = model(pixel_values=ref["pixels"][None])
        torch.testing.assert_close(out.class_queries_logits[0], ref["cls"], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(out.masks_queries_logits[0], ref["masks"], rtol=1e-5, atol=1e-4)


@SLOW
def test_postprocessing_matches_mmdet(converted, io):
    """MaskFormerFusionHead's instances from mmdet's logits: classes, scores, boxes and masks."""
    det = Mask2FormerDetector(converted[0], **converted[1], min_score=0.0)
    classes = converted[2]
    for ref in io:
        nh, nw = det.resized_size(*ref["image"].shape[-2:])
        ours = det.postprocess(ref["cls"], ref["masks"], tuple(ref["pixels"].shape[-2:]), (nh, nw),
                               tuple(ref["image"].shape[-2:]))
        assert_same_instances(ours, ref, classes)


@SLOW
def test_detector_end_to_end_matches_mmdet(converted, io):
    """uint8 image in, instances out, as mmdet's inference_detector gives them (images batched two at a time)."""
    det = Mask2FormerDetector(converted[0], **converted[1], min_score=0.0)
    for ref in io:
        assert_same_instances(det(ref["image"].expand(2, -1, -1, -1))[1], ref, converted[2])


@SLOW
@pytest.mark.parametrize("broken", ["patch merging order", "swin q/k", "decoder self-attention k/v"])
def test_a_wrong_conversion_step_is_caught(monkeypatch, io, broken):
    """The fixture can fail: without PatchMerging's reorder, or with two of a fused projection's q/k/v blocks
    swapped, the logits leave the tolerance of test_forward_matches_mmdet by far."""
    if broken == "patch merging order":
        monkeypatch.setattr(conv, "UNFOLD_POSITION", (0, 1, 2, 3))
    else:
        split, (part, a, b) = conv.split_qkv, (("swin.", "q_proj", "k_proj") if broken == "swin q/k"
                                               else ("self_attn.", "k_proj", "v_proj"))

        def swapped(prefix, weight, bias, names=("q_proj", "k_proj", "v_proj")):
            if part in prefix:
                names = tuple({a: b, b: a}.get(n, n) for n in names)
            return split(prefix, weight, bias, names)
        monkeypatch.setattr(conv, "split_qkv", swapped)
    sd, cfg, classes = conv.read_checkpoint(CKPT)
    model, _ = conv.convert(sd, cfg, classes)
    with torch.no_grad():
        out = model(pixel_values=io[1]["pixels"][None])
    assert (out.masks_queries_logits[0] - io[1]["masks"]).abs().max() > 0.1


@SLOW
def test_every_key_of_the_real_swin_s_config_is_converted():
    """GenEval's real config (649 mmdet tensors) maps onto every tensor of transformers' model built from it (760;
    no weights: meta tensors of the listed shapes, model on the meta device)."""
    with open(os.path.join(DATA, "swin_s_keys.txt")) as f:
        shapes = {k: tuple(int(s) for s in v.split(",")) for k, v in (line.split() for line in f if line.strip())}
    assert len(shapes) == 649
    with open(os.path.join(DATA, "swin_s_config.txt")) as f:
        cfg = conv.parse_config(f.read())
    config = conv.hf_config(cfg)
    assert (config.backbone_config.depths, config.backbone_config.num_heads, config.decoder_layers) == \
           ([2, 2, 18, 2], [3, 6, 12, 24], 10)
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    out = conv.convert_state_dict(sd, config)
    with torch.device("meta"):
        model = transformers.Mask2FormerForUniversalSegmentation(config)
    conv.check_against_model(out, model)
    assert len(out) == 760
    n_mmdet = sum(t.numel() for k, t in sd.items() if not k.endswith("relative_position_index"))
    assert n_mmdet == 68_739_547 and sum(t.numel() for t in out.values()) == n_mmdet + 768 * 2 + 81
    assert conv.pipeline(cfg)["scale"] == [1333, 800]
    sd["panoptic_head.extra.weight"] = torch.empty(3, device="meta")
    with pytest.raises(conv.ConversionError, match="1 checkpoint tensors have no transformers counterpart"):
        conv.convert_state_dict(sd, config)


def test_resize_is_opencvs_fixed_point():
    """cv2.resize(INTER_LINEAR) of this uint8 image (OpenCV 4.14); float bilinear + rounding gives 128s in row 1."""
    img = torch.tensor([[[[255, 0, 255], [0, 255, 0]]]])
    assert resize_u8(img, (3, 5)).long().tolist() == [[[[255, 153, 0, 153, 255], [128, 127, 128, 127, 128],
                                                         [0, 102, 255, 102, 0]]]]
    assert resize_u8(img.expand(1, 1, 2, 3).repeat(1, 1, 2, 2), (2, 3)).shape == (1, 1, 2, 3)  # exact halving


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "geneval_mask2former"
    conv.main([CKPT, "--out", str(out)])
    return str(out)


@SLOW
def test_evaluate_detector_folder(converted_dir, monkeypatch, tmp_path):
    """evaluate.py --benchmark geneval --detector DIR: COCO rules, the converted detector with its own pipeline."""
    from types import SimpleNamespace

    import rewards.geneval_color
    from evals import geneval
    from evals.cli import main
    from evaluate import Args

    coco = [{"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"}]
    geneval.check(coco, SimpleNamespace(detector=converted_dir))
    with pytest.raises(ValueError, match="not one this detector knows"):  # the toy's classes
        geneval.check([{"tag": "single_object", "include": [{"class": "square", "count": 1}], "prompt": "a square"}],
                      SimpleNamespace(detector=converted_dir))
    monkeypatch.setattr(rewards.geneval_color, "load_color_classifier", lambda device: "colours")
    scorer = geneval.Scorer(converted_dir)
    assert isinstance(scorer.reward.detect, Mask2FormerDetector) and scorer.reward.colors == "colours"
    assert scorer.reward.detect.scale == (200, 128) and scorer.reward.detect.model.config.num_queries == 10
    with pytest.raises(SystemExit, match="unknown GenEval detector 'no_such_dir'.*rewards.convert_mask2former"):
        main(Args(detector="no_such_dir", device="cpu", progress=False, out=str(tmp_path)))


@SLOW
def test_converter_cli(tmp_path, capsys):
    out = tmp_path / "geneval_m2f"
    assert conv.main([CKPT, "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["config.json", "mmdet_pipeline.json", "model.safetensors"]
    assert json.loads((out / "mmdet_pipeline.json").read_text())["converted_from"] == "tiny_mmdet.pth"
    assert "GENEVAL_MASK2FORMER" in capsys.readouterr().out
    assert conv.main([CKPT, "--out", str(out)]) == 0  # a second run replaces a previous conversion
    det = load_mask2former(model=str(out))
    assert det.scale == (200, 128) and det.pad_value == 128.0 and "not comparable" not in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    for argv, match in (([CKPT, "--out", str(other)], "not a previous conversion"),
                        ([str(tmp_path / "none.pth")], "no such checkpoint file")):
        with pytest.raises(SystemExit) as e:
            conv.main(argv)
        assert match in str(e.value) and "\n" not in str(e.value)
    torch.save({"state_dict": {}}, tmp_path / "bare.pth")
    with pytest.raises(SystemExit, match="pass the model's dumped mmdet config with --config"):
        conv.main([str(tmp_path / "bare.pth")])


def test_parse_config_runs_no_code():
    assert conv.parse_config("a = dict(b=[1, -2.5], c=(None, 'x'))\nd = dict({'e.f': a}, g=True)") == \
           {"a": {"b": [1, -2.5], "c": (None, "x")}, "d": {"e.f": {"b": [1, -2.5], "c": (None, "x")}, "g": True}}
    for text in ("a = __import__('os').getcwd()", "import os", "a = dict(**b)", "a = [x for x in ()]"):
        with pytest.raises(conv.ConversionError):
            conv.parse_config(text)


@SLOW
def test_meta_weights_fallback_notes_once(monkeypatch, capsys):
    """Without a converted folder the detector is Meta's weights, and says once that scores are not GenEval's."""
    import rewards.mask2former as m2f

    backbone = transformers.SwinConfig(embed_dim=8, depths=[1] * 4, num_heads=[1] * 4, window_size=4,
                                       out_features=["stage1", "stage2", "stage3", "stage4"])
    tiny = transformers.Mask2FormerForUniversalSegmentation(transformers.Mask2FormerConfig(
        backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=32,
        dim_feedforward=32, encoder_layers=1, decoder_layers=2, num_attention_heads=2, num_queries=4, num_labels=80))
    monkeypatch.delenv(m2f.ENV, raising=False)
    monkeypatch.chdir(os.path.dirname(__file__))  # no weights/geneval_mask2former here
    monkeypatch.setattr(m2f, "pretrained", lambda load, src, **kw: tiny)
    monkeypatch.setattr(m2f, "_noted", set())
    assert m2f.detector_source() == m2f.MODEL_ID
    for _ in range(2):
        det = load_mask2former()
    err = capsys.readouterr().err
    assert err.count("not comparable with GenEval's") == 1 and "rewards.convert_mask2former" in err
    assert det.scale == (1333, 800) and det.pad_value == 128.0  # GenEval's pipeline all the same
