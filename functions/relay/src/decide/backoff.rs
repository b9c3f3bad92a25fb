//! Retry timing: the delay before the next attempt, and how SQS's 15-minute cap on
//! `DelaySeconds` is bridged by chained re-enqueues.

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
    fn sqs_delay_is_capped_and_never_negative() {
        for (remaining, want) in [(-5, 0), (0, 0), (1, 1), (900, 900), (901, 900), (14_400, 900)] {
            assert_eq!(sqs_delay(remaining), Duration::from_secs(want), "{remaining}");
        }
    }
}
