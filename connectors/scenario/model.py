"""Synthetic multi-asset market with regime switches: calm, fire sale, recovery (pure, seeded).

:func:`generate` yields canonical events (:class:`~streams.events.PriceTick` ``mark``/``trade``,
:class:`~streams.events.Liquidation`, :class:`~streams.events.Funding`) per asset and venue in
event-time order, each with the ground-truth phase it belongs to. No clock, no I/O: the same
parameters, assets, ``start_ns`` and seed give the same events.

Notes
-----
Time runs on a grid of ``step_s`` seconds (1 s). ``s(t)`` in [0, 1] is the *stress* of the phase
(linear from ``stress_start`` to ``stress_end``). Per step, the efficient log price of asset
*i* moves by

``r_i = ΔG_i + √dt·(σ_i(s)·(L z)_i + s·β_i·ε)``,  ``z ~ N(0, I)``, ``ε ~ N(0, 1)`` (common factor),

with ``L`` the Cholesky factor of the calm correlation matrix, ``σ_i(s)`` linear from the calm
vol to ``√(1−c_i)·σ_stress,i`` and ``β_i = √c_i·σ_stress,i`` (``c_i`` = ``common_share``): at
``s = 0`` vols and correlations are the calm ones; at ``s = 1`` the vol is ``σ_stress,i`` and every
pairwise correlation is ``√(c_i c_j) + √((1−c_i)(1−c_j))·ρ_ij`` (0.85 + 0.15ρ: toward 1).
``G_i(t) = ln(1 − drawdown_i)·g(t)``, ``g`` the sum over phases of ``move·shape(u)``, ``u`` the
elapsed share of the phase and ``shape(u) = (1 − e^{−k u}) / (1 − e^{−k})`` (``k`` =
``front_load``: most of the fall comes early). Annualized vols are per 365 × 24 h: the scenario
trades around the clock.

**Liquidations** are driven by new lows: positions are liquidated when the price crosses the
levels under recent lows. The level reference is ``min_{u≤t}(p_u − κ_i u) + κ_i t`` (it creeps up
at ``κ_i = liq_level_creep`` × daily calm vol per day, started from its stationary distance), and
the long notional of a step is ``100·liq_usd_per_pct_drop_i × (how far the step pushed below it)
+ liq_base_usd_per_day_i·dt/86400·(1 + (liq_stress_base_mult − 1)·s)``; shorts mirror it on new
highs. The notional is split over venues by ``venue_share`` into Poisson orders of log-normal size
(mean ``liq_mean_usd``). Binance pushes at most one liquidation per symbol per second: only the
last of each second is kept there (its sums are lower bounds, ``completeness = "sampled"``; OKX
is labelled ``sampled`` too, Bybit ``complete``).

**Funding**: annualized rate per venue = calm + (stress − calm)·s̃ + venue offset + OU noise,
``s̃`` the stress smoothed with half-life ``funding_halflife_s`` (the premium index lags);
``rate = rate_annualized × interval_hours / (24 × 365)``; open interest falls by ``oi_drop·s̃``.

Calibration (defaults; DESIGN.md "Why it exists", ``tests/fixtures/history``): calm vols from
Binance 5-minute perps in 2025-09 (BTC 0.24, ETH 0.43, SOL 0.58) and daily 2024-12..2025-11
(BTC 0.43, ETH 0.75; SPY 0.20, QQQ 0.24, gold 0.20 per 252 days ≈ 0.17/0.20/0.17 per 365);
stress vols from 2025-10-10 / 2025-11-04 (BTC 0.86/0.51, ETH 1.1/0.8, SOL 2.4/0.95); calm
correlations of 1-minute returns: crypto 0.62–0.75 (5m history 0.65–0.74), BTC–NDX 0.40,
SPX–NDX 0.92, gold ≈ 0.05 (daily history 0.00–0.09); fire-sale drawdowns between 2025-11-04
(BTC −6 %, ETH −7 %, S&P −1.2 %, Nasdaq −1.6 %) and 2025-10-10 (BTC −18 %, ETH −27 %, SOL −37 %):
BTC −8 %, ETH −12 %, SOL −15 %, XRP −14 %, gold −2.5 %, SPX −2 %, NDX −2.5 %; funding
+5..8 %/yr calm (history mean 5.5 %), −5..−50 %/yr at full stress (2025-10-10 minima: BTC −12 %,
ETH −14 %, SOL −330 %).

Measured on the ``fire-sale`` preset (1-minute bars of Bybit marks, seeds 0–7 and 11; see
``tests/connectors/test_scenario.py``): calm vols within 4 % of the parameters, calm correlations
within 0.06, average pairwise correlation 0.37–0.40 calm → 0.87–0.93 in the fire sale;
drawdowns BTC 6–10 %, ETH 10–15 %, SOL 13–19 %, gold 2.0–3.5 %, SPX 1.5–2.8 %, NDX 1.9–3.6 %;
liquidations $0.19–0.44B/day calm (both sides) and $0.35–1.1B of longs in the 2-hour fire sale
(DESIGN: $1.1–1.3B in 24 h on 2025-11-04), 23–240× the calm per-minute long notional;
venue-average annualized funding +0.06 calm, −0.15 fire sale. On bars of every price tick,
:class:`signals.cosell.CoSellDetector` (``CoSellParams.for_bar_interval(60)``, 120-bar
correlations) starts 8–16 bars after the onset, never in calm (calm scores ≤ 0.12), and ends
8 bars before to 44 bars after the end of the fire sale. Bars built from every venue's ticks sample
the assets at slightly different times, which lowers measured correlations (Epps effect: about
−0.05 with 10-second marks, negligible with the default 1 s).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from signals.errors import InvalidInputError
from streams.events import AssetClassName, Funding, Liquidation, PriceTick

__all__ = [
    "CLASS_CORRELATIONS",
    "CLASS_DYNAMICS",
    "DEFAULT_CORRELATIONS",
    "DEFAULT_DYNAMICS",
    "PRESETS",
    "AssetDynamics",
    "AssetSpec",
    "Phase",
    "PhaseInterval",
    "PhaseName",
    "PhaseSchedule",
    "Preset",
    "ScenarioParams",
    "ScenarioTick",
    "cme_globex_open",
    "generate",
    "phase_schedule",
]

NS_PER_S = 1_000_000_000
YEAR_S = 365 * 86_400
DAY_S = 86_400

PhaseName = Literal["calm", "fire_sale", "recovery"]
Preset = Literal["fire-sale", "calm"]
TickEvent = PriceTick | Liquidation | Funding
FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Phase:
    """One regime of the schedule.

    Attributes
    ----------
    name
        Ground-truth label: ``calm``, ``fire_sale`` or ``recovery``.
    duration_s
        Length in seconds (> 0).
    stress_start, stress_end
        Stress ``s`` at the start and end of the phase (linear in between), in [0, 1].
    move
        Share of each asset's ``drawdown`` (in log terms) realized as drift over the phase:
        1 = the full fall, −0.4 = a rebound of 40 % of it, 0 = driftless.

    Examples
    --------
    >>> Phase("fire_sale", 3 * 3600, 1.0, 1.0, move=1.0).duration_s
    10800
    """

    name: PhaseName
    duration_s: float
    stress_start: float = 0.0
    stress_end: float = 0.0
    move: float = 0.0


@dataclass(frozen=True, slots=True)
class AssetDynamics:
    """Per-asset parameters (USD notionals are market-wide over the scenario's venues).

    Attributes
    ----------
    price
        Starting price (the venues' instrument: SPX/NDX are priced like Bybit ``SPYUSDT`` /
        ``QQQUSDT``, i.e. the ETFs).
    vol_calm_annual, vol_stress_annual
        Annualized vol (365 days of 24 h) at stress 0 and 1.
    common_share
        Share of the stress variance carried by the common fire-sale factor, in [0, 1).
    drawdown
        Fall over a phase with ``move = 1`` (fraction, e.g. 0.08 = −8 %).
    trade_rate_hz
        Trades per second per venue in calm (× ``stress_trade_mult`` at full stress).
    liq_base_usd_per_day
        Background liquidations per side and day in calm (× ``liq_stress_base_mult`` at s = 1).
    liq_usd_per_pct_drop
        Liquidated notional per 1 % the price pushes past its trailing low (longs) or high.
    funding_calm_annualized, funding_stress_annualized
        Venue-average annualized funding at stress 0 and 1 (smoothed stress).
    open_interest_usd
        Open interest at the start.
    """

    price: float
    vol_calm_annual: float
    vol_stress_annual: float
    common_share: float
    drawdown: float
    trade_rate_hz: float
    liq_base_usd_per_day: float
    liq_usd_per_pct_drop: float
    funding_calm_annualized: float
    funding_stress_annualized: float
    open_interest_usd: float


def _dyn(*values: float) -> AssetDynamics:
    return AssetDynamics(*values)


# price, σ calm, σ stress, common share, drawdown, trades/s, liq base/day, liq per % drop,
# funding calm, funding stress, open interest
DEFAULT_DYNAMICS: Mapping[str, AssetDynamics] = {
    "BTC": _dyn(110_000.0, 0.35, 0.90, 0.85, 0.08, 1.0, 15e6, 80e6, 0.08, -0.15, 30e9),
    "ETH": _dyn(3_900.0, 0.60, 1.30, 0.85, 0.12, 1.0, 12e6, 50e6, 0.08, -0.20, 20e9),
    "SOL": _dyn(190.0, 0.75, 1.80, 0.85, 0.15, 0.5, 5e6, 15e6, 0.06, -0.50, 5e9),
    "XRP": _dyn(2.5, 0.70, 1.70, 0.85, 0.14, 0.5, 3e6, 10e6, 0.06, -0.30, 3e9),
    "GOLD": _dyn(4_000.0, 0.14, 0.35, 0.75, 0.025, 0.3, 0.3e6, 0.5e6, 0.05, -0.05, 0.3e9),
    "SPX": _dyn(680.0, 0.14, 0.35, 0.85, 0.02, 0.2, 0.2e6, 0.3e6, 0.05, -0.10, 0.1e9),
    "NDX": _dyn(620.0, 0.18, 0.45, 0.85, 0.025, 0.2, 0.2e6, 0.3e6, 0.05, -0.10, 0.1e9),
}
"""Calibrated dynamics of the default universe (module Notes)."""

CLASS_DYNAMICS: Mapping[str, AssetDynamics] = {
    "crypto": _dyn(100.0, 0.80, 1.80, 0.85, 0.15, 0.3, 2e6, 3e6, 0.06, -0.30, 1e9),
    "equity": _dyn(100.0, 0.20, 0.50, 0.85, 0.025, 0.2, 0.1e6, 0.2e6, 0.05, -0.10, 0.1e9),
    "metal": _dyn(100.0, 0.18, 0.40, 0.75, 0.025, 0.2, 0.1e6, 0.2e6, 0.05, -0.05, 0.1e9),
    "fx": _dyn(100.0, 0.08, 0.15, 0.5, 0.01, 0.2, 0.05e6, 0.1e6, 0.02, -0.02, 0.05e9),
    "rates": _dyn(100.0, 0.06, 0.12, 0.5, 0.01, 0.2, 0.05e6, 0.1e6, 0.02, -0.02, 0.05e9),
}
"""Fallback dynamics, by asset class, for assets absent from ``dynamics``."""

DEFAULT_CORRELATIONS: Mapping[tuple[str, str], float] = {
    ("BTC", "ETH"): 0.75, ("BTC", "SOL"): 0.70, ("BTC", "XRP"): 0.65, ("ETH", "SOL"): 0.72,
    ("ETH", "XRP"): 0.65, ("SOL", "XRP"): 0.62, ("BTC", "SPX"): 0.35, ("BTC", "NDX"): 0.40,
    ("ETH", "SPX"): 0.35, ("ETH", "NDX"): 0.40, ("SOL", "SPX"): 0.30, ("SOL", "NDX"): 0.35,
    ("XRP", "SPX"): 0.28, ("XRP", "NDX"): 0.32, ("SPX", "NDX"): 0.92,
}  # fmt: skip
"""Calm correlations of 1-minute returns; unlisted pairs use ``class_correlations``."""

CLASS_CORRELATIONS: Mapping[str, float] = {
    "crypto-crypto": 0.6, "crypto-equity": 0.3, "equity-equity": 0.8, "crypto-metal": 0.05,
    "equity-metal": 0.05, "metal-metal": 0.7,
}  # fmt: skip
"""Calm correlation by class pair (names sorted, joined by ``-``); unlisted pairs are 0."""

FIRE_SALE_PHASES: tuple[Phase, ...] = (
    Phase("calm", 26 * 3600),
    Phase("fire_sale", 2 * 3600, 1.0, 1.0, move=1.0),
    Phase("recovery", 6 * 3600, 0.6, 0.0, move=-0.4),
)
PRESETS: Mapping[str, tuple[Phase, ...]] = {
    "fire-sale": FIRE_SALE_PHASES,
    "calm": (Phase("calm", 48 * 3600),),
}
"""Phase schedules by preset name: 26 h calm (a day of warm-up for 1-minute bars) → 2 h fire
sale → 6 h recovery; or 48 h calm."""


@dataclass(frozen=True, slots=True)
class ScenarioParams:
    """Everything that shapes a scenario (defaults in brackets; calibration in the module Notes).

    Attributes
    ----------
    phases
        The schedule [``PRESETS["fire-sale"]``].
    dynamics, class_dynamics
        Per-asset parameters, and the per-class fallback [``DEFAULT_DYNAMICS``, ``CLASS_DYNAMICS``].
    correlations, class_correlations
        Calm correlation per asset pair (either order), and per class pair as fallback.
    venues
        Venues that list the assets (an asset trades where the universe gives it a symbol)
        [binance, bybit, okx].
    venue_share
        Split of liquidations and open interest between venues [0.45, 0.35, 0.20].
    sampled_venues, one_per_second_venues
        Venues whose liquidation feed is ``sampled`` [binance, okx], and those that push at most
        one liquidation per symbol per second [binance].
    funding_interval_hours
        Funding interval per venue [8 h each]; the next funding time is epoch-aligned.
    step_s, chunk_s
        Simulation step [1 s] and generation chunk [600 s, a multiple of ``step_s``]; the seed
        reproduces a scenario only with the same values.
    mark_interval_s, funding_update_s
        Period of mark-price ticks [1 s] and funding updates [60 s] per instrument.
    trade_rate_scale, stress_trade_mult
        Multiplier of every ``trade_rate_hz`` [1] and trade activity at full stress [3].
    front_load
        ``k`` of the drift shape; larger = more of the move early in the phase [1].
    liq_mean_usd, liq_size_sigma
        Mean [10 000 USD] and log-sd [1.2] of one liquidation order.
    liq_level_creep, liq_stress_base_mult
        Creep of the liquidation levels in calm daily vols per day [0.5]; background
        liquidations at full stress [× 5].
    funding_halflife_s, funding_noise_annualized, funding_noise_halflife_s, funding_venue_sd
        Lag of funding behind stress [1200 s]; OU noise sd [0.01/yr] and half-life [3600 s];
        sd of the fixed venue offsets [0.005/yr].
    oi_drop
        Share of open interest gone at full (smoothed) stress [0.2].
    venue_basis_bp, trade_noise_bp
        sd of the fixed venue basis of marks [0.1 bp] and of trade prices around the mark
        [0.2 bp] (kept small: every bar close carries it).
    closed_sessions
        False [default]: equity and gold proxies trade 24/7 with a live price, as the scenario
        assumes. True: assets whose session is ``cme_equity``/``cme_metals`` emit nothing while
        CME Globex is closed (Fri 17:00 → Sun 18:00 New York, and 17:00–18:00 Mon–Thu; holidays
        are ignored); their price keeps moving, so they reopen with a gap.

    Examples
    --------
    >>> p = ScenarioParams.preset("fire-sale", mark_interval_s=10.0)
    >>> [ph.name for ph in p.phases], p.duration_s / 3600, p.mark_interval_s
    (['calm', 'fire_sale', 'recovery'], 34.0, 10.0)
    >>> ScenarioParams(phases=())
    Traceback (most recent call last):
    ...
    signals.errors.InvalidInputError: phases is empty: give at least one Phase
    """

    phases: tuple[Phase, ...] = FIRE_SALE_PHASES
    dynamics: Mapping[str, AssetDynamics] = field(default_factory=lambda: dict(DEFAULT_DYNAMICS))
    class_dynamics: Mapping[str, AssetDynamics] = field(
        default_factory=lambda: dict(CLASS_DYNAMICS)
    )
    correlations: Mapping[tuple[str, str], float] = field(
        default_factory=lambda: dict(DEFAULT_CORRELATIONS)
    )
    class_correlations: Mapping[str, float] = field(
        default_factory=lambda: dict(CLASS_CORRELATIONS)
    )
    venues: tuple[str, ...] = ("binance", "bybit", "okx")
    venue_share: Mapping[str, float] = field(
        default_factory=lambda: {"binance": 0.45, "bybit": 0.35, "okx": 0.20}
    )
    sampled_venues: tuple[str, ...] = ("binance", "okx")
    one_per_second_venues: tuple[str, ...] = ("binance",)
    funding_interval_hours: Mapping[str, float] = field(
        default_factory=lambda: {"binance": 8.0, "bybit": 8.0, "okx": 8.0}
    )
    step_s: float = 1.0
    chunk_s: float = 600.0
    mark_interval_s: float = 1.0
    funding_update_s: float = 60.0
    trade_rate_scale: float = 1.0
    stress_trade_mult: float = 3.0
    front_load: float = 1.0
    liq_mean_usd: float = 10_000.0
    liq_size_sigma: float = 1.2
    liq_level_creep: float = 0.4
    liq_stress_base_mult: float = 5.0
    funding_halflife_s: float = 1200.0
    funding_noise_annualized: float = 0.01
    funding_noise_halflife_s: float = 3600.0
    funding_venue_sd: float = 0.005
    oi_drop: float = 0.2
    venue_basis_bp: float = 0.1
    trade_noise_bp: float = 0.2
    closed_sessions: bool = False

    def __post_init__(self) -> None:
        if not self.phases:
            raise InvalidInputError("phases is empty: give at least one Phase")
        for ph in self.phases:
            if ph.name not in ("calm", "fire_sale", "recovery"):
                raise InvalidInputError(f"phase name {ph.name!r}: use calm, fire_sale, recovery")
            if not (math.isfinite(ph.duration_s) and ph.duration_s > 0):
                raise InvalidInputError(f"phase {ph.name!r} lasts {ph.duration_s} s: must be > 0")
            if not all(0.0 <= s <= 1.0 for s in (ph.stress_start, ph.stress_end)):
                raise InvalidInputError(f"phase {ph.name!r}: stress must be in [0, 1]")
            if not math.isfinite(ph.move):
                raise InvalidInputError(f"phase {ph.name!r}: move must be finite")
        positive = ("step_s", "chunk_s", "mark_interval_s", "funding_update_s", "liq_mean_usd",
                    "funding_halflife_s", "funding_noise_halflife_s", "stress_trade_mult",
                    "liq_stress_base_mult")  # fmt: skip
        for name in positive:
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise InvalidInputError(f"{name}={getattr(self, name)}: must be finite and > 0")
        nonneg = ("trade_rate_scale", "front_load", "liq_size_sigma", "liq_level_creep",
                  "funding_noise_annualized", "funding_venue_sd", "venue_basis_bp",
                  "trade_noise_bp")  # fmt: skip
        for name in nonneg:
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise InvalidInputError(f"{name}={getattr(self, name)}: must be finite and >= 0")
        if not 0 <= self.oi_drop < 1:
            raise InvalidInputError(f"oi_drop={self.oi_drop}: must be in [0, 1)")
        ratio = self.chunk_s / self.step_s
        if abs(ratio - round(ratio)) > 1e-9 or round(self.step_s * NS_PER_S) < 1:
            raise InvalidInputError(f"chunk_s={self.chunk_s} must be a multiple of step_s")
        for venue in self.venues:
            if self.venue_share.get(venue, 0.0) <= 0 or venue not in self.funding_interval_hours:
                raise InvalidInputError(
                    f"venue {venue!r} needs a venue_share > 0 and a funding_interval_hours"
                )
        for name, d in {**self.class_dynamics, **self.dynamics}.items():
            if not (d.price > 0 and d.vol_calm_annual > 0 and d.vol_stress_annual > 0
                    and 0 <= d.common_share < 1 and 0 <= d.drawdown < 1
                    and min(d.trade_rate_hz, d.liq_base_usd_per_day, d.liq_usd_per_pct_drop,
                            d.open_interest_usd) >= 0):  # fmt: skip
                raise InvalidInputError(
                    f"dynamics of {name!r}: need price, vols > 0, 0 <= common_share < 1, "
                    "0 <= drawdown < 1 and non-negative rates"
                )

    @classmethod
    def preset(cls, name: Preset, **overrides: Any) -> ScenarioParams:
        """The parameters of a named preset (``fire-sale`` or ``calm``), with overrides."""
        if name not in PRESETS:
            raise InvalidInputError(f"unknown preset {name!r}; use one of {sorted(PRESETS)}")
        return cls(**({"phases": PRESETS[name]} | overrides))

    @property
    def duration_s(self) -> float:
        """Total length of the schedule in seconds."""
        return float(sum(ph.duration_s for ph in self.phases))

    def dynamics_of(self, name: str, asset_class: str) -> AssetDynamics:
        """The dynamics of an asset: its own entry, else its class fallback."""
        found = self.dynamics.get(name) or self.class_dynamics.get(asset_class)
        if found is None:
            raise InvalidInputError(f"no dynamics for {name!r} nor its class {asset_class!r}")
        return found

    def correlation(self, a: str, class_a: str, b: str, class_b: str) -> float:
        """Calm correlation of two distinct assets (pair entry, else class pair, else 0)."""
        rho = self.correlations.get((a, b), self.correlations.get((b, a)))
        if rho is None:
            rho = self.class_correlations.get("-".join(sorted((class_a, class_b))), 0.0)
        return float(rho)


# ---------------------------------------------------------------------------- phase schedule


@dataclass(frozen=True, slots=True)
class PhaseInterval:
    """A labelled interval ``[start_ns, end_ns)`` of the scenario's event time."""

    phase: PhaseName
    start_ns: int
    end_ns: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (ns ints plus ISO-8601 UTC strings)."""
        iso = [datetime.fromtimestamp(t / NS_PER_S, UTC).isoformat() for t in (self.start_ns,
               self.end_ns)]  # fmt: skip
        return {"phase": self.phase, "start_ns": self.start_ns, "end_ns": self.end_ns,
                "start": iso[0], "end": iso[1]}  # fmt: skip


@dataclass(frozen=True, slots=True)
class PhaseSchedule:
    """The ground-truth phase intervals of a scenario, gapless from start to end.

    Examples
    --------
    >>> s = phase_schedule(ScenarioParams.preset("fire-sale"), start_ns=0)
    >>> [(i.phase, i.start_ns // NS_PER_S) for i in s.intervals]
    [('calm', 0), ('fire_sale', 93600), ('recovery', 100800)]
    >>> s.phase_at(93_600 * NS_PER_S), s.end_ns // NS_PER_S
    ('fire_sale', 122400)
    """

    intervals: tuple[PhaseInterval, ...]

    @property
    def start_ns(self) -> int:
        """Start of the first phase."""
        return self.intervals[0].start_ns

    @property
    def end_ns(self) -> int:
        """End of the last phase (exclusive)."""
        return self.intervals[-1].end_ns

    def phase_at(self, ts_ns: int) -> PhaseName:
        """The phase at ``ts_ns`` (InvalidInputError outside ``[start_ns, end_ns)``)."""
        if not self.start_ns <= ts_ns < self.end_ns:
            raise InvalidInputError(
                f"ts_ns={ts_ns} is outside the scenario [{self.start_ns}, {self.end_ns})"
            )
        starts = [i.start_ns for i in self.intervals]
        return self.intervals[int(np.searchsorted(starts, ts_ns, side="right")) - 1].phase


def phase_schedule(params: ScenarioParams, start_ns: int) -> PhaseSchedule:
    """The labelled phase intervals of ``params`` starting at ``start_ns``."""
    bounds = [int(start_ns)]
    for ph in params.phases:
        bounds.append(bounds[-1] + round(ph.duration_s * NS_PER_S))
    pairs = zip(params.phases, bounds[:-1], bounds[1:], strict=True)
    return PhaseSchedule(tuple(PhaseInterval(ph.name, a, b) for ph, a, b in pairs))


# ---------------------------------------------------------------------------- sessions

_NEW_YORK = ZoneInfo("America/New_York")


def cme_globex_open(ts_ns: int) -> bool:
    """True while CME Globex equity-index/metals futures trade (holidays ignored).

    Open Sunday 18:00 → Friday 17:00 New York time, with a daily halt 17:00–18:00 Mon–Thu.

    Examples
    --------
    >>> saturday, monday = 1_762_588_800 * NS_PER_S, 1_762_761_600 * NS_PER_S  # 11-08/11-10
    >>> cme_globex_open(saturday), cme_globex_open(monday)
    (False, True)
    """
    t = datetime.fromtimestamp(ts_ns // NS_PER_S, _NEW_YORK)
    day, hour = t.weekday(), t.hour  # Monday = 0
    if day == 5 or (day == 6 and hour < 18) or (day == 4 and hour >= 17):
        return False
    return not (day <= 3 and hour == 17)


# ---------------------------------------------------------------------------- generator


class AssetSpec(Protocol):
    """What the generator needs of an asset (:class:`streams.config.Asset` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def asset_class(self) -> AssetClassName: ...
    @property
    def session(self) -> str: ...
    @property
    def symbols(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class ScenarioTick:
    """A canonical event and the ground-truth phase of its event time."""

    event: TickEvent
    phase: PhaseName


@dataclass(frozen=True, slots=True)
class _Instrument:
    asset: int  # index into the simulated assets
    venue: str
    symbol: str
    share: float  # of the asset's liquidations and open interest
    interval_h: float
    completeness: Literal["complete", "sampled"]
    one_per_second: bool
    mark_offset_ns: int


def generate(
    params: ScenarioParams,
    universe_assets: Sequence[AssetSpec],
    start_ns: int,
    seed: int | np.random.Generator,
) -> Iterator[ScenarioTick]:
    """Yield the scenario's events in event-time order, each with its phase.

    Parameters
    ----------
    params
        See :class:`ScenarioParams`; the model is in the module Notes.
    universe_assets
        The assets (``streams.config.load_universe().assets``); an asset trades on each of
        ``params.venues`` where it has a symbol, and is left out if it has none.
    start_ns
        Event time of the first phase's start (ns since the epoch, UTC).
    seed
        An int (``numpy.random.default_rng(seed)``) or a Generator, the only source of
        randomness.

    Yields
    ------
    ScenarioTick
        ``ts_recv_ns`` equals ``ts_event_ns`` (a simulated feed has no network); events with the
        same time keep a fixed order. The last is before ``start_ns + params.duration_s``.

    Examples
    --------
    >>> from streams.config import load_universe
    >>> p = ScenarioParams.preset("calm", phases=(Phase("calm", 60),))
    >>> ticks = list(generate(p, load_universe().assets, 1_762_214_400 * NS_PER_S, seed=7))
    >>> from collections import Counter
    >>> sorted(Counter(type(t.event).__name__ for t in ticks).items())
    [('Funding', 17), ('Liquidation', 5), ('PriceTick', 1612)]
    >>> mark = next(t for t in ticks if getattr(t.event, "kind", "") == "mark")
    >>> mark.phase, mark.event.venue, mark.event.symbol, round(mark.event.price)
    ('calm', 'binance', 'BTCUSDT', 110000)
    >>> ticks == list(generate(p, load_universe().assets, 1_762_214_400 * NS_PER_S, seed=7))
    True
    """
    if isinstance(start_ns, bool) or not isinstance(start_ns, int) or start_ns < 0:
        raise InvalidInputError(f"start_ns={start_ns!r} must be an int >= 0 (ns since epoch)")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    sim = _Simulation(params, universe_assets, start_ns, rng)
    chunk_ns = round(params.chunk_s * NS_PER_S)
    for cs in range(start_ns, sim.end_ns, chunk_ns):
        yield from sim.chunk(cs, min(cs + chunk_ns, sim.end_ns))


class _Simulation:
    """State carried from chunk to chunk (prices, liquidation levels, funding)."""

    def __init__(
        self,
        p: ScenarioParams,
        assets: Sequence[AssetSpec],
        start_ns: int,
        rng: np.random.Generator,
    ) -> None:
        specs = [a for a in assets if any(v in a.symbols for v in p.venues)]
        if not specs:
            raise InvalidInputError(f"no asset has a symbol on the venues {p.venues}")
        self.p, self.rng, self.specs, self.start_ns = p, rng, specs, start_ns
        self.schedule = phase_schedule(p, start_ns)
        self.end_ns = self.schedule.end_ns
        self.step_ns = round(p.step_s * NS_PER_S)
        dyn = [p.dynamics_of(a.name, a.asset_class) for a in specs]

        def arr(name: str) -> FloatArray:
            return np.array([float(getattr(d, name)) for d in dyn])

        per_s = 1.0 / math.sqrt(YEAR_S)
        self.sig_calm = arr("vol_calm_annual") * per_s
        stressed, share = arr("vol_stress_annual") * per_s, arr("common_share")
        self.sig_idio1, self.beta = np.sqrt(1 - share) * stressed, np.sqrt(share) * stressed
        self.log_dd = np.log1p(-arr("drawdown"))
        n = len(specs)
        corr = np.eye(n)
        for i in range(n):
            for j in range(i + 1, n):
                a, b = specs[i], specs[j]
                corr[i, j] = corr[j, i] = p.correlation(a.name, a.asset_class, b.name,
                                                        b.asset_class)  # fmt: skip
        try:
            self.chol = np.linalg.cholesky(corr)
        except np.linalg.LinAlgError:
            raise InvalidInputError(
                f"the calm correlation matrix of {[a.name for a in specs]} is not positive "
                "definite: lower the largest correlations"
            ) from None
        sig_day = self.sig_calm * math.sqrt(DAY_S)
        self.creep = p.liq_level_creep * sig_day / DAY_S  # log units per second
        gap = sig_day / (2 * p.liq_level_creep) if p.liq_level_creep > 0 else sig_day
        self.logp = np.log(arr("price"))
        self.logp0 = self.logp.copy()
        self.low = self.logp - rng.exponential(gap)  # stationary distance to the levels
        self.high = self.logp + rng.exponential(gap)
        self.liq_base = arr("liq_base_usd_per_day") / DAY_S
        self.liq_per_log = arr("liq_usd_per_pct_drop") * 100.0
        self.trade_hz = arr("trade_rate_hz") * p.trade_rate_scale
        self.f_calm = arr("funding_calm_annualized")
        self.f_stress = arr("funding_stress_annualized")
        self.oi = arr("open_interest_usd")
        insts: list[_Instrument] = []
        mark_ns = round(p.mark_interval_s * NS_PER_S)
        for i, a in enumerate(specs):
            listed = [v for v in p.venues if v in a.symbols]
            total = sum(p.venue_share[v] for v in listed)
            for v in listed:
                k = p.venues.index(v)
                insts.append(_Instrument(
                    i, v, a.symbols[v], p.venue_share[v] / total, p.funding_interval_hours[v],
                    "sampled" if v in p.sampled_venues else "complete",
                    v in p.one_per_second_venues, (k * 211_000_000 + 50_000_000) % mark_ns,
                ))  # fmt: skip
        self.insts = insts
        m = len(insts)
        self.basis = rng.normal(0.0, p.venue_basis_bp * 1e-4, m)
        self.f_offset = rng.normal(0.0, p.funding_venue_sd, m)
        self.f_noise = rng.normal(0.0, p.funding_noise_annualized, m)
        phases = p.phases
        self.ph_start = np.array(
            [(i.start_ns - start_ns) / NS_PER_S for i in self.schedule.intervals]
        )
        self.ph_dur = np.array([ph.duration_s for ph in phases], dtype=float)
        self.ph_s0 = np.array([ph.stress_start for ph in phases])
        self.ph_s1 = np.array([ph.stress_end for ph in phases])
        self.ph_move = np.array([ph.move for ph in phases])
        self.ph_prefix = np.concatenate([[0.0], np.cumsum(self.ph_move)[:-1]])
        self.ph_start_ns = np.array([i.start_ns for i in self.schedule.intervals], dtype=np.int64)
        self.ph_names = [ph.name for ph in phases]
        self.s_eff = float(self.stress_and_g(np.zeros(1))[0][0])
        self.last_fund_ns = start_ns
        self.open_cache: dict[int, bool] = {}
        self.chunk_end = start_ns

    def stress_and_g(self, tau: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Stress s and cumulative move shape g at ``tau`` seconds after the start."""
        idx = np.clip(
            np.searchsorted(self.ph_start, tau, side="right") - 1, 0, len(self.ph_dur) - 1
        )
        u = np.clip((tau - self.ph_start[idx]) / self.ph_dur[idx], 0.0, 1.0)
        s = self.ph_s0[idx] + (self.ph_s1[idx] - self.ph_s0[idx]) * u
        k = self.p.front_load
        shape = u if k < 1e-9 else np.expm1(-k * u) / math.expm1(-k)
        return s, self.ph_prefix[idx] + self.ph_move[idx] * shape

    def open_mask(self, asset: int, ts: IntArray) -> NDArray[np.bool_]:
        """Which of ``ts`` fall in the asset's session (all of them unless closed_sessions)."""
        if not self.p.closed_sessions or self.specs[asset].session == "24/7" or not ts.size:
            return np.ones(ts.shape, dtype=bool)
        minutes = ts // (60 * NS_PER_S)
        for mnt in np.unique(minutes).tolist():
            if mnt not in self.open_cache:
                self.open_cache[mnt] = cme_globex_open(mnt * 60 * NS_PER_S)
        return np.array([self.open_cache[mnt] for mnt in minutes.tolist()], dtype=bool)

    def chunk(self, cs: int, ce: int) -> list[ScenarioTick]:
        """Simulate ``[cs, ce)`` and return its events in time order."""
        p, rng, step = self.p, self.rng, self.step_ns
        n = -(-(ce - cs) // step)  # a last partial step: its events after ce are dropped
        self.chunk_end = ce
        grid = cs + step * np.arange(n + 1, dtype=np.int64)
        tau = (grid - self.start_ns) / NS_PER_S
        s_grid, g = self.stress_and_g(tau)
        s = s_grid[:-1, None]
        dt = step / NS_PER_S
        z = rng.standard_normal((n, len(self.specs))) @ self.chol.T
        eps = rng.standard_normal((n, 1))
        sig = self.sig_calm + s * (self.sig_idio1 - self.sig_calm)
        r = np.diff(g)[:, None] * self.log_dd + math.sqrt(dt) * (sig * z + s * self.beta * eps)
        path = np.vstack([self.logp, self.logp + np.cumsum(r, axis=0)])
        self.logp = path[-1].copy()
        drift = self.creep * tau[1:, None]
        lows = np.minimum.accumulate(np.vstack([self.low, path[1:] - drift]), axis=0)
        highs = np.maximum.accumulate(np.vstack([self.high, path[1:] + drift]), axis=0)
        self.low, self.high = lows[-1].copy(), highs[-1].copy()
        base = self.liq_base * dt * (1 + (p.liq_stress_base_mult - 1) * s)
        usd = {"long": base - self.liq_per_log * np.diff(lows, axis=0),
               "short": base + self.liq_per_log * np.diff(highs, axis=0)}  # fmt: skip
        activity = 1 + (p.stress_trade_mult - 1) * s[:, 0]
        parts: list[tuple[IntArray, list[ScenarioTick]]] = []
        for k, inst in enumerate(self.insts):
            parts += self._prices(k, inst, cs, ce, grid, path, activity)
            parts.append(self._liquidations(k, inst, grid, path, usd))
        parts.append(self._funding(cs, ce, path))
        ts = np.concatenate([t for t, _ in parts])
        ticks = [tick for _, chunk_ticks in parts for tick in chunk_ticks]
        return [ticks[i] for i in np.argsort(ts, kind="stable").tolist()]

    def _labels(self, ts: IntArray) -> list[PhaseName]:
        idx = np.searchsorted(self.ph_start_ns, ts, side="right") - 1
        return [self.ph_names[i] for i in idx.tolist()]

    def _price_ticks(
        self, inst: _Instrument, ts: IntArray, logp: FloatArray, kind: Literal["mark", "trade"]
    ) -> tuple[IntArray, list[ScenarioTick]]:
        keep = (ts < self.chunk_end) & self.open_mask(inst.asset, ts)
        ts, price = ts[keep], np.exp(logp[keep])
        a = self.specs[inst.asset]
        ticks = [
            ScenarioTick(PriceTick(venue=inst.venue, symbol=inst.symbol, asset=a.name,
                                   asset_class=a.asset_class, ts_event_ns=t, ts_recv_ns=t,
                                   price=x, kind=kind), ph)
            for t, x, ph in zip(ts.tolist(), price.tolist(), self._labels(ts), strict=True)
        ]  # fmt: skip
        return ts, ticks

    def _prices(
        self, k: int, inst: _Instrument, cs: int, ce: int, grid: IntArray, path: FloatArray,
        activity: FloatArray,
    ) -> list[tuple[IntArray, list[ScenarioTick]]]:  # fmt: skip
        p, rng, i = self.p, self.rng, inst.asset
        mark_ns = round(p.mark_interval_s * NS_PER_S)
        first = cs + (inst.mark_offset_ns - cs) % mark_ns
        marks = np.arange(first, ce, mark_ns, dtype=np.int64)
        mark_logp = path[(marks - cs) // self.step_ns, i] + self.basis[k]
        counts = rng.poisson(self.trade_hz[i] * activity * (self.step_ns / NS_PER_S))
        idx = np.repeat(np.arange(len(counts)), counts)
        trades = grid[idx] + (rng.random(idx.size) * self.step_ns).astype(np.int64)
        order = np.argsort(trades, kind="stable")
        trades, idx = trades[order], idx[order]
        noise = rng.standard_normal(idx.size) * p.trade_noise_bp * 1e-4
        trade_logp = path[idx, i] + self.basis[k] + noise
        return [self._price_ticks(inst, marks, mark_logp, "mark"),
                self._price_ticks(inst, trades, trade_logp, "trade")]  # fmt: skip

    def _liquidations(
        self, k: int, inst: _Instrument, grid: IntArray, path: FloatArray,
        usd: dict[str, FloatArray],
    ) -> tuple[IntArray, list[ScenarioTick]]:  # fmt: skip
        p, rng, i = self.p, self.rng, inst.asset
        mu = math.log(p.liq_mean_usd) - p.liq_size_sigma**2 / 2
        sides, times, steps, sizes = [], [], [], []
        for side in ("long", "short"):
            counts = rng.poisson(np.maximum(usd[side][:, i], 0.0) * inst.share / p.liq_mean_usd)
            idx = np.repeat(np.arange(len(counts)), counts)
            times.append(grid[idx] + (rng.random(idx.size) * self.step_ns).astype(np.int64))
            steps.append(idx)
            sizes.append(rng.lognormal(mu, p.liq_size_sigma, idx.size))
            sides += [side] * idx.size
        ts, idx, notional = np.concatenate(times), np.concatenate(steps), np.concatenate(sizes)
        order = np.argsort(ts, kind="stable")
        if inst.one_per_second and order.size:  # the last of each second, as Binance pushes
            sec = ts[order] // NS_PER_S
            order = order[np.append(sec[1:] != sec[:-1], True)]
        order = order[(ts[order] < self.chunk_end) & self.open_mask(i, ts[order])]
        ts, idx, notional = ts[order], idx[order], notional[order]
        price = np.exp(path[idx, i] + self.basis[k])
        a = self.specs[i]
        ticks = [
            ScenarioTick(Liquidation(venue=inst.venue, symbol=inst.symbol, asset=a.name,
                                     asset_class=a.asset_class, ts_event_ns=t, ts_recv_ns=t,
                                     liquidated_side=sides[o], price=px, qty_base=usd_ / px,
                                     notional_usd=usd_, completeness=inst.completeness), ph)
            for t, o, px, usd_, ph in zip(ts.tolist(), order.tolist(), price.tolist(),
                                          notional.tolist(), self._labels(ts), strict=True)
        ]  # fmt: skip
        return ts, ticks

    def _funding(self, cs: int, ce: int, path: FloatArray) -> tuple[IntArray, list[ScenarioTick]]:
        p, rng = self.p, self.rng
        upd_ns = round(p.funding_update_s * NS_PER_S)
        times = np.arange(cs + (-cs) % upd_ns, ce, upd_ns, dtype=np.int64)
        all_ts: list[int] = []
        ticks: list[ScenarioTick] = []
        for t in times.tolist():
            dt_s = (t - self.last_fund_ns) / NS_PER_S
            self.last_fund_ns = t
            s_now = float(self.stress_and_g(np.array([(t - self.start_ns) / NS_PER_S]))[0][0])
            a = 0.5 ** (dt_s / p.funding_halflife_s)
            self.s_eff = a * self.s_eff + (1 - a) * s_now
            b = 0.5 ** (dt_s / p.funding_noise_halflife_s)
            shock = rng.standard_normal(len(self.insts))
            self.f_noise = (
                b * self.f_noise + math.sqrt(1 - b * b) * p.funding_noise_annualized * shock
            )
            logp = path[(t - cs) // self.step_ns]
            [label] = self._labels(np.array([t], dtype=np.int64))
            for k, inst in enumerate(self.insts):
                i = inst.asset
                if not self.open_mask(i, np.array([t], dtype=np.int64))[0]:
                    continue
                ann = float(self.f_calm[i] + (self.f_stress[i] - self.f_calm[i]) * self.s_eff
                            + self.f_offset[k] + self.f_noise[k])  # fmt: skip
                interval_ns = round(inst.interval_h * 3600 * NS_PER_S)
                oi = float(self.oi[i] * inst.share * math.exp(logp[i] - self.logp0[i])
                      * (1 - p.oi_drop * self.s_eff))  # fmt: skip
                spec = self.specs[i]
                ticks.append(ScenarioTick(Funding(
                    venue=inst.venue, symbol=inst.symbol, asset=spec.name,
                    asset_class=spec.asset_class, ts_event_ns=t, ts_recv_ns=t,
                    rate=ann * inst.interval_h / (24 * 365), interval_hours=inst.interval_h,
                    rate_annualized=ann, next_funding_ts_ns=(t // interval_ns + 1) * interval_ns,
                    mark_price=math.exp(logp[i] + self.basis[k]), open_interest_usd=oi,
                ), label))  # fmt: skip
                all_ts.append(t)
        return np.array(all_ts, dtype=np.int64), ticks
