"""Class-conditional ImageNet 256: FID, IS and (with --precision-recall) precision and recall, against the ADM
reference batch VIRTUAL_imagenet256_labeled.npz (mu, sigma of its Inception pool_3 features; arr_0 its images),
with the AR-GRPO paper's protocol (§4.1, Table 2): 50 images per class (prompts = class ids 0..999), CFG 2.0,
top-k 0, T 1, outputs of a 384 model resized to 256 before scoring (bicubic, LlamaGen's `--image-size-eval`).

Features come from torch-fidelity's FeatureExtractorInceptionV3: the TensorFlow FID Inception (2015-12-05) ported
to PyTorch, the network ADM's TensorFlow evaluator runs ("2048" = pool_3, "logits_unbiased" = its IS logits). Its
weights are a local file (--inception-weights, $FID_INCEPTION_WEIGHTS, default weights/fid/...): nothing is
downloaded. torch-fidelity's package __init__ imports torchvision, which does not import beside the CPU torch
build this project pins; the extractor's own modules do not need it, so `inception` loads them without running
that __init__ when torchvision is absent (install: pip install --no-deps -r requirements-eval.txt).

FID: ||mu1 − mu2||² + tr(S1 + S2 − 2 sqrtm(S1 S2)) with scipy's sqrtm (ADM's and pytorch-fid's formula); IS: exp of
the mean KL(p(y|x) || p(y)) over splits of 5000 images (ADM), reported as the mean over splits; precision/recall:
Kynkäänniemi et al.'s k-NN manifolds with k = 3 (ADM's ManifoldEstimator). sFID is not computed: it needs the
spatial `mixed_6/conv` features of the TF graph, which the PyTorch port does not expose.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_PROMPTS = "data/imagenet/class_ids.txt"
REF_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/" \
          "VIRTUAL_imagenet256_labeled.npz"
DEFAULT_REF = "weights/fid/VIRTUAL_imagenet256_labeled.npz"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
INCEPTION_ENV = "FID_INCEPTION_WEIGHTS"
DEFAULT_INCEPTION = os.path.join("weights", "fid", INCEPTION_FILE)


# ----------------------------------------------------------------------------- input checks (before any model)
def check(rows: list[dict], opts) -> None:
    for i, r in enumerate(rows):
        p = str(r["prompt"]).strip()
        if not p.isdigit():
            where = getattr(rows, "where", None)
            raise ValueError(f"{where[i] if where else f'row {i}'}: the imagenet benchmark's prompts are class ids "
                             f"(one integer per line, e.g. {DEFAULT_PROMPTS}), got {p!r}")
    check_files(opts.ref_stats, inception_path(opts.inception_weights))


def inception_path(explicit: str = "") -> str:
    return explicit or os.environ.get(INCEPTION_ENV) or DEFAULT_INCEPTION


def check_files(ref: str, weights: str) -> None:
    if not os.path.isfile(ref):
        raise FileNotFoundError(f"reference statistics not found: {ref}; download ADM's {REF_URL} and pass "
                                f"--ref-stats PATH")
    with np.load(ref) as z:
        if not {"mu", "sigma"} <= set(z.files):
            raise ValueError(f"{ref} holds {', '.join(z.files)}, not the reference statistics mu and sigma (ADM's "
                             f"VIRTUAL_imagenet256_labeled.npz)")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"Inception weights not found: {weights}; download {INCEPTION_URL} and pass "
                                f"--inception-weights PATH (or set ${INCEPTION_ENV})")


# ----------------------------------------------------------------------------- the network
def _fidelity_inception_class():
    """torch_fidelity.feature_extractor_inceptionv3.FeatureExtractorInceptionV3, importable without torchvision."""
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ImportError("the imagenet benchmark needs torch-fidelity: pip install --no-deps -r requirements-eval.txt")
    if importlib.util.find_spec("torchvision") is None and "torch_fidelity" not in sys.modules:
        spec = importlib.util.find_spec("torch_fidelity")
        pkg = types.ModuleType("torch_fidelity")  # the package without its __init__ (which imports torchvision)
        pkg.__path__, pkg.__spec__ = list(spec.submodule_search_locations), spec
        sys.modules["torch_fidelity"] = pkg
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3


def load_inception(weights: str, device="cpu"):
    """uint8 images (B, 3, H, W) -> (pool_3 (B, 2048), unbiased logits (B, 1008)) as float64 numpy."""
    cls = _fidelity_inception_class()
    net = cls("inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=weights).to(device)

    @torch.no_grad()
    def features(u8: torch.Tensor):
        pool, logits = net(u8.to(device))
        return pool.double().cpu().numpy(), logits.double().cpu().numpy()

    return features


# ----------------------------------------------------------------------------- the metrics
def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    from scipy import linalg

    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    covmean = linalg.sqrtm(np.asarray(sigma1, np.float64) @ np.asarray(sigma2, np.float64))
    if not np.isfinite(covmean).all():  # ADM / pytorch-fid: regularise a singular product
        offset = np.eye(len(mu1)) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return feats.mean(0), np.cov(feats, rowvar=False)


def inception_score(logits: np.ndarray, split_size: int = 5000) -> float:
    """Mean over splits of exp(E_x KL(p(y|x) || p(y))) (ADM's evaluator: splits of 5000 images)."""
    scores = []
    for i in range(0, len(logits), split_size):
        part = torch.from_numpy(logits[i : i + split_size]).double()
        logp = part.log_softmax(-1)
        logpy = torch.logsumexp(logp, 0) - np.log(len(part))  # log of the split's marginal p(y)
        kl = (logp.exp() * (logp - logpy)).sum(-1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores))


def _radii(x: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    """Distance of every row to its k-th nearest other row."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the row itself is at distance 0
    return torch.cat(out)


def _covered(x: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    out = []
    for i in range(0, len(x), chunk):
        out.append((torch.cdist(x[i : i + chunk], manifold) <= radii[None]).any(1))
    return torch.cat(out)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision (fakes inside the real manifold) and recall (reals inside the fake manifold)."""
    r, f = torch.from_numpy(real).double(), torch.from_numpy(fake).double()
    precision = _covered(f, r, _radii(r, k)).double().mean()
    recall = _covered(r, f, _radii(f, k)).double().mean()
    return float(precision), float(recall)


# ----------------------------------------------------------------------------- the scorer
def to_eval_u8(images: torch.Tensor, size: int) -> torch.Tensor:
    """[0, 1] images -> uint8 at `size` (bicubic on LlamaGen's [-1, 1] samples, then LlamaGen's 127.5x + 128
    rounding); unchanged size when it already matches or size is 0."""
    x = images.float() * 2 - 1
    if size and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic")
    return (127.5 * x + 128.0).clamp(0, 255).to(torch.uint8)


class Scorer:
    """`features`: uint8 images -> (pool (B, D), logits (B, K)) numpy (a tiny stand-in in tests); `reference`:
    {"mu", "sigma"[, "features" (M, D) for precision/recall]}; by default both are loaded from the files."""

    def __init__(self, ref_stats: str = DEFAULT_REF, inception_weights: str = "", eval_size: int = 256,
                 precision_recall: bool = False, device="cpu", features=None, reference=None):
        self.features = features or load_inception(inception_path(inception_weights), device)
        self.eval_size, self.pr = eval_size, precision_recall
        self.ref_stats, self._reference = ref_stats, reference

    def reference(self) -> dict:
        if self._reference is None:
            with np.load(self.ref_stats) as z:
                ref = {"mu": z["mu"], "sigma": z["sigma"]}
                if self.pr:
                    if "arr_0" not in z.files:
                        raise ValueError(f"{self.ref_stats} has no reference images (arr_0) for precision/recall")
                    imgs = z["arr_0"]  # (M, H, W, 3) uint8
                    ref["features"] = np.concatenate([self.features(torch.from_numpy(imgs[i : i + 200]).permute(
                        0, 3, 1, 2).contiguous())[0] for i in range(0, len(imgs), 200)])
            self._reference = ref
        return self._reference

    def score(self, images, rows):
        pool, logits = self.features(to_eval_u8(images, self.eval_size))
        return [{"class": int(r["prompt"])} for r in rows], {"pool": pool, "logits": logits}

    @staticmethod
    def caption(rec) -> str:
        return f"class {rec['class']}"

    def summarize(self, records, arrays) -> dict[str, float]:
        ref = self.reference()
        pool, logits = arrays["pool"], arrays["logits"]
        out = {"fid": frechet_distance(*statistics(pool), ref["mu"], ref["sigma"]), "is": inception_score(logits)}
        if self.pr and "features" in ref:
            out["precision"], out["recall"] = precision_recall(ref["features"], pool)
        return out

    @staticmethod
    def table(summaries, records) -> str:
        cols = [c for c in ("is", "fid", "precision", "recall") if c in next(iter(summaries.values()))]
        width = max(12, *(len(m) for m in summaries))
        lines = [f"{'model':<{width}} " + " ".join(f"{c.upper():>10}" for c in cols) + f"   ({len(records)} images)"]
        for name, s in summaries.items():
            lines.append(f"{name:<{width}} " + " ".join(f"{s[c]:>10.4f}" for c in cols))
        return "\n".join(lines)
