"""The learned layer's artefact and its inference: a linear model over ``features.py``.

The artefact is two files in one folder, written by ``fenliu.router.training`` (rebuild with
``fenliu router-model build``):

- ``router_model.json``: format, version, feature names, classes, biases, thresholds and where it
  was trained from, plus the SHA-256 of the weights file;
- ``router_model.npy``: float32 matrix, one row per feature: ``[idf, w_police, w_cat1, …]``.

Inference needs only numpy: sublinear TF × IDF, L2-normalised, one dot product. Two heads:
``p_police`` (a binary police-matter detector, used only to keep calls with 110) and a softmax
over the diverted categories (used to add recall where the rules are silent).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

from fenliu.errors import RouterModelError
from fenliu.router.features import Featurizer
from fenliu.router.matcher import syllables

FORMAT = 1
JSON_NAME = "router_model.json"
NPY_NAME = "router_model.npy"
REBUILD = "重新生成模型 / rebuild it: fenliu router-model build"
# below this share of the text's character unigrams known to the model, it has no opinion
# (a transcript in another language, or noise): the rules alone decide
MIN_KNOWN_SHARE = 0.5


@dataclass(frozen=True)
class Evidence:
    """A feature that pushed the model toward its answer, with where it stands in the text."""

    feature: str
    weight: float
    start: int = 0
    end: int = 0


class ModelView:
    """What the model says of one text. The evidence (which n-grams drove it) is worked out only
    when a decision shows it."""

    def __init__(self, model: RouterModel, text: str, ix: np.ndarray, vals: np.ndarray, rows: np.ndarray,
                 p_police: float, categories: tuple[tuple[str, float], ...]) -> None:
        self._model, self._text, self._ix, self._vals, self._rows = model, text, ix, vals, rows
        self.p_police = p_police
        self.categories = categories  # (category id, probability), best first

    @property
    def top(self) -> tuple[str, float]:
        return self.categories[0]

    def prob(self, category_id: str) -> float:
        return next((p for c, p in self.categories if c == category_id), 0.0)

    @cached_property
    def police_evidence(self) -> tuple[Evidence, ...]:
        return self._model.evidence(self._text, self._ix, self._vals * self._rows[:, 0])

    def category_evidence(self, category_id: str) -> tuple[Evidence, ...]:
        """What speaks for this category rather than the others (softmax is shift-invariant, so a
        feature's push is its weight minus the mean weight over the categories)."""
        k = 1 + self._model.categories.index(category_id)
        rows = self._rows
        return self._model.evidence(self._text, self._ix, self._vals * (rows[:, k] - rows[:, 1:].mean(axis=1)))


@dataclass(frozen=True)
class Thresholds:
    """Chosen on author-held-out validation folds at training time (see training.py).

    The model suggests a category the rules could not divert only when the police-matter
    detector is below a bound and the category's probability above one; the bounds differ by
    whether the rules found some (not enough) evidence for that same category ("partial") or
    none ("silent"), because the two pools carry different risk."""

    veto: float  # p_police at or above this keeps a rule diversion with 110 …
    veto_agree: float  # … unless the category model agrees with the rules at least this much …
    veto_high: float  # … and p_police stays below this (at or above it, the call is kept whatever)
    partial_police: float
    partial_category: float
    silent_police: float
    silent_category: float

    @staticmethod
    def never(veto: float = 2.0) -> Thresholds:
        """No model suggestion at all (and, by default, no veto)."""
        return Thresholds(veto, 2.0, veto, 0.0, 2.0, 0.0, 2.0)

    def vetoes(self, p_police: float, agree: float) -> bool:
        """Does the police-matter detector keep a rule diversion whose category the category
        model gives probability ``agree``?"""
        return p_police >= self.veto and (agree < self.veto_agree or p_police >= self.veto_high)


class RouterModel:
    """A loaded artefact. ``view(normalized_text)`` is pure and thread-safe."""

    def __init__(self, meta: dict, matrix: np.ndarray, source: str, featurizer: Featurizer | None = None) -> None:
        self.meta = meta
        self.source = source
        self.version: str = meta["version"]
        self.categories: tuple[str, ...] = tuple(meta["classes"][1:])
        self.index = {f: i for i, f in enumerate(meta["features"])}
        self.idf = np.ascontiguousarray(matrix[:, 0], dtype=np.float64)
        self.weights = np.ascontiguousarray(matrix[:, 1:], dtype=np.float64)
        self.bias = np.asarray(meta["bias"], dtype=np.float64)
        self.thresholds = Thresholds(**{k: float(v) for k, v in meta["thresholds"].items()})
        self.featurize = featurizer or Featurizer()

    # -- inference ---------------------------------------------------------------
    def vector(self, normalized_text: str) -> tuple[np.ndarray, np.ndarray, float]:
        """(feature indices, TF-IDF values, share of the text's characters known to the model)."""
        counts = self.featurize(normalized_text)
        get = self.index.get
        pairs = [(i, n) for i, n in ((get(f), n) for f, n in counts.items()) if i is not None]
        chars = {f for f in counts if len(f) == 3 and f[0] == "c"}
        share = sum(f in self.index for f in chars) / len(chars) if chars else 0.0
        if not pairs:
            return np.zeros(0, dtype=np.intp), np.zeros(0), share
        ix = np.fromiter((i for i, _ in pairs), dtype=np.intp, count=len(pairs))
        vals = (1.0 + np.log(np.fromiter((n for _, n in pairs), dtype=np.float64, count=len(pairs)))) * self.idf[ix]
        vals /= np.sqrt(vals @ vals)
        return ix, vals, share

    def view(self, normalized_text: str) -> ModelView | None:
        """None when the model does not know the text well enough to have an opinion."""
        ix, vals, share = self.vector(normalized_text)
        if share < MIN_KNOWN_SHARE or len(ix) == 0:
            return None
        rows = self.weights[ix]  # (k, 1 + n_categories)
        z = vals @ rows + self.bias
        p_police = 1.0 / (1.0 + math.exp(-z[0]))
        logits = z[1:]
        e = np.exp(logits - logits.max())
        probs = e / e.sum()
        order = np.argsort(-probs, kind="stable")
        cats = tuple((self.categories[k], float(probs[k])) for k in order)
        return ModelView(self, normalized_text, ix, vals, rows, p_police, cats)

    def evidence(self, text: str, ix: np.ndarray, contrib: np.ndarray, k: int = 5) -> tuple[Evidence, ...]:
        """The k features that pushed hardest toward the answer, located in the normalised text:
        words and n-grams first, single characters only when nothing longer is there; evidence
        overlapping evidence already shown is skipped."""
        names = self.meta["features"]
        order = [int(j) for j in np.argsort(-contrib, kind="stable")[:40] if contrib[j] > 0]
        longer = [j for j in order if not _is_char(names[int(ix[j])])]
        out: list[Evidence] = []
        for j in longer or order:
            if len(out) >= k:
                break
            f = names[int(ix[j])]
            s, e = locate(text, f)
            if any(s < o.end and o.start < e for o in out):
                continue
            out.append(Evidence(f, round(float(contrib[j]), 4), s, e))
        return tuple(out)


def _is_char(feature: str) -> bool:
    return feature.startswith("c:") and len(feature) == 3


def locate(text: str, feature: str) -> tuple[int, int]:
    """[start, end) of a feature's first occurrence in the normalised text ((0, 0) if none)."""
    kind, _, value = feature.partition(":")
    if kind in ("c", "w"):
        pos = text.find(value)
        return (pos, pos + len(value)) if pos >= 0 else (0, 0)
    pair = tuple(value.split(" "))
    sy = syllables(text)
    for i in range(len(sy) - 1):
        if sy[i : i + 2] == pair:
            return (i, i + 2)
    return (0, 0)


# -- loading ---------------------------------------------------------------------
def default_dir() -> Path:
    return Path(str(resources.files("fenliu.router") / "model"))


def load_model(path: str | Path | None = None) -> RouterModel:
    """Load and check an artefact folder (default: the one shipped with fenliu).
    Every problem is a RouterModelError that names the file and the rebuild command."""
    folder = Path(path) if path else default_dir()
    jpath, npath = folder / JSON_NAME, folder / NPY_NAME
    for p in (jpath, npath):
        if not p.is_file():
            raise RouterModelError(f"路由模型文件缺失 / router model file missing: {p}. {REBUILD}")
    try:
        meta = json.loads(jpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RouterModelError(f"{jpath}: 无法读取 / unreadable ({e}). {REBUILD}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RouterModelError(f"{jpath}: 格式不对 / not a format-{FORMAT} router model. {REBUILD}")
    missing = [k for k in ("version", "features", "classes", "bias", "thresholds", "weights_sha256") if k not in meta]
    if missing:
        raise RouterModelError(f"{jpath}: 缺少字段 / missing fields {missing}. {REBUILD}")
    if set(meta["thresholds"]) != set(Thresholds.__dataclass_fields__):
        raise RouterModelError(f"{jpath}: 阈值字段不符 / thresholds {sorted(meta['thresholds'])} do not fit this "
                               f"version of fenliu. {REBUILD}")
    raw = npath.read_bytes()
    if hashlib.sha256(raw).hexdigest() != meta["weights_sha256"]:
        raise RouterModelError(f"{npath}: 校验和不符（文件损坏或与 {JSON_NAME} 不配套）/ checksum mismatch "
                               f"(corrupt, or not the weights of {JSON_NAME}). {REBUILD}")
    try:
        matrix = np.load(npath, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise RouterModelError(f"{npath}: 无法读取 / unreadable ({e}). {REBUILD}") from e
    n_cols = len(meta["classes"]) + 1
    if matrix.ndim != 2 or matrix.shape != (len(meta["features"]), n_cols) or len(meta["bias"]) != n_cols - 1:
        raise RouterModelError(f"{npath}: 形状 {matrix.shape} 与 {JSON_NAME} 不符 / shape does not match the "
                               f"metadata ({len(meta['features'])} features × {n_cols}). {REBUILD}")
    return RouterModel(meta, matrix, str(folder))


__all__ = ["Evidence", "ModelView", "RouterModel", "Thresholds", "load_model", "locate"]
