"""Slow, obviously correct twins of the models' kernels (pure Python loops over plain lists).

They follow the same definitions as the kernels but compute them the long way: the periodic queue and the periodic
dispersed profile by simulating period after period until nothing changes, capacity by intersecting every second
with every shifted copy of every window, the area under the queue from the time at which it empties.
"""

from __future__ import annotations

import math

import numpy as np

# ----------------------------------------------------------------------------------------------- cyclic model


def naive_capacity(sat: float, starts, lens, levels, period: int) -> list[float]:
    cap = [0.0] * period
    for a, length, level in zip(starts, lens, levels, strict=True):
        if length <= 0:
            continue
        if length >= period:
            for t in range(period):
                cap[t] += sat * level
            continue
        for t in range(period):
            for shift in (-2 * period, -period, 0, period, 2 * period):
                lo = max(t, a + shift)
                hi = min(t + 1, a + length + shift)
                if hi > lo:
                    cap[t] += sat * level * (hi - lo)
    return cap


def naive_yield_factor(y, m: int, rate) -> float:
    """Capacity factor of movement m (models.yielding): on each lane group it uses, the mixed lane's discharge
    phi / ((1 - mix) phi + mix) with phi = exp(-gap * opposing flow), weighted by m's share on those lanes.
    ``rate[o]``: movement o's flow, veh/s."""
    if y is None:
        return 1.0
    f = 1.0
    for e in range(int(y.mg_ptr[m]), int(y.mg_ptr[m + 1])):
        g = int(y.mg_group[e])
        flow = sum(rate[int(o)] for o in y.opp_mov[int(y.opp_ptr[g]):int(y.opp_ptr[g + 1])])
        phi = math.exp(-y.gap_s * flow)
        mix = float(y.mix[g])
        f += float(y.mg_weight[e]) * (phi / ((1 - mix) * phi + mix) - 1)
    return f


def naive_sneakers(starts, lens, period: int, veh: float) -> list[float]:
    """Extra capacity: ``veh`` in the last second of every window shorter than the period."""
    out = [0.0] * period
    for a, length in zip(starts, lens, strict=True):
        if 0 < length < period:
            out[(math.ceil(a + length) - 1) % period] += veh
    return out


def naive_disperse(x: list[float], shift: int, keep: float) -> list[float]:
    """Run Robertson's recursion over many periods from zero; return the last (periodic) period."""
    period = len(x)
    y_prev = 0.0
    out = [0.0] * period
    for _ in range(4000):
        old = list(out)
        for t in range(period):
            y_prev = (1.0 - keep) * x[(t - shift) % period] + keep * y_prev
            out[t] = y_prev
        if max(abs(a - b) for a, b in zip(out, old, strict=True)) < 1e-15:
            break
    return out


def naive_second(q0: float, a: float, c: float) -> tuple[float, float, float, float]:
    """One second of a fluid queue: (q_end, departures, area, arrivals that meet a queue)."""
    if c <= a:
        # the queue cannot shrink: it grows linearly (or stays put)
        q1 = q0 + a - c
        met = a if q0 > 0 or q1 > 0 else 0.0
        return q1, c, (q0 + q1) / 2.0, met
    empty_at = q0 / (c - a)  # time at which the queue is gone
    if empty_at >= 1.0:
        q1 = q0 - (c - a)
        return q1, c, (q0 + q1) / 2.0, a
    return 0.0, q0 + a, q0 * empty_at / 2.0, a * empty_at


def naive_queue_period(arr: list[float], cap: list[float]):
    """Simulate periods from an empty queue until the queue at the period start repeats; then measure one."""
    q = 0.0
    for _ in range(10000):
        start = q
        for a, c in zip(arr, cap, strict=True):
            q = naive_second(q, a, c)[0]
        if abs(q - start) < 1e-13:
            break
    deps, area, met, qmax = [], 0.0, 0.0, q
    for a, c in zip(arr, cap, strict=True):
        q, d, ar, st = naive_second(q, a, c)
        deps.append(d)
        area += ar
        met += st
        qmax = max(qmax, q)
    return deps, area, met, qmax


def naive_cyclic(net, plans, opts) -> tuple[dict, dict]:
    """Twin of models.cyclic.evaluate_batch: returns (totals, per-movement) dicts of numpy arrays."""
    n_mov = len(net.sat_veh_s)
    k_all = len(plans.period_s)
    fields = ("flow_veh_h", "capacity_veh_h", "dos", "uniform_delay_s", "overflow_delay_s", "stops_per_veh",
              "max_queue_veh", "overflow_queue_veh")
    mov = {f: np.zeros((k_all, n_mov)) for f in fields}
    tot = {f: np.zeros(k_all) for f in ("delay_veh_s_h", "stops_veh_h", "max_dos")}
    feeds = [
        [(int(net.in_src[e]), float(net.in_share[e]), int(net.in_shift_s[e]), float(net.in_keep[e]))
         for e in range(int(net.in_ptr[m]), int(net.in_ptr[m + 1]))]
        for m in range(n_mov)
    ]
    y = getattr(net, "yielding", None)
    coupled = any(feeds) or (y is not None and int(y.mg_ptr[-1]) > 0)
    opposing = set() if y is None else {int(o) for o in y.opp_mov}
    for k in range(k_all):
        period = int(plans.period_s[k])
        deps = [[0.0] * period for _ in range(n_mov)]
        deps0 = [[0.0] * period for _ in range(n_mov)]  # before the movement's own giving way
        for _sweep in range(5000):
            change = 0.0
            rows = {}
            for m in [int(i) for i in net.order]:
                arr = [float(net.entry_veh_s[m])] * period
                for src, share, shift, keep in feeds[m]:
                    disp = naive_disperse(deps[src], shift, keep)
                    arr = [a + share * d for a, d in zip(arr, disp, strict=True)]
                cap = naive_capacity(float(net.sat_veh_s[m]), plans.win_start_s[k, m], plans.win_len_s[k, m],
                                     plans.win_level[k, m], period)
                gives_way = y is not None and y.mg_ptr[m + 1] > y.mg_ptr[m]
                if gives_way:
                    if m in opposing:  # what those giving way to m see: its departures as if it did not give way
                        a_sum, c_sum = sum(arr), sum(cap)
                        s0 = c_sum / a_sum if a_sum > c_sum else 1.0
                        d0 = naive_queue_period([s0 * a for a in arr], cap)[0]
                        change = max(change, max(abs(u - v) for u, v in zip(d0, deps0[m], strict=True)))
                        deps0[m] = d0
                    # gives way: the opposing movements' departures (before their own giving way) in the same second
                    cap = [c * naive_yield_factor(y, m, [d[t] for d in deps0]) if c > 0 else c
                           for t, c in enumerate(cap)]
                    extra = naive_sneakers(plans.win_start_s[k, m], plans.win_len_s[k, m], period,
                                           float(y.sneak_veh[m]))
                    cap = [c + x for c, x in zip(cap, extra, strict=True)]
                a_sum, c_sum = sum(arr), sum(cap)
                c_eff = max(c_sum, opts.min_capacity_veh_s * period)
                x = a_sum / c_eff if a_sum > 0 else 0.0
                scale = c_sum / a_sum if a_sum > c_sum else 1.0
                d, area, met, qmax = naive_queue_period([scale * a for a in arr], cap)
                change = max(change, max(abs(u - v) for u, v in zip(d, deps[m], strict=True)))
                deps[m] = d
                if m in opposing and not gives_way:
                    change = max(change, max(abs(u - v) for u, v in zip(d, deps0[m], strict=True)))
                    deps0[m] = d
                flow_h = a_sum / period * 3600
                cap_h = c_eff / period * 3600
                n_veh = scale * a_sum
                d1 = area / n_veh if n_veh > 0 else 0.0
                t_h = opts.period_h
                d2 = 900 * t_h * ((x - 1) + math.sqrt((x - 1) ** 2 + 8 * opts.overflow_ki * x / (cap_h * t_h))) \
                    if x > 0 else 0.0
                if getattr(opts, "overflow_in_window", False) and x > 1:
                    d2 = d2 / x  # only the delay incurred within the period
                h = met / n_veh if n_veh > 0 else 0.0
                if scale < 1:
                    h = h * scale + (1 - scale)
                rows[m] = dict(flow_veh_h=flow_h, capacity_veh_h=cap_h, dos=x, uniform_delay_s=d1,
                               overflow_delay_s=d2, stops_per_veh=h, max_queue_veh=qmax,
                               overflow_queue_veh=flow_h / 3600 * d2)
            if change < 1e-13 or not coupled:
                break
        # d2 of a movement that shares lanes: from its lane group's summed flow and capacity (HCM lane group)
        group = list(range(n_mov)) if getattr(net, "lane_group", None) is None else [int(g) for g in net.lane_group]
        members = {}
        for m in rows:
            members.setdefault(group[m], []).append(m)
        for m, row in rows.items():
            mates = members[group[m]]
            if len(mates) > 1 and row["dos"] > 0:
                cap_h = sum(rows[o]["capacity_veh_h"] for o in mates)
                x = sum(rows[o]["flow_veh_h"] for o in mates) / cap_h
                d2 = 900 * t_h * ((x - 1) + math.sqrt((x - 1) ** 2 + 8 * opts.overflow_ki * x / (cap_h * t_h)))
                if getattr(opts, "overflow_in_window", False) and x > 1:
                    d2 = d2 / x
                row["overflow_delay_s"] = d2
                row["overflow_queue_veh"] = row["flow_veh_h"] / 3600 * d2
        for m, row in rows.items():
            for f, v in row.items():
                mov[f][k, m] = v
        pen = np.zeros(n_mov) if net.stop_penalty_s is None else net.stop_penalty_s
        tot["delay_veh_s_h"][k] = sum(r["flow_veh_h"] * (r["uniform_delay_s"] + r["overflow_delay_s"]
                                                         + r["stops_per_veh"] * pen[m]) for m, r in rows.items())
        tot["stops_veh_h"][k] = sum(r["flow_veh_h"] * r["stops_per_veh"] for r in rows.values())
        tot["max_dos"][k] = max([r["dos"] for r in rows.values()] + [0.0])
    return tot, mov


# ------------------------------------------------------------------------------------------------ queue model


def naive_queue(net, dem, level, queue0, backlog0, pending0, t0: int, n_steps: int):
    """Twin of models.queue.run. ``pending0``: dict {(movement, arrival second): veh} of vehicles in transit.

    Returns (queue, backlog, pending, kpis dict of lists) after n_steps seconds.
    """
    n_mov = len(net.sat_veh_s)
    n_appr = len(net.storage_veh)
    appr = [int(a) for a in net.mov_approach]
    outs = [
        [(int(net.out_dst[e]), float(net.out_share[e]), int(net.out_delay_s[e]))
         for e in range(int(net.out_ptr[m]), int(net.out_ptr[m + 1]))]
        for m in range(n_mov)
    ]
    q = [float(v) for v in queue0]
    backlog = [float(v) for v in backlog0]
    pending = dict(pending0)
    names = ("delay_veh_s", "backlog_delay_veh_s", "stops_veh", "arrivals_veh", "departures_veh", "entered_veh",
             "exited_veh", "max_queue_veh", "blocked_s")
    kpi = {n: [0.0] * n_mov for n in names}
    for t in range(t0, t0 + n_steps):
        lv = level[t % len(level)]
        entry = dem.entry_veh_s[min(t // dem.bin_steps, len(dem.entry_veh_s) - 1)]
        in_transit = [0.0] * n_mov
        for (m, _), v in pending.items():
            in_transit[m] += v
        space = [float(net.storage_veh[a]) for a in range(n_appr)]
        for m in range(n_mov):
            space[appr[m]] -= q[m] + in_transit[m]
        space = [max(0.0, s) for s in space]
        arriving = [pending.pop((m, t), 0.0) for m in range(n_mov)]
        want_in = [backlog[m] + float(entry[m]) for m in range(n_mov)]
        cap = [float(net.sat_veh_s[m]) * float(lv[m]) for m in range(n_mov)]
        send = [min(q[m] + arriving[m] + want_in[m], cap[m]) for m in range(n_mov)]
        asked = [0.0] * n_appr
        for m in range(n_mov):
            asked[appr[m]] += want_in[m]
        for m in range(n_mov):
            for dst, share, _ in outs[m]:
                asked[appr[dst]] += send[m] * share
        phi = [1.0 if asked[a] <= space[a] else space[a] / asked[a] for a in range(n_appr)]
        y = getattr(net, "yielding", None)
        if y is not None and int(y.mg_ptr[-1]) > 0:
            # movements that give way: factor from what the opposing movements send, cut to the space downstream
            eff = [send[o] * min([phi[appr[dst]] for dst, _, _ in outs[o]] + [1.0]) for o in range(n_mov)]
            nxt = level[(t + 1) % len(level)]
            for m in range(n_mov):
                if y.mg_ptr[m + 1] == y.mg_ptr[m]:
                    continue
                extra = float(y.sneak_veh[m]) if lv[m] > 0 and nxt[m] == 0 else 0.0
                cap[m] = cap[m] * naive_yield_factor(y, m, eff) + extra
                send[m] = min(q[m] + arriving[m] + want_in[m], cap[m])
        for m in range(n_mov):
            admitted = want_in[m] * phi[appr[m]]
            kpi["backlog_delay_veh_s"][m] += (backlog[m] + want_in[m] - admitted) / 2
            backlog[m] = want_in[m] - admitted
            kpi["entered_veh"][m] += admitted
            arr = arriving[m] + admitted
            rate = cap[m]
            f = min([phi[appr[dst]] for dst, _, _ in outs[m]] + [1.0])
            if f < 1 and send[m] * f < min(q[m] + arr, cap[m]):
                kpi["blocked_s"][m] += 1
                rate = send[m] * f
            q[m], d, area, met = naive_second(q[m], arr, rate)
            kpi["delay_veh_s"][m] += area
            kpi["stops_veh"][m] += met
            kpi["arrivals_veh"][m] += arr
            kpi["departures_veh"][m] += d
            kpi["max_queue_veh"][m] = max(kpi["max_queue_veh"][m], q[m])
            left = d
            for dst, share, delay in outs[m]:
                pending[(dst, t + delay)] = pending.get((dst, t + delay), 0.0) + d * share
                left -= d * share
            kpi["exited_veh"][m] += left
    return q, backlog, pending, kpi


def random_yielding(rng, m: int):
    """A random models.yielding.Yielding for M movements (or None for M < 2): each lane group gives way to movements
    with lower indices than all its users (so a sweep in index order is upstream first)."""
    from models.yielding import Yielding

    if m < 2:
        return None
    groups = []
    for _ in range(int(rng.integers(0, 4))):
        hi = int(rng.integers(1, m))  # opposing movements in [0, hi), users in [hi, m)
        opp = sorted(set(rng.integers(0, hi, int(rng.integers(1, 3))).tolist()))
        users = sorted(set(rng.integers(hi, m, int(rng.integers(1, 3))).tolist()))
        groups.append((opp, float(rng.uniform(0.1, 1.0)), users))
    mg: list[list[tuple[int, float]]] = [[] for _ in range(m)]
    for g, (_, _, users) in enumerate(groups):
        for u in users:
            mg[u].append((g, float(rng.uniform(0.2, 1.0))))
    for u in range(m):  # a movement's shares on the groups' lanes sum to at most 1
        total = sum(w for _, w in mg[u])
        if total > 1:
            mg[u] = [(g, w / total) for g, w in mg[u]]
    opp_ptr = np.cumsum([0] + [len(o) for o, _, _ in groups])
    mg_ptr = np.cumsum([0] + [len(r) for r in mg])
    sneak = np.array([float(rng.uniform(0, 1.5)) if mg[u] else 0.0 for u in range(m)])
    return Yielding(float(rng.uniform(0.5, 5.0)), opp_ptr, np.array([o for g in groups for o in g[0]], np.int64),
                    np.array([mix for _, mix, _ in groups]), mg_ptr, np.array([g for r in mg for g, _ in r], np.int64),
                    np.array([w for r in mg for _, w in r]), sneak)
