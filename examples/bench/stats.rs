//! Percentiles of samples.

/// The `p`-th percentile (0..=100) of `samples` by the nearest-rank method; `None` if empty.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    // Nearest rank: the smallest value with at least p% of the samples at or below it.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn median(samples: &[f64]) -> Option<f64> {
    percentile(samples, 50.0)
}

/// p50 and p99 as "12.3 / 45.6" (in the samples' unit), or "–".
pub fn p50_p99(samples: &[f64]) -> String {
    match (percentile(samples, 50.0), percentile(samples, 99.0)) {
        (Some(p50), Some(p99)) => format!("{p50:.1} / {p99:.1}"),
        _ => "–".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50.0));
        assert_eq!(percentile(&samples, 99.0), Some(99.0));
        assert_eq!(percentile(&samples, 100.0), Some(100.0));
        assert_eq!(percentile(&samples, 0.0), Some(1.0));
        // Order does not matter; with 50 joins p99 is the worst one.
        let joins: Vec<f64> = (0..50).rev().map(f64::from).collect();
        assert_eq!(percentile(&joins, 99.0), Some(49.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
        assert_eq!(p50_p99(&[]), "–");
    }
}
