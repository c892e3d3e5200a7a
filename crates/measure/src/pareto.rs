//! The Pareto front of accuracy against a cost (latency, bytes): the runs no other run beats on
//! both at once.

/// Indices of the points `(cost, accuracy)` that no other point dominates (at most the cost and
/// at least the accuracy, strictly better on one), sorted by cost.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let dominated = |i: usize| {
        let (ci, ai) = points[i];
        points
            .iter()
            .any(|&(c, a)| c <= ci && a >= ai && (c < ci || a > ai))
    };
    let mut front: Vec<usize> = (0..points.len()).filter(|&i| !dominated(i)).collect();
    front.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0));
    front
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_undominated_points() {
        // (cost, accuracy): b is dominated by a (costlier, less accurate); d ties nothing.
        let points = [
            (1.0, 0.90),
            (2.0, 0.85),
            (3.0, 0.95),
            (0.5, 0.80),
            (3.0, 0.94),
        ];
        assert_eq!(pareto_front(&points), vec![3, 0, 2]);
    }
}
