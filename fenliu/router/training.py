"""Build the learned layer's artefact from the labelled corpus: ``fenliu router-model build``.

1. Cases of the training authors (every author not held out in ``corpus/split.toml``), each with
   a generated ASR-style copy (``dataset.asr_variant``).
2. Features (``features.py``) -> sublinear TF-IDF -> two scikit-learn logistic regressions:
   police vs not (class-balanced) over every case, and the diverted category over the
   non-police cases.
3. Thresholds chosen on out-of-fold predictions, folds split by author (no author is ever in
   the training part and the validation part of the same fold), through ``Router.choose``:
   - ``veto``: below the lowest police probability of any police case the rules would divert,
     so that on validation the veto keeps every such case;
   - for the model's own suggestions, in two pools (the rules found part of the evidence for the
     model's category, or none): the bounds on police probability and category probability that
     add the most exact non-police decisions while diverting no validation police case, the
     police bound then tightened by a safety margin.
4. The final models are fitted on all training cases; the folder gets ``router_model.json`` and
   ``router_model.npy``. Deterministic: the same corpus gives the same bytes (one BLAS thread,
   sorted features, fixed solver).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from fenliu.router.dataset import Case, asr_variant, corpus_digest, corpus_files, load_jsonl, load_split
from fenliu.router.decide import RULES, Router
from fenliu.router.features import Featurizer
from fenliu.router.model import FORMAT, JSON_NAME, NPY_NAME, RouterModel, Thresholds
from fenliu.router.normalize import Normalizer
from fenliu.router.rules import RuleSet, load_rules

MIN_DF = 2
C_POLICE = 20.0
C_CATEGORY = 50.0
FOLDS = 5
VETO_MARGIN = 0.85  # veto threshold = this × the lowest police probability it must catch
VETO_CAP = 0.5
MODEL_POLICE_MARGIN = 0.8
AGREE_MARGIN = 0.1  # added to the agreement the veto waives for


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)


class Trainer:
    def __init__(self, rules: RuleSet | None = None) -> None:
        self.rules = rules or load_rules()
        self.categories = tuple(c.id for c in self.rules.categories)
        self.normalize = Normalizer(self.rules.cues.fillers)
        self.featurizer = Featurizer()
        self.rules_router = Router(self.rules, model=None)

    def counts(self, cases: list[Case]) -> list[Counter[str]]:
        return [self.featurizer(self.normalize(c.text).text) for c in cases]

    # -- fitting -----------------------------------------------------------------------
    def fit(self, cases: list[Case], counts: list[Counter[str]]) -> tuple[dict, np.ndarray]:
        """(metadata without version/thresholds, matrix [idf, w_police, w_categories…])."""
        df: Counter[str] = Counter()
        for c in counts:
            df.update(c.keys())
        features = sorted(f for f, n in df.items() if n >= MIN_DF)
        index = {f: i for i, f in enumerate(features)}
        n_docs = len(counts)
        idf = np.array([math.log((1 + n_docs) / (1 + df[f])) + 1.0 for f in features])
        X = self._matrix(counts, index, idf)
        y_police = np.array([c.police for c in cases], dtype=int)
        with threadpool_limits(1):
            police = LogisticRegression(C=C_POLICE, class_weight="balanced", max_iter=5000)
            police.fit(X, y_police)
            rows = np.flatnonzero(~y_police.astype(bool))
            y_cat = np.array([self.categories.index(cases[i].category) for i in rows])
            cat = LogisticRegression(C=C_CATEGORY, max_iter=5000)
            cat.fit(X[rows], y_cat)
        w_cat = np.zeros((len(features), len(self.categories)))
        b_cat = np.full(len(self.categories), -30.0)  # a category with no training case is never chosen
        for k, cls in enumerate(cat.classes_):
            w_cat[:, cls] = cat.coef_[k]
            b_cat[cls] = cat.intercept_[k]
        matrix = np.column_stack([idf, police.coef_[0], w_cat]).astype(np.float32)
        meta = {"format": FORMAT, "features": features, "classes": ["police", *self.categories],
                "bias": [float(np.float32(police.intercept_[0])), *(float(np.float32(b)) for b in b_cat)]}
        return meta, matrix

    @staticmethod
    def _matrix(counts: list[Counter[str]], index: dict[str, int], idf: np.ndarray) -> sparse.csr_matrix:
        data, cols, indptr = [], [], [0]
        for c in counts:
            row = sorted((index[f], 1.0 + math.log(n)) for f, n in c.items() if f in index)
            vals = np.array([v for _, v in row]) * idf[[i for i, _ in row]] if row else np.zeros(0)
            norm = float(np.sqrt(vals @ vals)) or 1.0
            cols += [i for i, _ in row]
            data += list(vals / norm)
            indptr.append(len(cols))
        return sparse.csr_matrix((data, cols, indptr), shape=(len(counts), len(index)))

    def model(self, meta: dict, matrix: np.ndarray, thresholds: Thresholds | None = None) -> RouterModel:
        th = thresholds or Thresholds.never(0.5)
        full = {**meta, "version": "validation", "thresholds": th.__dict__}
        return RouterModel(full, matrix, "<memory>", self.featurizer)

    # -- validation and thresholds -------------------------------------------------------
    def out_of_fold(self, cases: list[Case], counts: list[Counter[str]]) -> list:
        """Each case's ModelView from a model that never saw its author."""
        authors = sorted({c.author for c in cases})
        # deal authors to folds by size, largest first, for balanced folds
        sizes = Counter(c.author for c in cases)
        folds: list[list[str]] = [[] for _ in range(min(FOLDS, len(authors)))]
        for a in sorted(authors, key=lambda a: (-sizes[a], a)):
            min(folds, key=lambda f: sum(sizes[x] for x in f)).append(a)
        views: list = [None] * len(cases)
        for held in folds:
            train = [i for i, c in enumerate(cases) if c.author not in held]
            test = [i for i, c in enumerate(cases) if c.author in held]
            meta, matrix = self.fit([cases[i] for i in train], [counts[i] for i in train])
            m = self.model(meta, matrix)
            for i in test:
                views[i] = m.view(self.normalize(cases[i].text).text)
        return views

    def choose_thresholds(self, cases: list[Case], views: list, report: Report) -> Thresholds:
        analyses = []
        for c, v in zip(cases, views, strict=True):
            a = self.rules_router.analyze(c.text)
            a.model = v
            analyses.append(a)
        # 1. veto: every police case the rules would divert must be kept
        rule_div = [(c, a) for c, a in zip(cases, analyses, strict=True)
                    if self.rules_router.choose(a, None, Thresholds.never()).kind == RULES]
        police_p = sorted(a.model.p_police for c, a in rule_div if c.police and a.model is not None)
        veto = round(min(VETO_CAP, police_p[0] * VETO_MARGIN) if police_p else VETO_CAP, 4)
        # … unless the category model confidently agrees with the rules (police cases the rules
        # divert rarely look like their category to it), below a higher bound
        agree_rows = [(c.police, a.model.p_police, a.model.prob(a.best.category_id), c.category == a.best.category_id)
                      for c, a in rule_div if a.model is not None and a.best is not None]
        best_keep, veto_agree, veto_high = -1, 2.0, veto
        for v_high in [x / 100 for x in range(30, 96, 5)]:
            for agree in [x / 100 for x in range(50, 100, 5)]:
                candidate = Thresholds(veto, agree, v_high, 0.0, 2.0, 0.0, 2.0)
                if any(pol and not candidate.vetoes(pp, pa) for pol, pp, pa, _ in agree_rows):
                    continue  # would divert a validation police case
                kept = sum(ok and not pol and not candidate.vetoes(pp, pa) for pol, pp, pa, ok in agree_rows)
                if kept > best_keep:
                    best_keep, veto_agree, veto_high = kept, agree, v_high
        veto_agree = round(min(veto_agree + AGREE_MARGIN, 0.99), 4)
        veto_high = round(max(veto, veto_high * VETO_MARGIN), 4)
        report.add(f"rules alone would divert {sum(c.police for c, _ in rule_div)} of {sum(c.police for c in cases)} "
                   f"validation police cases; their police probability: "
                   f"{', '.join(f'{p:.3f}' for p in police_p[:8])}{' …' if len(police_p) > 8 else ''}")
        # 2. the model's own suggestions where the rules cannot divert, in two pools
        pools: dict[bool, list[tuple[Case, float, float, bool]]] = {True: [], False: []}
        for c, a in zip(cases, analyses, strict=True):
            cand = None if a.danger or a.best is not None else self.rules_router.model_candidate(a)
            if cand is not None and a.model is not None:
                top, p, partial = cand
                pools[partial].append((c, a.model.p_police, p, c.category == top))
        bounds = {}
        for partial, pool in pools.items():
            best = (0, 0.0, 2.0)
            grid_p = sorted({round(pp, 4) for _, pp, _, _ in pool} | {1.0})
            for t_cat in [x / 100 for x in range(30, 96, 5)]:
                for t_pol in grid_p:
                    chosen = [(c, ok) for c, pp, p, ok in pool if p >= t_cat and pp < t_pol]
                    if any(c.police for c, _ in chosen):
                        break  # a higher bound only adds cases
                    gain = sum(ok for _, ok in chosen)
                    if gain > best[0]:
                        best = (gain, t_pol, t_cat)
            bounds[partial] = (round(best[1] * MODEL_POLICE_MARGIN, 4), best[2])
        th = Thresholds(veto=veto, veto_agree=veto_agree, veto_high=veto_high, partial_police=bounds[True][0], partial_category=bounds[True][1],
                        silent_police=bounds[False][0], silent_category=bounds[False][1])
        # the chosen thresholds, through the router's own code
        div_police = exact = non_police = alone = 0
        for c, a in zip(cases, analyses, strict=True):
            ch = self.rules_router.choose(a, None, th)
            base = self.rules_router.choose(a, None, Thresholds.never())
            if c.police:
                div_police += ch.diverts
            else:
                non_police += 1
                exact += ch.diverts and ch.category_id == c.category
                alone += base.diverts and base.category_id == c.category
        report.add(f"thresholds: veto at p_police ≥ {th.veto} unless the category model agrees with the rules at "
                   f"p ≥ {th.veto_agree} and p_police < {th.veto_high}; the model suggests where the rules found part of the "
                   f"evidence if p_police < {th.partial_police} and category p ≥ {th.partial_category}, where they "
                   f"found none if p_police < {th.silent_police} and p ≥ {th.silent_category}")
        report.add(f"author-held-out validation ({len(cases)} cases incl. ASR copies): police diverted {div_police} "
                   f"(rules alone {sum(c.police for c, _ in rule_div)}), non-police exact {exact}/{non_police} "
                   f"({exact / max(non_police, 1):.1%}; rules alone {alone / max(non_police, 1):.1%})")
        return th

    def training_cases(self, corpus: Path | None = None) -> tuple[list[Case], list[Case]]:
        """(the training authors' written cases, the same plus their ASR-style copies)."""
        heldout = set(load_split(corpus))
        written = [c for p in training_files(corpus) for c in load_jsonl(p, self.rules) if c.author not in heldout]
        return written, written + [asr_variant(c) for c in written]

    def validate(self, cases: list[Case], counts: list[Counter[str]], report: Report) -> Thresholds:
        """Author-fold cross-validation and the thresholds chosen on it."""
        return self.choose_thresholds(cases, self.out_of_fold(cases, counts), report)

    # -- the whole build -----------------------------------------------------------------
    def build(self, out: Path, corpus: Path | None = None) -> Report:
        report = Report()
        heldout = sorted(load_split(corpus))
        train_files = training_files(corpus)
        written, cases = self.training_cases(corpus)
        authors = dict(sorted(Counter(c.author for c in written).items()))
        report.add(f"training authors {authors}; held out (never trained or tuned on): {heldout}")
        counts = self.counts(cases)
        th = self.validate(cases, counts, report)
        meta, matrix = self.fit(cases, counts)
        meta["thresholds"] = th.__dict__
        meta["trained_on"] = {"authors": authors, "heldout": heldout, "cases": len(written),
                              "asr_copies": len(cases) - len(written),
                              "corpus_sha256": corpus_digest(train_files),
                              "files": [p.name for p in train_files]}
        meta["validation"] = report.lines
        raw = _npy_bytes(matrix)
        meta["weights_sha256"] = hashlib.sha256(raw).hexdigest()
        body = json.dumps(meta, ensure_ascii=False, sort_keys=True)
        meta["version"] = "rm-" + hashlib.sha256(raw + body.encode()).hexdigest()[:12]
        out.mkdir(parents=True, exist_ok=True)
        (out / NPY_NAME).write_bytes(raw)
        (out / JSON_NAME).write_text(json.dumps(meta, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
        report.add(f"wrote {out / JSON_NAME} version {meta['version']}: {len(meta['features'])} features, "
                   f"{(out / NPY_NAME).stat().st_size / 1e6:.1f} MB weights")
        return report


def _npy_bytes(matrix: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(matrix, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def training_files(corpus: Path | None = None) -> list[Path]:
    """Corpus files with training cases: a file named after a held-out author is not even read
    (cases of held-out authors inside mixed files are dropped by author)."""
    heldout = set(load_split(corpus))
    return [p for p in corpus_files(corpus) if p.stem not in heldout]


__all__ = ["Report", "Trainer", "training_files"]
