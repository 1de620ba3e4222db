//! What a fault does to live traffic, per 100 ms window: successes, failed attempts (before the client's one
//! retry), operations slower than 1 s, and the p99 latency; the recovery time `rto_ms` derived from it; and the
//! timeline written as CSV and as an SVG chart (hand-written SVG, no plotting dependency).
//!
//! An event belongs to the window in which it completed: a failed attempt when its failure was seen, an operation
//! when it finished (its latency counted from its scheduled start).

use std::fmt::Write;
use std::time::Duration;

/// Width of one window.
pub const WINDOW_MS: u64 = 100;
/// An operation slower than this marks its window as not recovered.
pub const SLOW_MS: u64 = 1_000;

/// Events of one window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    pub successes: u64,
    pub failed_attempts: u64,
    pub slow: u64,
    latencies_us: Vec<u32>,
}

/// The windows of a run, from its start.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    windows: Vec<Window>,
}

/// One window as written: its start, counts and p99.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub start_ms: u64,
    pub successes: u64,
    pub failed_attempts: u64,
    pub slow: u64,
    pub p99_ms: f64,
}

impl Row {
    pub fn end_ms(&self) -> u64 {
        self.start_ms + WINDOW_MS
    }

    /// A window in which an attempt failed or an operation took over [`SLOW_MS`].
    pub fn disturbed(&self) -> bool {
        self.failed_attempts > 0 || self.slow > 0
    }
}

fn micros(duration: Duration) -> u32 {
    duration.as_micros().min(u128::from(u32::MAX)) as u32
}

impl Timeline {
    fn window(&mut self, at: Duration) -> &mut Window {
        let index = (at.as_millis() / u128::from(WINDOW_MS)) as usize;
        if self.windows.len() <= index {
            self.windows.resize(index + 1, Window::default());
        }
        &mut self.windows[index]
    }

    /// An operation that succeeded at `at` (since the run's start), after `latency` (from its scheduled start, its
    /// retry included).
    pub fn record_success(&mut self, at: Duration, latency: Duration) {
        let window = self.window(at);
        window.successes += 1;
        window.latencies_us.push(micros(latency));
        if latency > Duration::from_millis(SLOW_MS) {
            window.slow += 1;
        }
    }

    /// An operation that failed for good at `at`: slow when it took that long.
    pub fn record_failure(&mut self, at: Duration, latency: Duration) {
        if latency > Duration::from_millis(SLOW_MS) {
            self.window(at).slow += 1;
        }
    }

    /// An attempt that failed at `at` (whether or not its retry then succeeded).
    pub fn record_failed_attempt(&mut self, at: Duration) {
        self.window(at).failed_attempts += 1;
    }

    pub fn merge(&mut self, other: Timeline) {
        for (index, window) in other.windows.into_iter().enumerate() {
            let mine = self.window(Duration::from_millis(index as u64 * WINDOW_MS));
            mine.successes += window.successes;
            mine.failed_attempts += window.failed_attempts;
            mine.slow += window.slow;
            mine.latencies_us.extend(window.latencies_us);
        }
    }

    /// Every window up to `until` (empty ones included, so the chart has no gaps).
    pub fn rows(&self, until: Duration) -> Vec<Row> {
        let count = (until.as_millis().div_ceil(u128::from(WINDOW_MS)) as usize).max(self.windows.len());
        (0..count)
            .map(|index| {
                let empty = Window::default();
                let window = self.windows.get(index).unwrap_or(&empty);
                let mut sorted = window.latencies_us.clone();
                sorted.sort_unstable();
                Row {
                    start_ms: index as u64 * WINDOW_MS,
                    successes: window.successes,
                    failed_attempts: window.failed_attempts,
                    slow: window.slow,
                    p99_ms: super::report::percentile_ms(&sorted, 0.99),
                }
            })
            .collect()
    }
}

/// The recovery time after a fault at `fault_ms`: to the end of the last disturbed window that ends after the
/// fault and before `until_ms` (the next fault, or the end of the run); 0 when no window was disturbed. `None`
/// when the traffic had not recovered by then: the last whole window before `until_ms` is disturbed or has no
/// success (or there is no whole window after the fault).
pub fn rto_ms(rows: &[Row], fault_ms: u64, until_ms: u64) -> Option<u64> {
    let after = || rows.iter().filter(|row| row.end_ms() > fault_ms && row.start_ms < until_ms);
    let last_whole = after().rfind(|row| row.end_ms() <= until_ms)?;
    if last_whole.disturbed() || last_whole.successes == 0 {
        return None;
    }
    Some(after().filter(|row| row.disturbed()).map(|row| row.end_ms() - fault_ms).max().unwrap_or(0))
}

/// The timeline as CSV: `t_ms,successes,failed_attempts,slow,p99_ms`, one line per window (`t_ms` its start).
pub fn csv(rows: &[Row]) -> String {
    let mut text = String::from("t_ms,successes,failed_attempts,slow,p99_ms\n");
    for row in rows {
        let _ =
            writeln!(text, "{},{},{},{},{:.2}", row.start_ms, row.successes, row.failed_attempts, row.slow, row.p99_ms);
    }
    text
}

/// `rto 800 ms`, or that there was no recovery.
pub fn describe_rto(rto_ms: Option<u64>) -> String {
    match rto_ms {
        Some(rto_ms) => format!("rto {rto_ms} ms"),
        None => "not recovered".into(),
    }
}

/// A fault as drawn on the chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    pub label: String,
    pub at_ms: u64,
    /// `None`: not recovered before the next fault or the end of the run (the shading then runs to it).
    pub rto_ms: Option<u64>,
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 380.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// A tick step of 1, 2 or 5 × 10^k giving at most about `count` ticks up to `max`.
fn tick_step(max: f64, count: f64) -> f64 {
    let raw = (max / count).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|factor| factor * magnitude).find(|step| *step >= raw).unwrap_or(raw)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The chart: successes per second (green area) and failed attempts per second (red bars) on the left axis, p99
/// latency in ms (blue line) on the right axis, each fault a dashed vertical line with its recovery window shaded.
pub fn svg(rows: &[Row], marks: &[Mark], title: &str) -> String {
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let end_ms = rows.last().map_or(WINDOW_MS, Row::end_ms).max(WINDOW_MS) as f64;
    let per_second = 1000.0 / WINDOW_MS as f64;
    let rate_max =
        rows.iter().map(|row| (row.successes.max(row.failed_attempts)) as f64 * per_second).fold(1.0, f64::max) * 1.1;
    let latency_max = rows.iter().map(|row| row.p99_ms).fold(1.0, f64::max) * 1.1;
    let x = |ms: f64| LEFT + ms / end_ms * plot_width;
    let y_rate = |rate: f64| TOP + plot_height - rate / rate_max * plot_height;
    let y_latency = |ms: f64| TOP + plot_height - ms / latency_max * plot_height;

    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        escape(title)
    );
    for mark in marks {
        let end = match mark.rto_ms {
            Some(rto_ms) => x((mark.at_ms + rto_ms) as f64).min(LEFT + plot_width),
            None => LEFT + plot_width,
        };
        let start = x(mark.at_ms as f64);
        let _ = writeln!(
            svg,
            "<rect class=\"rto\" x=\"{start:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot_height}\" fill=\"#fde2c4\"/>",
            (end - start).max(0.0)
        );
    }
    // Axes and grid.
    let _ = writeln!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"black\"/>\n\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{bottom}\" stroke=\"black\"/>\n\
         <line x1=\"{right}\" y1=\"{TOP}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"black\"/>",
        bottom = TOP + plot_height,
        right = LEFT + plot_width
    );
    let time_step = tick_step(end_ms, 12.0);
    let mut tick = 0.0;
    while tick <= end_ms {
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"black\"/><text x=\"{0:.1}\" y=\"{3}\" \
             text-anchor=\"middle\">{4}</text>",
            x(tick),
            TOP + plot_height,
            TOP + plot_height + 5.0,
            TOP + plot_height + 18.0,
            tick / 1000.0
        );
        tick += time_step;
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time since start (s)</text>",
        LEFT + plot_width / 2.0,
        HEIGHT - 12.0
    );
    let rate_step = tick_step(rate_max, 6.0);
    let mut tick = 0.0;
    while tick <= rate_max {
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#eeeeee\"/><text x=\"{2}\" y=\"{3:.1}\" \
             text-anchor=\"end\">{4}</text>",
            y_rate(tick),
            LEFT + plot_width,
            LEFT - 6.0,
            y_rate(tick) + 4.0,
            tick
        );
        tick += rate_step;
    }
    let latency_step = tick_step(latency_max, 6.0);
    let mut tick = 0.0;
    while tick <= latency_max {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#1f5fbf\">{}</text>",
            LEFT + plot_width + 6.0,
            y_latency(tick) + 4.0,
            tick
        );
        tick += latency_step;
    }
    let _ = writeln!(
        svg,
        "<text transform=\"translate(16 {0:.1}) rotate(-90)\" text-anchor=\"middle\">operations/s</text>\n\
         <text transform=\"translate({1:.1} {0:.1}) rotate(90)\" text-anchor=\"middle\" fill=\"#1f5fbf\">p99 latency (ms)</text>",
        TOP + plot_height / 2.0,
        WIDTH - 14.0
    );
    // Successes as an area, failed attempts as bars, p99 as a line.
    let mut area = format!("{:.1},{:.1}", x(0.0), y_rate(0.0));
    for row in rows {
        let rate = row.successes as f64 * per_second;
        let _ = write!(
            area,
            " {:.1},{:.1} {:.1},{:.1}",
            x(row.start_ms as f64),
            y_rate(rate),
            x(row.end_ms() as f64),
            y_rate(rate)
        );
    }
    let _ = write!(area, " {:.1},{:.1}", x(end_ms), y_rate(0.0));
    let _ = writeln!(svg, "<polygon class=\"successes\" points=\"{area}\" fill=\"#9bd49b\" stroke=\"#2e8b2e\"/>");
    for row in rows.iter().filter(|row| row.failed_attempts > 0) {
        let top = y_rate(row.failed_attempts as f64 * per_second);
        let _ = writeln!(
            svg,
            "<rect class=\"failed\" x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#d62728\"/>",
            x(row.start_ms as f64),
            (x(row.end_ms() as f64) - x(row.start_ms as f64)).max(1.0),
            (TOP + plot_height - top).max(0.0)
        );
    }
    let line: Vec<String> = rows
        .iter()
        .filter(|row| row.successes > 0)
        .map(|row| format!("{:.1},{:.1}", x(row.start_ms as f64 + WINDOW_MS as f64 / 2.0), y_latency(row.p99_ms)))
        .collect();
    let _ = writeln!(
        svg,
        "<polyline class=\"p99\" points=\"{}\" fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"1.5\"/>",
        line.join(" ")
    );
    for mark in marks {
        let at = x(mark.at_ms as f64);
        let _ = writeln!(
            svg,
            "<line class=\"fault\" x1=\"{at:.1}\" y1=\"{TOP}\" x2=\"{at:.1}\" y2=\"{:.1}\" stroke=\"black\" stroke-dasharray=\"5,4\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{} at {:.1} s, {}</text>",
            TOP + plot_height,
            at + 4.0,
            TOP + 14.0,
            escape(&mark.label),
            mark.at_ms as f64 / 1000.0,
            describe_rto(mark.rto_ms)
        );
    }
    let legend_y = TOP - 8.0;
    let _ = writeln!(
        svg,
        "<rect x=\"{0:.1}\" y=\"{1:.1}\" width=\"10\" height=\"10\" fill=\"#9bd49b\"/><text x=\"{2:.1}\" y=\"{3:.1}\">successes/s</text>\n\
         <rect x=\"{4:.1}\" y=\"{1:.1}\" width=\"10\" height=\"10\" fill=\"#d62728\"/><text x=\"{5:.1}\" y=\"{3:.1}\">failed attempts/s</text>\n\
         <rect x=\"{6:.1}\" y=\"{1:.1}\" width=\"10\" height=\"10\" fill=\"#fde2c4\"/><text x=\"{7:.1}\" y=\"{3:.1}\">until recovered</text>",
        WIDTH - 450.0,
        legend_y - 9.0,
        WIDTH - 436.0,
        legend_y,
        WIDTH - 350.0,
        WIDTH - 336.0,
        WIDTH - 220.0,
        WIDTH - 206.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    fn sample() -> Timeline {
        let mut timeline = Timeline::default();
        for at in (0..3_000).step_by(10) {
            timeline.record_success(ms(at), ms(2));
        }
        timeline.record_failed_attempt(ms(1_030));
        timeline.record_failed_attempt(ms(1_040));
        timeline.record_success(ms(1_750), ms(1_200));
        timeline
    }

    #[test]
    fn events_fall_in_the_window_of_their_completion() {
        let rows = sample().rows(ms(3_000));
        assert_eq!(rows.len(), 30);
        assert_eq!(rows[0], Row { start_ms: 0, successes: 10, failed_attempts: 0, slow: 0, p99_ms: 2.0 });
        assert_eq!((rows[10].failed_attempts, rows[10].successes), (2, 10));
        assert_eq!((rows[17].slow, rows[17].successes, rows[17].p99_ms), (1, 11, 1200.0));
        assert!(!rows[16].disturbed() && rows[10].disturbed() && rows[17].disturbed());
        assert_eq!(sample().rows(ms(3_550)).len(), 36, "empty windows up to the end");
    }

    #[test]
    fn the_recovery_time_ends_with_the_last_disturbed_window_after_the_fault() {
        let rows = sample().rows(ms(3_000));
        // Fault at 1 000 ms: the slow operation's window [1 700, 1 800) is the last disturbed one.
        assert_eq!(rto_ms(&rows, 1_000, 3_000), Some(800));
        // Windows before the fault do not count; none after it: 0.
        assert_eq!(rto_ms(&rows, 2_000, 3_000), Some(0));
        // A fault in the middle of a disturbed window counts that window to its end.
        assert_eq!(rto_ms(&rows, 1_720, 3_000), Some(80));
        // Only until the next fault.
        assert_eq!(rto_ms(&rows, 900, 1_500), Some(200));
        let mut failed_late = sample();
        failed_late.record_failure(ms(2_850), ms(1_500));
        assert_eq!(rto_ms(&failed_late.rows(ms(3_000)), 1_000, 3_000), Some(1_900));
        let mut failed_fast = sample();
        failed_fast.record_failure(ms(2_850), ms(10));
        assert_eq!(
            rto_ms(&failed_fast.rows(ms(3_000)), 1_000, 3_000),
            Some(800),
            "a fast final failure adds nothing to its failed attempts"
        );
    }

    #[test]
    fn traffic_still_disturbed_or_absent_at_the_end_has_not_recovered() {
        let mut failing_at_the_end = sample();
        failing_at_the_end.record_failed_attempt(ms(2_950));
        assert_eq!(rto_ms(&failing_at_the_end.rows(ms(3_000)), 1_000, 3_000), None);
        assert_eq!(rto_ms(&sample().rows(ms(3_000)), 1_000, 1_800), None, "disturbed up to the next fault");
        let mut silent = Timeline::default();
        for at in (0..1_000).step_by(10) {
            silent.record_success(ms(at), ms(2));
        }
        assert_eq!(rto_ms(&silent.rows(ms(3_000)), 1_000, 3_000), None, "nothing succeeded after the fault");
        assert_eq!(rto_ms(&silent.rows(ms(1_050)), 1_000, 1_050), None, "no whole window after the fault");
        assert_eq!(describe_rto(None), "not recovered");
    }

    #[test]
    fn timelines_merge_window_by_window() {
        let mut merged = sample();
        merged.merge(sample());
        let rows = merged.rows(ms(3_000));
        assert_eq!((rows[10].successes, rows[10].failed_attempts), (20, 4));
        assert_eq!(rows[17].slow, 2);
    }

    #[test]
    fn the_csv_has_one_line_per_window() {
        let text = csv(&sample().rows(ms(3_000)));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "t_ms,successes,failed_attempts,slow,p99_ms");
        assert_eq!(lines.len(), 31);
        assert_eq!(lines[11], "1000,10,2,0,2.00");
        assert_eq!(lines[18], "1700,11,0,1,1200.00");
    }

    #[test]
    fn the_chart_draws_every_window_and_marks_the_fault() {
        let rows = sample().rows(ms(3_000));
        let marks = [Mark { label: "kill node <2>".into(), at_ms: 1_000, rto_ms: Some(800) }];
        let chart = svg(&rows, &marks, "kill & recover");
        assert!(chart.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(chart.trim_end().ends_with("</svg>"));
        assert!(chart.contains("kill &amp; recover") && chart.contains("kill node &lt;2&gt; at 1.0 s, rto 800 ms"));
        assert_eq!(chart.matches("class=\"fault\"").count(), 1);
        assert_eq!(chart.matches("class=\"failed\"").count(), 1, "one window with failed attempts");
        assert_eq!(chart.matches("class=\"rto\"").count(), 1);
        // The fault line sits at 1/3 of the plot: x = 70 + 1000/3000 × 760.
        assert!(chart.contains("x1=\"323.3\""), "{chart}");
        // The area has two points per window plus its two ends.
        let area = chart.split("class=\"successes\" points=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(area.split(' ').count(), rows.len() * 2 + 2);
        assert!(!chart.contains("NaN") && !chart.contains("inf"));
    }

    #[test]
    fn an_empty_run_still_draws() {
        let chart = svg(&[], &[], "nothing");
        assert!(chart.contains("</svg>") && !chart.contains("NaN"));
        assert_eq!(rto_ms(&[], 0, 1_000), None);
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(10_000.0, 12.0), 1_000.0);
        assert_eq!(tick_step(3_000.0, 12.0), 500.0);
        assert_eq!(tick_step(55.0, 6.0), 10.0);
        assert_eq!(tick_step(1.1, 6.0), 0.2);
    }
}
