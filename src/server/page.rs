//! The status page at `/`: one server-rendered HTML page, no external assets, a little script that refreshes it
//! every 5 s and keeps the relative times current. Made to be read at a glance at 3 a.m.: the verdict first
//! (all good / what is firing), then what Warden is doing about it, then everything else.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::api::{build_view, StatusView};
use super::AppState;

pub(super) async fn page(State(s): State<AppState>) -> Response {
    match build_view(&s.status).await {
        Ok(v) => {
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], render(&v))
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the state store: {e}\n")).into_response(),
    }
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A time that the script shows as "3 min ago" (the title keeps the exact time).
fn when(t: &DateTime<Utc>) -> String {
    let iso = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!("<time datetime=\"{iso}\" title=\"{iso}\">{}</time>", t.format("%Y-%m-%d %H:%M:%S UTC"))
}

fn when_text(s: &str) -> String {
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => when(&t.with_timezone(&Utc)),
        Err(_) => esc(s),
    }
}

fn badge(health: &str) -> String {
    let class = match health {
        "ok" | "finished" => "ok",
        "failing" | "critical" | "failed" => "bad",
        "warning" | "restarting" | "starting" | "unknown" | "cancelled" | "suspended" => "warn",
        _ => "info",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(health))
}

const STYLE: &str = r#"
:root{--bg:#101418;--fg:#e6e9ec;--mut:#98a2ad;--card:#1a2027;--line:#2a323b;--ok:#2fb36d;--bad:#e5484d;--warn:#f1a10d;--info:#5b9bd5}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{display:flex;align-items:center;gap:16px;padding:14px 22px;border-bottom:1px solid var(--line)}
header h1{font-size:18px;margin:0;font-weight:600;color:var(--mut)}
.verdict{font-size:22px;font-weight:700;padding:6px 14px;border-radius:8px}
.verdict.ok{background:rgba(47,179,109,.15);color:var(--ok)}.verdict.bad{background:rgba(229,72,77,.18);color:var(--bad)}
.verdict.warn{background:rgba(241,161,13,.15);color:var(--warn)}
header .meta{margin-left:auto;color:var(--mut);font-size:13px;text-align:right}
main{padding:16px 22px;display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:18px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px}
section.wide{grid-column:1/-1}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.06em;color:var(--mut);margin:0 0 10px}
.alert{border-left:5px solid var(--bad);padding:8px 12px;margin:0 0 10px;background:rgba(229,72,77,.08);border-radius:4px}
.alert.warning{border-color:var(--warn);background:rgba(241,161,13,.08)}.alert.info{border-color:var(--info);background:rgba(91,155,213,.08)}
.alert .title{font-size:17px;font-weight:600}.alert .cause{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;white-space:pre-wrap;word-break:break-word;margin-top:4px;color:#ffb4b6}
.mut{color:var(--mut);font-size:13px}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
td.mut,td.err{overflow-wrap:anywhere}
th{color:var(--mut);font-weight:500;font-size:12px;text-transform:uppercase}
.badge{white-space:nowrap;display:inline-block;min-width:64px;text-align:center;border-radius:999px;padding:1px 10px;font-size:12px;font-weight:700;text-transform:uppercase}
.badge.ok{background:rgba(47,179,109,.18);color:var(--ok)}.badge.bad{background:var(--bad);color:#fff}.badge.warn{background:rgba(241,161,13,.2);color:var(--warn)}.badge.info{background:rgba(91,155,213,.2);color:var(--info)}
.target{margin-bottom:14px}.target h3{margin:0 0 6px;font-size:16px;display:flex;gap:10px;align-items:center}
.err{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;color:#ffb4b6;white-space:pre-wrap;word-break:break-word}
ol.timeline{list-style:none;margin:0;padding:0}ol.timeline li{padding:5px 0;border-bottom:1px solid var(--line);display:grid;grid-template-columns:80px 64px minmax(0,1fr);gap:8px;overflow-wrap:anywhere}
.k-alert{color:var(--bad)}.k-resolved{color:var(--ok)}.k-run,.k-restart{color:var(--info)}.k-guard{color:var(--warn)}
.empty{color:var(--mut);font-style:italic}
@media (max-width:900px){main{grid-template-columns:1fr}}
"#;

const SCRIPT: &str = r#"
(function(){
  function ago(t){var s=Math.round((Date.now()-Date.parse(t))/1000),f=s<0;s=Math.abs(s);
    var v=s<60?s+' s':s<3600?Math.floor(s/60)+' min':s<86400?Math.floor(s/3600)+' h '+Math.floor(s%3600/60)+' min':Math.floor(s/86400)+' d';
    return f?'in '+v:v+' ago';}
  function tick(){document.querySelectorAll('time[datetime]').forEach(function(e){e.textContent=ago(e.getAttribute('datetime'));});
    var u=document.getElementById('updated');if(u){u.textContent='updated '+ago(u.getAttribute('data-at'));}}
  function refresh(){fetch(location.href,{cache:'no-store',credentials:'same-origin'}).then(function(r){
      if(!r.ok)throw new Error('HTTP '+r.status);return r.text();}).then(function(html){
      var d=new DOMParser().parseFromString(html,'text/html');
      ['header','main'].forEach(function(s){var n=d.querySelector(s),o=document.querySelector(s);if(n&&o)o.replaceWith(n);});
      document.title=d.title;tick();}).catch(function(e){var u=document.getElementById('updated');
      if(u){u.textContent='cannot reach Warden ('+e.message+'); showing data from '+ago(u.getAttribute('data-at'));u.style.color='#e5484d';}});}
  tick();setInterval(tick,1000);setInterval(refresh,5000);
})();
"#;

/// The whole page.
pub fn render(v: &StatusView) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let reload_failed = v.reload.as_ref().is_some_and(|r| !r.ok);
    let failing_targets = v.targets.iter().filter(|t| t.health == "failing").count();
    let (class, verdict) = if !v.alerts.is_empty() {
        ("bad", format!("{} ALERT{} FIRING", v.alerts.len(), if v.alerts.len() == 1 { "" } else { "S" }))
    } else if failing_targets > 0 {
        ("bad", format!("{failing_targets} TARGET{} FAILING", if failing_targets == 1 { "" } else { "S" }))
    } else if reload_failed {
        ("warn", "RELOAD FAILED".to_string())
    } else if v.ha.role == crate::ha::Role::Standby {
        ("ok", "STANDBY".to_string())
    } else if !v.ready {
        ("warn", "STARTING".to_string())
    } else {
        ("ok", "ALL GOOD".to_string())
    };
    let title = match class {
        "ok" => "Warden: all good".to_string(),
        _ => format!("Warden: {}", verdict.to_lowercase()),
    };
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body>",
        esc(&title)
    );
    let now = v.now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let _ = write!(
        h,
        "<header><h1>Warden {}</h1><div id=\"verdict\" class=\"verdict {class}\">{}</div>{}<div class=\"meta\">\
         <div id=\"updated\" data-at=\"{now}\">updated now</div><div>{} targets · {} probes · {} rules{}</div></div></header>",
        esc(&v.version),
        esc(&verdict),
        match (v.dry_run, v.ha.role) {
            (true, _) => "<span class=\"badge warn\">dry run</span>".to_string(),
            (false, crate::ha::Role::Single) => String::new(),
            (false, role) => format!(
                "<span id=\"ha\" class=\"badge\">{role}{}</span>",
                v.ha.epoch.map(|e| format!(" · epoch {e}")).unwrap_or_default()
            ),
        },
        v.targets.len(),
        v.probes.len(),
        v.rules.len(),
        v.started.map(|s| format!(" · up since {}", when(&s))).unwrap_or_default(),
    );
    h.push_str("<main>");

    // Firing alerts, with their root cause.
    h.push_str("<section id=\"alerts\"><h2>Firing alerts</h2>");
    if v.alerts.is_empty() {
        h.push_str("<p class=\"empty\">Nothing is firing.</p>");
    }
    for a in &v.alerts {
        let _ = write!(
            h,
            "<div class=\"alert {sev}\" data-rule=\"{rule}\" data-target=\"{target}\" data-job=\"{job}\">\
             <div class=\"title\">{badge} {job_text} <span class=\"mut\">on {target}</span></div><div>{summary}</div>{cause}\
             <div class=\"mut\">{rule} · firing since {since}</div></div>",
            sev = esc(&a.severity),
            rule = esc(&a.rule),
            target = esc(&a.target),
            job = esc(&a.subject),
            badge = badge(&a.severity),
            job_text = if a.subject.is_empty() { esc(&a.target) } else { esc(&a.subject) },
            summary = esc(&a.summary),
            cause = a
                .root_cause
                .as_ref()
                .map(|c| format!("<div class=\"cause\">root cause: {}</div>", esc(c)))
                .unwrap_or_default(),
            since = when(&a.since),
        );
    }
    h.push_str("</section>");

    // What Warden is doing about it: restarts, reload state.
    h.push_str("<section id=\"restarts\"><h2>Restarts in progress</h2>");
    if v.restarts.is_empty() {
        h.push_str("<p class=\"empty\">None.</p>");
    } else {
        h.push_str("<table><tr><th>job</th><th>step</th><th>strategy</th><th>since</th></tr>");
        for r in &v.restarts {
            let _ = write!(
                h,
                "<tr data-job=\"{job}\"><td><b>{job}</b> <span class=\"mut\">on {}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.target),
                badge(&r.step),
                esc(&r.what()),
                when_text(&r.started),
                job = esc(&r.job),
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2 style=\"margin-top:16px\">Configuration</h2><div id=\"reload\">");
    match &v.reload {
        None => h.push_str("<p class=\"empty\">Not loaded yet.</p>"),
        Some(r) if r.ok => {
            let _ = write!(h, "{} applied {} ({})", badge("ok"), when(&r.time), esc(&r.trigger));
        }
        Some(r) => {
            let _ = write!(
                h,
                "{} the reload {} ({}) was rejected; Warden runs the configuration applied {}<div class=\"err\">{}</div>",
                badge("failed"),
                when(&r.time),
                esc(&r.trigger),
                when(&r.last_success),
                r.errors.iter().map(|e| esc(e)).collect::<Vec<_>>().join("\n"),
            );
        }
    }
    h.push_str("</div></section>");

    // Every target and its jobs.
    h.push_str("<section id=\"targets\"><h2>Targets and jobs</h2>");
    if v.targets.is_empty() {
        h.push_str("<p class=\"empty\">No targets configured.</p>");
    }
    for t in &v.targets {
        let _ = write!(
            h,
            "<div class=\"target\" data-target=\"{name}\"><h3>{} {name} <span class=\"mut\">{}</span></h3>",
            badge(&t.health),
            esc(&t.url),
            name = esc(&t.name),
        );
        if let Some(e) = &t.last_error {
            let _ = write!(h, "<div class=\"err\">{}</div>", esc(e));
        }
        if t.jobs.is_empty() {
            h.push_str("<p class=\"empty\">No jobs listed yet.</p>");
        } else {
            h.push_str("<table><tr><th>health</th><th>job</th><th>state</th><th>job id</th></tr>");
            for j in &t.jobs {
                let _ = write!(
                    h,
                    "<tr class=\"job\" data-job=\"{name}\" data-health=\"{health}\"><td>{}</td><td><b>{name}</b>{}</td>\
                     <td>{}</td><td class=\"mut\">{}</td></tr>",
                    badge(&j.health),
                    j.alert.as_ref().map(|a| format!("<div class=\"mut\">{}</div>", esc(a))).unwrap_or_default(),
                    esc(&j.state),
                    esc(j.jid.as_deref().unwrap_or("—")),
                    name = esc(&j.name),
                    health = esc(&j.health),
                );
            }
            h.push_str("</table>");
        }
        h.push_str("</div>");
    }
    h.push_str("</section>");

    // Recent actions, newest first.
    h.push_str("<section id=\"timeline\"><h2>Recent actions</h2>");
    if v.recent.is_empty() {
        h.push_str("<p class=\"empty\">Nothing journalled yet.</p>");
    } else {
        h.push_str("<ol class=\"timeline\">");
        for e in v.recent.iter().rev() {
            let what = if e.subject.is_empty() { e.target.clone() } else { format!("{} on {}", e.subject, e.target) };
            let _ = write!(
                h,
                "<li><span class=\"mut\">{}</span><b class=\"k-{kind}\">{kind}</b><span>{} — {} <span class=\"mut\">({})</span></span></li>",
                when_text(&e.time),
                esc(&what),
                esc(&e.summary),
                esc(&e.outcome),
                kind = esc(&e.kind),
            );
        }
        h.push_str("</ol>");
    }
    h.push_str("</section>");

    // Probes and rules, errors first.
    h.push_str(
        "<section id=\"probes\" class=\"wide\"><h2>Probes</h2><table><tr><th>health</th><th>probe</th>\
                <th>target</th><th>schedule</th><th>last run</th><th>next run</th><th>last error</th></tr>",
    );
    for p in &v.probes {
        let health = match (&p.last_run, &p.last_error) {
            (None, _) => "unknown",
            (_, Some(_)) => "failing",
            _ => "ok",
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"mut\">{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            badge(health),
            esc(&p.probe),
            esc(&p.target),
            esc(&p.schedule),
            p.last_run.as_ref().map(when).unwrap_or_else(|| "not yet".into()),
            p.next_run.as_ref().map(when).unwrap_or_else(|| "—".into()),
            esc(p.last_error.as_deref().unwrap_or("")),
        );
    }
    h.push_str(
        "</table><h2 style=\"margin-top:16px\">Rules</h2><table><tr><th>health</th><th>rule</th>\
                <th>evaluations</th><th>errors</th><th>last error</th></tr>",
    );
    for r in &v.rules {
        let health = if r.last_error.is_some() { "failing" } else { "ok" };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            badge(health),
            esc(&r.rule),
            r.evaluations,
            r.errors,
            esc(r.last_error.as_deref().unwrap_or("")),
        );
    }
    h.push_str("</table></section></main>");
    let _ = write!(h, "<script>{SCRIPT}</script></body></html>");
    h
}
