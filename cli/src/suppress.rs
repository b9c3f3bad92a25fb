//! `relayctl suppress list | show | add | remove`: the suppression list in `STATE_TABLE`
//! (SES's `list-suppressed-destinations`, `get-`, `put-` and `delete-suppressed-destination`).
//!
//! Every entry is `{"address", "reason", "since", "queue_id", "diagnostic"}` (`since` in RFC
//! 3339, `queue_id` null for an operator's entry). `list` pages through the whole list with
//! Query — a page of [`PAGE`] entries at a time, printed as it comes, so any size fits — or,
//! with `--limit`, stops after that many and says where the next page starts (`next`, for
//! `--after`). `show` exits 1 when the address is not listed; `remove` of an address that is not
//! listed says so (`"removed": false`) and exits 0. Addresses compare without case.

use anyhow::{Result, bail};
use comfy_table::Cell;
use serde::Serialize;
use serde_json::json;
use shared::suppression::{Entry, Reason, SuppressionList};

use crate::render::{self, Out, age};
use crate::trace::rfc3339;

/// Entries read per Query.
pub const PAGE: usize = 500;

/// One entry as `--json` prints it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct View<'a> {
    pub address: &'a str,
    pub reason: &'static str,
    pub since: String,
    pub queue_id: Option<&'a str>,
    pub diagnostic: &'a str,
}

impl<'a> From<&'a Entry> for View<'a> {
    fn from(e: &'a Entry) -> Self {
        Self {
            address: &e.address,
            reason: e.reason.as_str(),
            since: rfc3339(e.since),
            queue_id: e.queue_id.as_deref(),
            diagnostic: &e.diagnostic,
        }
    }
}

/// An address from the command line: something with an `@`, or exit 2.
pub fn checked(address: &str) -> &str {
    let a = address.trim();
    if a.is_empty() || !a.contains('@') || a.chars().any(|c| c.is_control() || c.is_whitespace()) {
        eprintln!("relayctl: {address:?} is not an email address");
        std::process::exit(2);
    }
    a
}

/// `list [--limit N] [--after ADDRESS]`.
pub async fn list(
    list: &dyn SuppressionList,
    limit: Option<usize>,
    after: Option<&str>,
    out: &Out,
    as_json: bool,
    now: i64,
) -> Result<()> {
    let mut after = after.map(shared::suppression::key);
    let mut left = limit.unwrap_or(usize::MAX);
    let mut json_out = String::from("{\"suppressed\":[");
    let mut first = true;
    let mut table = render::table(&["ADDRESS", "REASON", "SINCE", "QUEUE ID", "DIAGNOSTIC"]);
    let mut next = None;
    loop {
        let page = list.page(after.as_deref(), left.min(PAGE)).await?;
        left -= page.entries.len().min(left);
        for e in &page.entries {
            if as_json {
                if !first {
                    json_out.push(',');
                }
                json_out.push_str(&serde_json::to_string(&View::from(e))?);
                first = false;
            } else {
                table.add_row(row(e, now));
            }
        }
        // A long listing goes out as it comes rather than all at the end.
        if json_out.len() > 1 << 20 {
            out.bytes(std::mem::take(&mut json_out).as_bytes())?;
        }
        match page.next {
            Some(n) if left == 0 => {
                next = Some(n);
                break;
            }
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if as_json {
        json_out.push(']');
        if let Some(n) = &next {
            json_out.push_str(&format!(",\"next\":{}", serde_json::to_string(n)?));
        }
        json_out.push('}');
        return Ok(out.line(&json_out)?);
    }
    out.table(table)?;
    if let Some(n) = next {
        out.line(&format!("(more: relayctl suppress list --after {n})"))?;
    }
    Ok(())
}

fn row(e: &Entry, now: i64) -> Vec<Cell> {
    vec![
        Cell::new(&e.address),
        Cell::new(e.reason.as_str()),
        Cell::new(format!("{} ago", age(now - e.since))),
        Cell::new(e.queue_id.as_deref().unwrap_or("-")),
        Cell::new(&e.diagnostic),
    ]
}

/// `show <address>`: exits 1 when it is not listed.
pub async fn show(list: &dyn SuppressionList, address: &str, out: &Out, as_json: bool, now: i64) -> Result<()> {
    let Some(e) = list.get(address).await? else { bail!("{address} is not on the suppression list") };
    if as_json {
        return Ok(render::json(out, &View::from(&e))?);
    }
    let rows = [
        ("address", e.address.clone()),
        ("reason", e.reason.as_str().to_string()),
        ("since", format!("{} ({} ago)", rfc3339(e.since), age(now - e.since))),
        ("queue id", e.queue_id.clone().unwrap_or_else(|| "-".into())),
        ("diagnostic", e.diagnostic.clone()),
    ];
    Ok(render::pairs(out, &rows)?)
}

/// `add <address> [--reason bounce|complaint]`: listed now (an existing entry is replaced).
pub async fn add(
    list: &dyn SuppressionList,
    address: &str,
    reason: Reason,
    out: &Out,
    as_json: bool,
    now: i64,
) -> Result<()> {
    let e = Entry {
        address: address.to_string(),
        reason,
        since: now,
        queue_id: None,
        diagnostic: "added by relayctl".into(),
    };
    list.set(&e).await?;
    if as_json {
        return Ok(render::json(out, &View::from(&e))?);
    }
    Ok(out.line(&format!("{address} added to the suppression list ({})", reason.as_str()))?)
}

/// `remove <address>`.
pub async fn remove(list: &dyn SuppressionList, address: &str, out: &Out, as_json: bool) -> Result<()> {
    let removed = list.remove(address).await?;
    if as_json {
        return Ok(render::json(out, &json!({"address": address, "removed": removed}))?);
    }
    Ok(out.line(&if removed {
        format!("{address} removed from the suppression list")
    } else {
        format!("{address} was not on the suppression list")
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_shape_of_an_entry() {
        let e = Entry {
            address: "Bob@B.test".into(),
            reason: Reason::Complaint,
            since: 1_800_000_000,
            queue_id: Some("01JQUEUEID0000000000000000".into()),
            diagnostic: "complaint: abuse".into(),
        };
        let v = serde_json::to_value(View::from(&e)).unwrap();
        assert_eq!(
            v,
            json!({"address": "Bob@B.test", "reason": "complaint", "since": "2027-01-15T08:00:00Z",
                   "queue_id": "01JQUEUEID0000000000000000", "diagnostic": "complaint: abuse"})
        );
        let manual = Entry { queue_id: None, ..e };
        assert_eq!(serde_json::to_value(View::from(&manual)).unwrap()["queue_id"], serde_json::Value::Null);
    }
}
