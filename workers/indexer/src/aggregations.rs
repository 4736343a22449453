//! Analysts' counts for a query, computed by Tantivy aggregations over the same filtered query: per UTC day, per conversation, per sender.

use anyhow::Context;
use schemas::{ConversationCount, DayCount, SearchAggregations, SenderCount};
use tantivy::aggregation::agg_req::{Aggregation, AggregationVariants, Aggregations};
use tantivy::aggregation::agg_result::{AggregationResult, AggregationResults, BucketEntries, BucketEntry, BucketResult};
use tantivy::aggregation::bucket::{DateHistogramAggregationReq, TermsAggregation};
use tantivy::aggregation::{AggregationCollector, AggregationLimitsGuard, Key};

use crate::index_schema::{CONVERSATION_FIELD, SENDER_FIELD, SENT_AT_FIELD};

const PER_DAY: &str = "per_day";
const PER_CONVERSATION: &str = "per_conversation";
const PER_SENDER: &str = "per_sender";
/// Most conversations or senders listed; counts are exact up to this many distinct values per segment.
pub const MAX_TERM_BUCKETS: u32 = 10_000;

pub fn collector() -> AggregationCollector {
    AggregationCollector::from_aggs(request(), AggregationLimitsGuard::default())
}

fn request() -> Aggregations {
    let terms = |field: &str| AggregationVariants::Terms(TermsAggregation {
        field: field.to_owned(),
        size: Some(MAX_TERM_BUCKETS),
        segment_size: Some(MAX_TERM_BUCKETS),
        ..TermsAggregation::default()
    });
    let per_day = AggregationVariants::DateHistogram(DateHistogramAggregationReq {
        field: SENT_AT_FIELD.to_owned(),
        fixed_interval: Some("1d".to_owned()),
        min_doc_count: Some(1),
        ..DateHistogramAggregationReq::default()
    });
    [(PER_DAY, per_day), (PER_CONVERSATION, terms(CONVERSATION_FIELD)), (PER_SENDER, terms(SENDER_FIELD))]
        .into_iter()
        .map(|(name, agg)| (name.to_owned(), Aggregation { agg, sub_aggregation: Aggregations::default() }))
        .collect()
}

pub fn read_results(total: u64, mut results: AggregationResults) -> anyhow::Result<SearchAggregations> {
    let mut take = |name: &str| results.0.remove(name).with_context(|| format!("aggregation {name} missing from the results"));
    let per_day = buckets(take(PER_DAY)?)?
        .into_iter()
        .map(|bucket| Ok(DayCount { day: day_of(&bucket.key)?, count: bucket.doc_count }))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let per_conversation =
        buckets(take(PER_CONVERSATION)?)?.into_iter().map(|bucket| ConversationCount { conversation_id: text_key(bucket.key), count: bucket.doc_count }).collect();
    let per_sender = buckets(take(PER_SENDER)?)?.into_iter().map(|bucket| SenderCount { sender: text_key(bucket.key), count: bucket.doc_count }).collect();
    Ok(SearchAggregations { total, per_day, per_conversation, per_sender })
}

fn buckets(result: AggregationResult) -> anyhow::Result<Vec<BucketEntry>> {
    match result {
        AggregationResult::BucketResult(BucketResult::Terms { buckets, .. }) => Ok(buckets),
        AggregationResult::BucketResult(BucketResult::Histogram { buckets: BucketEntries::Vec(buckets) }) => Ok(buckets),
        AggregationResult::BucketResult(BucketResult::Histogram { buckets: BucketEntries::HashMap(buckets) }) => Ok(buckets.into_values().collect()),
        other => anyhow::bail!("unexpected aggregation result {other:?}"),
    }
}

fn text_key(key: Key) -> String {
    match key {
        Key::Str(text) => text,
        other => format!("{other:?}"),
    }
}

/// A date histogram bucket's key is its start in unix milliseconds; days are UTC.
fn day_of(key: &Key) -> anyhow::Result<String> {
    let millis = match key {
        Key::F64(millis) => *millis as i128,
        Key::I64(millis) => *millis as i128,
        Key::U64(millis) => *millis as i128,
        Key::Str(text) => anyhow::bail!("unexpected day key {text:?}"),
    };
    let start = time::OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000).context("day bucket out of range")?;
    Ok(start.date().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_keys_are_utc_dates() {
        assert_eq!(day_of(&Key::F64(0.0)).unwrap(), "1970-01-01");
        assert_eq!(day_of(&Key::F64(1_764_460_800_000.0)).unwrap(), "2025-11-30");
    }
}
