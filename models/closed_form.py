"""Closed-form signal timing and delay: Webster's cycle, splits and delay; HCM uniform and incremental delay.

Used for initial plans (Webster) and to verify the numeric models (the cyclic model's uniform delay must equal
HCM ``d1`` for uniform arrivals; its overflow term is HCM ``d2``). Everything is vectorised numpy: arguments
broadcast against each other, scalars give 0-d results.

Units: times in seconds, flows and saturation flows in vehicles (pcu) per hour unless the name says otherwise,
analysis period ``period_h`` in hours. Effective green ``g`` is displayed green minus start-up lost time plus end gain.

Formulas (notation: C cycle, g effective green, lambda = g/C, q flow, s saturation flow, c = s*lambda capacity,
X = q/c degree of saturation, y = q/s flow ratio, L lost time per cycle, Y = sum of critical y, T period):

* Webster optimum cycle: C0 = (1.5 L + 5) / (1 - Y)
* Webster splits: g_i = (y_i / Y) (C - L)
* Webster delay: d = C (1-lambda)^2 / (2 (1 - lambda X)) + X^2 / (2 q (1 - X)) - 0.65 (C / q^2)^(1/3) X^(2 + 5 lambda)
* HCM uniform delay: d1 = 0.5 C (1 - lambda)^2 / (1 - min(1, X) lambda)
* HCM incremental delay: d2 = 900 T [(X - 1) + sqrt((X - 1)^2 + 8 k I X / (c T))]   (k I = 0.5 for pretimed)
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "degree_of_saturation",
    "hcm_delay",
    "hcm_incremental_delay",
    "hcm_uniform_delay",
    "uniform_stop_rate",
    "webster_cycle",
    "webster_delay",
    "webster_splits",
]


def webster_cycle(
    lost_time_s: float | np.ndarray,
    flow_ratio_sum: float | np.ndarray,
    *,
    min_cycle_s: float = 0.0,
    max_cycle_s: float = np.inf,
) -> np.ndarray:
    """Webster's delay-minimising cycle C0 = (1.5 L + 5) / (1 - Y), clipped to [min_cycle_s, max_cycle_s].

    ``lost_time_s``: total lost time per cycle L (s); ``flow_ratio_sum``: Y, the sum of the critical flow ratios
    q/s of the phases. For Y >= 1 no cycle serves the demand and the result is ``max_cycle_s`` (inf by default).
    """
    lost = np.asarray(lost_time_s, dtype=np.float64)
    y_sum = np.asarray(flow_ratio_sum, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        c0 = np.where(y_sum < 1.0, (1.5 * lost + 5.0) / (1.0 - y_sum), np.inf)
    return np.clip(c0, min_cycle_s, max_cycle_s)


def webster_splits(flow_ratio: np.ndarray, cycle_s: float, lost_time_s: float) -> np.ndarray:
    """Effective greens of the phases in proportion to their critical flow ratios: g_i = (y_i / Y)(C - L).

    ``flow_ratio``: float (n_phases,), critical q/s of each phase. With Y = 0 the green is split evenly.
    Returns float64 (n_phases,), seconds, summing to C - L.
    """
    y = np.asarray(flow_ratio, dtype=np.float64)
    if np.any(y < 0):
        raise ValueError("flow ratios must be non-negative")
    available = float(cycle_s) - float(lost_time_s)
    if available < 0:
        raise ValueError(f"cycle {cycle_s} s is shorter than the lost time {lost_time_s} s")
    total = y.sum()
    if total <= 0:
        return np.full(y.shape, available / max(y.size, 1))
    return y / total * available


def degree_of_saturation(flow_veh_h, sat_flow_veh_h, green_s, cycle_s) -> np.ndarray:
    """X = q / (s g / C). Zero flow gives 0; positive flow on zero capacity gives inf."""
    q = np.asarray(flow_veh_h, dtype=np.float64)
    cap = np.asarray(sat_flow_veh_h, dtype=np.float64) * np.asarray(green_s, dtype=np.float64) / np.asarray(
        cycle_s, dtype=np.float64
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(q > 0, q / cap, 0.0)


def hcm_uniform_delay(cycle_s, green_s, dos) -> np.ndarray:
    """HCM uniform delay d1 = 0.5 C (1 - g/C)^2 / (1 - min(1, X) g/C), s/veh.

    For uniform arrivals this is exactly the area under the deterministic queue per arriving vehicle (X <= 1);
    above capacity it stays at its X = 1 value (the overflow goes to d2).
    """
    c = np.asarray(cycle_s, dtype=np.float64)
    lam = np.asarray(green_s, dtype=np.float64) / c
    x = np.minimum(np.asarray(dos, dtype=np.float64), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = 0.5 * c * (1.0 - lam) ** 2 / (1.0 - x * lam)
    # lam = X = 1 (always green at capacity): no red, no uniform delay
    return np.where(lam >= 1.0, 0.0, d1)


def hcm_incremental_delay(dos, capacity_veh_h, period_h, k_i: float = 0.5) -> np.ndarray:
    """HCM incremental (random + oversaturation) delay d2 = 900 T [(X-1) + sqrt((X-1)^2 + 8 kI X / (c T))], s/veh.

    ``k_i``: product of the HCM incremental-delay factor k (0.5 for pretimed) and the upstream-filtering factor I
    (1 for isolated). With k I = 0.5 this is the Kimber-Hollis / Akcelik sheared form without initial queue.
    Zero X gives 0; positive X on zero capacity gives inf.
    """
    x = np.asarray(dos, dtype=np.float64)
    c = np.asarray(capacity_veh_h, dtype=np.float64)
    t = np.asarray(period_h, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        d2 = 900.0 * t * ((x - 1.0) + np.sqrt((x - 1.0) ** 2 + 8.0 * k_i * x / (c * t)))
    return np.where(x > 0, d2, 0.0)


def random_delay(dos, capacity_veh_h, period_h, k_i: float = 0.5) -> np.ndarray:
    """The random part of the HCM incremental delay, s/veh: d2 less its deterministic oversaturation asymptote
    1800 T (X - 1) (the delay of a queue growing at q - c over T, counted until it has cleared).

    A model that steps the deterministic queue itself (the time-varying queue model) already has the oversaturation
    part; this adds what random arrivals cost on top: HCM d2 for X <= 1, 900 sqrt(8 kI T / c) at X = 1, falling
    towards 3600 kI / c as X grows. Zero X gives 0.
    """
    x = np.asarray(dos, dtype=np.float64)
    t = np.asarray(period_h, dtype=np.float64)
    return np.maximum(hcm_incremental_delay(x, capacity_veh_h, period_h, k_i) - 1800.0 * t * np.maximum(x - 1.0, 0.0),
                      0.0)


def hcm_delay(cycle_s, green_s, flow_veh_h, sat_flow_veh_h, period_h, *, progression_factor=1.0, k_i=0.5):
    """HCM control delay without initial queue: d = d1 PF + d2, s/veh."""
    x = degree_of_saturation(flow_veh_h, sat_flow_veh_h, green_s, cycle_s)
    cap = np.asarray(sat_flow_veh_h, dtype=np.float64) * np.asarray(green_s, dtype=np.float64) / np.asarray(
        cycle_s, dtype=np.float64
    )
    return hcm_uniform_delay(cycle_s, green_s, x) * progression_factor + hcm_incremental_delay(x, cap, period_h, k_i)


def webster_delay(cycle_s, green_s, flow_veh_h, sat_flow_veh_h) -> np.ndarray:
    """Webster's (1958) average delay per vehicle, s/veh, for random arrivals; valid for X < 1 (inf otherwise).

    d = C(1-lambda)^2 / (2(1-lambda X)) + X^2 / (2 q (1-X)) - 0.65 (C/q^2)^(1/3) X^(2+5 lambda), q in veh/s.
    The first term is the uniform delay (equal to HCM d1 for X < 1); zero flow gives the zero-flow limit of the
    uniform term.
    """
    c = np.asarray(cycle_s, dtype=np.float64)
    lam = np.asarray(green_s, dtype=np.float64) / c
    q = np.asarray(flow_veh_h, dtype=np.float64) / 3600.0
    x = degree_of_saturation(flow_veh_h, sat_flow_veh_h, green_s, cycle_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        uniform = c * (1.0 - lam) ** 2 / (2.0 * (1.0 - lam * x))
        random = x**2 / (2.0 * q * (1.0 - x))
        correction = 0.65 * np.cbrt(c / q**2) * x ** (2.0 + 5.0 * lam)
        d = uniform + random - correction
    d = np.where(q > 0, d, uniform)
    return np.where(x < 1.0, d, np.inf)


def uniform_stop_rate(cycle_s, green_s, flow_veh_h, sat_flow_veh_h) -> np.ndarray:
    """Share of vehicles stopped by the deterministic queue (uniform arrivals, X <= 1): h = (1 - g/C) / (1 - q/s).

    Vehicles arriving in the red or while the red's queue discharges are stopped; capped at 1.
    """
    lam = np.asarray(green_s, dtype=np.float64) / np.asarray(cycle_s, dtype=np.float64)
    y = np.asarray(flow_veh_h, dtype=np.float64) / np.asarray(sat_flow_veh_h, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = (1.0 - lam) / (1.0 - y)
    return np.clip(np.where(y < 1.0, h, 1.0), 0.0, 1.0)
