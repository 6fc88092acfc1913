//! How jobs read, in chat (`!jobs`) and on the command line (`ikkyu jobs`):
//! one rendering for both.

use crate::store::{JobState, StoredJob};

/// One line per job, newest first: number, name, plugin, state, when,
/// how long, exit code.
pub fn list(jobs: &[StoredJob], now_ms: i64) -> String {
    if jobs.is_empty() {
        return "no jobs have run yet".into();
    }
    let lines: Vec<String> = jobs.iter().map(|j| line(j, now_ms)).collect();
    format!(
        "**Recent jobs** (newest first; `jobs N` shows one with its output)\n{}",
        lines.join("\n")
    )
}

fn line(j: &StoredJob, now_ms: i64) -> String {
    let params: Vec<String> = j
        .params
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::text::one_line(v)))
        .collect();
    let took = match (j.started_ms, j.ended_ms) {
        (Some(s), Some(e)) => format!(", took {}", seconds(e - s)),
        (Some(s), None) => format!(", running for {}", seconds(now_ms - s)),
        _ => String::new(),
    };
    let exit = j
        .exit_code
        .map(|c| format!(", exit {c}"))
        .unwrap_or_default();
    format!(
        "#{} {} ({}) {} **{}**{took}{exit}, started {} ago by {}",
        j.id,
        j.name,
        params.join(" "),
        mark(j.state),
        j.state.as_str(),
        seconds(now_ms - j.created_ms),
        j.plugin
    )
}

/// One job with the last lines of its output.
pub fn detail(j: &StoredJob, now_ms: i64) -> String {
    let mut out = line(j, now_ms);
    if let Some(e) = &j.error {
        out.push_str(&format!("\n{}", crate::text::one_line(e)));
    }
    if j.cancel_requested && !j.state.is_final() {
        out.push_str("\ncancel requested");
    }
    if j.state == JobState::Lost {
        out.push_str("\nthe bot stopped while it ran: check the hosts it touched before deciding what to run next");
    }
    let output = super::last_bytes(&j.output, 3500);
    if output.trim().is_empty() {
        out.push_str("\n(no output)");
    } else {
        out.push_str(&format!("\n```\n{}\n```", output.replace("```", "ʼʼʼ")));
    }
    out
}

fn mark(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "⏳",
        JobState::Running => "▶",
        JobState::Succeeded => "✅",
        JobState::Failed | JobState::TimedOut => "❌",
        JobState::Cancelled => "⏹",
        JobState::Lost => "❓",
    }
}

/// `12.3 s`, `4 min 5 s`, `2 h 3 min`.
fn seconds(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    if s < 60 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}
