"""Co-selling detector: many assets, in several classes, sold together by more than their own
volatility explains, while correlations converge and long positions are force-liquidated.

Notes
-----
Per bar *t*, asset *i*, bar log return :math:`r_{i,t}` (NaN = undefined: session closed, stale,
excluded). Defaults are those of :class:`CoSellParams`, calibrated on Binance 5-minute bars.

- **Volatility** :math:`\\sigma_i`: zero-mean RMS of the 1-bar returns that have *left* the H-bar
  window (bars :math:`\\le t-H`), so the move under test never inflates its own threshold;
  ``"ew"``: exponentially weighted (half-life ``vol_halflife_bars``); ``"rolling"``: the last
  ``vol_window_bars`` defined returns. NaN returns are skipped. Defined once it holds ``min_obs``
  returns and is > 0.
- **Defined set** :math:`D`: assets with :math:`r_{i,t}` and :math:`\\sigma_i` defined. The
  others leave breadth entirely (neither selling nor not selling). Empty :math:`D` ⇒ score NaN.
- **H-bar move**: :math:`R_i` = sum of the :math:`m_i` defined returns among the last H bars,
  :math:`z_i = R_i / (\\sigma_i\\sqrt{m_i})`; *i* is **selling** when :math:`z_i < -z`.
- (a) **breadth** :math:`a = \\sum_{D} w_i 1[z_i<-z] / \\sum_{D} w_i` (``asset_weights``, 1).
- (b) **classes** :math:`b` = classes with a selling asset / classes with an asset in :math:`D`.
- (c) **convergence** :math:`c` = mean of :math:`\\mathrm{clip}(\\zeta/\\zeta_{full}, 0, 1)`
  over :math:`\\zeta_\\rho, \\zeta_{AR}` (those defined), with
  :math:`\\zeta_x = (x_t - \\mu_x) / \\max(s_x, s_{floor})`, :math:`\\mu_x, s_x` the EW mean
  and (biased) standard deviation of the average correlation / absorption ratio over the bars
  *before* t (half-life ``baseline_halflife_bars``, at least ``min_obs`` values).
- (d) **forced flow** :math:`d = \\mathrm{clip}(z_{liq}/z_{liq,full}, 0, 1)`, :math:`z_{liq}` the
  long-liquidation robust z-score (:mod:`signals.liquidations`).
- **Score** :math:`s = \\sum_k W_k c_k / \\sum_k W_k` over the *available* components: c is
  unavailable without a defined input and warm baseline, d when ``long_liq_z`` is None/NaN, so
  backtests without liquidation data still work. W = (0.4, 0.2, 0.2, 0.2). NaN for the first
  ``warmup_bars`` bars.
- **Flag** (hysteresis): starts after ``min_on_bars`` consecutive bars with
  :math:`s \\ge \\theta_{on}` (0.65); ends after ``min_off_bars`` consecutive bars with
  :math:`s < \\theta_{off}` (0.4) or NaN, so a flag lasts at least ``min_off_bars`` bars. The
  episode starts at the first bar of the qualifying run; event ids derive from it.

Calibration (Binance 5-minute perps BTC/ETH/SOL, ``tests/fixtures/history``, correlations over
120 bars): the flag starts on 2025-10-10 at 20:55 UTC (peak 1.00 at 21:20) and on 2025-11-04
at 05:30 and 21:30, and stays off over 2025-09-08..20, whose maximum score is 0.50 to 0.52
(2025-11-04 peaks at 0.78 to 0.82). ``z_sell`` is the sensitive knob: 4.25 fires once in the
calm stretch (2025-09-09 14:40), 5.0 misses 2025-11-04.

References: Greenwood, Landier & Thesmar (2015), "Vulnerable banks", JFE 115(3); Kritzman, Li,
Page & Rigobon (2011), "Principal components as a measure of systemic risk", JPM 37(4); Holló,
Kremer & Lo Duca (2012), "CISS", ECB WP 1426 (stress weighs more when it hits many segments).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from signals.cosell_events import CoSellEvent, CoSellResult, EventType, SellingAsset
from signals.cosell_params import CoSellParams, VolEstimator
from signals.errors import InvalidInputError
from signals.validate import as_vector, check_bar_time

__all__ = [
    "CoSellDetector",
    "CoSellEvent",
    "CoSellParams",
    "CoSellResult",
    "EventType",
    "SellingAsset",
    "VolEstimator",
]

_TOL = 1e-9
_DEFAULT_PARAMS = CoSellParams()


class _EwBaseline:
    """EW mean and biased variance of a scalar (pandas ``ewm(adjust=True, ignore_na=True)``)."""

    __slots__ = ("count", "decay", "s0", "s1", "s2")

    def __init__(self, halflife: float) -> None:
        self.decay = 0.5 ** (1.0 / halflife)
        self.s0 = self.s1 = self.s2 = 0.0
        self.count = 0

    def update(self, x: float) -> None:
        self.s0 = self.decay * self.s0 + 1.0
        self.s1 = self.decay * self.s1 + x
        self.s2 = self.decay * self.s2 + x * x
        self.count += 1

    def z(self, x: float, min_obs: int, sd_floor: float) -> float:
        if not math.isfinite(x) or self.count < min_obs:
            return math.nan
        mean = self.s1 / self.s0
        sd = math.sqrt(max(self.s2 / self.s0 - mean * mean, 0.0))
        return (x - mean) / max(sd, sd_floor)


class CoSellDetector:
    """Streaming co-selling score and flag over a fixed universe of assets (one bar at a time).

    Parameters
    ----------
    assets
        Canonical asset names, in the order of the ``returns`` vectors.
    asset_classes
        The class of each asset (crypto, equity, metal...).
    params
        See :class:`CoSellParams`; the formula is in the module Notes.

    Examples
    --------
    >>> import numpy as np
    >>> p = CoSellParams(horizon_bars=1, warmup_bars=50, min_obs=50, min_off_bars=2)
    >>> det = CoSellDetector(["BTC", "ETH", "SPX"], ["crypto", "crypto", "equity"], p)
    >>> rng = np.random.default_rng(0)
    >>> for t in range(51):
    ...     res = det.update(t * 60_000_000_000, rng.normal(0, 1e-3, 3), 0.5, 0.6)
    >>> res = det.update(51 * 60_000_000_000, np.array([-0.01, -0.01, np.nan]), 0.5, 0.6)
    >>> res.breadth, res.classes, res.n_defined, res.active   # SPX closed: left out
    (1.0, 1.0, 2, True)
    >>> res.events[0].id, [s.asset for s in res.events[0].selling]
    ('cosell.start:3060000000000', ['ETH', 'BTC'])
    """

    def __init__(
        self,
        assets: Sequence[str],
        asset_classes: Sequence[str],
        params: CoSellParams = _DEFAULT_PARAMS,
    ) -> None:
        if len(assets) == 0 or len(assets) != len(asset_classes):
            raise InvalidInputError(
                f"got {len(assets)} assets and {len(asset_classes)} classes: "
                "give one class per asset, at least one asset"
            )
        if len(set(assets)) != len(assets):
            raise InvalidInputError(
                f"assets {list(assets)} contain duplicates: names must be unique"
            )
        unknown = set(params.asset_weights or {}) - set(assets)
        if unknown:
            raise InvalidInputError(f"asset_weights name unknown assets {sorted(unknown)}")
        self.assets = tuple(assets)
        self.asset_classes = tuple(asset_classes)
        self.params = params
        n, h = len(assets), params.horizon_bars
        weights = params.asset_weights or {}
        self._w = np.array([float(weights.get(a, 1.0)) for a in assets])
        self._ring = np.full((h, n), np.nan)  # last H returns
        self._pos = 0
        self._vol_count = np.zeros(n, dtype=np.int64)
        if params.vol_estimator == "ew":
            self._decay = 0.5 ** (1.0 / params.vol_halflife_bars)
            self._vol_s = np.zeros(n)  # Σ decay^k r², Σ decay^k over defined returns
            self._vol_w = np.zeros(n)
        else:
            self._vol_buf = np.zeros((params.vol_window_bars, n))
        self._corr_base = _EwBaseline(params.baseline_halflife_bars)
        self._ar_base = _EwBaseline(params.baseline_halflife_bars)
        self._bars = 0
        self._last_ns: int | None = None
        self._last: CoSellResult | None = None
        # flag state
        self._active = False
        self._run = 0  # consecutive bars >= theta_on (inactive) or < theta_off (active)
        self._run_start_ns = 0
        self._run_start_bar = 0
        self._start_bar = 0  # bar index of the start event (update cadence)
        self._episode_ns = 0
        self._episode_bar = 0
        self._peak = math.nan
        self._min_ret = math.inf
        self._min_asset: str | None = None

    @property
    def active(self) -> bool:
        """True while a co-selling flag is up."""
        return self._active

    def get(self) -> CoSellResult | None:
        """The result of the last :meth:`update` (None before the first); no side effects."""
        return self._last

    def sigma(self) -> NDArray[np.float64]:
        """Per-bar volatility of each asset from returns at least H bars old (NaN while cold)."""
        p = self.params
        if p.vol_estimator == "ew":
            with np.errstate(invalid="ignore", divide="ignore"):
                var = self._vol_s / self._vol_w
        else:
            k = np.minimum(self._vol_count, p.vol_window_bars)
            with np.errstate(invalid="ignore", divide="ignore"):
                var = (self._vol_buf**2).sum(axis=0) / k
        sd: NDArray[np.float64] = np.sqrt(var)
        sd[(self._vol_count < p.min_obs) | ~(sd > 0)] = np.nan
        return sd

    def _push_vol(self, r: NDArray[np.float64]) -> None:
        ok = np.isfinite(r)
        if self.params.vol_estimator == "ew":
            self._vol_s[ok] = self._decay * self._vol_s[ok] + r[ok] ** 2
            self._vol_w[ok] = self._decay * self._vol_w[ok] + 1.0
        else:
            for i in np.flatnonzero(ok):
                self._vol_buf[self._vol_count[i] % self.params.vol_window_bars, i] = r[i]
        self._vol_count[ok] += 1

    def update(
        self,
        bar_start_ns: int,
        returns: NDArray[np.float64],
        corr_avg: float,
        absorption_ratio: float,
        long_liq_z: float | None = None,
        long_liq_notional_usd: float | None = None,
        corr_by_class_pair: Mapping[str, float] | None = None,
    ) -> CoSellResult:
        """Take one bar; return the score, its components, the flag and any events.

        Parameters
        ----------
        bar_start_ns
            Bar start, ns since the epoch (UTC); strictly increasing.
        returns
            (n,) log returns of this bar in ``assets`` order; NaN = undefined.
        corr_avg, absorption_ratio
            This bar's average pairwise correlation and absorption ratio; NaN = undefined
            (component c then rests on the other one, or is unavailable).
        long_liq_z
            Long-liquidation robust z; None/NaN = unavailable (weights renormalised).
        long_liq_notional_usd, corr_by_class_pair
            Evidence carried into the events (e.g. ``{"crypto-equity": 0.8}``).

        Raises
        ------
        InvalidInputError
            Wrong shape, ±inf, a correlation outside [-1, 1], a ratio outside [0, 1], negative
            notional, or a bar that is not after the previous one.
        """
        r = self._validate(bar_start_ns, returns, corr_avg, absorption_ratio, long_liq_z,
                           long_liq_notional_usd, corr_by_class_pair)  # fmt: skip
        p = self.params
        self._bars += 1
        self._last_ns = bar_start_ns
        if self._bars > p.horizon_bars:
            self._push_vol(self._ring[self._pos])  # bar t-H leaves the window
        self._ring[self._pos] = r
        self._pos = (self._pos + 1) % p.horizon_bars
        sigma = self.sigma()
        cum = np.nansum(self._ring, axis=0)
        m = np.isfinite(self._ring).sum(axis=0)
        defined = np.isfinite(r) & np.isfinite(sigma)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(defined, cum / (sigma * np.sqrt(m)), np.nan)
        sells = defined & (z < -p.z_sell)
        selling = tuple(
            SellingAsset(self.assets[i], self.asset_classes[i], float(cum[i]), float(z[i]))
            for i in sorted(np.flatnonzero(sells), key=lambda i: z[i])
        )
        classes_hit = tuple(sorted({s.asset_class for s in selling}))
        n_def = int(defined.sum())
        breadth = classes = math.nan
        if n_def:
            breadth = float(self._w[sells].sum() / self._w[defined].sum())
            classes = len(classes_hit) / len(
                {self.asset_classes[i] for i in np.flatnonzero(defined)}
            )
        corr_z = self._corr_base.z(corr_avg, p.min_obs, p.baseline_sd_floor)
        ar_z = self._ar_base.z(absorption_ratio, p.min_obs, p.baseline_sd_floor)
        for base, x in ((self._corr_base, corr_avg), (self._ar_base, absorption_ratio)):
            if math.isfinite(x):
                base.update(x)
        mapped = [min(max(zz / p.corr_z_full, 0.0), 1.0) for zz in (corr_z, ar_z) if zz == zz]
        corr = sum(mapped) / len(mapped) if mapped else math.nan
        liq = math.nan
        if long_liq_z is not None and math.isfinite(long_liq_z):
            liq = min(max(long_liq_z / p.liq_z_full, 0.0), 1.0)
        score = math.nan
        if n_def and self._bars > p.warmup_bars:
            parts = [(w, c) for w, c in zip(p.component_weights, (breadth, classes, corr, liq),
                                            strict=True) if c == c]  # fmt: skip
            score = sum(w * c for w, c in parts) / sum(w for w, _ in parts)
        if n_def:
            i_min = int(np.nanargmin(np.where(defined, cum, np.nan)))
            bar_min = (float(cum[i_min]), self.assets[i_min])
        else:
            bar_min = (math.inf, "")
        pairs = corr_by_class_pair
        template = CoSellEvent(
            "", "cosell.update", bar_start_ns, self._episode_ns, score, self._peak, breadth,
            classes, corr, liq, selling, classes_hit, float(corr_avg), corr_z,
            float(absorption_ratio), ar_z,
            None if pairs is None else tuple(sorted((k, float(v)) for k, v in pairs.items())),
            None if long_liq_notional_usd is None else float(long_liq_notional_usd),
            None if long_liq_z is None else float(long_liq_z),
        )  # fmt: skip
        events = self._step(bar_start_ns, score, bar_min, template)
        self._last = CoSellResult(bar_start_ns, score, breadth, classes, corr, liq, corr_z, ar_z,
                                  n_def, selling, classes_hit, self._active, events)  # fmt: skip
        return self._last

    def _step(
        self, t_ns: int, score: float, bar_min: tuple[float, str], template: CoSellEvent
    ) -> tuple[CoSellEvent, ...]:
        """Advance the hysteresis state machine by one bar (NaN score counts as calm)."""
        p = self.params
        if not self._active:
            if not score >= p.theta_on:
                self._run = 0
                return ()
            if self._run == 0:  # a candidate episode starts here
                self._run_start_ns, self._run_start_bar = t_ns, self._bars
                self._peak, self._min_ret, self._min_asset = score, math.inf, None
            self._run += 1
            self._track(score, bar_min)
            if self._run < p.min_on_bars:
                return ()
            self._active, self._run, self._start_bar = True, 0, self._bars
            self._episode_ns, self._episode_bar = self._run_start_ns, self._run_start_bar
            return (self._event("cosell.start", f"cosell.start:{self._episode_ns}", template),)
        self._track(score, bar_min)
        if score >= p.theta_off:
            self._run = 0
        else:
            if self._run == 0:  # first bar of a calm run: the episode ends here if it lasts
                self._run_start_ns, self._run_start_bar = t_ns, self._bars
            self._run += 1
            if self._run >= p.min_off_bars:
                self._active, self._run = False, 0
                found = math.isfinite(self._min_ret)
                return (
                    self._event(
                        "cosell.end", f"cosell.end:{self._episode_ns}", template,
                        duration_s=(self._run_start_ns - self._episode_ns) / 1e9,
                        duration_bars=self._run_start_bar - self._episode_bar,
                        min_cum_return=self._min_ret if found else None,
                        min_cum_return_asset=self._min_asset if found else None,
                    ),
                )  # fmt: skip
        if (self._bars - self._start_bar) % p.update_every_bars == 0:
            kind: EventType = "cosell.update"
            return (self._event(kind, f"{kind}:{self._episode_ns}:{t_ns}", template),)
        return ()

    def _track(self, score: float, bar_min: tuple[float, str]) -> None:
        if score == score:
            self._peak = score if self._peak != self._peak else max(self._peak, score)
        if bar_min[0] < self._min_ret:
            self._min_ret, self._min_asset = bar_min

    def _event(
        self, kind: EventType, event_id: str, template: CoSellEvent, **end: Any
    ) -> CoSellEvent:
        return replace(
            template, id=event_id, type=kind, episode_start_ns=self._episode_ns,
            peak_score=self._peak, **end,
        )  # fmt: skip

    def _validate(
        self,
        bar_start_ns: int,
        returns: NDArray[np.float64],
        corr_avg: float,
        absorption_ratio: float,
        long_liq_z: float | None,
        long_liq_notional_usd: float | None,
        corr_by_class_pair: Mapping[str, float] | None,
    ) -> NDArray[np.float64]:
        check_bar_time(bar_start_ns, self._last_ns)
        r = as_vector(returns, self.assets, "returns")
        bad = np.flatnonzero(np.isinf(r))
        if bad.size:
            raise InvalidInputError(
                f"return of {self.assets[bad[0]]!r} is {r[bad[0]]}: returns must be finite "
                "(NaN = undefined)"
            )
        checks: list[tuple[str, float | None, float, float]] = [
            ("corr_avg", corr_avg, -1.0, 1.0),
            ("absorption_ratio", absorption_ratio, 0.0, 1.0),
            ("long_liq_z", long_liq_z, -math.inf, math.inf),
            ("long_liq_notional_usd", long_liq_notional_usd, 0.0, math.inf),
        ]
        checks += [(f"corr_by_class_pair[{k!r}]", v, -1.0, 1.0)
                   for k, v in (corr_by_class_pair or {}).items()]  # fmt: skip
        for name, value, lo, hi in checks:
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise InvalidInputError(f"{name}={value!r} must be a float (NaN = undefined)")
            if math.isinf(value) or not (value != value or lo - _TOL <= value <= hi + _TOL):
                raise InvalidInputError(f"{name}={value} must be NaN or finite in [{lo}, {hi}]")
        return r
