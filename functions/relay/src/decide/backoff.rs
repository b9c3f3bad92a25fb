//! Retry timing: the delay before the next attempt, how SQS's 15-minute cap on `DelaySeconds`
//! is bridged by chained re-enqueues, and the backoff of S3/SQS writes after a delivery.

use std::time::Duration;

/// SQS refuses `DelaySeconds` above this.
pub const MAX_SQS_DELAY: u64 = 900;

/// The wait after `attempts_made` failed attempts (1 = after the first): the schedule's
/// entry for that attempt, the last entry repeating.
pub fn retry_delay(schedule: &[Duration], attempts_made: u32) -> Duration {
    let i = (attempts_made.max(1) - 1) as usize;
    schedule.get(i).or(schedule.last()).copied().unwrap_or(Duration::from_secs(MAX_SQS_DELAY))
}

/// The `DelaySeconds` for a job that must wait `remaining_secs` more: SQS's cap, so longer
/// waits arrive early and are re-enqueued for the rest.
pub fn sqs_delay(remaining_secs: i64) -> Duration {
    Duration::from_secs(remaining_secs.clamp(0, MAX_SQS_DELAY as i64) as u64)
}

/// First wait after a failed store write, doubled each time up to [`STORE_RETRY_CAP`].
pub const STORE_RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between two tries of a store write.
pub const STORE_RETRY_CAP: Duration = Duration::from_secs(8);

/// After `failures` failed tries of a store write (1 = the first failed) with `remaining` time
/// left before the deadline: how long to wait before trying again, or `None` to give up. The
/// last wait is cut to the deadline, so one try happens right at it.
pub fn store_retry_wait(failures: u32, remaining: Duration) -> Option<Duration> {
    if remaining.is_zero() {
        return None;
    }
    let doubled = STORE_RETRY_FIRST.saturating_mul(1 << failures.clamp(1, 16).saturating_sub(1));
    Some(doubled.min(STORE_RETRY_CAP).min(remaining))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_entries_then_last_repeats() {
        let s: Vec<Duration> = [60, 300, 3600].map(Duration::from_secs).to_vec();
        let cases = [(0, 60), (1, 60), (2, 300), (3, 3600), (4, 3600), (100, 3600)];
        for (attempts, want) in cases {
            assert_eq!(retry_delay(&s, attempts), Duration::from_secs(want), "after {attempts}");
        }
    }

    #[test]
    fn store_retries_back_off_exponentially_capped_until_the_deadline() {
        let ms = Duration::from_millis;
        let minute = Duration::from_secs(60);
        let cases = [
            (1, minute, Some(ms(250))),
            (2, minute, Some(ms(500))),
            (4, minute, Some(ms(2000))),
            (6, minute, Some(ms(8000))),
            (40, minute, Some(ms(8000))),
            (3, ms(300), Some(ms(300))),
            (1, Duration::ZERO, None),
        ];
        for (failures, remaining, want) in cases {
            assert_eq!(store_retry_wait(failures, remaining), want, "{failures} failures, {remaining:?} left");
        }
        // A one-minute outage is bridged: the waits of a minute's worth of failures add up to it.
        let (mut left, mut tries) = (minute, 0);
        while let Some(w) = store_retry_wait(tries + 1, left) {
            left -= w;
            tries += 1;
        }
        assert_eq!(left, Duration::ZERO);
        assert!((8..=15).contains(&tries), "{tries} tries in a minute");
    }

    #[test]
    fn sqs_delay_is_capped_and_never_negative() {
        for (remaining, want) in [(-5, 0), (0, 0), (1, 1), (900, 900), (901, 900), (14_400, 900)] {
            assert_eq!(sqs_delay(remaining), Duration::from_secs(want), "{remaining}");
        }
    }
}
