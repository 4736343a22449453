//! Runs one search against the current snapshot: the user's words as a Tantivy query, the conversation filter inside it, recency-blended BM25, highlights, pages and aggregations.

use std::collections::BTreeSet;
use std::ops::Bound;

use anyhow::Context;
use schemas::{ErrorCode, ErrorDetail, Message, SearchHit, SearchServiceReply, SearchServiceRequest};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, ConstScoreQuery, EmptyQuery, Occur, PhrasePrefixQuery, PhraseQuery, Query, RangeQuery, TermQuery, TermSetQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, DocId, Score, Searcher, SegmentReader, TantivyDocument, Term};

use crate::index_schema::{analyse, SearchFields, SENT_AT_FIELD, STREAM_SEQ_FIELD};
use crate::index_writer_thread::SharedSnapshot;
use crate::query_text::{parse_query_text, Clause};
use crate::ranking::recency_blend;

/// Most terms one `prefix*` expands to (like Tantivy's own phrase-prefix cap): bounds the cost of `a*`.
const MAX_PREFIX_EXPANSIONS: usize = 64;
/// Characters of text around the matches in a highlight.
const HIGHLIGHT_CHARS: usize = 160;
/// Bounds on what one request may ask for, whoever sent it (the gateway asks for far less).
const MAX_LIMIT: u64 = 1_000;
const MAX_OFFSET: u64 = 10_000;

/// Searches whatever the writer last committed; cheap to clone.
#[derive(Clone)]
pub struct SearchIndex {
    pub fields: SearchFields,
    pub snapshot: SharedSnapshot,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl SearchError {
    pub fn into_reply(self) -> SearchServiceReply {
        let (code, message) = match self {
            SearchError::Invalid(message) => (ErrorCode::Invalid, message),
            SearchError::Internal(error) => {
                tracing::error!(error = %format!("{error:#}"), "search failed");
                (ErrorCode::Internal, "search failed".to_owned())
            }
        };
        SearchServiceReply {
            hits: Vec::new(),
            has_more: false,
            max_stream_seq: 0,
            now_ms: 0,
            aggregations: None,
            error: Some(ErrorDetail { code, message, retry_after_ms: None }),
        }
    }
}

impl SearchIndex {
    /// Blocking (CPU) work: call it from `spawn_blocking`.
    pub fn search(&self, request: &SearchServiceRequest) -> Result<SearchServiceReply, SearchError> {
        if request.limit > MAX_LIMIT || request.offset > MAX_OFFSET {
            return Err(SearchError::Invalid(format!("limit is at most {MAX_LIMIT} and offset at most {MAX_OFFSET}")));
        }
        let snapshot = self.snapshot.current();
        let searcher = &snapshot.searcher;
        let max_stream_seq = request.max_stream_seq.unwrap_or(snapshot.indexed_stream_seq).min(snapshot.indexed_stream_seq);
        let now_ms = request.now_ms.unwrap_or_else(unix_millis_now);
        let mut reply = SearchServiceReply { hits: Vec::new(), has_more: false, max_stream_seq, now_ms, aggregations: None, error: None };
        let text_query = self.text_query(searcher, &request.q)?;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, text_query.box_clone())];
        if let Some(conversations) = &request.conversations {
            if conversations.is_empty() {
                return Ok(reply);
            }
            let terms = conversations.iter().map(|conversation| Term::from_field_text(self.fields.conversation, conversation));
            // Inside the query, scoring nothing: documents of other conversations are never matched, counted or ranked.
            clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(Box::new(TermSetQuery::new(terms)), 0.0))));
        }
        if request.max_stream_seq.is_some() {
            let upper = Term::from_field_u64(self.fields.stream_seq, max_stream_seq);
            clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(Box::new(RangeQuery::new(Bound::Unbounded, Bound::Included(upper))), 0.0))));
        }
        let query = BooleanQuery::new(clauses);
        let limit = request.limit as usize;
        let offset = request.offset as usize;
        // Ranked by (blended score, stream sequence): equal scores fall back to newest first, so the
        // order is total and a page never depends on where merges left the documents.
        let ranked: Vec<((Score, u64), DocAddress)> = if limit == 0 {
            Vec::new()
        } else {
            // One more than asked tells whether another page exists.
            let top = TopDocs::with_limit(limit + 1).and_offset(offset).tweak_score(move |segment_reader: &SegmentReader| {
                let sent_at = segment_reader.fast_fields().date(SENT_AT_FIELD).ok();
                let stream_seq = segment_reader.fast_fields().u64(STREAM_SEQ_FIELD).ok();
                move |doc: DocId, score: Score| {
                    let sent_at_ms = sent_at.as_ref().and_then(|column| column.first(doc)).map(|date| date.into_timestamp_millis()).unwrap_or(0);
                    let stream_seq = stream_seq.as_ref().and_then(|column| column.first(doc)).unwrap_or(0);
                    (recency_blend(score, now_ms.saturating_sub(sent_at_ms)), stream_seq)
                }
            });
            searcher.search(&query, &top).context("failed to run the search")?
        };
        if request.aggregate {
            let collector = crate::aggregations::collector();
            let (total, results) = searcher.search(&query, &(Count, collector)).context("failed to aggregate")?;
            reply.aggregations = Some(crate::aggregations::read_results(total as u64, results)?);
        }
        reply.has_more = ranked.len() > limit;
        let highlighter = self.highlighter(searcher, text_query.as_ref())?;
        for (_, address) in ranked.into_iter().take(limit) {
            let document: TantivyDocument = searcher.doc(address).context("failed to read a stored document")?;
            let message_json = document.get_first(self.fields.message).and_then(|value| value.as_str().map(str::to_owned)).context("document without its message")?;
            let message: Message = serde_json::from_str(&message_json).context("stored message is unreadable")?;
            let text = message.body.text.clone().unwrap_or_default();
            let highlight = highlight(&highlighter, &text);
            reply.hits.push(SearchHit { message, highlight });
        }
        Ok(reply)
    }

    /// The user's words as a query on the text field; an empty query matches everything (analysts only reach here with one).
    fn text_query(&self, searcher: &Searcher, query_text: &str) -> Result<Box<dyn Query>, SearchError> {
        if query_text.trim().is_empty() {
            return Ok(Box::new(AllQuery));
        }
        let clauses = parse_query_text(query_text).map_err(|error| SearchError::Invalid(error.to_string()))?;
        let mut required: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for clause in clauses {
            let query = match &clause {
                Clause::Word(text) | Clause::Phrase(text) => self.terms_query(&analyse(text)),
                Clause::Prefix(text) => self.prefix_query(searcher, &analyse(text))?,
            };
            required.extend(query.map(|query| (Occur::Must, query)));
        }
        if required.is_empty() {
            return Err(SearchError::Invalid("the query has no letters or digits to search for".to_owned()));
        }
        Ok(Box::new(BooleanQuery::new(required)))
    }

    fn term(&self, token: &str) -> Term {
        Term::from_field_text(self.fields.text, token)
    }

    /// One term, or the terms as an exact phrase; nothing for a clause of punctuation only.
    fn terms_query(&self, tokens: &[String]) -> Option<Box<dyn Query>> {
        match tokens {
            [] => None,
            [token] => Some(Box::new(TermQuery::new(self.term(token), IndexRecordOption::WithFreqs))),
            tokens => Some(Box::new(PhraseQuery::new(tokens.iter().map(|token| self.term(token)).collect()))),
        }
    }

    /// `foo*`: any of the index's terms starting with `foo` (expanded here, so each is scored and highlighted).
    /// `e-ma*` (several tokens) is a phrase whose last word is the prefix.
    fn prefix_query(&self, searcher: &Searcher, tokens: &[String]) -> Result<Option<Box<dyn Query>>, SearchError> {
        let Some((prefix, leading)) = tokens.split_last() else { return Ok(None) };
        if !leading.is_empty() {
            let mut phrase = PhrasePrefixQuery::new(tokens.iter().map(|token| self.term(token)).collect());
            phrase.set_max_expansions(MAX_PREFIX_EXPANSIONS as u32);
            return Ok(Some(Box::new(phrase)));
        }
        let mut expansions = BTreeSet::new();
        'segments: for segment_reader in searcher.segment_readers() {
            let inverted_index = segment_reader.inverted_index(self.fields.text).context("failed to open the text index")?;
            let mut terms = inverted_index.terms().range().ge(prefix.as_bytes()).into_stream().context("failed to read the term dictionary")?;
            while terms.advance() {
                let Ok(term) = std::str::from_utf8(terms.key()) else { continue };
                if !term.starts_with(prefix.as_str()) {
                    break;
                }
                expansions.insert(term.to_owned());
                if expansions.len() >= MAX_PREFIX_EXPANSIONS {
                    break 'segments;
                }
            }
        }
        if expansions.is_empty() {
            return Ok(Some(Box::new(EmptyQuery)));
        }
        let any_of = expansions.iter().map(|term| (Occur::Should, Box::new(TermQuery::new(self.term(term), IndexRecordOption::WithFreqs)) as Box<dyn Query>)).collect();
        Ok(Some(Box::new(BooleanQuery::new(any_of))))
    }

    fn highlighter(&self, searcher: &Searcher, text_query: &dyn Query) -> Result<SnippetGenerator, SearchError> {
        let mut generator = SnippetGenerator::create(searcher, text_query, self.fields.text).context("failed to prepare highlights")?;
        generator.set_max_num_chars(HIGHLIGHT_CHARS);
        Ok(generator)
    }
}

/// The fragment around the best matches with `<b>` marks; the text's start when nothing in it matched (an everything query).
fn highlight(highlighter: &SnippetGenerator, text: &str) -> String {
    let snippet = highlighter.snippet(text);
    if !snippet.is_empty() {
        return snippet.to_html();
    }
    let start: String = text.chars().take(HIGHLIGHT_CHARS).collect();
    html_escape(&start)
}

fn html_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

pub fn unix_millis_now() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
