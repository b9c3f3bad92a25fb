//! Replies that mean "slow down", and how long a destination is left alone after one.
//!
//! Big providers refuse a sender that opens too many connections or sends too fast with a
//! transient reply that names the reason. [`slow_down`] recognises such replies from one table,
//! [`RULES`], each rule with where it comes from. The SMTP client then defers every job of that
//! destination in the process instead of trying the next job on a fresh connection, and
//! [`Backoff`] (one per destination, kept by `deliver::pool`) says for how long: the
//! `RELAY_THROTTLE_BACKOFF` entry for the number of consecutive throttling episodes, the last
//! entry repeating. An episode is a throttling reply that arrives while the destination is not
//! held; replies from sessions that were already in flight when it started belong to it. A
//! transaction accepted while the destination is not held ends the series. The state lives in
//! the process; with a state table, a hold is also written there for every other worker, and
//! one read from there is adopted ([`Backoff::adopt`], `share::slots`).
//!
//! A throttling reply is never counted against the recipient: a 5xx one (a smarthost's daily
//! quota, RFC 3463 "congestion") is turned into a deferral by [`transient`].

use std::time::{Duration, Instant};

use shared::Reply;

use crate::decide::backoff::retry_delay;
use crate::vocab::{Class, Verdict};

/// One kind of "slow down" reply. A reply matches when its code is in `codes` and it has the
/// enhanced `status` (when given) and contains `text` (when given, lowercase).
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    pub codes: (u16, u16),
    pub status: Option<&'static str>,
    pub text: Option<&'static str>,
    /// Where this reply is documented.
    pub source: &'static str,
}

const TRANSIENT: (u16, u16) = (400, 499);
const ANY: (u16, u16) = (400, 599);

const fn code(codes: (u16, u16), status: &'static str, source: &'static str) -> Rule {
    Rule { codes, status: Some(status), text: None, source }
}

const fn text(text: &'static str, source: &'static str) -> Rule {
    Rule { codes: ANY, status: None, text: Some(text), source }
}

/// Every reply the relay takes as "slow down", first match wins. "Google" below is Google's
/// "Gmail SMTP errors and codes" (support.google.com/a/answer/3726730); the Microsoft codes are
/// the ones Outlook.com and Exchange Online send (and their postmaster support discusses).
pub const RULES: &[Rule] = &[
    Rule {
        codes: (421, 421),
        status: None,
        text: None,
        source: "RFC 5321 §3.8/§4.2.2: 421 closes the channel; the reply servers give at the greeting or any \
                 stage when they limit connections (Gmail 421 4.7.0 'Try again later, closing connection', Postfix \
                 postscreen/anvil 421 4.7.0 'too many connections')",
    },
    code(
        TRANSIENT,
        "4.7.0",
        "Gmail 421/451 4.7.0 'unusual rate of unsolicited mail', 'Try again later' (Google); Yahoo 421 4.7.0 [TSS04] 'temporarily deferred due to unexpected volume'",
    ),
    code(
        TRANSIENT,
        "4.7.28",
        "Gmail 421 4.7.28 'mail sent from your IP address has been temporarily rate limited' (Google)",
    ),
    code(
        TRANSIENT,
        "4.7.652",
        "Microsoft (Outlook.com, Exchange Online) 451 4.7.652 'The mail server [IP] has exceeded the maximum number of connections'",
    ),
    code(
        TRANSIENT,
        "4.7.500",
        "Microsoft 451 4.7.500 'Server busy. Please try again later from [IP]' (S77714, S77719)",
    ),
    code(
        (450, 450),
        "4.2.1",
        "Gmail 450 4.2.1 'The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered', 'Peak SMTP relay limit exceeded' (Google)",
    ),
    code(
        ANY,
        "4.4.5",
        "RFC 3463 X.4.5 'Mail system congestion'; Gmail 421 4.4.5 'Server busy, try again later' (Google)",
    ),
    code(
        ANY,
        "5.4.5",
        "RFC 3463 X.4.5 'Mail system congestion' ('useful only as a persistent transient error'); Gmail 550 5.4.5 'Daily sending quota exceeded' (Google)",
    ),
    text("rate limit", "Gmail 4.7.28 'temporarily rate limited'; the common wording for per-sender rate limits"),
    text("too many connections", "Postfix anvil/postscreen 'too many connections from'; Exim, Sendmail"),
    text("too many concurrent", "Exim 'Too many concurrent SMTP connections'"),
    text("maximum number of connections", "Microsoft 451 4.7.652 text"),
    text("server busy", "Microsoft 451 4.7.500, Gmail 421 4.4.5 texts"),
    text("receiving mail at a rate", "Gmail 450 4.2.1 text"),
    text("receiving mail too quickly", "Gmail 450 4.2.1 text (Google)"),
    text("relay limit exceeded", "Gmail SMTP relay 550 5.7.1 'Daily SMTP relay limit exceeded for user' (Google)"),
    text("sending limit exceeded", "Gmail 550 5.4.5 'Daily user sending limit exceeded' (Google)"),
    text("throttl", "'throttled', 'throttling': the common wording of rate limits"),
];

/// The rule `reply` matches, when it is one that means "slow down".
pub fn slow_down(reply: &Reply) -> Option<&'static Rule> {
    let lower = reply.lines.join(" ").to_ascii_lowercase();
    RULES.iter().find(|r| {
        (r.codes.0..=r.codes.1).contains(&reply.code)
            && r.status.is_none_or(|s| reply.status.as_deref() == Some(s))
            && r.text.is_none_or(|t| lower.contains(t))
    })
}

/// The first reply among `verdicts` that means "slow down".
pub fn first<'v>(verdicts: impl IntoIterator<Item = &'v Verdict>) -> Option<&'v Reply> {
    verdicts.into_iter().filter_map(|v| v.reply.as_ref()).find(|r| slow_down(r).is_some())
}

/// `verdict` as a deferral when its reply means "slow down" (a 5xx quota reply must not bounce
/// the recipient), with the status's class turned to 4; any other verdict unchanged.
pub fn transient(verdict: Verdict) -> Verdict {
    match &verdict.reply {
        Some(r) if verdict.class == Class::Failed && slow_down(r).is_some() => Verdict {
            class: Class::Deferred,
            status: format!("4{}", verdict.status.get(1..).unwrap_or(".0.0")),
            ..verdict
        },
        _ => verdict,
    }
}

/// A destination on hold: what it said and how much longer it is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub remaining: Duration,
    pub reply: Reply,
    /// Consecutive throttling episodes, this one included.
    pub episodes: u32,
}

impl Hold {
    /// The verdict of a job that was not tried because its destination is on hold.
    pub fn verdict(&self, hop: &str) -> Verdict {
        let status = self.reply.status.as_deref().filter(|s| s.starts_with('4')).unwrap_or("4.7.0");
        Verdict::deferred(
            status,
            format!(
                "{hop} asked to slow down ({}); not tried for another {}s",
                self.reply.one_line(),
                self.remaining.as_millis().div_ceil(1000)
            ),
        )
    }
}

/// One destination's throttling state (pure: the clock is an argument).
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    episodes: u32,
    until: Option<Instant>,
    reply: Option<Reply>,
}

impl Backoff {
    /// The hold in force at `now`, if any.
    pub fn hold(&self, now: Instant) -> Option<Hold> {
        let until = self.until.filter(|u| *u > now)?;
        Some(Hold { remaining: until - now, reply: self.reply.clone()?, episodes: self.episodes })
    }

    /// A "slow down" reply at `now`: a new episode unless one is in force, held for the
    /// `schedule` entry of the episode count.
    pub fn throttled(&mut self, now: Instant, reply: &Reply, schedule: &[Duration]) -> Hold {
        if let Some(hold) = self.hold(now) {
            return hold;
        }
        self.episodes += 1;
        self.until = Some(now + retry_delay(schedule, self.episodes));
        self.reply = Some(reply.clone());
        self.hold(now).expect("a hold just set")
    }

    /// Another worker's hold of this destination (`share::slots`), seen at `now`: held at least
    /// as long, the episodes counted on from the larger count.
    pub fn adopt(&mut self, now: Instant, remaining: Duration, reply: &Reply, episodes: u32) -> Hold {
        let until = now + remaining;
        if self.until.is_none_or(|u| u < until) {
            self.until = Some(until);
            self.reply = Some(reply.clone());
        }
        self.episodes = self.episodes.max(episodes);
        self.hold(now).unwrap_or(Hold { remaining, reply: reply.clone(), episodes: self.episodes })
    }

    /// A transaction was accepted at `now`: outside a hold, that ends the series of episodes.
    pub fn delivered(&mut self, now: Instant) {
        if self.hold(now).is_none() {
            *self = Self::default();
        }
    }

    /// Nothing to remember: no hold and no series.
    pub fn is_clear(&self) -> bool {
        self.episodes == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: u16, text: &str) -> Reply {
        Reply::parse(code, text)
    }

    #[test]
    fn the_table_knows_slow_down_from_other_failures() {
        let throttles = [
            r(421, "4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail"),
            r(421, "4.7.0 Try again later, closing connection."),
            r(421, "mx.example.test Service not available"),
            r(451, "4.7.652 The mail server [192.0.2.1] has exceeded the maximum number of connections."),
            r(451, "4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77719)"),
            r(450, "4.2.1 The user you are trying to contact is receiving mail at a rate that"),
            r(421, "4.4.5 Server busy, try again later."),
            r(550, "5.4.5 Daily sending quota exceeded."),
            r(550, "5.7.1 Daily SMTP relay limit exceeded for user."),
            r(452, "4.3.2 Too many connections from your address"),
            r(451, "Throttling: slow down"),
            r(454, "4.7.1 Rate limit exceeded, try later"),
        ];
        for reply in &throttles {
            assert!(slow_down(reply).is_some(), "{reply:?}");
        }
        let others = [
            r(450, "4.2.0 mailbox busy"),
            r(451, "4.7.1 Greylisted, please try again later"),
            r(550, "5.1.1 no such user"),
            r(552, "5.2.2 mailbox quota exceeded"),
            r(451, "4.2.1 mailbox disabled"), // 4.2.1 counts only as Gmail sends it, with 450
            r(550, "5.7.0 policy"),
            r(452, "4.5.3 Too many recipients"),
            r(250, "2.0.0 rate limited? no, accepted"),
            r(554, "5.7.28 not a transient class"),
        ];
        let wrongly: Vec<_> = others.iter().filter(|r| slow_down(r).is_some()).collect();
        assert!(wrongly.is_empty(), "{wrongly:?}");
        assert!(RULES.iter().all(|r| !r.source.is_empty() && r.text.is_none_or(|t| t == t.to_ascii_lowercase())));
    }

    #[test]
    fn a_permanent_throttle_is_deferred_and_nothing_else_changes() {
        let quota = transient(Verdict::from_reply(r(550, "5.4.5 Daily sending quota exceeded")));
        assert_eq!((quota.class, quota.status.as_str()), (Class::Deferred, "4.4.5"));
        assert_eq!(quota.text(), "550 5.4.5 Daily sending quota exceeded", "the reply is kept for the log and DSN");
        let unknown = Verdict::from_reply(r(550, "5.1.1 no such user"));
        assert_eq!(transient(unknown.clone()), unknown);
        let busy = Verdict::from_reply(r(421, "4.7.0 busy"));
        assert_eq!(transient(busy.clone()), busy);
    }

    #[test]
    fn backoff_grows_per_episode_and_a_delivery_ends_the_series() {
        let schedule: Vec<Duration> = [60, 120, 300].map(Duration::from_secs).to_vec();
        let t0 = Instant::now();
        let s = |n| Duration::from_secs(n);
        let reply = r(421, "4.7.28 rate limited");
        let mut b = Backoff::default();
        assert!(b.hold(t0).is_none() && b.is_clear());
        assert_eq!(b.throttled(t0, &reply, &schedule).remaining, s(60));
        // Within the episode (sessions already in flight): the same hold, no new episode.
        let again = b.throttled(t0 + s(10), &r(421, "4.7.0 other"), &schedule);
        assert_eq!((again.remaining, again.episodes, again.reply.code), (s(50), 1, 421));
        assert_eq!(again.reply, reply);
        // A delivery during the hold (a transaction already in flight) does not end the series.
        b.delivered(t0 + s(20));
        assert_eq!(b.hold(t0 + s(59)).unwrap().remaining, s(1));
        assert!(b.hold(t0 + s(60)).is_none(), "the hold is over");
        // Throttled again after the hold: the next entry, then the last one repeats.
        let mut t = t0 + s(61);
        for want in [120, 300, 300] {
            let h = b.throttled(t, &reply, &schedule);
            assert_eq!(h.remaining, s(want));
            t += s(want);
        }
        assert_eq!(b.hold(t - s(1)).unwrap().episodes, 4);
        b.delivered(t);
        assert!(b.is_clear());
        assert_eq!(b.throttled(t, &reply, &schedule).remaining, s(60), "a new series starts at the first entry");
    }

    #[test]
    fn another_workers_hold_is_adopted_without_shortening_ours() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let (ours, theirs) = (r(421, "4.7.28 rate limited"), r(451, "4.7.500 Server busy"));
        let mut b = Backoff::default();
        let h = b.adopt(t0, s(30), &theirs, 3);
        assert_eq!((h.remaining, h.episodes, h.reply.code), (s(30), 3, 451));
        // Our own throttle within it is the same episode; after it, episode 4.
        assert_eq!(b.throttled(t0 + s(1), &ours, &[s(60)]).episodes, 3);
        assert_eq!(b.throttled(t0 + s(30), &ours, &[s(60)]).episodes, 4);
        // A shorter hold read later changes nothing but the count.
        let h = b.adopt(t0 + s(31), s(5), &theirs, 1);
        assert_eq!((h.remaining, h.reply.code, h.episodes), (s(59), 421, 4));
    }

    #[test]
    fn held_jobs_get_a_transient_verdict_naming_the_destination() {
        let hold = Hold { remaining: Duration::from_millis(2500), reply: r(421, "4.7.28 rate limited"), episodes: 1 };
        let v = hold.verdict("gmail.com");
        assert_eq!((v.class, v.status.as_str()), (Class::Deferred, "4.7.28"));
        assert!(
            v.detail.contains("gmail.com")
                && v.detail.contains("421 4.7.28 rate limited")
                && v.detail.contains("another 3s")
        );
        let quota = Hold { reply: r(550, "5.4.5 Daily sending quota exceeded"), ..hold };
        assert_eq!(quota.verdict("smtp-relay.gmail.com:587").status, "4.7.0");
    }
}
