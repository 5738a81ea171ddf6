"""Model-backed rewards on tiny random models built here (no download): GenEval on real images (Mask2Former
post-processing, CLIP colours, rules), CLIP score, GIT VQA, GroundingDINO and the T2I-R1 mix; shapes, ranges,
batching, and one-line errors when weights are missing."""
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

transformers = pytest.importorskip("transformers")

from common.coco_prompts import GENEVAL_CLASSES, GENEVAL_COLORS  # noqa: E402
from rewards.clip import CLIPEncoder, CLIPScore, clip_pixels  # noqa: E402
from rewards.gdino import (GroundingDinoReward, detection_prompt, nms_count, phrases,  # noqa: E402
                           position_score, task_score)
from rewards.geneval import GenEvalReward  # noqa: E402
from rewards.geneval_color import BACKGROUND, CLIPColorClassifier  # noqa: E402
from rewards.git_vqa import GitVQAReward, questions  # noqa: E402
from rewards.mask2former import Mask2FormerDetector, masks_to_boxes  # noqa: E402
from rewards import WeightedSum, parse_mix  # noqa: E402

WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue", "green", "object", "colored", "-", "yes", "no",
         "bench", "tv", "remote", "apple", "big", "table", "left", "right", "next", "to", "the"] + list(GENEVAL_COLORS)
WORDS = list(dict.fromkeys(WORDS))


# ----------------------------------------------------------------------------- tiny tokenizers and models


@pytest.fixture(scope="module")
def bert_tok():
    """BERT-style WordPiece tokenizer with bert-base-uncased's special ids: [PAD] 0, [UNK] 100, [CLS] 101,
    [SEP] 102, '.' 1012, '?' 1029 (GroundingDINO hard-codes its delimiter ids); our words from 1040."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = [f"[unused{i}]" for i in range(1040)]
    vocab[0], vocab[100], vocab[101], vocab[102], vocab[103] = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
    vocab[1012], vocab[1029] = ".", "?"
    vocab += [w for w in WORDS if w not in (".", "?")]
    tk = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                      special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


@pytest.fixture(scope="module")
def clip_tok():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                                pad_token="<pad>", unk_token="<unk>")


@pytest.fixture(scope="module")
def clip_model():
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(WORDS) + 4, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=2, eos_token_id=3,
                         pad_token_id=0),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2), projection_dim=16)
    return transformers.CLIPModel(cfg).eval()


@pytest.fixture(scope="module")
def encoder(clip_model, clip_tok):
    return CLIPEncoder(clip_model, clip_tok, batch_size=3)


@pytest.fixture(scope="module")
def git_reward(bert_tok):
    torch.manual_seed(0)
    cfg = transformers.GitConfig(
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2),
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=len(bert_tok),
        bos_token_id=101, eos_token_id=102, pad_token_id=0)
    model = transformers.GitForCausalLM(cfg).eval()
    for p in model.output.parameters():  # sharper next-token logits, so yes/no probabilities are not all ~0.5
        p.data.mul_(20)
    return GitVQAReward(model, bert_tok, image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, batch_size=3)


@pytest.fixture(scope="module")
def gdino_reward(bert_tok):
    from rehearsal_assets import tiny_gdino_config

    torch.manual_seed(0)
    model = transformers.GroundingDinoForObjectDetection(tiny_gdino_config(len(bert_tok))).eval()
    return GroundingDinoReward(model, bert_tok, box_threshold=0.3, scale=(128, 128), batch_size=2)


T2I_ROWS = [
    {"prompt": "a red cat", "nouns": ["cat"], "attr_nouns": ["red cat"], "task_type": "color"},
    {"prompt": "a cat left of a dog", "nouns": ["cat", "dog"], "task_type": "spatial",
     "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "on the left of"}},
    {"prompt": "two dogs", "nouns": ["dog"], "task_type": "numeracy", "numeracy_info": [{"obj_name": "dog", "num": 2}]},
    {"prompt": "a big table and a tv remote", "nouns": ["big table", "tv remote"], "attr_nouns": None,
     "task_type": "complex"},
    {"prompt": "nothing", "nouns": [], "attr_nouns": [], "task_type": "non"},
]


# ----------------------------------------------------------------------------- GenEval: Mask2Former path


class StubMask2Former(torch.nn.Module):
    """Returns designed logits: query 0 = class 15 (cat) with a rectangle mask; query 1 = dog, low score;
    query 2 = "no object"; query 3 = computer keyboard (class 66) with an empty mask."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(num_labels=80)

    def forward(self, pixel_values):
        b, _, hp, wp = pixel_values.shape
        cls = torch.zeros(b, 4, 81)
        cls[:, 0, 15], cls[:, 1, 16], cls[:, 2, 80], cls[:, 3, 66] = 10.0, 2.0, 10.0, 10.0
        masks = torch.full((b, 4, hp // 4, wp // 4), -10.0)
        masks[:, 0, 4:9, 2:7] = 10.0  # rows 4..8, cols 2..6 of the 1/4-resolution grid
        masks[:, 1] = 10.0
        return SimpleNamespace(class_queries_logits=cls, masks_queries_logits=masks)


def test_masks_to_boxes():
    m = torch.zeros(3, 6, 8, dtype=torch.bool)
    m[0, 1:3, 2:5] = True
    m[1, 5, 7] = True
    boxes = masks_to_boxes(m)
    assert boxes.tolist() == [[2, 1, 5, 3], [7, 5, 8, 6], [0, 0, 0, 0]]


def test_mask2former_postprocessing_follows_mmdet():
    det = Mask2FormerDetector(StubMask2Former(), scale=(64, 64))
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    out = det(images)
    assert len(out) == 2 and all(len(d) == 1 for d in out)  # dog: 0.085 < 0.3; keyboard: empty mask, score 0
    d = out[0][0]
    assert d["class"] == "cat" and d["color"] is None
    assert d["box"] == (8.0, 16.0, 28.0, 36.0)  # the rectangle's cells x 4 (bilinear x4 crosses 0 at cell edges)
    assert d["mask"].shape == (64, 64) and 20 * 20 - 4 <= d["mask"].sum() <= 20 * 20  # bilinear rounds the corners
    p_cat = torch.tensor([10.0] + [0.0] * 80).softmax(0)[0]
    assert 0.9 * p_cat < d["score"] < p_cat


def test_mask2former_resize_pad_and_crop():
    det = Mask2FormerDetector(StubMask2Former(), scale=(200, 100))
    pix, (nh, nw) = det.preprocess(torch.randint(0, 256, (1, 3, 50, 90)))
    assert (nh, nw) == (100, 180) and pix.shape[-2:] == (128, 192)  # fits 200x100, padded to multiples of 32
    pad = (128 - torch.tensor([123.675, 116.28, 103.53])) / torch.tensor([58.395, 57.12, 57.375])
    for strip in (pix[0, :, 100:, :], pix[0, :, :, 180:]):  # grey 128 padded before normalising (GenEval's config)
        torch.testing.assert_close(strip, pad[:, None, None].expand_as(strip))
    out = det(torch.randint(0, 256, (1, 3, 50, 90), dtype=torch.uint8))[0]
    assert [d["class"] for d in out] == ["cat"] and out[0]["mask"].shape == (50, 90)
    x0, y0, x1, y1 = out[0]["box"]
    assert 0 <= x0 < x1 <= 90 and 0 <= y0 < y1 <= 50


def test_mask2former_tiny_random_model():
    torch.manual_seed(0)
    backbone = transformers.SwinConfig(embed_dim=8, depths=[1] * 4, num_heads=[1] * 4, window_size=4, image_size=64,
                                       out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = transformers.Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32,
                                         hidden_dim=32, encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=1,
                                         decoder_layers=2, num_attention_heads=2, num_queries=10, num_labels=80)
    model = transformers.Mask2FormerForUniversalSegmentation(cfg).eval()
    det = Mask2FormerDetector(model, scale=(96, 64), min_score=0.0, max_per_image=20, batch_size=2)
    images = torch.randint(0, 256, (3, 3, 48, 72), dtype=torch.uint8)
    out = det(images)
    assert len(out) == 3 and all(len(d) <= 20 for d in out)
    for dets in out:
        for d in dets:
            assert d["class"] in GENEVAL_CLASSES and 0 <= d["score"] <= 1 and d["mask"].shape == (48, 72)
    single = det(images[1:2])[0]
    assert [(d["class"], round(d["score"], 5), d["box"]) for d in single] == \
           [(d["class"], round(d["score"], 5), d["box"]) for d in out[1]]
    with pytest.raises(ValueError, match="predicts 80 classes, expected 3"):
        Mask2FormerDetector(model, class_names=["a", "b", "c"])


class FakeColorEncoder:
    """image feature = one-hot of the palette colour nearest to the mean non-grey pixel; text feature = one-hot
    of the colour word in the text (the "object" template included): tests the plumbing, not CLIP."""

    device = torch.device("cpu")
    palette = torch.tensor([[1, 0, 0], [1, .5, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [.5, 0, .5], [1, .6, .8],
                            [.5, .3, .1], [0, 0, 0], [1, 1, 1]])

    def __init__(self):
        self.texts_seen = []
        self.batches = 0

    def image_features(self, crops, mode="crop"):
        self.batches += 1
        feats = []
        for c in crops:
            px = c.reshape(3, -1).t()
            px = px[(px - BACKGROUND).abs().sum(1) > 1e-6]
            mean = px.mean(0) if len(px) else torch.full((3,), BACKGROUND)
            feats.append(torch.nn.functional.one_hot((self.palette - mean).norm(dim=1).argmin(), 10).float())
        return torch.stack(feats)

    def text_features(self, texts):
        self.texts_seen += texts
        idx = [next(i for i, c in enumerate(GENEVAL_COLORS) if f" {c} " in f" {t.replace('-', ' ')} ") for t in texts]
        return torch.nn.functional.one_hot(torch.tensor(idx), 10).float()


def test_color_classifier_crops_on_grey_and_argmaxes():
    img = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    img[0, 2, 4:12, 4:12] = 255  # blue square
    img[0, 0, 20:28, 20:28] = 255  # red square; the rest black
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[4:12, 4:12] = True
    crop = CLIPColorClassifier.crop(img[0].float() / 255, {"box": (2.4, 2.6, 14.0, 14.0), "mask": mask})
    assert crop.shape == (3, 11, 12)  # PIL crop semantics: rounded box
    assert torch.allclose(crop[:, 0, 0], torch.full((3,), BACKGROUND)) and crop[2, 5, 5] == 1.0
    enc = FakeColorEncoder()
    clf = CLIPColorClassifier(enc)
    mask2 = torch.zeros(32, 32, dtype=torch.bool)
    mask2[20:28, 20:28] = True
    objs = [(0, {"class": "cat", "box": (4, 4, 12, 12), "mask": mask}),
            (0, {"class": "tv remote", "box": (0, 0, 32, 32), "mask": mask2}),
            (0, {"class": "cat", "box": (20, 20, 28, 28)})]  # no mask: the plain crop
    assert clf(img, objs) == ["blue", "red", "red"]
    assert enc.batches == 1  # every crop in one batch
    assert len(enc.texts_seen) == 2 * 30 and "a photo of a blue-colored tv remote" in enc.texts_seen


def test_color_classifier_tiny_clip(encoder):
    clf = CLIPColorClassifier(encoder)
    img = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    objs = [(b, {"class": "cat", "box": (3, 5, 30, 22), "mask": torch.rand(40, 40) > 0.5}) for b in (0, 1, 1)]
    colors = clf(img, objs)
    assert len(colors) == 3 and set(colors) <= set(GENEVAL_COLORS)
    assert clf.classifier("cat").shape == (16, 10)
    assert torch.allclose(clf.classifier("cat").norm(dim=0), torch.ones(10), atol=1e-5)


class FixedDetector:
    """Returns preset detections (COCO class names, scores, boxes); colours left to the classifier."""

    def __init__(self, dets):
        self.dets = dets

    def __call__(self, images_u8):
        assert images_u8.dtype == torch.uint8
        return [[dict(d) for d in ds] for ds in self.dets]


class FixedColors:
    def __init__(self, by_class):
        self.by_class, self.calls = by_class, []

    def __call__(self, images_u8, objects):
        self.calls.append([(b, d["class"]) for b, d in objects])
        return [self.by_class[d["class"]] for _, d in objects]


def _det(cls, score, box):
    return {"class": cls, "score": score, "box": box, "color": None}


def test_geneval_real_image_path_rules():
    metas = [
        {"tag": "color_attr", "include": [{"class": "tv remote", "count": 1, "color": "red"},
                                          {"class": "computer keyboard", "count": 1, "color": "blue"}],
         "prompt": "a photo of a red tv remote and a blue computer keyboard"},
        {"tag": "position", "include": [{"class": "dining table", "count": 1},
                                        {"class": "cat", "count": 1, "position": ["left of", 0]}],
         "prompt": "a photo of a cat left of a dining table"},
        {"tag": "counting", "include": [{"class": "dog", "count": 2}], "exclude": [{"class": "dog", "count": 3}],
         "prompt": "a photo of two dogs"},
        {"tag": "colors", "include": [{"class": "cat", "count": 1, "color": None}], "prompt": "a photo of a cat"},
    ]
    dets = [
        [_det("tv remote", 0.8, (0, 0, 10, 10)), _det("computer keyboard", 0.5, (20, 0, 40, 10)),
         _det("computer keyboard", 0.25, (0, 20, 10, 30))],  # below 0.3: dropped
        [_det("cat", 0.9, (0, 0, 10, 10)), _det("dining table", 0.9, (30, 0, 50, 10))],
        [_det("dog", 0.95, (0, 0, 5, 5)), _det("dog", 0.91, (10, 0, 15, 5)), _det("dog", 0.85, (20, 0, 25, 5))],
        [_det("cat", 0.6, (0, 0, 5, 5))],
    ]
    colors = FixedColors({"tv remote": "red", "computer keyboard": "green"})
    images = torch.rand(4, 3, 16, 16)
    strict = GenEvalReward(strict=True, detector=FixedDetector(dets), colors=colors)(images, [m["prompt"] for m in metas], metas)
    # colour asked once, in one call, for exactly the objects of classes whose prompt names a colour
    assert colors.calls == [[(0, "tv remote"), (0, "computer keyboard")]]
    assert strict.tolist() == [0.0, 1.0, 1.0, 1.0]  # keyboard is green; counting keeps only scores > 0.9
    partial = GenEvalReward(detector=FixedDetector(dets), colors=colors)(images, [m["prompt"] for m in metas], metas)
    assert partial.tolist() == pytest.approx([(1 + 1 + 1 + 0) / 4, 1.0, 1.0, 1.0])
    ev = GenEvalReward(strict=True, detector=FixedDetector(dets), colors=colors).evaluate(images, metas)
    assert ev == [("color_attr", False), ("position", True), ("counting", True), ("colors", True)]


def test_geneval_reward_with_tiny_models(encoder):
    torch.manual_seed(1)
    dets = [[_det("cat", 0.99, (2, 2, 20, 20))], [_det("cat", 0.99, (2, 2, 20, 20)), _det("cat", 0.7, (20, 2, 30, 9))]]
    meta = {"tag": "colors", "include": [{"class": "cat", "count": 1, "color": "red"}], "prompt": "a photo of a red cat"}
    r = GenEvalReward(detector=FixedDetector(dets), colors=CLIPColorClassifier(encoder))(
        torch.rand(2, 3, 32, 32), [meta["prompt"]] * 2, [meta] * 2)
    assert r.shape == (2,) and r[1] == 0.5 * (0 + 0)  # two cats: count clause 0, one extra 0-clause
    assert r[0] in (0.5, 1.0)


# ----------------------------------------------------------------------------- CLIP score


def test_clip_score_matches_features_and_batches(encoder, clip_model, clip_tok):
    images, prompts = torch.rand(5, 3, 48, 40), ["a red cat", "a dog", "a photo of a blue bench", "cat", "no"]
    r = CLIPScore(encoder)(images, prompts, [{}] * 5)
    assert r.shape == (5,) and torch.all(r.abs() <= 1 + 1e-6)
    tok = clip_tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        u8 = torch.floor(images * 255) / 255  # the release's to_pil_image (tests/test_reward_inputs.py)
        fi = clip_model.get_image_features(pixel_values=clip_pixels(u8, 32)).pooler_output
        ft = clip_model.get_text_features(**tok).pooler_output
    ref = torch.nn.functional.cosine_similarity(fi, ft)
    torch.testing.assert_close(r, ref, atol=1e-5, rtol=1e-5)
    one = torch.cat([CLIPScore(encoder)(images[i:i + 1], prompts[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(r, one, atol=1e-5, rtol=1e-5)


def test_clip_preprocessing_crop_geometry():
    img = torch.zeros(1, 3, 40, 80)
    img[..., 30:50] = 1.0  # a bright vertical band in the centre third of the width
    out = clip_pixels(img, 20, "crop", mean=(0, 0, 0), std=(1, 1, 1))
    assert out.shape == (1, 3, 20, 20)  # 40x80 -> 20x40, centre crop 20x20 keeps the band in the middle
    assert out[0, 0, 10, 10] > 0.9 and out[0, 0, 10, 0] < 0.1
    with pytest.raises(ValueError, match="unknown CLIP preprocessing mode"):
        clip_pixels(img, 20, "stretch")


# ----------------------------------------------------------------------------- GIT VQA


def test_git_questions():
    assert questions(T2I_ROWS[0]) == ["red cat?"]
    assert questions(T2I_ROWS[1]) is None and questions(T2I_ROWS[2]) is None
    assert questions(T2I_ROWS[3]) == ["big table?", "tv remote?"]  # attr_nouns null: nouns
    assert questions(T2I_ROWS[4]) == []


def test_git_reward_range_batching_and_yes_probability(git_reward, bert_tok):
    torch.manual_seed(0)
    images = torch.rand(5, 3, 40, 40)
    r = git_reward(images, [m["prompt"] for m in T2I_ROWS], T2I_ROWS)
    assert r.shape == (5,) and r[1] == 0 and r[2] == 0 and r[4] == 1
    assert 0 < r[0] < 1 and 0 < r[3] < 1
    one = torch.cat([git_reward(images[i:i + 1], [""], T2I_ROWS[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(r, one, atol=1e-5, rtol=1e-5)  # padding and batching do not change scores
    # reference for one question: [CLS] + tokens, softmax over the next-token logits, P(yes) / (P(yes) + P(no))
    ids = torch.tensor([[101] + bert_tok("tv remote?", add_special_tokens=False)["input_ids"]])
    pix = clip_pixels(images[3:4], 32, "crop", (0.5,) * 3, (0.5,) * 3)
    with torch.no_grad():
        p = git_reward.model(input_ids=ids, pixel_values=pix).logits[0, -1].softmax(-1)
    yes, no = bert_tok.convert_tokens_to_ids(["yes", "no"])
    p_tv = git_reward.yes_probability(pix, ["tv remote?"])[0]
    torch.testing.assert_close(p_tv, p[yes] / (p[yes] + p[no]), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- GroundingDINO


def test_detection_prompt_spans():
    caption, spans = detection_prompt(["cat", "tv remote", "big red table"])
    assert caption == "cat . tv remote . big red table."
    assert spans == [[(0, 3)], [(6, 8), (9, 15)], [(18, 21), (26, 31)]]
    assert [caption[a:b] for a, b in spans[2]] == ["big", "table"]


def test_position_score_and_nms():
    a, b = (0, 0, 10, 10), (30, 0, 40, 10)
    assert position_score("on the left of", a, b) == 1.0 and position_score("on the right of", a, b) == 0.0
    assert position_score("on the right of", b, a) == 1.0
    assert position_score("on the top of", (0, 0, 10, 10), (0, 40, 10, 50)) == 1.0
    assert position_score("on the bottom of", (0, 0, 10, 10), (0, 40, 10, 50)) == 0.0
    overlap = position_score("on the left of", (0, 0, 20, 10), (10, 0, 30, 10))  # IoU 1/3
    assert overlap == pytest.approx(0.1 / (1 / 3))
    assert position_score("near", (0, 0, 10, 10), (100, 0, 110, 10)) == 1.0
    assert position_score("next to", (0, 0, 10, 10), (300, 0, 310, 10)) == pytest.approx(0.5)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60.]])
    assert nms_count(boxes, torch.tensor([0.9, 0.8, 0.7])) == 2
    assert nms_count(boxes, torch.tensor([0.9, 0.8, 0.7]), iou=0.9) == 3


def test_task_scores_from_synthetic_detections():
    none = (torch.zeros(0), torch.zeros(0, 4))

    def hit(*boxes):
        return torch.linspace(0.9, 0.5, len(boxes)), torch.tensor(boxes, dtype=torch.float32)

    spatial = T2I_ROWS[1]
    assert task_score(spatial, {"cat": hit([0, 0, 10, 10]), "dog": hit([40, 0, 50, 10])}) == pytest.approx(0.9)
    assert task_score(spatial, {"cat": hit([40, 0, 50, 10]), "dog": hit([0, 0, 10, 10])}) == pytest.approx(0.4)
    assert task_score(spatial, {"cat": hit([0, 0, 10, 10]), "dog": none}) == pytest.approx(0.2)
    num = {"prompt": "", "nouns": ["dog", "cat"], "task_type": "numeracy",
           "numeracy_info": [{"obj_name": "dog", "num": 2}, {"obj_name": "cat", "num": "3"}]}
    two_dogs = hit([0, 0, 10, 10], [1, 1, 11, 11], [40, 0, 50, 10])  # 3 boxes, 2 after NMS
    assert task_score(num, {"dog": two_dogs, "cat": none}) == pytest.approx(0.5)
    assert task_score(num, {"dog": hit([0, 0, 10, 10]), "cat": hit([0, 0, 5, 5])}) == pytest.approx(0.2)
    obj = T2I_ROWS[3]
    assert task_score(obj, {"big table": hit([0, 0, 5, 5]), "tv remote": none}) == 0.5
    assert task_score(T2I_ROWS[4], {}) == 1.0
    assert phrases({"nouns": ["cat"], "task_type": "spatial",
                    "spatial_info": {"obj1": "cat", "obj2": "dog", "locality": "near"}}) == ["cat", "dog"]


def test_gdino_reward_tiny_model(gdino_reward):
    torch.manual_seed(0)
    images = torch.rand(5, 3, 128, 128)
    plists = [phrases(m) for m in T2I_ROWS]
    found = gdino_reward.detect(images, plists)
    for f, pl in zip(found, plists):
        assert set(f) == set(pl)
        for s, b in f.values():
            assert s.ndim == 1 and b.shape == (len(s), 4) and torch.all(s > 0.3) and torch.all(s <= 1)
    r = gdino_reward(images, [m["prompt"] for m in T2I_ROWS], T2I_ROWS)
    assert r.shape == (5,) and torch.all((r >= 0) & (r <= 1)) and r[4] == 1
    one = torch.cat([gdino_reward(images[i:i + 1], [""], T2I_ROWS[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(r, one)
    single = gdino_reward.detect(images[3:4], plists[3:4])[0]
    for k in single:
        torch.testing.assert_close(single[k][0], found[3][k][0], atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- T2I-R1 mix


class _Const:
    def __init__(self, v):
        self.v = v

    def __call__(self, images, prompts, metadata):
        return torch.full((len(images),), self.v)


def test_t2i_r1_mix_sums_components(git_reward, gdino_reward):
    """hps_git_gdino is the registered sum "hps=1,git_vqa=1,gdino=1": each component once, summed with weight 1."""
    assert parse_mix("hps_git_gdino") == [("hps", 1.0), ("git_vqa", 1.0), ("gdino", 1.0)]
    mix = WeightedSum({"hps": _Const(0.25), "git_vqa": git_reward, "gdino": gdino_reward},
                      dict(parse_mix("hps_git_gdino")))
    images = torch.rand(5, 3, 128, 128)
    r = mix(images, [m["prompt"] for m in T2I_ROWS], T2I_ROWS)
    assert set(mix.last) == {"hps", "git_vqa", "gdino"}
    torch.testing.assert_close(r, mix.last["hps"] + mix.last["git_vqa"] + mix.last["gdino"])
    assert r.shape == (5,) and torch.all(r >= 0.25) and torch.all(r <= 2.25)


# ----------------------------------------------------------------------------- registry, imports, errors


def test_rewards_and_common_import_no_heavy_library():
    code = ("import sys, rewards, common, common.prompts, common.coco_prompts, rewards.clip, rewards.hps, "
            "rewards.geneval, rewards.geneval_color, rewards.mask2former, rewards.convert_mask2former, "
            "rewards.git_vqa, rewards.gdino, rewards.hub; print(sorted(m for m in ('transformers', "
            "'rapidocr', 'open_clip', 'torchvision', 'huggingface_hub') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert out.stdout.strip() == "[]"


def test_registry_validates_t2i_r1_and_geneval_rows():
    from rewards import REWARDS, check_reward

    for name in ("clip", "hps", "geneval_coco", "geneval_coco_strict", "git_vqa", "gdino"):
        assert name in REWARDS
    check_reward("hps_git_gdino", T2I_ROWS)  # a registered sum: each component validates the rows
    with pytest.raises(ValueError, match="spatial_info"):
        check_reward("hps_git_gdino", [{"prompt": "x", "nouns": ["a"], "task_type": "spatial"}])
    with pytest.raises(ValueError, match="numeracy_info"):
        check_reward("hps_git_gdino", [{"prompt": "x", "nouns": ["a"], "task_type": "numeracy"}])
    with pytest.raises(ValueError, match="'include'"):
        check_reward("geneval_coco", [{"prompt": "a photo of a cat"}])


@pytest.mark.parametrize("name, env", [("clip", "CLIP_MODEL"), ("geneval_coco", "GENEVAL_MASK2FORMER"),
                                       ("git_vqa", "GIT_VQA_MODEL"), ("gdino", "GDINO_MODEL")])
def test_missing_weights_one_line(monkeypatch, name, env):
    from rewards import get_reward

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(env, "no-such-org/no-such-model")
    with pytest.raises(RuntimeError) as e:
        get_reward(name)
    msg = str(e.value)
    assert "\n" not in msg and env in msg and "no-such-org/no-such-model" in msg
