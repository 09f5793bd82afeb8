//! When probes run: a fixed interval (`every: 10s`) or a cron expression with seconds.
//!
//! Two clocks, each for what it is good at:
//! - `every:` runs on tokio's monotonic clock. The first run comes at a random offset within the interval (a
//!   thousand probes started together do not hit their targets together), then one run per interval. A wall-clock
//!   step (NTP, an operator, a VM resumed) cannot stall it or make it catch up.
//! - cron runs on the wall clock of [`Clock`], re-read before every run and at least every [`CRON_RECHECK`] while
//!   waiting: a step forward runs the probe once (not once per missed time), a step backward does not leave it
//!   waiting for the old next time.
//!
//! Runs never overlap: a run that takes longer than the schedule skips the times it ran past, and [`Ticker::tick`]
//! says how many, so they can be counted as skipped runs. The arithmetic is pure ([`every_next`],
//! [`Schedule::next_after`]) and the waiting is tokio's, so all of it is testable on paused time.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::time::Instant;

use crate::clock::Clock;

/// The longest a cron schedule waits without reading the wall clock again, so that a step of the clock either way
/// is noticed within this long.
pub const CRON_RECHECK: Duration = Duration::from_secs(5);

/// A probe's schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Every fixed interval (on the monotonic clock), the first time at a random offset within it.
    Every(Duration),
    /// On a cron schedule (UTC, on the wall clock).
    Cron(Box<cron::Schedule>),
}

impl Schedule {
    /// Parses a cron expression with seconds (`sec min hour dom month dow [year]`).
    pub fn cron(expr: &str) -> Result<Schedule, String> {
        let fields = expr.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(format!(
                "invalid cron expression `{expr}`: expected 6 or 7 fields (sec min hour day-of-month month \
                 day-of-week [year]), found {fields}"
            ));
        }
        for (field, text) in FIELDS.iter().zip(expr.split_whitespace()) {
            field.check(text).map_err(|e| format!("invalid cron expression `{expr}`: {e}"))?;
        }
        cron::Schedule::from_str(expr)
            .map(|s| Schedule::Cron(Box::new(s)))
            .map_err(|e| format!("invalid cron expression `{expr}`: {e}"))
    }

    /// The first run time strictly after `t`. For `every`, runs are aligned to the previous run time `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => Some(t + chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::MAX)),
            Schedule::Cron(c) => c.after(&t).next(),
        }
    }
}

/// One field of a cron expression and the numbers it takes. The `cron` crate checks them too, but its messages
/// are off by one ("Seconds must be less than 59" while 59 is accepted) and do not say that day of week 1 is
/// Sunday; numbers are checked here first so that the message states the true range.
struct CronField {
    /// The field's name in messages.
    name: &'static str,
    /// The smallest and largest number it takes.
    min: u32,
    max: u32,
    /// The range as users write it, for messages.
    range: &'static str,
}

/// The fields in order: `sec min hour day-of-month month day-of-week [year]`.
const FIELDS: [CronField; 7] = [
    CronField { name: "seconds", min: 0, max: 59, range: "0–59" },
    CronField { name: "minutes", min: 0, max: 59, range: "0–59" },
    CronField { name: "hours", min: 0, max: 23, range: "0–23" },
    CronField { name: "day of month", min: 1, max: 31, range: "1–31" },
    CronField { name: "month", min: 1, max: 12, range: "1–12 or JAN–DEC" },
    CronField { name: "day of week", min: 1, max: 7, range: "1–7 (1 is Sunday) or SUN–SAT" },
    CronField { name: "year", min: 1970, max: 2100, range: "1970–2100" },
];

impl CronField {
    /// Checks every number in `text` (a list of `a`, `a-b`, `a/step`, `a-b/step`, `*/step`); names, `*` and `?`
    /// are left to the `cron` crate.
    fn check(&self, text: &str) -> Result<(), String> {
        for item in text.split(',') {
            let (values, step) = match item.split_once('/') {
                Some((v, s)) => (v, Some(s)),
                None => (item, None),
            };
            for v in values.split('-') {
                if let Ok(n) = v.parse::<u64>() {
                    if n < u64::from(self.min) || n > u64::from(self.max) {
                        return Err(format!("{} must be {}, not {v}", self.name, self.range));
                    }
                }
            }
            if let Some(Ok(n)) = step.map(str::parse::<u64>) {
                if n < 1 || n > u64::from(self.max) {
                    return Err(format!("a step in {} must be 1–{}, not {n}", self.name, self.max));
                }
            }
        }
        Ok(())
    }
}

/// For an `every` schedule whose run was due at `due` and whose next run is asked for at `now`: the next due time
/// (never before `now`'s interval slot) and how many due times were skipped because the run went past them.
pub fn every_next(due: Instant, now: Instant, every: Duration) -> (Instant, u64) {
    let every_ns = every.as_nanos().max(1);
    let elapsed = now.saturating_duration_since(due).as_nanos();
    let slots = elapsed.div_ceil(every_ns).max(1);
    let next = u32::try_from(slots)
        .ok()
        .and_then(|n| every.checked_mul(n))
        .and_then(|d| due.checked_add(d))
        .unwrap_or_else(|| now + every);
    (next, u64::try_from(slots - 1).unwrap_or(u64::MAX))
}

/// How many times of `cron` lie in `(from, to]` (at most 100 000 are counted).
fn cron_times_between(cron: &cron::Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    cron.after(&from).take_while(|t| *t <= to).take(100_000).count() as u64
}

/// The longest step of the grid of due times ([`Ticker::on_grid`]): a first run moves at most this much from its
/// random offset (and stays within the interval).
pub const GRID_STEP: Duration = Duration::from_millis(500);

/// About how many polls share an instant of the grid, at most: a daemon with many targets gets a finer grid, so
/// that the answers of one instant (held until a rule evaluation is free) stay few.
pub const POLLS_PER_INSTANT: usize = 10;

/// The step of the grid for an `every` interval in a daemon that runs `polls` probe × target loops: the interval
/// divided into a whole number of steps (so due times stay on the grid from one run to the next), at least 10, at
/// most [`GRID_STEP`] long, and enough that `polls` loops spread over them leave about [`POLLS_PER_INSTANT`] to an
/// instant.
pub fn grid_step(every: Duration, polls: usize) -> Duration {
    let by_length = every.as_nanos().div_ceil(GRID_STEP.as_nanos().max(1));
    let by_load = polls.div_ceil(POLLS_PER_INSTANT) as u128;
    let steps = by_length.max(by_load).clamp(10, u128::from(u32::MAX));
    every / u32::try_from(steps).unwrap_or(u32::MAX)
}

/// `t` moved onto the grid `base + k * step`: rounded up, or down when rounding up would reach `latest` (`t` itself
/// before `base`, or when `step` is zero).
fn on_grid(t: Instant, base: Instant, step: Duration, latest: Instant) -> Instant {
    let step_ns = step.as_nanos();
    if step_ns == 0 || t < base {
        return t;
    }
    let since = t.duration_since(base).as_nanos();
    let at = |k: u128| {
        k.checked_mul(step_ns)
            .and_then(|ns| u64::try_from(ns).ok())
            .and_then(|ns| base.checked_add(Duration::from_nanos(ns)))
    };
    match at(since.div_ceil(step_ns)) {
        Some(up) if up < latest => up,
        _ => at(since / step_ns).unwrap_or(t),
    }
}

/// Drives one probe's schedule: [`Ticker::tick`] waits until the next run is due.
#[derive(Debug)]
pub struct Ticker {
    clock: Clock,
    kind: TickerKind,
}

#[derive(Debug)]
enum TickerKind {
    Every { every: Duration, due: Instant, started: bool },
    Cron { cron: Box<cron::Schedule>, last: Option<(DateTime<Utc>, Instant)> },
}

impl Ticker {
    /// A ticker for `schedule`. An `every` schedule's first run comes at a random offset within its interval;
    /// `clock` is the wall clock cron schedules follow.
    pub fn new(schedule: &Schedule, clock: Clock) -> Self {
        Self::on_grid(schedule, clock, None, Instant::now(), 1)
    }

    /// Like [`Ticker::new`], for a probe loop of a daemon. An `every` schedule's first run comes within `first` (if
    /// shorter than the interval: a new leader of an HA pair polls at once instead of up to a whole interval later),
    /// put on the daemon's grid of due times: `grid` plus a whole number of [`grid_step`]s of the interval (for a
    /// daemon of `polls` probe × target loops). The probes of a daemon that share an interval come due at the same instants and run together,
    /// instead of each waking the daemon on its own (timer coalescing): with 100 targets polled every 5 s, 10 steps
    /// of 500 ms, about 10 polls a wake-up instead of one. The offset within the interval stays random, so the polls
    /// of one interval are still spread over it.
    pub fn on_grid(schedule: &Schedule, clock: Clock, first: Option<Duration>, grid: Instant, polls: usize) -> Self {
        let kind = match schedule {
            Schedule::Every(every) => {
                let within = first.map_or(*every, |f| f.min(*every));
                let span = u64::try_from(within.as_nanos()).unwrap_or(u64::MAX).max(1);
                let offset = Duration::from_nanos(rand::thread_rng().gen_range(0..span));
                let now = Instant::now();
                let due = on_grid(now + offset, grid, grid_step(*every, polls), now + within);
                TickerKind::Every { every: *every, due, started: false }
            }
            Schedule::Cron(c) => TickerKind::Cron { cron: c.clone(), last: None },
        };
        Self { clock, kind }
    }

    /// Waits until the next run is due. Returns how many runs were skipped since the previous one because it ran
    /// past their time, or `None` when the schedule has no more runs (a cron expression with a past year).
    pub async fn tick(&mut self) -> Option<u64> {
        match &mut self.kind {
            TickerKind::Every { every, due, started } => {
                let mut skipped = 0;
                if *started {
                    let (next, s) = every_next(*due, Instant::now(), *every);
                    *due = next;
                    skipped = s;
                }
                *started = true;
                tokio::time::sleep_until(*due).await;
                Some(skipped)
            }
            TickerKind::Cron { cron, last } => {
                // Times the previous run went past, measured on the monotonic clock: a wall-clock step during the
                // run is not a skipped run.
                let skipped = match *last {
                    Some((due, ran_at)) => {
                        let ran = chrono::Duration::from_std(ran_at.elapsed()).unwrap_or(chrono::Duration::MAX);
                        cron_times_between(cron, due, due.checked_add_signed(ran).unwrap_or(due))
                    }
                    None => 0,
                };
                let mut next = cron.after(&self.clock.now()).next()?;
                loop {
                    let now = self.clock.now();
                    if now >= next {
                        *last = Some((next, Instant::now()));
                        return Some(skipped);
                    }
                    // The wall clock went back: wait for what the schedule says from now, not for the old time.
                    if let Some(fresh) = cron.after(&now).next() {
                        next = next.min(fresh);
                    }
                    let wait = (next - now).to_std().unwrap_or(Duration::ZERO).min(CRON_RECHECK);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cron_needs_seconds_and_reports_errors() {
        assert!(Schedule::cron("*/5 * * * *").unwrap_err().contains("expected 6 or 7 fields"));
        assert!(Schedule::cron("*/5 * * * * * * *").is_err());
        assert!(Schedule::cron("99 * * * * *").unwrap_err().starts_with("invalid cron expression `99 * * * * *`"));
        let s = Schedule::cron("*/15 * * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 1).unwrap();
        assert_eq!(s.next_after(t), Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 15).unwrap()));
    }

    #[test]
    fn cron_field_ranges_are_stated_truly_and_enforced_at_each_boundary() {
        // (field position, largest accepted, first refused above, smallest accepted, message)
        let cases = [
            (0, "59", "60", "0", "seconds must be 0–59"),
            (1, "59", "60", "0", "minutes must be 0–59"),
            (2, "23", "24", "0", "hours must be 0–23"),
            (3, "31", "32", "1", "day of month must be 1–31"),
            (4, "12", "13", "1", "month must be 1–12 or JAN–DEC"),
            (5, "7", "8", "1", "day of week must be 1–7 (1 is Sunday) or SUN–SAT"),
        ];
        let expr = |at: usize, v: &str| {
            let mut f = ["0", "0", "0", "*", "*", "?"];
            if at == 5 {
                f[3] = "?";
            }
            f[at] = v;
            f.join(" ")
        };
        for (at, top, over, bottom, message) in cases {
            for ok in [top, bottom] {
                let e = expr(at, ok);
                assert!(Schedule::cron(&e).is_ok(), "`{e}` is valid: {:?}", Schedule::cron(&e).err());
            }
            let e = expr(at, over);
            assert_eq!(
                Schedule::cron(&e).unwrap_err(),
                format!("invalid cron expression `{e}`: {message}, not {over}"),
                "field {at}"
            );
            // In a range and a list too.
            let e = expr(at, &format!("{bottom}-{over}"));
            assert!(Schedule::cron(&e).unwrap_err().ends_with(&format!("{message}, not {over}")), "`{e}`");
            let e = expr(at, &format!("{bottom},{over}"));
            assert!(Schedule::cron(&e).unwrap_err().ends_with(&format!("{message}, not {over}")), "`{e}`");
        }
        // Fields that start at 1 refuse 0 with the same message.
        for (at, message) in [(3, "day of month must be 1–31"), (4, "month must be 1–12 or JAN–DEC")] {
            let e = expr(at, "0");
            assert!(Schedule::cron(&e).unwrap_err().ends_with(&format!("{message}, not 0")), "`{e}`");
        }
        let e = expr(5, "0");
        assert!(Schedule::cron(&e).unwrap_err().ends_with("day of week must be 1–7 (1 is Sunday) or SUN–SAT, not 0"));
        // Names, and 1 is Sunday: `0 0 12 ? * 1` is noon every Sunday.
        assert!(Schedule::cron("0 0 0 ? JAN-DEC SUN-SAT").is_ok());
        let sunday_noon = Schedule::cron("0 0 12 ? * 1").unwrap();
        let wed = Utc.with_ymd_and_hms(2026, 1, 7, 0, 0, 0).unwrap();
        assert_eq!(sunday_noon.next_after(wed), Some(Utc.with_ymd_and_hms(2026, 1, 11, 12, 0, 0).unwrap()));
        // Steps: at most the field's largest value.
        assert!(Schedule::cron("*/59 * * * * *").is_ok());
        assert!(Schedule::cron("*/60 * * * * *").unwrap_err().ends_with("a step in seconds must be 1–59, not 60"));
        assert!(Schedule::cron("*/0 * * * * *").unwrap_err().ends_with("a step in seconds must be 1–59, not 0"));
        // The optional year.
        assert!(Schedule::cron("0 0 0 1 1 ? 2100").is_ok());
        assert!(Schedule::cron("0 0 0 1 1 ? 2101").unwrap_err().ends_with("year must be 1970–2100, not 2101"));
    }

    #[test]
    fn slow_runs_skip_and_count_instead_of_overlapping() {
        let ten = Duration::from_secs(10);
        let due = Instant::now();
        let s = |n| Duration::from_secs(n);
        // Finished within the interval: nothing skipped.
        assert_eq!(every_next(due, due + s(3), ten), (due + s(10), 0));
        // Took 25 s: the runs due at 10 s and 20 s are skipped, the next is at 30 s.
        assert_eq!(every_next(due, due + s(25), ten), (due + s(30), 2));
        // Took exactly 20 s: the run due at 20 s is due now, only the one at 10 s was skipped.
        assert_eq!(every_next(due, due + s(20), ten), (due + s(20), 1));
        // A week-long stall is one jump, not a loop.
        assert_eq!(every_next(due, due + s(604_805), ten), (due + s(604_810), 60_480));
        let c = Schedule::cron("*/10 * * * * *").unwrap();
        let Schedule::Cron(c) = c else { unreachable!() };
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(cron_times_between(&c, t, t + chrono::Duration::seconds(25)), 2);
    }

    /// Runs `ticker` (each run taking `run`) until tokio's clock reaches `until`, stepping the wall clock by
    /// `steps` at the given times; returns the times (since the start) of the runs and the skipped runs reported.
    async fn drive(
        mut ticker: Ticker,
        clock: Clock,
        run: Duration,
        until: Duration,
        steps: &[(u64, i64)],
    ) -> (Vec<Duration>, u64) {
        let start = Instant::now();
        let runs = std::sync::Arc::new(std::sync::Mutex::new((vec![], 0u64)));
        let r = runs.clone();
        let task = tokio::spawn(async move {
            while let Some(skipped) = ticker.tick().await {
                {
                    let mut g = r.lock().unwrap();
                    g.0.push(start.elapsed());
                    g.1 += skipped;
                }
                tokio::time::sleep(run).await;
            }
        });
        for (at, hours) in steps {
            tokio::time::sleep_until(start + Duration::from_secs(*at)).await;
            clock.step(chrono::Duration::hours(*hours));
        }
        tokio::time::sleep_until(start + until).await;
        task.abort();
        let g = runs.lock().unwrap();
        (g.0.clone(), g.1)
    }

    fn max_gap(runs: &[Duration]) -> Duration {
        runs.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 29, 0, 59, 50).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn tickers_on_one_grid_come_due_together_and_keep_their_interval() {
        let every = Duration::from_secs(5);
        let step = grid_step(every, 50);
        assert_eq!(step, Duration::from_millis(500));
        assert_eq!(grid_step(every, 100), Duration::from_millis(500));
        // Many loops: a finer grid, about 10 polls an instant.
        assert_eq!(grid_step(every, 1_000), Duration::from_millis(50));
        assert_eq!(grid_step(Duration::from_secs(1), 1), Duration::from_millis(100));
        assert_eq!(grid_step(Duration::from_secs(60), 1), GRID_STEP);
        assert_eq!(grid_step(Duration::from_millis(7), 1), Duration::from_micros(700));
        let base = Instant::now();
        let runs = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        for i in 0..50 {
            let mut t = Ticker::on_grid(&Schedule::Every(every), Clock::System, None, base, 50);
            let runs = runs.clone();
            tokio::spawn(async move {
                for _ in 0..3 {
                    let skipped = t.tick().await;
                    runs.lock().unwrap().push((i, Instant::now(), skipped));
                }
            });
        }
        tokio::time::sleep(every * 4).await;
        let runs = runs.lock().unwrap();
        assert_eq!(runs.len(), 150);
        let mut instants = std::collections::BTreeSet::new();
        for i in 0..50 {
            let mine: Vec<Instant> = runs.iter().filter(|r| r.0 == i).map(|r| r.1).collect();
            assert!(runs.iter().filter(|r| r.0 == i).all(|r| r.2 == Some(0)));
            // The first run within the interval; then one every interval.
            assert!(mine[0].duration_since(base) <= every, "first run after {:?}", mine[0] - base);
            assert!(mine.windows(2).all(|w| w[1].duration_since(w[0]) == every), "{mine:?}");
            for at in mine {
                let since = at.duration_since(base);
                assert_eq!(since.as_nanos() % step.as_nanos(), 0, "{since:?} is not on the grid");
                instants.insert(since.as_nanos() % every.as_nanos());
            }
        }
        // 50 tickers share at most the interval's 10 instants (and, at random offsets, use several of them).
        assert!(instants.len() <= 10 && instants.len() >= 3, "{instants:?}");
    }

    #[test]
    fn a_time_is_moved_onto_the_grid() {
        let base = Instant::now();
        let step = Duration::from_millis(500);
        let late = base + Duration::from_secs(10);
        let ms = |n| base + Duration::from_millis(n);
        assert_eq!(on_grid(base, base, step, late), base);
        assert_eq!(on_grid(ms(1), base, step, late), ms(500));
        assert_eq!(on_grid(ms(500), base, step, late), ms(500));
        assert_eq!(on_grid(ms(1001), base, step, late), ms(1500));
        // Not up to `latest`: rounded down instead.
        assert_eq!(on_grid(ms(1001), base, step, ms(1200)), ms(1000));
        assert_eq!(on_grid(ms(1001), base, step, ms(1500)), ms(1000));
        assert_eq!(on_grid(ms(7), base, Duration::ZERO, late), ms(7));
    }

    #[tokio::test(start_paused = true)]
    async fn every_runs_on_the_monotonic_clock_whatever_the_wall_clock_does() {
        for steps in [vec![(35, 1)], vec![(35, -1)], vec![(25, 1), (55, -1), (85, -1)]] {
            let clock = Clock::following_tokio(t0());
            let ticker = Ticker::new(&Schedule::Every(Duration::from_secs(10)), clock.clone());
            let (runs, skipped) =
                drive(ticker, clock, Duration::from_millis(50), Duration::from_secs(120), &steps).await;
            // A random first offset within the interval, then one run every 10 s: 12 runs in 120 s.
            assert!(runs[0] < Duration::from_secs(10), "{runs:?}");
            assert_eq!(runs.len(), 12, "steps {steps:?}: {runs:?}");
            assert!(runs.windows(2).all(|w| w[1] - w[0] == Duration::from_secs(10)), "{runs:?}");
            assert_eq!(skipped, 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_starts_spread_over_the_interval() {
        let mut firsts = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let start = Instant::now();
            let mut t = Ticker::new(&Schedule::Every(Duration::from_secs(60)), Clock::System);
            t.tick().await;
            firsts.insert(start.elapsed().as_secs());
        }
        assert!(firsts.len() > 5, "twenty probes should not all start together: {firsts:?}");
        assert!(firsts.iter().all(|s| *s < 60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_every_run_skips_and_counts_the_runs_it_ran_past() {
        let clock = Clock::following_tokio(t0());
        let ticker = Ticker::new(&Schedule::Every(Duration::from_secs(10)), clock.clone());
        let (runs, skipped) = drive(ticker, clock, Duration::from_secs(25), Duration::from_secs(120), &[]).await;
        // Each run takes 25 s: it runs every 30 s and skips two times each time.
        assert!(runs.windows(2).all(|w| w[1] - w[0] == Duration::from_secs(30)), "{runs:?}");
        assert_eq!(runs.len(), 4, "{runs:?}");
        assert_eq!(skipped, 2 * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn cron_follows_the_wall_clock_a_step_forward_runs_once_a_step_back_does_not_stall() {
        let cron = Schedule::cron("*/10 * * * * *").unwrap();
        // No step: on the wall clock's 10-second marks (t0 is hh:59:50), at 10 s, 20 s, … 110 s.
        let clock = Clock::following_tokio(t0());
        let (runs, skipped) =
            drive(Ticker::new(&cron, clock.clone()), clock, Duration::from_millis(50), Duration::from_secs(120), &[])
                .await;
        assert_eq!(runs.len(), 11, "{runs:?}");
        assert_eq!(runs[0], Duration::from_secs(10));
        assert_eq!(skipped, 0);

        // One hour forward at 35 s: one run soon after (within CRON_RECHECK), no catching up on the missed hour.
        let clock = Clock::following_tokio(t0());
        let (runs, skipped) = drive(
            Ticker::new(&cron, clock.clone()),
            clock,
            Duration::from_millis(50),
            Duration::from_secs(120),
            &[(35, 1)],
        )
        .await;
        assert!((11..=12).contains(&runs.len()), "a step forward floods or stops: {runs:?}");
        assert!(max_gap(&runs) <= Duration::from_secs(10), "{runs:?}");
        assert_eq!(skipped, 0, "a wall-clock step is not a slow run");

        // One hour back at 35 s, then forward again at 75 s: the probe never waits for the hour to come back.
        let clock = Clock::following_tokio(t0());
        let (runs, _) = drive(
            Ticker::new(&cron, clock.clone()),
            clock,
            Duration::from_millis(50),
            Duration::from_secs(120),
            &[(35, -1), (75, 1)],
        )
        .await;
        assert!((10..=12).contains(&runs.len()), "a step back stalls or floods: {runs:?}");
        assert!(max_gap(&runs) <= Duration::from_secs(10) + CRON_RECHECK, "stalled: {runs:?}");
        assert!(runs.windows(2).all(|w| w[1] - w[0] >= Duration::from_millis(50)), "{runs:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_cron_run_skips_and_counts_the_times_it_ran_past() {
        let cron = Schedule::cron("*/10 * * * * *").unwrap();
        let clock = Clock::following_tokio(t0());
        let (runs, skipped) =
            drive(Ticker::new(&cron, clock.clone()), clock, Duration::from_secs(25), Duration::from_secs(120), &[])
                .await;
        // Due at 10 s, 40 s, 70 s, 100 s; each run goes past two marks.
        assert_eq!(runs.len(), 4, "{runs:?}");
        assert_eq!(skipped, 2 * 3);
    }
}
