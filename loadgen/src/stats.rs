//! Latency percentiles, throughput buckets and the other figures a report shows.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

/// Collects latencies in microseconds (1 µs to 10 min, 3 significant digits).
pub struct Recorder {
    hist: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            hist: Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds are valid"),
        }
    }
}

impl Recorder {
    /// Adds one latency.
    pub fn record_us(&mut self, us: u64) {
        self.hist.saturating_record(us.max(1));
    }

    /// Adds another recorder's samples.
    pub fn merge(&mut self, other: &Recorder) {
        let _ = self.hist.add(&other.hist);
    }

    /// The summary in milliseconds.
    pub fn summary(&self) -> Latency {
        if self.hist.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: self.hist.len(),
            mean: self.hist.mean() / 1000.0,
            p50: ms(self.hist.value_at_quantile(0.50)),
            p95: ms(self.hist.value_at_quantile(0.95)),
            p99: ms(self.hist.value_at_quantile(0.99)),
            p999: ms(self.hist.value_at_quantile(0.999)),
            min: ms(self.hist.min()),
            max: ms(self.hist.max()),
        }
    }
}

/// One point of a percentile distribution: the quantile (0 to 1) and the latency there, ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PercentilePoint {
    /// Quantile, 0 to 1.
    pub quantile: f64,
    /// Latency at that quantile, ms.
    pub ms: f64,
}

impl Recorder {
    /// The percentile distribution as HdrHistogram plots it: steps that halve the distance to
    /// 100% (`ticks` points per halving), ending at the largest sample. The last quantile is
    /// capped at 1 - 1/count, the highest a sample count can resolve, so it stays plottable
    /// on a 1/(1-q) axis.
    pub fn percentile_curve(&self, ticks: u32) -> Vec<PercentilePoint> {
        if self.hist.is_empty() {
            return Vec::new();
        }
        let cap = 1.0 - 1.0 / self.hist.len() as f64;
        let mut points: Vec<PercentilePoint> = self
            .hist
            .iter_quantiles(ticks.max(1))
            .map(|v| PercentilePoint {
                quantile: v.quantile_iterated_to().min(cap),
                ms: self.hist.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0,
            })
            .collect();
        // Several steps can land on the same capped quantile; keep the highest latency there.
        points.dedup_by(|later, earlier| {
            if later.quantile <= earlier.quantile {
                earlier.ms = earlier.ms.max(later.ms);
                true
            } else {
                false
            }
        });
        points
    }
}

/// Where quantile `q` sits on a percentile plot's x axis: log10(1 / (1 - q)), so 90% is 1,
/// 99% is 2, 99.9% is 3.
pub fn percentile_axis(q: f64) -> f64 {
    (1.0 / (1.0 - q.clamp(0.0, 1.0 - 1e-12))).log10()
}

/// The label of a decade on the percentile axis: 0 is "0%", 1 "90%", 2 "99%", 3 "99.9%".
pub fn percentile_label(decade: u32) -> String {
    match decade {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        d => format!(
            "99{}{}%",
            if d > 2 { "." } else { "" },
            "9".repeat(d as usize - 2)
        ),
    }
}

/// Counts per fixed-width time bucket, as (bucket start in seconds, count).
pub fn buckets(times_us: impl IntoIterator<Item = u64>, width_us: u64) -> Vec<(f64, u64)> {
    let width = width_us.max(1);
    let mut map: BTreeMap<u64, u64> = BTreeMap::new();
    for t in times_us {
        *map.entry(t / width).or_default() += 1;
    }
    let Some(&last) = map.keys().next_back() else {
        return Vec::new();
    };
    (0..=last)
        .map(|b| {
            (
                b as f64 * width as f64 / 1e6,
                map.get(&b).copied().unwrap_or(0),
            )
        })
        .collect()
}

/// Little's law: with `in_flight` requests outstanding on average and a mean latency of
/// `mean_ms`, the system completes `in_flight / mean` requests per second.
pub fn littles_law_rate(in_flight: f64, mean_ms: f64) -> f64 {
    if mean_ms <= 0.0 {
        0.0
    } else {
        in_flight / (mean_ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_a_thousand() {
        let mut r = Recorder::default();
        for ms in 1..=1000u64 {
            r.record_us(ms * 1000);
        }
        let s = r.summary();
        assert_eq!(s.count, 1000);
        assert!((s.mean - 500.5).abs() < 0.5, "{s:?}");
        assert!((s.p50 - 500.0).abs() <= 1.0, "{s:?}");
        assert!((s.p95 - 950.0).abs() <= 1.0, "{s:?}");
        assert!((s.p99 - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.p999 - 999.0).abs() <= 1.0, "{s:?}");
        assert!(
            (s.min - 1.0).abs() < 0.01 && (s.max - 1000.0).abs() <= 1.0,
            "{s:?}"
        );
    }

    #[test]
    fn merged_recorders_add_up() {
        let (mut a, mut b) = (Recorder::default(), Recorder::default());
        a.record_us(1000);
        b.record_us(3000);
        a.merge(&b);
        assert_eq!(a.summary().count, 2);
        assert!((a.summary().mean - 2.0).abs() < 0.01);
    }

    #[test]
    fn buckets_include_empty_seconds() {
        let b = buckets([0, 999_999, 1_000_000, 3_500_000], 1_000_000);
        assert_eq!(b, vec![(0.0, 2), (1.0, 1), (2.0, 0), (3.0, 1)]);
        assert!(buckets(Vec::<u64>::new(), 1_000_000).is_empty());
    }

    #[test]
    fn the_percentile_curve_climbs_to_the_max_and_stays_on_the_axis() {
        let mut r = Recorder::default();
        for ms in 1..=1000u64 {
            r.record_us(ms * 1000);
        }
        let c = r.percentile_curve(5);
        assert!(c.len() > 10, "{c:?}");
        assert!(
            c.windows(2)
                .all(|w| w[0].quantile < w[1].quantile && w[0].ms <= w[1].ms)
        );
        assert_eq!(c[0].quantile, 0.0);
        let last = c.last().unwrap();
        assert!((last.quantile - 0.999).abs() < 1e-9, "{last:?}");
        assert!((last.ms - 1000.0).abs() <= 1.0, "{last:?}");
        let at_99 = c.iter().find(|p| p.quantile >= 0.99).unwrap();
        assert!((at_99.ms - 990.0).abs() <= 2.0, "{at_99:?}");
        assert!(percentile_axis(last.quantile).is_finite());
        assert!(Recorder::default().percentile_curve(5).is_empty());
    }

    #[test]
    fn percentile_axis_and_labels() {
        assert!((percentile_axis(0.0)).abs() < 1e-12);
        assert!((percentile_axis(0.9) - 1.0).abs() < 1e-9);
        assert!((percentile_axis(0.999) - 3.0).abs() < 1e-9);
        let labels: Vec<String> = (0..6).map(percentile_label).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn littles_law() {
        assert_eq!(littles_law_rate(100.0, 10.0), 10_000.0);
        assert_eq!(littles_law_rate(1.0, 0.0), 0.0);
    }
}
