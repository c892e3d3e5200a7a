//! A recorded timeline: what ran when, on which thread, with wall-clock timestamps. Written as
//! Chrome trace events (`profile.trace.json`, for Perfetto or chrome://tracing) and as the
//! trace TensorBoard's profile plugin loads: `plugins/profile/<session>/<host>.trace.json.gz`
//! under the run's log folder, which `tensorboard --logdir runs` then shows in its Profile tab
//! (trace viewer).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Events on named threads of one process, timed against one clock.
pub struct Timeline {
    origin: Instant,
    /// Microseconds since the Unix epoch at `origin`.
    origin_unix_us: f64,
    threads: Vec<(u32, String)>,
    events: Vec<Value>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Timeline {
    /// A timeline whose clock starts now.
    pub fn new() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6);
        Self {
            origin: Instant::now(),
            origin_unix_us: unix,
            threads: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Names thread `tid` (a row of the trace viewer).
    pub fn thread(&mut self, tid: u32, name: &str) {
        self.threads.push((tid, name.to_string()));
    }

    /// Wall-clock microseconds of `at`.
    fn micros(&self, at: Instant) -> f64 {
        let since = at.saturating_duration_since(self.origin).as_secs_f64() * 1e6;
        let before = self.origin.saturating_duration_since(at).as_secs_f64() * 1e6;
        self.origin_unix_us + since - before
    }

    /// Something that ran on thread `tid` from `start` to `end`.
    pub fn span(
        &mut self,
        tid: u32,
        (name, category): (&str, &str),
        start: Instant,
        end: Instant,
        args: Value,
    ) {
        let ts = self.micros(start);
        self.events.push(json!({
            "name": name, "cat": category, "ph": "X", "ts": ts,
            "dur": (self.micros(end) - ts).max(0.0), "pid": 1, "tid": tid, "args": args,
        }));
    }

    /// The trace as Chrome trace JSON, the process named `process`.
    pub fn to_json(&self, process: &str) -> Value {
        let mut events = vec![json!({
            "name": "process_name", "ph": "M", "pid": 1, "args": {"name": process},
        })];
        for (tid, name) in &self.threads {
            events.push(json!({
                "name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": name},
            }));
        }
        events.extend(self.events.iter().cloned());
        json!({ "traceEvents": events, "displayTimeUnit": "ms" })
    }
}

/// This machine's name as the profile plugin shows it (`localhost` when unknown).
fn host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_".contains(*c))
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Writes `trace` where TensorBoard's profile plugin finds it: a session named after the UTC
/// time (`2026_12_05_17_20_00`, what TensorFlow's profiler names them) under
/// `<logdir>/plugins/profile/`, the file `<host>.trace.json.gz`. Returns the file.
pub fn write_for_tensorboard(logdir: &Path, trace: &Value) -> std::io::Result<PathBuf> {
    let [y, mo, d, h, mi, s] = measure::summary::utc_parts(measure::summary::unix_secs());
    let session = format!("{y:04}_{mo:02}_{d:02}_{h:02}_{mi:02}_{s:02}");
    let dir = logdir.join("plugins/profile").join(session);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}.trace.json.gz", host()));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&serde_json::to_vec(trace).map_err(std::io::Error::other)?)?;
    settings::run_dir::write_atomic(&path, &gz.finish()?)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn spans_keep_their_order_and_length_on_the_wall_clock() {
        let mut timeline = Timeline::new();
        timeline.thread(1, "forward");
        let start = Instant::now();
        let end = start + Duration::from_micros(250);
        timeline.span(1, ("conv1", "forward"), start, end, json!({}));
        timeline.span(
            1,
            ("pool1", "forward"),
            end,
            end + Duration::from_micros(50),
            json!({}),
        );
        let trace = timeline.to_json("test");
        let events = trace["traceEvents"].as_array().unwrap();
        assert_eq!(events[0]["args"]["name"], "test");
        assert_eq!(events[1]["args"]["name"], "forward");
        let (a, b) = (&events[2], &events[3]);
        assert!((a["dur"].as_f64().unwrap() - 250.0).abs() < 1.0);
        let gap = b["ts"].as_f64().unwrap() - a["ts"].as_f64().unwrap();
        assert!((gap - 250.0).abs() < 1.0, "{gap}");
        // Wall clock: microseconds since 1970, so after 2020.
        assert!(a["ts"].as_f64().unwrap() > 1.6e15);
    }
}
