"""The sampling grid: fixed points, no drift, skipped points counted."""

from tracekit.collect.daemon import next_due


def test_on_time_ticks_follow_the_grid():
    due = 0.0
    for k in range(1, 1000):
        # the tick itself took 0.3 of an interval: the grid does not move
        due, missed = next_due(due, now=due + 0.3, interval_s=1.0)
        assert (due, missed) == (float(k), 0)


def test_a_late_tick_does_not_shift_the_next_ones():
    due, missed = next_due(10.0, now=11.4, interval_s=1.0)  # tick 11 is 0.4 late
    assert (due, missed) == (11.0, 0)  # taken at once, still grid point 11
    assert next_due(due, now=11.5, interval_s=1.0) == (12.0, 0)


def test_whole_missed_points_are_skipped_and_counted():
    due, missed = next_due(10.0, now=13.5, interval_s=1.0)  # 11, 12 passed unserved
    assert (due, missed) == (13.0, 2)
    assert next_due(due, now=13.6, interval_s=1.0) == (14.0, 0)
