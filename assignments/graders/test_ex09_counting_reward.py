"""Exercise 09: a dense ShapeWorld reward for GenEval's `counting` tag (assignments/counting_reward.py;
assignments/ex09.md). Images are exact renders of known scenes, so the expected counts are known."""
import numpy as np
import pytest
import torch



def det(cls, score, color="red"):
    return {"class": cls, "box": (0.0, 0.0, 10.0, 10.0), "score": score, "color": color}


def scene(world, objects):
    """objects: [(class, colour, (row, col))] -> a (3, 64, 64) float image in [0, 1]."""
    img = world.render([{"class": c, "color": k, "cell": cell} for c, k, cell in objects])
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255


CELLS = [(0, 0), (0, 3), (0, 6), (3, 0), (3, 3), (3, 6), (6, 0), (6, 3)]


def row(cls, n):
    from_words = {1: "one", 2: "two", 3: "three", 4: "four"}
    return {"tag": "counting", "include": [{"class": cls, "count": n}], "exclude": [{"class": cls, "count": n + 1}],
            "prompt": f"a photo of {from_words[n]} {cls}s"}


@pytest.mark.points(2)
def test_count_objects(tree_import):
    """counts only the asked class, only detections with score > 0.9 (GenEval's counting threshold)"""
    load = tree_import
    mod = load("assignments.counting_reward")
    dets = [det("circle", 1.0), det("circle", 0.95), det("circle", 0.5), det("square", 1.0), det("circle", 0.9)]
    n = mod.count_objects(dets, "circle")
    if n == 4 or n == 5:
        raise AssertionError("low-confidence detections were counted: keep only score > 0.9 (GenEval's counting "
                             "threshold; 0.9 itself is dropped)")
    if n == 3 and mod.count_objects([det("square", 1.0)], "circle") == 1:
        raise AssertionError("detections of other classes were counted: count only the asked class")
    assert n == 2, f"2 circles have score > 0.9 in this list, got {n}"
    assert mod.count_objects(dets, "square") == 1 and mod.count_objects(dets, "triangle") == 0, \
        "count_objects(dets, cls) counts the detections of class cls only (1 square, 0 triangles in this list)"
    assert mod.count_objects(dets, "circle", threshold=0.96) == 1, "the threshold argument must be used"


@pytest.mark.points(2)
def test_counting_score(tree_import):
    """r = max(0, 1 − |n − N|/N): 1 at n = N, linear on both sides, clipped at 0"""
    load = tree_import
    mod = load("assignments.counting_reward")
    cases = [(3, 3, 1.0), (2, 3, 2 / 3), (4, 3, 2 / 3), (0, 3, 0.0), (6, 3, 0.0), (9, 3, 0.0), (1, 1, 1.0), (0, 1, 0.0),
             (5, 2, 0.0), (1, 2, 0.5)]
    if abs(mod.counting_score(4, 3) - 0.75) < 1e-9:
        raise AssertionError("the error is divided by n: r = 1 − |n − N| / N, relative to the asked count N")
    for n, count, want in cases:
        got = mod.counting_score(n, count)
        if got < 0:
            raise AssertionError(f"counting_score({n}, {count}) = {got}: clip at 0, r = max(0, 1 − |n − N|/N)")
        assert abs(got - want) < 1e-9, f"counting_score({n}, {count}) should be {want:.4f}, got {got}"


@pytest.mark.points(2)
def test_reward_on_renders(tree_import):
    """on exact renders: the score of each image from its objects, distractors of other classes ignored"""
    load = tree_import
    mod = load("assignments.counting_reward")
    from toy import world  # the kit's renderer (this process imports only the kit's code)

    images = torch.stack([
        scene(world, [("circle", "red", CELLS[0]), ("circle", "blue", CELLS[1]), ("square", "green", CELLS[2])]),
        scene(world, [("circle", "red", CELLS[0])]),
        scene(world, [("triangle", "red", c) for c in CELLS[:4]]),
        scene(world, [("square", "yellow", CELLS[0])]),
    ])
    meta = [row("circle", 2), row("circle", 3), row("triangle", 2), row("square", 1)]
    r = mod.make_counting_reward()(images, [m["prompt"] for m in meta], meta)
    assert isinstance(r, torch.Tensor) and r.shape == (4,), "the reward returns a tensor (B,)"
    assert r.dtype == torch.float32, f"the reward returns float32, got {r.dtype}"
    want = [1.0, 1 / 3, 0.0, 1.0]
    assert torch.allclose(r.double(), torch.tensor(want, dtype=torch.float64), atol=1e-6), \
        f"expected {want} (2 of 2 circles; 1 of 3; 4 triangles for 2; 1 of 1), got {r.tolist()}"


@pytest.mark.points(1)
def test_agrees_with_geneval_and_registry(tree_import):
    """r = 1 exactly when GenEval's strict rule says correct; the factory works as `--reward module:factory`"""
    load = tree_import
    mod = load("assignments.counting_reward")
    from common import geneval  # the kit's GenEval rules, detector and renderer
    from toy import detector as toy_detector
    from toy import world

    rewards = load("rewards")
    rng = np.random.default_rng(0)
    metas, images = [], []
    for n_found in range(0, 5):
        for n_asked in (2, 3):
            cells = [CELLS[i] for i in rng.permutation(len(CELLS))[:n_found + 1]]
            objs = [("square", "purple", c) for c in cells[:n_found]] + [("circle", "orange", cells[n_found])]
            images.append(scene(world, objs))
            metas.append(row("square", n_asked))
    r = mod.CountingReward()(torch.stack(images), [m["prompt"] for m in metas], metas)
    for img, meta, ri in zip(images, metas, r.tolist()):
        u8 = (img * 255).round().to(torch.uint8)
        found = geneval.filter_detections(toy_detector.ShapeWorldDetector()(u8[None])[0], "counting")
        correct = geneval.strict_correct(found, meta)[0]
        assert (ri == 1.0) == correct, f"{meta['prompt']}: reward {ri} but GenEval strict correct = {correct}"
    fn = rewards.get_reward("assignments.counting_reward:make_counting_reward")
    rewards.check_reward("assignments.counting_reward:make_counting_reward", metas)
    with pytest.raises(ValueError):
        rewards.check_reward("assignments.counting_reward:make_counting_reward",
                             [{"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}],
                               "prompt": "a photo of a red circle"}])
    assert callable(fn), "rewards.get_reward('assignments.counting_reward:make_counting_reward') must give a callable"
