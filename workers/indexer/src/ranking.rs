//! Recency-aware ranking: BM25 relevance multiplied by a boost that halves with every week of a message's age.
//!
//! `score = bm25 × (1 + RECENCY_WEIGHT × 2^(−age / RECENCY_HALF_LIFE))`. A message from just now
//! gets ×2, one a week old ×1.5, a month old ×1.06, and old ones ×1: relevance still decides
//! between a good old match and a poor new one, and recency decides between similar matches.
//! Multiplying (not adding) keeps the boost meaningful whatever the scale of BM25 scores.

/// How much a brand-new message's score is raised (as a fraction of its BM25 score).
pub const RECENCY_WEIGHT: f32 = 1.0;
/// Age at which the boost has halved, in milliseconds (7 days).
pub const RECENCY_HALF_LIFE_MS: f64 = 7.0 * 24.0 * 3600.0 * 1000.0;

pub fn recency_blend(bm25: f32, age_ms: i64) -> f32 {
    let age_ms = age_ms.max(0) as f64;
    let boost = (-(age_ms / RECENCY_HALF_LIFE_MS)).exp2() as f32;
    bm25 * (1.0 + RECENCY_WEIGHT * boost)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 24 * 3600 * 1000;

    fn check(bm25: f32, age_days: i64, expected: f32) {
        let got = recency_blend(bm25, age_days * DAY_MS);
        assert!((got - expected).abs() < 0.01, "bm25 {bm25} age {age_days} d: got {got}, expected {expected}");
    }

    #[test]
    fn boost_halves_every_week() {
        check(1.0, 0, 2.0);
        check(1.0, 7, 1.5);
        check(1.0, 14, 1.25);
        check(2.0, 3650, 2.0);
        check(1.0, -5, 2.0);
    }

    #[test]
    fn relevance_still_beats_recency_when_it_differs_enough() {
        assert!(recency_blend(3.0, 365 * DAY_MS) > recency_blend(1.0, 0));
        assert!(recency_blend(1.0, 0) > recency_blend(1.0, 30 * DAY_MS));
    }
}
