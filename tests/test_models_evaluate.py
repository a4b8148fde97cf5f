"""Plans -> model inputs (windows, levels, SUMO offset semantics) and the evaluate_* API on compiled scenarios."""

from __future__ import annotations

import inspect
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.plan import Phase, PlanSet, make_plan
from models import cyclic
from models.evaluate import (
    MODELS,
    Evaluation,
    ModelParams,
    evaluate_cyclic,
    evaluate_queue,
    plan_arrays,
    plan_timings,
    prepare,
    queue_levels,
    score_cyclic,
)
from models.plans import LevelParams, build_template, link_level, windows_to_levels


@pytest.fixture(scope="module")
def grid():
    from sim.scenario import compile_scenario

    return compile_scenario("grid-2x2")


def expand_levels(net, states, durations, offsets, period, params):
    """Level of every movement at every simulation second of the period, straight from the programs."""
    out = np.zeros((period, net.n_movements))
    k = 0
    for s in range(net.n_signals):
        sts = states[s]
        dur = durations[k:k + len(sts)]
        k += len(sts)
        cycle = int(sum(dur))
        bounds = np.cumsum(dur)
        base = int(net.signal_link_ptr[s])
        for t in range(period):
            tau = (t - offsets[s]) % cycle  # SUMO: program time (t - offset) mod C
            ph = int(np.searchsorted(bounds, tau, side="right"))
            for m in net.movements_of(s):
                links = net.mov_link[net.mov_link_ptr[m]:net.mov_link_ptr[m + 1]] - base
                out[t, m] = np.mean([link_level(sts[ph][li], bool(net.mov_protected[m]), params) for li in links])
    return out


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_windows_reproduce_the_programs_second_by_second(grid, data):
    """Without lost time and end gain the windows are exactly the displayed greens, SUMO offsets included."""
    net = grid.net
    params = LevelParams(startup_lost_s=0.0, end_gain_s=0.0, permissive_level=0.5, stop_go_level=0.3)
    states = tuple(tuple(net.phase_states[p] for p in net.phases_of(s)) for s in range(net.n_signals))
    tpl = build_template(net, states, params)
    dur = []
    for s in range(net.n_signals):  # cycles of 60, 90 or 120 s: common period up to 360 s
        n = int(tpl.phase_ptr[s + 1] - tpl.phase_ptr[s])
        head = data.draw(st.lists(st.integers(1, 7), min_size=n - 1, max_size=n - 1))
        dur += head + [data.draw(st.sampled_from([60, 90, 120])) - sum(head)]
    dur = np.array(dur, float)
    off = np.array(data.draw(st.lists(st.integers(0, 200), min_size=net.n_signals, max_size=net.n_signals)), float)
    period, ws, wl, wv, scaled = tpl.windows(dur[None], off[None])
    assert not scaled[0]
    cycles = [int(dur[tpl.phase_ptr[s]:tpl.phase_ptr[s + 1]].sum()) for s in range(net.n_signals)]
    assert period[0] == np.lcm.reduce(cycles)
    got = windows_to_levels(int(period[0]), ws[0], wl[0], wv[0])
    want = expand_levels(net, states, dur, off.astype(int), int(period[0]), params)
    np.testing.assert_allclose(got, want, atol=1e-12)
    # the kernel's own capacity profile agrees with the same levels (no movement giving way, whose capacity would
    # also follow the opposing flow)
    ctx = prepare(net, grid.demand, ModelParams(yield_gap_s=0.0, yield_sneakers=0.0))
    plans = cyclic.CyclicPlans(period, ws, wl, wv)
    _, cap, _ = cyclic.evaluate_profiles(ctx.cyclic_net, plans, ctx.cyclic_opts)
    cnet = ctx.cyclic_net
    np.testing.assert_allclose(cap.T, want * cnet.sat_veh_s[None, :], atol=1e-12)


def test_lost_time_and_end_gain_shift_each_window(grid):
    net = grid.net
    p0 = LevelParams(0.0, 0.0)
    p1 = LevelParams(startup_lost_s=2.5, end_gain_s=1.5)
    t0, t1 = build_template(net, None, p0), build_template(net, None, p1)
    d = np.asarray(net.phase_duration_s)[None]
    o = np.asarray(net.signal_offset_s)[None]
    _, s0, l0, _, _ = t0.windows(d, o)
    _, s1, l1, _, _ = t1.windows(d, o)
    used = l0 > 0
    lost = np.where(t1.run_lost > 0, 2.5, 0.0)
    assert (t1.run_lost > 0).any() and (t1.run_gain > 0).any()
    # windows move by the lost time and lose (lost - gain) of length where both apply
    delta_len = (l1 - l0)[used]
    assert set(np.round(delta_len, 9)) <= {-1.0, -2.5, 1.5, 0.0}
    assert np.all(((s1 - s0)[used] % 70).round(9) <= max(lost))


def test_unequal_cycles_use_their_lcm_or_stretch(grid):
    net = grid.net
    tpl = build_template(net)
    d = np.asarray(net.phase_duration_s, float).copy()
    d[tpl.phase_ptr[1]] += 20  # signal 1: cycle 90 instead of 70
    per, *_, scaled = tpl.windows(d[None], np.zeros((1, net.n_signals)))
    assert per[0] == 630 and not scaled[0]
    per, *_, scaled = tpl.windows(d[None], np.zeros((1, net.n_signals)), max_period_s=300)
    assert per[0] == 90 and scaled[0]


def own_planset(net, offset_shift=0):
    plans = []
    for s in range(net.n_signals):
        phases = [Phase(net.phase_states[p], int(net.phase_duration_s[p])) for p in net.phases_of(s)]
        plans.append(make_plan(net.signal_ids[s], phases, int(net.signal_offset_s[s]) + offset_shift))
    return PlanSet(plans=tuple(plans))


def test_planset_of_the_own_programs_gives_the_same_arrays(grid):
    net = grid.net
    ctx = prepare(net, grid.demand)
    a, _ = plan_arrays(ctx, [None])
    b, _ = plan_arrays(ctx, [own_planset(net)])
    c, _ = plan_arrays(ctx, [own_planset(net).plans[:2]])  # the other signals keep their programs
    for x, y, z in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    st_, dur, off = plan_timings(net, {p.signal_id: p for p in own_planset(net, 5).plans})
    np.testing.assert_array_equal(off, np.asarray(net.signal_offset_s) + 5)
    with pytest.raises(ValueError):
        plan_timings(net, [make_plan("nope", [Phase("G", 10)])])
    with pytest.raises(ValueError):
        plan_timings(net, [make_plan(net.signal_ids[0], [Phase("GG", 10)])])


def test_both_models_share_one_signature_and_agree_roughly_when_undersaturated(grid):
    sigs = {name: inspect.signature(fn) for name, fn in MODELS.items()}
    assert len({tuple(s.parameters) for s in sigs.values()}) == 1
    # (no giving way: the grid's permissive left turns would be over capacity against their opposing through flow)
    no_pen = ModelParams(stop_penalty=False, queue_storage=False, queue_random_delay=False, yield_gap_s=0.0)
    ev = {name: fn(grid.net, grid.demand, None, no_pen) for name, fn in MODELS.items()}
    for e in ev.values():
        assert isinstance(e, Evaluation)
        assert e.signal_delay_s.shape == (grid.net.n_signals,)
        assert e.mov_delay_s.shape == (grid.net.n_movements,)
        assert np.isfinite(e.mean_delay_s) and e.mean_delay_s > 0
        d = e.to_dict(movements=True)
        assert set(d["signals"]) == set(grid.net.signal_ids)
    assert ev["cyclic"].max_dos < 1.0
    assert ev["cyclic"].extra["converged"]
    # two different models of the same undersaturated hour: the deterministic parts agree (the queue model has no
    # random-arrival term d2; the cyclic model's flows are steady, the queue model's fill up from an empty network)
    cyc, que = ev["cyclic"], ev["queue"]
    d1 = cyc.extra["mov_uniform_delay_s"]
    uniform_mean = (cyc.mov_flow_veh_h * d1).sum() * cyc.extra["window_h"] / cyc.vehicles
    assert que.mean_delay_s == pytest.approx(uniform_mean, rel=0.05)
    busy = cyc.mov_flow_veh_h > 0
    # per movement within 15 %: the queue model follows the 15-min demand bins, the cyclic model the hour's mean
    np.testing.assert_allclose(que.mov_delay_s[busy], d1[busy], rtol=0.15, atol=2.0)


def test_evaluate_cyclic_equals_the_kernel_and_sees_offsets(grid):
    net, dem = grid.net, grid.demand
    p = ModelParams(cyclic_periods="window")
    ctx = prepare(net, dem, p)
    ev = evaluate_cyclic(net, dem, None, p)
    cp, _ = plan_arrays(ctx, [None, own_planset(net, 17)])
    tot, _ = score_cyclic(ctx, cp)
    window_h = (dem.end_s - dem.begin_s) / 3600
    assert ev.total_delay_veh_h == pytest.approx(tot.delay_veh_s_h[0] * window_h / 3600, rel=1e-12)
    assert tot.delay_veh_s_h[1] != tot.delay_veh_s_h[0]
    ev2 = evaluate_cyclic(net, dem, own_planset(net, 17), p)
    assert ev2.total_delay_veh_h == pytest.approx(tot.delay_veh_s_h[1] * window_h / 3600, rel=1e-12)


def test_queue_levels_are_rotated_to_the_demand_begin(grid):
    net, dem = grid.net, grid.demand
    ctx = prepare(net, dem, ModelParams())
    cp, _ = plan_arrays(ctx, [None])
    lv = queue_levels(ctx, cp)[0]
    ref = windows_to_levels(int(cp.period_s[0]), cp.win_start_s[0], cp.win_len_s[0], cp.win_level[0])
    shift = int(dem.begin_s) % int(cp.period_s[0])
    np.testing.assert_allclose(lv, np.roll(ref, -shift, axis=0), atol=1e-12)


def test_stop_penalty_and_base_loss_add_up(grid):
    net, dem = grid.net, grid.demand
    plain = ModelParams(stop_penalty=False)
    for fn in MODELS.values():
        a = fn(net, dem, None, plain)
        b = fn(net, dem, None, ModelParams(stop_penalty=True, accel_m_s2=2.0, decel_m_s2=4.0, base_loss_s=3.0))
        pen = net.mov_speed_m_s / 2 * (1 / 2.0 + 1 / 4.0)
        np.testing.assert_allclose(b.mov_delay_s - a.mov_delay_s, a.mov_stops_per_veh * pen, rtol=1e-9, atol=1e-9)
        extra = (a.mov_flow_veh_h * a.mov_stops_per_veh * pen).sum() * a.extra["window_h"] / 3600
        assert b.total_delay_veh_h == pytest.approx(a.total_delay_veh_h + extra + 3.0 * a.vehicles / 3600, rel=1e-9)


def test_queue_model_without_storage_has_no_backlog(grid):
    ev = evaluate_queue(grid.net, grid.demand, params=ModelParams(queue_storage=False))
    assert ev.extra["backlog_delay_veh_h"] == 0.0
    assert ev.extra["entered_veh"] == pytest.approx(ev.vehicles)


def test_queue_storage_is_the_whole_stretch_between_stop_lines():
    """The queue model counts vehicles in transit from the upstream stop line against an approach's storage, so
    the storage is the stretch's: on the corridor the links between signals run through unsignalised nodes
    (crossings, bus stops), and each fed approach holds at least (distance between stop lines) x its density."""
    from models.evaluate import _link_storage_veh
    from sim.scenario import compile_scenario

    net = compile_scenario("stockholm-corridor").net
    stor = _link_storage_veh(net)
    base = np.asarray(net.appr_storage_veh)
    assert np.all(stor >= base - 1e-9)
    fed = set(np.asarray(net.down_approach).tolist())
    longer = [a for a in fed if stor[a] > base[a] + 1e-9]
    assert longer, "some corridor approaches are fed through intermediate edges"
    src = np.repeat(np.arange(net.n_movements), np.diff(np.asarray(net.down_ptr)))
    for a in longer:
        dist = max(float(net.down_dist_m[k]) for k in range(len(src)) if net.down_approach[k] == a)
        assert stor[a] == pytest.approx(base[a] / net.appr_length_m[a] * dist)
    entries = [a for a in range(net.n_approaches) if a not in fed]
    assert all(stor[a] == base[a] for a in entries)


def test_network_delay_is_the_mean_delay_when_nothing_waits_outside(grid):
    for fn in MODELS.values():
        ev = fn(grid.net, grid.demand, None, ModelParams(yield_gap_s=0.0))  # undersaturated without giving way
        assert ev.max_dos < 1.0
        assert ev.network_delay_s == pytest.approx(ev.mean_delay_s, rel=1e-9)


@pytest.mark.parametrize("scale", [0.6, 0.4])
def test_network_delay_leaves_out_the_wait_outside_full_entries(grid, scale):
    """Saturation flows cut so that the grid's entry approaches overflow: vehicles queue outside the network (SUMO
    books that wait as departure delay, not time loss). Both models split the delay into inside and outside; the
    time-stepped queue model's entry backlog and the cyclic model's closed form agree on how many vehicles are still
    outside at the end of the hour, and the inside delay is the total less the outside part, per vehicle that
    entered."""
    p = ModelParams(sat_flow_scale=scale, stop_penalty=False, base_loss_s=4.0)
    cyc = evaluate_cyclic(grid.net, grid.demand, None, p)
    que = evaluate_queue(grid.net, grid.demand, None, p)
    for ev in (cyc, que):
        assert ev.max_dos > 1.05
        assert 4.0 < ev.network_delay_s < ev.mean_delay_s
    held_q = que.extra["residual_backlog_veh"]
    held_c = cyc.extra["held_outside_veh"]
    assert held_q > 100
    assert held_c == pytest.approx(held_q, rel=0.2)
    # the queue model's decomposition: inside delay per entered vehicle + outside wait = total
    x = que.extra
    inside_h = (que.network_delay_s - 4.0) * x["entered_veh"] / 3600
    assert inside_h + x["backlog_delay_veh_h"] + 4.0 * que.vehicles / 3600 == pytest.approx(que.total_delay_veh_h,
                                                                                            rel=1e-9)
    inside_h = (cyc.network_delay_s - 4.0) * (cyc.vehicles - held_c) / 3600
    assert inside_h + cyc.extra["held_outside_delay_veh_h"] + 4.0 * cyc.vehicles / 3600 == pytest.approx(
        cyc.total_delay_veh_h, rel=1e-9)


def test_queue_model_adds_the_random_delay_of_each_movement(grid):
    from models.closed_form import random_delay

    plain = evaluate_queue(grid.net, grid.demand, None, ModelParams(queue_random_delay=False))
    with_r = evaluate_queue(grid.net, grid.demand, None, ModelParams())
    want = random_delay(plain.mov_dos, np.maximum(plain.mov_capacity_veh_h, 1.0), plain.extra["window_h"], 0.5)
    assert np.all(want >= 0) and want.max() > 1.0
    np.testing.assert_allclose(with_r.mov_delay_s - plain.mov_delay_s, want, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(with_r.extra["mov_random_delay_s"], want, rtol=1e-9, atol=1e-12)
    assert with_r.mean_delay_s > plain.mean_delay_s


def test_lane_groups_join_movements_that_share_a_lane_and_every_lane_they_use(grid):
    from models.evaluate import lane_groups

    net = grid.net
    g = lane_groups(net)
    assert g.shape == (net.n_movements,) and g.min() == 0
    for m in range(net.n_movements):
        for o in range(net.n_movements):
            if set(net.mov_in_lanes[m]) & set(net.mov_in_lanes[o]):
                assert g[m] == g[o]
    # no group without a shared lane chain: each group's movements are linked through lanes
    for k in np.unique(g):
        members = np.flatnonzero(g == k).tolist()
        reached, lanes = {members[0]}, set(net.mov_in_lanes[members[0]])
        grew = True
        while grew:
            grew = False
            for o in members:
                if o not in reached and lanes & set(net.mov_in_lanes[o]):
                    reached.add(o)
                    lanes |= set(net.mov_in_lanes[o])
                    grew = True
        assert reached == set(members)


def test_pooled_random_delay_is_hcms_lane_group_delay():
    """Two movements on one lane get the random delay of one queue with their summed flow and capacity (HCM lane
    group); a movement alone equals the per-movement form; a movement without traffic gets none."""
    from models.closed_form import random_delay
    from models.evaluate import pooled_random_delay

    group = np.array([0, 0, 1, 2])
    cap = np.array([150.0, 1200.0, 600.0, 400.0])
    flow = np.array([140.0, 900.0, 300.0, 0.0])
    got = pooled_random_delay(group, flow / cap, cap, 1.0, 0.5)
    lane = random_delay(1040.0 / 1350.0, 1350.0, 1.0, 0.5)
    np.testing.assert_allclose(got[:2], lane, rtol=1e-12)
    assert got[0] < random_delay(140.0 / 150.0, 150.0, 1.0, 0.5) / 3  # far below the small queue of its own
    assert got[2] == pytest.approx(float(random_delay(0.5, 600.0, 1.0, 0.5)), rel=1e-12)
    assert got[3] == 0.0


def test_queue_model_random_delay_by_lane_group(grid):
    from models.evaluate import lane_groups, pooled_random_delay

    plain = evaluate_queue(grid.net, grid.demand, None, ModelParams(queue_random_delay=False))
    pooled = evaluate_queue(grid.net, grid.demand, None, ModelParams(random_delay_lane_groups=True))
    want = pooled_random_delay(lane_groups(grid.net), plain.mov_dos, np.maximum(plain.mov_capacity_veh_h, 1.0),
                               plain.extra["window_h"], 0.5)
    np.testing.assert_allclose(pooled.extra["mov_random_delay_s"], want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pooled.mov_delay_s - plain.mov_delay_s, want, rtol=1e-9, atol=1e-9)
    alone = evaluate_queue(grid.net, grid.demand, None, ModelParams())
    assert np.any(np.abs(alone.extra["mov_random_delay_s"] - want) > 1e-6)  # grid-2x2 has shared lanes


def _two_bins(dem, first: float, second: float):
    """The demand's window-mean rates, times ``first`` in its first bin and ``second`` in its second (two bins)."""
    from dataclasses import replace

    arr, ent = dem.mean_arrival_veh_h(), (dem.mov_entry_veh_h * 1.0).mean(0)
    return replace(dem, end_s=dem.begin_s + 2 * dem.bin_s, mov_arrival_veh_h=np.stack([arr * first, arr * second]),
                   mov_entry_veh_h=np.stack([ent * first, ent * second]), mov_bus_veh_h=None)


def test_periods_of_constant_demand_below_capacity_equal_the_window():
    """Without random delay (k I = 0) and below capacity there is no overflow term: HCM's periods of a constant
    demand give the window's steady state, movement by movement."""
    from sim.scenario import compile_scenario

    comp = compile_scenario("grid-1x1")
    dem = _two_bins(comp.demand, 1.0, 1.0)
    base = ModelParams(overflow_ki=0.0, yield_gap_s=0.0)
    win = evaluate_cyclic(comp.net, dem, None, replace(base, cyclic_periods="window"))
    per = evaluate_cyclic(comp.net, dem, None, base)
    assert win.max_dos < 1.0 and per.extra["analysis_periods"] == 2 and win.extra["analysis_periods"] == 1
    np.testing.assert_allclose(per.mov_delay_s, win.mov_delay_s, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(per.mov_flow_veh_h, win.mov_flow_veh_h, rtol=1e-12)
    assert per.network_delay_s == pytest.approx(win.network_delay_s, rel=1e-9)


def _fluid_overflow_veh_h(rates, cap, t_h, dt_h=1e-5):
    """Area under a deterministic (fluid) queue served at ``cap`` with arrivals rates[i] over period i of t_h hours,
    and none afterwards until it has cleared: stepped at dt (the D/D/1 queue, written out)."""
    q = area = 0.0
    steps = int(round(t_h / dt_h))
    for v in rates:
        for _ in range(steps):
            q2 = max(0.0, q + (v - cap) * dt_h)
            area += 0.5 * (q + q2) * dt_h
            q = q2
    while q > 0:
        q2 = max(0.0, q - cap * dt_h)
        area += 0.5 * (q + q2) * dt_h
        q = q2
    return area


def test_overflow_carried_into_the_next_period_adds_up_to_the_d_d_1_queue():
    """A first quarter-hour above capacity, a second well below: HCM's d2 of the first period (until its overflow has
    cleared) plus d3 of the second (the extra delay the carried queue gives the second's traffic) is, with
    deterministic arrivals (k I = 0), the D/D/1 queue's overflow delay, movement by movement."""
    from sim.scenario import compile_scenario

    comp = compile_scenario("grid-1x1")
    dem = _two_bins(comp.demand, 1.6, 0.2)
    p = ModelParams(overflow_ki=0.0, yield_gap_s=0.0)
    ev = evaluate_cyclic(comp.net, dem, None, p)
    t_h = dem.bin_s / 3600
    rates = dem.mov_arrival_veh_h
    over_veh_h = ev.extra["mov_overflow_delay_s"] * ev.mov_flow_veh_h * ev.extra["window_h"] / 3600
    n_over = 0
    for m in range(comp.net.n_movements):
        cap = ev.mov_capacity_veh_h[m]
        if rates[0, m] <= 0:
            continue
        assert (rates[0, m] - cap) * t_h < (cap - rates[1, m]) * t_h  # the carried queue clears in the second
        n_over += rates[0, m] > cap
        assert over_veh_h[m] == pytest.approx(_fluid_overflow_veh_h(rates[:, m], cap, t_h), rel=1e-3, abs=1e-6)
    assert n_over >= 2
    assert ev.extra["mov_initial_queue_delay_s"].max() > 0


def test_initial_queue_delay_is_hcms_d3():
    from models.evaluate import initial_queue_delay

    # clears within T: t = Qb / (c - v), u = 0
    assert initial_queue_delay([10.0], [300.0], [600.0], 0.25)[0] == pytest.approx(1800 * 10 * (10 / 300) / 150)
    # does not clear: t = T, u = 1 - c T (1 - X) / Qb
    assert initial_queue_delay([100.0], [300.0], [600.0], 0.25)[0] == pytest.approx(1800 * 100 * 1.25 * 0.25 / 150)
    # above capacity: u = 1; no initial queue, no flow or no capacity: none
    assert initial_queue_delay([100.0], [700.0], [600.0], 0.25)[0] == pytest.approx(1800 * 100 * 2 * 0.25 / 150)
    np.testing.assert_array_equal(initial_queue_delay([0.0, 5.0, 5.0], [300.0, 0.0, 300.0], [600.0, 600.0, 0.0], 0.25),
                                  0.0)


def test_periods_judge_a_peak_that_the_window_mean_hides():
    """The same vehicles, arriving 1.6 / 0.4 times the mean in two quarter-hours: HCM's periods see the first
    quarter's overflow, the window mean does not; with an even demand the two agree far better."""
    from sim.scenario import compile_scenario

    comp = compile_scenario("grid-1x1")
    p = ModelParams()
    w = replace(p, cyclic_periods="window")

    def gap(dem):  # periods minus window mean, s/veh
        return (evaluate_cyclic(comp.net, dem, None, p).mean_delay_s
                - evaluate_cyclic(comp.net, dem, None, w).mean_delay_s)

    gap_peak, gap_flat = gap(_two_bins(comp.demand, 1.6, 0.4)), gap(_two_bins(comp.demand, 1.0, 1.0))
    assert gap_peak > 5.0 and abs(gap_flat) < 0.2 * gap_peak


def test_demand_bins_cut_the_window_and_keep_the_routing(grid):
    dem = grid.demand
    assert dem.n_bins >= 2
    part = dem.bins(1, 2)
    assert (part.begin_s, part.end_s, part.n_bins) == (dem.begin_s + dem.bin_s, dem.begin_s + 2 * dem.bin_s, 1)
    np.testing.assert_array_equal(part.mov_arrival_veh_h[0], dem.mov_arrival_veh_h[1])
    np.testing.assert_allclose(part.mean_arrival_veh_h(), dem.mov_arrival_veh_h[1], rtol=1e-12)
    assert part.feed_ptr is dem.feed_ptr and part.n_vehicles <= dem.n_vehicles
    with pytest.raises(ValueError, match="outside"):
        dem.bins(1, dem.n_bins + 1)
