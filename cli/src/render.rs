//! Human output: aligned tables (comfy-table), ages like `3m` / `2h`, colour only on a terminal
//! and never under `NO_COLOR`. `--json` output is one serde object per command, printed by
//! [`json`]. Everything goes through [`Out`], so a closed pipe (`relayctl trace … | head`) ends
//! the program quietly instead of with a panic.

use std::io::{self, IsTerminal, Write};

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, Color, Table};
use shared::state::Delivery;

use crate::trace::Trace;

/// stdout, and whether to colour it.
pub struct Out {
    colour: bool,
}

impl Out {
    pub fn new() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self { colour: io::stdout().is_terminal() && !no_color }
    }

    pub fn bytes(&self, b: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(b)?;
        out.flush()
    }

    pub fn line(&self, s: &str) -> io::Result<()> {
        self.bytes(format!("{s}\n").as_bytes())
    }

    pub fn table(&self, mut t: Table) -> io::Result<()> {
        if !self.colour {
            t.force_no_tty();
        } else {
            t.enforce_styling();
        }
        // comfy-table pads every cell of the last column too: no trailing blanks on any line.
        let text: Vec<String> = t.lines().map(|l| l.trim_end().to_string()).collect();
        self.line(&text.join("\n"))
    }
}

/// One JSON object on a line.
pub fn json(out: &Out, v: &impl serde::Serialize) -> io::Result<()> {
    out.line(&serde_json::to_string(v).expect("views always serialise"))
}

/// `42s`, `3m`, `2h`, `5d` (the largest whole unit), for a non-negative span of seconds.
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// An RFC 3339 time relative to `now`: `3m ago`, `in 2h`.
pub fn when(t: Option<&str>, now: i64) -> String {
    let Some(t) = t.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else { return "-".into() };
    let d = t.timestamp() - now;
    if d >= 0 { format!("in {}", age(d)) } else { format!("{} ago", age(-d)) }
}

fn state_cell(d: Delivery) -> Cell {
    let c = Cell::new(d.as_str());
    match d {
        Delivery::Sent => c.fg(Color::Green),
        Delivery::Deferred => c.fg(Color::Yellow),
        Delivery::Bounced => c.fg(Color::Red),
        Delivery::Cancelled => c.fg(Color::Magenta),
        Delivery::Queued => c.fg(Color::Cyan),
    }
}

/// A table with these column headers, no borders.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING).set_header(header.to_vec());
    t
}

/// The trace as a header line and a recipient table.
pub fn trace(out: &Out, t: &Trace, now: i64) -> io::Result<()> {
    let sender = match t.sender.as_deref() {
        Some("") => "<>".to_string(),
        Some(s) => format!("<{s}>"),
        None => "(unknown sender)".to_string(),
    };
    let size = t.size.map(|s| format!("{s} bytes")).unwrap_or_else(|| "size unknown".into());
    let mut head = format!("{}  from {sender}  {size}  received {}", t.queue_id, when(t.received.as_deref(), now));
    if let Some(c) = &t.completed {
        head.push_str(&format!("  completed {}", when(Some(c), now)));
    }
    out.line(&head)?;
    let mut tab = table(&["RECIPIENT", "STATE", "ATTEMPTS", "NEXT", "UPDATED", "REMOTE", "LAST REPLY"]);
    for r in &t.recipients {
        tab.add_row(vec![
            Cell::new(&r.address),
            state_cell(r.state),
            Cell::new(r.attempts),
            Cell::new(when(r.next_attempt.as_deref(), now)),
            Cell::new(when(r.updated.as_deref(), now)),
            Cell::new(r.remote.as_deref().unwrap_or("-")),
            Cell::new(r.last_reply.as_deref().unwrap_or("-")),
        ]);
    }
    out.table(tab)?;
    if t.recipients_omitted > 0 {
        out.line(&format!("({} more recipients not recorded in the message's metadata)", t.recipients_omitted))?;
    }
    Ok(())
}

/// Name/value rows.
pub fn pairs(out: &Out, rows: &[(&str, String)]) -> io::Result<()> {
    let mut t = Table::new();
    t.load_style(NOTHING);
    for (k, v) in rows {
        t.add_row(vec![Cell::new(k), Cell::new(v)]);
    }
    out.table(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_use_the_largest_whole_unit() {
        let cases =
            [(-3, "0s"), (0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (7200, "2h"), (86400 * 5 + 7, "5d")];
        for (s, want) in cases {
            assert_eq!(age(s), want, "{s}");
        }
        assert_eq!(when(Some("1970-01-01T00:01:40Z"), 40), "in 1m");
        assert_eq!(when(Some("1970-01-01T00:00:10Z"), 190), "3m ago");
        assert_eq!(when(None, 0), "-");
    }
}
