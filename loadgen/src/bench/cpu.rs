//! CPU time this process has used, to put a cost per message beside a latency figure: on a
//! shared machine a latency swings with the neighbours, while the work done per message does not.

use std::time::Duration;

/// Linux reports a process's CPU times in units of 1/100 s (`USER_HZ`, fixed by its ABI).
const TICKS_PER_SEC: u64 = 100;

/// User plus system CPU time of this process (all threads) so far; zero where `/proc` is absent.
pub fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name may hold spaces and parentheses; the fields after its last ')' do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 counted from 0 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 1000 / TICKS_PER_SEC)
}

/// CPU time used while `f` ran, beside its result.
pub async fn measured<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let before = process_cpu();
    let out = f.await;
    (out, process_cpu().saturating_sub(before))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_work_shows_up_as_cpu_time() {
        let before = process_cpu();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let used = process_cpu() - before;
        assert!(
            used >= Duration::from_millis(100),
            "{used:?} for 300 ms of spinning"
        );
    }
}
