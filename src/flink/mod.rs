//! Flink REST knowledge the rest of Warden needs: reading exceptions across 1.x and 2.x shapes, and the typed
//! REST calls of restarts ([`client`]) and of in-place rescaling ([`rescale`]).

pub mod client;
pub mod rescale;

use serde_json::Value;

/// The root cause of a job failure, as read from `/jobs/:jid/exceptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootCause {
    /// The most telling line: the innermost `Caused by:` of the newest failure (without that prefix), else the
    /// first line of its stack trace.
    pub line: String,
    /// The first lines of the newest failure's stack trace (at most 12).
    pub head: Vec<String>,
    /// When it happened (ms since the epoch), if Flink said.
    pub timestamp: Option<i64>,
    /// The failing task, if Flink said.
    pub task: Option<String>,
}

impl std::fmt::Display for RootCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

/// Reads the root cause from an exceptions answer of Flink 1.15–2.x. `None` when no failure is recorded.
pub fn root_cause(body: &Value) -> Option<RootCause> {
    // 2.x (and 1.x since 1.13): newest entry first.
    if let Some(entry) = body.pointer("/exceptionHistory/entries/0") {
        let trace = entry.get("stacktrace").and_then(Value::as_str).unwrap_or("");
        let name = entry.get("exceptionName").and_then(Value::as_str).unwrap_or("");
        let task = entry.get("taskName").and_then(Value::as_str).map(str::to_string);
        let ts = entry.get("timestamp").and_then(Value::as_i64);
        return Some(from_trace(trace, name, ts, task));
    }
    // 1.x deprecated top-level fields.
    if let Some(trace) = body.get("root-exception").and_then(Value::as_str) {
        let ts = body.get("timestamp").and_then(Value::as_i64);
        return Some(from_trace(trace, "", ts, None));
    }
    None
}

fn from_trace(trace: &str, name: &str, timestamp: Option<i64>, task: Option<String>) -> RootCause {
    let lines: Vec<&str> = trace.lines().collect();
    let caused = lines.iter().rev().find_map(|l| l.trim_start().strip_prefix("Caused by: "));
    let line = match caused {
        Some(c) => c.trim().to_string(),
        None => {
            lines.first().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).unwrap_or_else(|| name.to_string())
        }
    };
    let head = lines.iter().take(12).map(|l| l.to_string()).collect();
    RootCause { line, head, timestamp, task }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let p = format!("{}/tests/fixtures/flink-2.3.0/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&p).expect(&p)).unwrap()
    }

    #[test]
    fn root_cause_of_a_real_2x_failure_is_the_innermost_cause() {
        let c = root_cause(&fixture("job-failed-exceptions.json")).unwrap();
        assert_eq!(c.line, "java.lang.RuntimeException: poison pill found at /data/flink/poison");
        assert!(c.head[0].starts_with("org.apache.flink.runtime.JobException: Recovery is suppressed"));
        assert!(c.timestamp.is_some());
    }

    #[test]
    fn no_failure_no_cause() {
        assert_eq!(root_cause(&fixture("job-exceptions-empty.json")), None);
    }

    #[test]
    fn flink_1x_root_exception() {
        let body = serde_json::json!({
            "root-exception": "org.apache.flink.runtime.JobException: Recovery is suppressed\n\tat x\nCaused by: java.io.IOException: disk full\n\tat y",
            "timestamp": 5, "all-exceptions": [], "truncated": false
        });
        let c = root_cause(&body).unwrap();
        assert_eq!(c.line, "java.io.IOException: disk full");
        assert_eq!(c.timestamp, Some(5));
    }
}
