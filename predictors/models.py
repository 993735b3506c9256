"""Accuracy and latency predictors, in scikit-learn's style.

Constructors only store parameters; `fit(X, y)` validates, scores every
candidate model by k-fold cross-validation and keeps the best; `predict(X,
return_std=True)` gives a mean and an uncertainty (the spread of the k fold
models, or the Gaussian process's own std); `score(X, y)` gives MAPE, RMSE,
Kendall tau and Spearman. A fitted predictor keeps the data it was fitted on
(a few hundred rows): `predictors.persist` stores a predictor as that data and
its choice, never as code.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import kendalltau, spearmanr
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

CANDIDATES = ("ridge", "gbm", "mlp", "gp")


@dataclass(frozen=True)
class Scores:
    mape: float  # percent
    rmse: float
    kendall_tau: float
    spearman: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> Scores:
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    nonzero = np.abs(y_true) > 1e-12
    mape = float(np.mean(np.abs(y_pred[nonzero] - y_true[nonzero]) / np.abs(y_true[nonzero])) * 100)
    rmse = float(np.sqrt(np.mean((y_pred - y_true) ** 2)))
    constant = np.ptp(y_true) == 0 or np.ptp(y_pred) == 0
    tau = float("nan") if constant else float(kendalltau(y_true, y_pred).statistic)
    rho = float("nan") if constant else float(spearmanr(y_true, y_pred).statistic)
    return Scores(mape=mape, rmse=rmse, kendall_tau=tau, spearman=rho)


def _candidate(name: str, random_state: int, gbm_trees: int = 300):
    if name == "ridge":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-6, 3, 19)))
    if name == "gbm":
        # fewer trees take larger steps: the same total shrinkage (300 trees at 0.05)
        return GradientBoostingRegressor(n_estimators=gbm_trees, max_depth=3, learning_rate=min(0.2, 15 / gbm_trees),
                                         subsample=0.8, random_state=random_state)
    if name == "mlp":
        return make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(64, 64), alpha=1e-3, max_iter=3000,
                                                            random_state=random_state))
    if name == "gp":
        kernel = ConstantKernel(1.0) * RBF(length_scale=1.0) + WhiteKernel(1e-3)
        return make_pipeline(StandardScaler(), GaussianProcessRegressor(kernel=kernel, normalize_y=True,
                                                                        random_state=random_state))
    raise ValueError(f"unknown candidate model {name!r}; choose from {list(CANDIDATES)}")


class Predictor(BaseEstimator):
    """Chooses among candidate regressors by k-fold CV; uncertainty from the fold models."""

    def __init__(self, candidates: tuple[str, ...] = CANDIDATES, cv: int = 5, log_target: bool = False,
                 select_by: str = "rmse", random_state: int = 0, gbm_trees: int = 300):
        self.candidates = candidates
        self.cv = cv
        self.log_target = log_target
        self.select_by = select_by
        self.random_state = random_state
        self.gbm_trees = gbm_trees

    def _uses_log(self, name: str) -> bool:
        # ridge stays linear: latency is a sum of per-op costs, which a log would break
        return self.log_target and name != "ridge"

    def _to_target(self, y: np.ndarray, name: str) -> np.ndarray:
        return np.log(y) if self._uses_log(name) else y

    def _from_target(self, t: np.ndarray, name: str) -> np.ndarray:
        return np.exp(t) if self._uses_log(name) else t

    def _fitted(self, model, name: str, X: np.ndarray, y: np.ndarray):
        """`model` fitted on (X, y) in its target space. A linear model of a positive target judged by relative
        error (a latency, by MAPE) weighs each row by 1 / y^2: its squared error is then the relative one, and
        the smallest archs are not left to absorb the largest ones' residuals."""
        if name == "ridge" and self.log_target:
            return model.fit(X, y, ridgecv__sample_weight=1 / y ** 2)
        return model.fit(X, self._to_target(y, name))

    def fit(self, X, y) -> Predictor:
        with warnings.catch_warnings():  # candidates that fit badly lose the CV; their warnings tell nothing more
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._fit(X, y)

    def _fit(self, X, y) -> Predictor:
        X, y = check_X_y(X, y, y_numeric=True)
        if self.log_target and np.any(y <= 0):
            raise ValueError("targets must be positive (a latency)")
        if len(y) < max(4, self.cv):
            raise ValueError(f"need at least {max(4, self.cv)} samples to fit, got {len(y)}")
        if isinstance(self.gbm_trees, bool) or not isinstance(self.gbm_trees, int) or self.gbm_trees < 1:
            raise ValueError(f"gbm_trees must be a positive integer, got {self.gbm_trees!r}")
        if self.select_by not in ("mape", "rmse", "kendall_tau"):
            raise ValueError(f"select_by must be mape, rmse or kendall_tau, got {self.select_by!r}")
        folds = list(KFold(self.cv, shuffle=True, random_state=self.random_state).split(X))
        self.cv_scores_: dict[str, dict[str, float]] = {}
        fold_models: dict[str, list] = {}
        for name in self.candidates:
            predictions = np.empty_like(y)
            fold_models[name] = []
            for train, test in folds:
                model = self._fitted(clone(_candidate(name, self.random_state, self.gbm_trees)), name, X[train],
                                     y[train])
                predictions[test] = self._from_target(model.predict(X[test]), name)
                fold_models[name].append(model)
            self.cv_scores_[name] = scores(y, predictions).to_dict()
        sign = -1 if self.select_by == "kendall_tau" else 1  # tau: higher is better
        self.chosen_ = min(self.candidates, key=lambda n: sign * np.nan_to_num(self.cv_scores_[n][self.select_by],
                                                                                nan=-sign * np.inf))
        chosen = clone(_candidate(self.chosen_, self.random_state, self.gbm_trees))
        self.model_ = self._fitted(chosen, self.chosen_, X, y)
        self.fold_models_ = fold_models[self.chosen_]
        self.X_train_, self.y_train_ = X, y
        self.n_train_ = len(y)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X, return_std: bool = False):
        check_is_fitted(self, "model_")
        X = check_array(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} features, got {X.shape[1]}")
        mean = self._from_target(self.model_.predict(X), self.chosen_)
        if not return_std:
            return mean
        if self.chosen_ == "gp":
            _, t_std = self.model_.predict(X, return_std=True)
            std = t_std * mean if self._uses_log(self.chosen_) else t_std  # delta method for exp
        else:
            folds = np.stack([self._from_target(m.predict(X), self.chosen_) for m in self.fold_models_])
            std = folds.std(axis=0)
        return mean, std

    def score(self, X, y) -> Scores:
        return scores(np.asarray(y, float), self.predict(X))


class LatencyPredictor(Predictor):
    """Latency from per-op analytic costs, chosen by MAPE: the non-linear candidates fitted in log space, the
    ridge on the latency itself, each row weighed by 1 / y^2."""

    def __init__(self, candidates: tuple[str, ...] = CANDIDATES, cv: int = 5, log_target: bool = True,
                 select_by: str = "mape", random_state: int = 0, gbm_trees: int = 300):
        super().__init__(candidates, cv, log_target, select_by, random_state, gbm_trees)


class AccuracyPredictor(Predictor):
    """Accuracy from the per-layer arch encoding; chosen by RMSE."""

    def __init__(self, candidates: tuple[str, ...] = CANDIDATES, cv: int = 5, log_target: bool = False,
                 select_by: str = "rmse", random_state: int = 0, gbm_trees: int = 300):
        super().__init__(candidates, cv, log_target, select_by, random_state, gbm_trees)
