//! Plugin channels: an executable run once per message with a JSON document on stdin (an argument vector, never
//! a shell line). Exit 0: delivered. Exit 65 (`EX_DATAERR`): the plugin rejected the message for good. Anything
//! else, a signal or the timeout: retried later.
//!
//! The document (`version: 1`):
//!
//! ```json
//! {"version": 1, "test": false, "channel": "webhook", "message_id": "…", "created": "2026-…Z",
//!  "event": "firing", "severity": "critical", "headline": "[FIRING] job clicks FAILED: …", "text": "…",
//!  "count": 1, "target": {"name": "prod-jm", "url": "http://jm:8081", "labels": {}},
//!  "alerts": [{"event", "rule", "pack", "target", "target_url", "job", "jid", "state", "severity", "summary",
//!              "since", "for", "time", "root_cause", "root_cause_lines", "link", "actions", "details"}]}
//! ```

use std::process::Stdio;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::channel::DeliveryError;
use super::config::PluginConfig;
use super::template::View;

/// The exit code a plugin uses to say "this message can never be delivered" (`EX_DATAERR`).
pub const EXIT_REJECTED: i32 = 65;

/// Reads a pipe to its end, keeping the first 64 KiB (so that a chatty plugin never blocks on a full pipe).
async fn drain(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut keep = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = (64 * 1024usize).saturating_sub(keep.len());
        keep.extend_from_slice(&buf[..n.min(room)]);
    }
    keep
}

/// Builds the stdin document.
pub fn document(channel: &str, id: &str, created: DateTime<Utc>, test: bool, v: &View, text: String) -> Value {
    json!({
        "version": 1,
        "test": test,
        "channel": channel,
        "message_id": id,
        "created": crate::store::ts(created),
        "event": v.event,
        "severity": v.severity,
        "headline": v.headline,
        "text": text,
        "count": v.count,
        "target": v.target,
        "alerts": v.alerts,
    })
}

/// Runs the plugin.
pub struct PluginSender {
    config: PluginConfig,
}

impl PluginSender {
    /// A plugin channel.
    pub fn new(c: &PluginConfig) -> PluginSender {
        PluginSender { config: c.clone() }
    }

    /// Runs the plugin with `doc` on stdin.
    pub async fn run(&self, doc: &Value) -> Result<(), DeliveryError> {
        let c = &self.config;
        let prog = c.command.first().ok_or_else(|| DeliveryError::permanent("the plugin command is empty"))?;
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(&c.command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &c.env {
            cmd.env(k, v.expose());
        }
        let mut child = cmd.spawn().map_err(|e| DeliveryError::retry(format!("cannot start plugin `{prog}`: {e}")))?;
        let input = serde_json::to_vec(doc).expect("json");
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let work = async {
            // A plugin that exits without reading stdin is not an error of ours: its exit code decides.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
            let (_, err, status) = tokio::join!(drain(&mut stdout), drain(&mut stderr), child.wait());
            (status, err)
        };
        let (status, err) = match tokio::time::timeout(c.timeout, work).await {
            Ok(r) => r,
            Err(_) => {
                return Err(DeliveryError::retry(format!(
                    "plugin `{prog}` did not finish within {}; killed",
                    humantime::format_duration(c.timeout)
                )))
            }
        };
        let status = status.map_err(|e| DeliveryError::retry(format!("plugin `{prog}`: {e}")))?;
        let tail: String = {
            let s = String::from_utf8_lossy(&err);
            let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
            lines[lines.len().saturating_sub(3)..].join(" | ")
        };
        let said = if tail.is_empty() { String::new() } else { format!(": {tail}") };
        match status.code() {
            Some(0) => Ok(()),
            Some(EXIT_REJECTED) => Err(DeliveryError::permanent(format!(
                "plugin `{prog}` rejected the message (exit {EXIT_REJECTED}){said}"
            ))),
            Some(n) => Err(DeliveryError::retry(format!("plugin `{prog}` exited with {n}{said}"))),
            None => Err(DeliveryError::retry(format!("plugin `{prog}` was killed by a signal{said}"))),
        }
    }
}
